//! Azure Blob Storage and Google Cloud Storage. Any replica reads and writes the same container
//! or bucket, in Distribution's layout under an optional root prefix (its drivers'
//! `rootdirectory`), so a registry written by Distribution's `azure` or `gcs` driver is served as
//! it is.
//!
//! What the two clouds share lives here: keys, time limits, the storage contract, and resumable
//! writes ([`writes`]). What each cloud does its own way is a [`Cloud`]: Azure (through
//! `object_store`) stages blocks and commits a block list ([`azure`]); GCS (through
//! `gcloud-storage`, on the JSON API, which its emulators implement as well) stores part objects
//! and composes them ([`gcs`]).

mod azure;
mod gcs;
mod writes;

use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    BlobStore, ByteStream, Checkpoint, Error, ObjectInfo, ObjectMeta, Result, Timeouts, WriteState,
};

pub use azure::{AzureConfig, AzureCredentials};
pub use gcs::{GcsConfig, GcsCredentials};

/// Settings both clouds take.
#[derive(Debug, Clone)]
pub struct CloudSettings {
    /// Keys are stored below this prefix (Distribution's `rootdirectory`).
    pub root_prefix: String,
    /// Bytes buffered per upload before they become a part.
    pub part_size: u64,
    /// Parts one upload sends at once.
    pub upload_concurrency: usize,
    /// Answer blob GETs with a redirect to a signed URL.
    pub redirect: bool,
    /// How long each call may take.
    pub timeouts: Timeouts,
}

/// One cloud's objects, by full name (root prefix included), and how it stores the parts of a
/// resumable write and joins them into one object.
#[async_trait]
trait Cloud: Send + Sync + 'static {
    /// Size and time of the object `name`, or `None` when there is none.
    async fn head(&self, name: &str) -> Result<Option<ObjectMeta>>;

    /// Streams the object `name`, or a non-empty byte `range` of it.
    async fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<ByteStream>;

    /// Stores `data` as the object `name`, atomically replacing what was there.
    async fn put(&self, name: &str, data: Bytes) -> Result<()>;

    /// The names directly inside the directory `dir` (ending in `/`): objects and
    /// subdirectories, unsorted.
    async fn list_dir(&self, dir: &str) -> Result<Vec<String>>;

    /// Every object whose full name starts with `prefix` (ending in `/`), at any depth.
    async fn list_all(&self, prefix: &str) -> Result<Vec<(String, ObjectMeta)>>;

    /// Removes these objects; missing ones are fine.
    async fn delete(&self, names: Vec<String>) -> Result<()>;

    /// A URL anyone holding it may GET `name` from, for `ttl`.
    async fn signed_url(&self, name: &str, ttl: Duration) -> Result<String>;

    /// Checks that the container or bucket answers and exists.
    async fn ping(&self) -> Result<()>;

    /// Stores `data` as one part of the write at `name`, under an id no other request uses;
    /// returns the id.
    async fn put_part(&self, name: &str, data: Bytes) -> Result<String>;

    /// Publishes the parts `ids`, in order, as the object `dest`, atomically, and frees them.
    async fn assemble(&self, name: &str, ids: &[String], dest: &str, size: u64) -> Result<()>;

    /// Frees whatever parts of the write at `name` are left (the write was abandoned).
    async fn discard(&self, name: &str) -> Result<()>;

    /// Copies the object `from` (of `size` bytes) to `to` inside the store; done when it returns.
    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()>;
}

/// Objects in one Azure container or GCS bucket.
pub struct CloudStore {
    /// `Azure container` or `GCS bucket`, for errors and logs.
    kind: &'static str,
    /// Which one, for errors and logs.
    place: String,
    cloud: Arc<dyn Cloud>,
    redirect: bool,
    prefix: String,
    part_size: u64,
    /// Parts one upload sends at once.
    parts_in_flight: usize,
    /// Parts in flight beyond each upload's first, across all uploads.
    part_budget: Arc<tokio::sync::Semaphore>,
    timeouts: Timeouts,
}

impl fmt::Debug for CloudStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudStore")
            .field("kind", &self.kind)
            .field("place", &self.place)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Whether an HTTP status says "later" rather than "no".
