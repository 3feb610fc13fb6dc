//! Pluggable object storage: the one trait every backend implements, and the backends.
//!
//! Storage knows nothing of OCI: it stores opaque objects under `/`-separated keys (built by
//! [`layout`]) and offers resumable writes for uploads. The registry layers above depend on this
//! module, never the other way round.

pub mod layout;

mod counting;
mod guard;
mod timeouts;

mod cloud;
mod fs;
mod memory;
mod s3;
#[cfg(test)]
pub(crate) mod testing;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use cloud::{
    AzureConfig, AzureCredentials, CloudSettings, CloudStore, GcsConfig, GcsCredentials,
};
pub use counting::Counting;
pub use fs::FsStore;
pub use guard::{Guarded, Health, HealthReport, StorageObserver};
pub use memory::MemoryStore;
pub use s3::{DEFAULT_UPLOAD_CONCURRENCY, MIN_PART_SIZE, S3Config, S3Store};
pub use timeouts::{DEFAULT_MIN_THROUGHPUT, DEFAULT_REQUEST_TIMEOUT, Timeouts};

/// A stream of bytes flowing into or out of storage.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in storage. Callers decide what each means to a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No object under that key (or, for a resumable write, no such write).
    #[error("not found")]
    NotFound,
    /// A resumable write's state is no longer current: another request has written since.
    #[error("resumable write state is stale")]
    Stale,
    /// Another request holds the resumable write and did not release it in time.
    #[error("resumable write is busy")]
    Busy,
    /// The incoming stream failed (typically the client went away); nothing was committed.
    #[error("reading the request body failed: {0}")]
    Body(#[source] io::Error),
    /// The backend could not be reached or is overloaded; worth retrying later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Any other backend failure.
    #[error("storage I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// What `stat` knows of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub modified: SystemTime,
}

/// One object found by [`BlobStore::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, relative to the walked prefix.
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// Where a resumable write stands: the bytes it holds, and whatever the backend needs to find and
/// trust them again. The registry never interprets `backend`; it carries it, signed, in the upload
/// token, so any replica can continue the write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteState {
    pub size: u64,
    #[serde(with = "base64_bytes")]
    pub backend: Vec<u8>,
}

/// The storage contract. Keys are `/`-separated relative paths built by [`layout`] from validated
/// parts; backends may still refuse a key that would escape their root.
///
/// # Guarantees every backend gives
/// - `put` and `commit_resumable` are atomic: a reader sees the old object, the whole new one, or
///   nothing; never a partial object, even across a crash.
/// - A resumable write can only be continued or committed with its latest [`WriteState`]; an
///   older state gets [`Error::Stale`]. So the bytes a write holds are always exactly the bytes
///   its latest state describes.
/// - `append` with the latest state replaces anything stored past `state.size` (the leftovers of
///   a request that died half-way), so a retried request ends in the right bytes.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    /// Size and modification time of the object at `key`.
    async fn stat(&self, key: &str) -> Result<ObjectMeta>;

    /// Streams the object at `key`, or the byte `range` of it (the caller keeps it within size).
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream>;

    /// Stores `data` at `key`, atomically replacing what was there.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// The names directly below `prefix`, sorted; [`Error::NotFound`] when nothing is below it.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Every object below `prefix`, at any depth, with its size and time, in no particular order;
    /// empty when nothing is there. One listing, not a request per object, where the backend can.
    async fn walk(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Moves the object at `from` to `to`, atomically replacing what was at `to`; `from` is gone
    /// afterwards. Inside the store: no byte travels through the registry.
    ///
    /// # Errors
    /// [`Error::NotFound`] when nothing is at `from`.
    async fn rename(&self, from: &str, to: &str) -> Result<()>;

    /// Removes the object at `key` and everything below it; succeeds if nothing is there.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Removes exactly these objects (at most [`DELETE_BATCH`]), in one request where the backend
    /// can, and any directory they leave empty; missing objects are fine.
    async fn delete_objects(&self, keys: &[String]) -> Result<()>;

    /// A URL a client can fetch `key` from directly, when the backend can hand one out.
    async fn presigned_get_url(&self, key: &str, ttl: Duration) -> Result<Option<String>>;

    /// Starts an empty resumable write at `key`.
    async fn create_resumable(&self, key: &str) -> Result<WriteState>;

    /// Appends `body` to the resumable write at `key`, returning its new state.
    ///
    /// # Errors
    /// [`Error::Stale`] for a state that is not the latest; [`Error::Body`] when `body` fails, in
    /// which case `state` stays the latest, so the same request can be retried.
    async fn append(&self, key: &str, state: &WriteState, body: ByteStream) -> Result<WriteState> {
        self.append_with_checkpoint(key, state, body, None).await
    }

    /// As [`BlobStore::append`], calling `checkpoint` with the new state once the bytes are
    /// stored and before `state` stops being current. So whatever the checkpoint saves is never
    /// behind the write, even if the process dies at any point: either the new state is saved
    /// and current, or the old state is still current.
    ///
    /// # Errors
    /// As `append`; a checkpoint that fails fails the append, and `state` stays the latest.
    async fn append_with_checkpoint(
        &self,
        key: &str,
        state: &WriteState,
        body: ByteStream,
        checkpoint: Option<&dyn Checkpoint>,
    ) -> Result<WriteState>;

    /// Whether `state` is the latest state of the resumable write at `key` (so `append` and
    /// `commit_resumable` would take it). One cheap lookup; `false` when there is no such write.
    async fn is_current(&self, key: &str, state: &WriteState) -> Result<bool>;

    /// Makes the resumable write at `key` visible at `dest` (atomically), ending the write.
    async fn commit_resumable(&self, key: &str, state: &WriteState, dest: &str) -> Result<()>;

    /// Ends the resumable write at `key` without publishing it, freeing what it holds (on S3,
    /// the multipart upload). Succeeds if there is no such write.
    async fn abort_resumable(&self, key: &str) -> Result<()>;

    /// Checks that the backend is reachable.
    async fn ping(&self) -> Result<()>;
}