fn passing(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Turns "nothing there" into `Ok`.
fn gone_is_fine(result: Result<()>) -> Result<()> {
    match result {
        Err(Error::NotFound) => Ok(()),
        other => other,
    }
}

/// The directory an object is in (ending in `/`, or empty at the top), and its name.
fn split_parent(name: &str) -> (&str, &str) {
    match name.rfind('/') {
        Some(at) => (&name[..=at], &name[at + 1..]),
        None => ("", name),
    }
}

impl CloudStore {
    fn new(
        kind: &'static str,
        place: String,
        cloud: Arc<dyn Cloud>,
        settings: &CloudSettings,
    ) -> Self {
        let prefix = settings.root_prefix.trim_matches('/');
        let part_size = settings.part_size.max(1);
        Self {
            kind,
            place,
            cloud,
            redirect: settings.redirect,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            part_size,
            parts_in_flight: settings.upload_concurrency.max(1),
            part_budget: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(super::s3::PART_BUDGET / part_size)
                    .unwrap_or(1)
                    .max(1),
            )),
            timeouts: settings.timeouts,
        }
    }

    /// The object name of `key`, refusing a key that would escape the root.
    fn name(&self, key: &str) -> Result<String> {
        let safe = !key.is_empty()
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !safe {
            return Err(
                io::Error::new(io::ErrorKind::InvalidInput, format!("unsafe key {key:?}")).into(),
            );
        }
        Ok(format!("{}{key}", self.prefix))
    }

    /// Runs a storage call within `limit`, so a hung service fails it rather than holding it.
    async fn within<T>(&self, limit: Duration, call: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(limit, call).await.map_err(|_| {
            Error::Unavailable(format!(
                "{} {} did not answer within {limit:?}",
                self.kind, self.place
            ))
        })?
    }

    /// A call that moves no bulk data.
    async fn quick<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        self.within(self.timeouts.request, call).await
    }

    async fn put_object(&self, name: &str, data: Bytes) -> Result<()> {
        let limit = self.timeouts.for_bytes(data.len() as u64);
        self.within(limit, self.cloud.put(name, data)).await
    }

    /// The whole object `name` (at most about a part: tails and small objects).
    async fn read_object(&self, name: &str) -> Result<Bytes> {
        let limit = self.timeouts.for_bytes(self.part_size);
        self.within(limit, async {
            let mut stream = self.cloud.get(name, None).await?;
            let mut out = bytes::BytesMut::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.map_err(Error::Io)?);
            }
            Ok(out.freeze())
        })
        .await
    }

    async fn head(&self, name: &str) -> Result<Option<ObjectMeta>> {
        self.quick(self.cloud.head(name)).await
    }

    /// The names directly inside the directory `dir` (ending in `/`).
    async fn names_in(&self, dir: &str) -> Result<Vec<String>> {
        self.quick(self.cloud.list_dir(dir)).await
    }

    /// Every object at `name` or below it.
    async fn objects_below(&self, name: &str) -> Result<Vec<(String, ObjectMeta)>> {
        // Many pages for a large tree: each is one request, all of them within this.
        let limit = self.timeouts.request.saturating_mul(20);
        self.within(limit, self.cloud.list_all(&format!("{name}/")))
            .await
    }

    async fn delete_names(&self, names: Vec<String>) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let limit = self
            .timeouts
            .request
            .saturating_mul(u32::try_from(names.len().div_ceil(256)).unwrap_or(u32::MAX));
        self.within(limit, self.cloud.delete(names)).await
    }
}

#[async_trait]
impl BlobStore for CloudStore {
    async fn stat(&self, key: &str) -> Result<ObjectMeta> {
        self.head(&self.name(key)?).await?.ok_or(Error::NotFound)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let name = self.name(key)?;
        if range.as_ref().is_some_and(Range::is_empty) {
            return Ok(futures::stream::empty().boxed());
        }
        self.quick(self.cloud.get(&name, range)).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_object(&self.name(key)?, data).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = format!("{}/", self.name(prefix.trim_end_matches('/'))?);
        let mut names = self.names_in(&dir).await?;
        if names.is_empty() {
            return Err(Error::NotFound);
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    async fn walk(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir = self.name(prefix.trim_end_matches('/'))?;
        let below = format!("{dir}/");
        Ok(self
            .objects_below(&dir)
            .await?
            .into_iter()
            .filter_map(|(name, meta)| {
                Some(ObjectInfo {
                    key: name.strip_prefix(&below)?.to_owned(),
                    size: meta.size,
                    modified: meta.modified,
                })
            })
            .collect())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (self.name(from)?, self.name(to)?);
        let size = self.head(&from).await?.ok_or(Error::NotFound)?.size;
        self.cloud.copy(&from, &to, size).await?;
        self.delete_names(vec![from]).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let name = self.name(key)?;
        let mut names: Vec<String> = self
            .objects_below(&name)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        names.push(name);
        self.delete_names(names).await
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        let names = keys
            .iter()
            .map(|key| self.name(key))
            .collect::<Result<Vec<_>>>()?;
        self.delete_names(names).await
    }

    async fn presigned_get_url(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        if !self.redirect {
            return Ok(None);
        }
        let name = self.name(key)?;
        Ok(Some(self.quick(self.cloud.signed_url(&name, ttl)).await?))
    }

    async fn create_resumable(&self, key: &str) -> Result<WriteState> {
        self.create_write(key).await
    }

    async fn append_with_checkpoint(
        &self,
        key: &str,
        state: &WriteState,
        body: ByteStream,
        checkpoint: Option<&dyn Checkpoint>,
    ) -> Result<WriteState> {
        self.append_write(key, state, body, checkpoint).await
    }

    async fn is_current(&self, key: &str, state: &WriteState) -> Result<bool> {
        self.write_is_current(key, state).await
    }

    async fn commit_resumable(&self, key: &str, state: &WriteState, dest: &str) -> Result<()> {
        self.commit_write(key, state, dest).await
    }

    async fn abort_resumable(&self, key: &str) -> Result<()> {
        self.abort_write(key).await
    }

    async fn ping(&self) -> Result<()> {
        self.quick(self.cloud.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_split_into_their_directory_and_name() {
        assert_eq!(split_parent("a/b/data"), ("a/b/", "data"));
        assert_eq!(split_parent("data"), ("", "data"));
        assert!(passing(503) && passing(429) && !passing(403) && !passing(404));
    }
}