/// Something saved at the commit point of an append: see
/// [`BlobStore::append_with_checkpoint`].
#[async_trait]
pub trait Checkpoint: Send + Sync {
    /// Saves what goes with `next`, the state the append is about to make current.
    async fn save(&self, next: &WriteState) -> Result<()>;
}

impl WriteState {
    /// A state of `size` bytes whose backend part is `backend`, as JSON.
    fn with_backend(size: u64, backend: &impl Serialize) -> Self {
        Self {
            size,
            backend: serde_json::to_vec(backend).unwrap_or_default(),
        }
    }

    /// The backend part, as `with_backend` wrote it; anything else is a state no longer (or
    /// never) current.
    fn backend<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.backend).map_err(|_| Error::Stale)
    }
}

/// A fresh random name part: 128 bits, in hex.
fn nonce() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An error and its causes in words, each once: `request has timed out: operation timeout
/// (all attempts including retries) occurred after 6s`.
fn plain(err: &dyn std::error::Error) -> String {
    let mut words = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        let said = next.to_string();
        if !words.contains(&said) {
            words = format!("{words}: {said}");
        }
        cause = next.source();
    }
    words
}

/// Calls `checkpoint`, if any.
async fn checkpoint_at(checkpoint: Option<&dyn Checkpoint>, next: &WriteState) -> Result<()> {
    match checkpoint {
        Some(checkpoint) => checkpoint.save(next).await,
        None => Ok(()),
    }
}

/// The most keys one [`BlobStore::delete_objects`] call takes (S3's DeleteObjects limit).
pub const DELETE_BATCH: usize = 1000;

/// Which backend `open` builds, and its settings.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    Filesystem {
        root: std::path::PathBuf,
        fsync: bool,
    },
    S3(S3Config),
    Azure(AzureConfig),
    Gcs(GcsConfig),
    Memory,
}

impl StorageConfig {
    /// Names the data this configuration reaches, the same on every replica that shares it
    /// (and different for any other), without its credentials: a short hash of where it is.
    pub fn identity(&self) -> String {
        use sha2::Digest as _;
        let place = match self {
            Self::Filesystem { root, .. } => format!("fs:{}", root.display()),
            Self::S3(s3) => format!(
                "s3:{}:{}:{}",
                s3.endpoint.as_deref().unwrap_or("aws"),
                s3.bucket,
                s3.root_prefix
            ),
            Self::Azure(azure) => format!(
                "azure:{}:{}:{}:{}",
                azure.endpoint.as_deref().unwrap_or("azure"),
                azure.account,
                azure.container,
                azure.settings.root_prefix
            ),
            Self::Gcs(gcs) => format!(
                "gcs:{}:{}:{}",
                gcs.endpoint.as_deref().unwrap_or("gcs"),
                gcs.bucket,
                gcs.settings.root_prefix
            ),
            Self::Memory => format!("memory:{}", std::process::id()),
        };
        let hash = sha2::Sha256::digest(place.as_bytes());
        hash[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Opens the configured backend.
pub async fn open(config: &StorageConfig) -> Result<Arc<dyn BlobStore>> {
    Ok(match config {
        StorageConfig::Filesystem { root, fsync } => Arc::new(FsStore::open(root, *fsync).await?),
        StorageConfig::S3(config) => Arc::new(S3Store::open(config).await?),
        StorageConfig::Azure(config) => Arc::new(CloudStore::open_azure(config).await?),
        StorageConfig::Gcs(config) => Arc::new(CloudStore::open_gcs(config).await?),
        StorageConfig::Memory => Arc::new(MemoryStore::default()),
    })
}

/// Reads a whole small object, refusing anything larger than `limit` bytes.
pub async fn read_small(store: &dyn BlobStore, key: &str, limit: u64) -> Result<Bytes> {
    let mut stream = store.get(key, None).await?;
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(Error::Io(io::Error::other(format!(
                "object {key} exceeds {limit} bytes"
            ))));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Like [`read_small`], with a missing object as `None`.
pub async fn read_if_present(
    store: &dyn BlobStore,
    key: &str,
    limit: u64,
) -> Result<Option<Bytes>> {
    match read_small(store, key, limit).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(Error::NotFound) => Ok(None),
        Err(err) => Err(err),
    }
}

/// A stream over one in-memory buffer.
pub fn stream_of(data: Bytes) -> ByteStream {
    futures::stream::once(async move { Ok(data) }).boxed()
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(deserializer)?;
        URL_SAFE_NO_PAD.decode(s).map_err(serde::de::Error::custom)
    }
}
