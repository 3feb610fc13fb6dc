//! Google Cloud Storage, through `gcloud-storage` on GCS's JSON API: a write's parts are objects
//! of their own beside the write (`<key>.part-<id>`), composed straight into the destination at
//! commit, 32 at a time (GCS's limit per compose; more parts are composed in rounds).
//!
//! Why the JSON API and compose, not `object_store` and GCS's XML multipart upload: the clouds'
//! emulator, fake-gcs-server, implements the JSON API and compose but neither XML writes nor XML
//! multipart uploads, so only this path can be tested against a real implementation here, and
//! the path tested is the path run.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use gcloud_storage::client::google_cloud_auth::credentials::CredentialsFile;
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::Error as GcsError;
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::SourceObjects;
use gcloud_storage::http::objects::compose::{ComposeObjectRequest, ComposingTargets};
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range as ByteRange;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::rewrite::RewriteObjectRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use gcloud_storage::sign::{SignedURLMethod, SignedURLOptions};

use super::{Cloud, CloudSettings, CloudStore, gone_is_fine, passing, split_parent};
use crate::storage::{ByteStream, Error, ObjectMeta, Result, nonce, plain};

/// The most sources one compose takes.
const COMPOSE_LIMIT: usize = 32;
/// Deletes sent at once.
const DELETES_IN_FLIGHT: usize = 16;

/// How Stowage signs in to GCS.
#[derive(Debug, Clone)]
pub enum GcsCredentials {
    /// Application default credentials: `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata
    /// server, which is how GKE workload identity reaches a pod.
    Environment,
    /// A service account's JSON key file.
    KeyFile(PathBuf),
    /// None at all: for emulators.
    Anonymous,
}

/// Where the bucket is and how to reach it.
#[derive(Clone)]
pub struct GcsConfig {
    pub bucket: String,
    /// The service's URL, for private endpoints and emulators; `None` for
    /// `https://storage.googleapis.com`.
    pub endpoint: Option<String>,
    pub credentials: GcsCredentials,
    pub settings: CloudSettings,
}

impl fmt::Debug for GcsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsConfig")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .field("settings", &self.settings)
            .finish()
    }
}

/// Sorts `gcloud-storage` failures into what callers act on.
// By value so it reads as `.map_err(classify)`.
#[allow(clippy::needless_pass_by_value)]
fn classify(err: GcsError) -> Error {
    let words = plain(&err);
    match &err {
        GcsError::Response(answer) if answer.code == 404 => Error::NotFound,
        GcsError::Response(answer) if passing(answer.code) => Error::Unavailable(words),
        // Downloads report the answer's status through the HTTP client.
        GcsError::HttpClient(failed) => match failed.status().map(|status| status.as_u16()) {
            Some(404) => Error::NotFound,
            Some(status) if !passing(status) => Error::Io(io::Error::other(words)),
            _ => Error::Unavailable(words),
        },
        GcsError::HttpMiddleware(_) | GcsError::TokenSource(_) => Error::Unavailable(words),
        _ => Error::Io(io::Error::other(words)),
    }
}

fn meta(object: &Object) -> ObjectMeta {
    ObjectMeta {
        size: u64::try_from(object.size).unwrap_or(0),
        modified: object
            .updated
            .map(SystemTime::from)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

fn settings_error(err: impl fmt::Display) -> Error {
    Error::Io(io::Error::other(format!("GCS storage settings: {err}")))
}

impl CloudStore {
    /// Connects to the bucket; fails fast (and the replica reports not ready) while GCS is down.
    pub async fn open_gcs(config: &GcsConfig) -> Result<Self> {
        let mut client = ClientConfig::default();
        if let Some(endpoint) = &config.endpoint {
            client.storage_endpoint = endpoint.trim_end_matches('/').to_owned();
        }
        let client = match &config.credentials {
            GcsCredentials::Anonymous => client.anonymous(),
            GcsCredentials::Environment => client.with_auth().await.map_err(settings_error)?,
            GcsCredentials::KeyFile(path) => {
                let key = CredentialsFile::new_from_file(path.to_string_lossy().into_owned())
                    .await
                    .map_err(settings_error)?;
                client.with_credentials(key).await.map_err(settings_error)?
            }
        };
        let gcs = Gcs {
            client: Client::new(client),
            bucket: config.bucket.clone(),
        };
        Ok(Self::new(
            "GCS bucket",
            config.bucket.clone(),
            std::sync::Arc::new(gcs),
            &config.settings,
        ))
    }
}

/// One bucket; a write's parts are objects, composed at commit.
struct Gcs {
    client: Client,
    bucket: String,
}

fn part_name(name: &str, id: &str) -> String {
    format!("{name}.part-{id}")
}

impl Gcs {
    fn object(&self, name: &str) -> GetObjectRequest {
        GetObjectRequest {
            bucket: self.bucket.clone(),
            object: name.to_owned(),
            ..GetObjectRequest::default()
        }
    }

    /// One listing below `prefix`, page by page: the objects, and with `delimiter` the
    /// subdirectories.
    async fn listing(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<Object>, Vec<String>)> {
        let (mut objects, mut dirs) = (Vec::new(), Vec::new());
        let mut page_token = None;
        loop {
            let page = self
                .client
                .list_objects(&ListObjectsRequest {
                    bucket: self.bucket.clone(),
                    prefix: Some(prefix.to_owned()),
                    delimiter: delimiter.map(str::to_owned),
                    page_token: page_token.take(),
                    max_results: Some(1000),
                    ..ListObjectsRequest::default()
                })
                .await
                .map_err(classify)?;
            objects.extend(page.items.unwrap_or_default());
            dirs.extend(page.prefixes.unwrap_or_default());
            match page.next_page_token {
                Some(token) if !token.is_empty() => page_token = Some(token),
                _ => return Ok((objects, dirs)),
            }
        }
    }

    /// Joins `sources`, in order, into the object `dest` (atomically: GCS makes it whole).
    async fn compose(&self, sources: &[String], dest: &str) -> Result<()> {
        let request = ComposeObjectRequest {
            bucket: self.bucket.clone(),
            destination_object: dest.to_owned(),
            composing_targets: ComposingTargets {
                destination: Some(Object {
                    content_type: Some("application/octet-stream".to_owned()),
                    ..Object::default()
                }),
                source_objects: sources
                    .iter()
                    .map(|name| SourceObjects {
                        name: name.clone(),
                        ..SourceObjects::default()
                    })
                    .collect(),
            },
            ..ComposeObjectRequest::default()
        };
        let Err(err) = self.client.compose_object(&request).await.map_err(classify) else {
            return Ok(());
        };
        // A part is gone (GCS says 404, fake-gcs-server 500): a request racing from the same
        // state ended the write, and this state's bytes can no longer be published.
        for source in sources {
            if self.head(source).await?.is_none() {
                return Err(Error::Stale);
            }
        }
        Err(err)
    }
}

#[async_trait]
impl Cloud for Gcs {
    async fn head(&self, name: &str) -> Result<Option<ObjectMeta>> {
        match self
            .client
            .get_object(&self.object(name))
            .await
            .map_err(classify)
        {
            Ok(object) => Ok(Some(meta(&object))),
            Err(Error::NotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let range = match range {
            Some(range) => ByteRange(Some(range.start), Some(range.end - 1)),
            None => ByteRange::default(),
        };
        let stream = self
            .client
            .download_streamed_object(&self.object(name), &range)
            .await
            .map_err(classify)?;
        Ok(stream.map_err(io::Error::other).boxed())
    }

    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        let media = Media {
            content_length: Some(data.len() as u64),
            ..Media::new(name.to_owned())
        };
        let request = UploadObjectRequest {
            bucket: self.bucket.clone(),
            ..UploadObjectRequest::default()
        };
        self.client
            .upload_object(&request, data, &UploadType::Simple(media))
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        let (objects, dirs) = self.listing(dir, Some("/")).await?;
        let dirs = dirs
            .iter()
            .filter_map(|found| found.strip_prefix(dir))
            .map(|found| found.trim_end_matches('/').to_owned());
        let files = objects
            .iter()
            .filter_map(|object| object.name.strip_prefix(dir))
            .map(str::to_owned);
        Ok(dirs
            .chain(files)
            .filter(|found| !found.is_empty())
            .collect())
    }

    async fn list_all(&self, prefix: &str) -> Result<Vec<(String, ObjectMeta)>> {
        let (objects, _) = self.listing(prefix, None).await?;
        Ok(objects
            .iter()
            .map(|object| (object.name.clone(), meta(object)))
            .collect())
    }

    async fn delete(&self, names: Vec<String>) -> Result<()> {
        let deletes = names.into_iter().map(|object| {
            let request = DeleteObjectRequest {
                bucket: self.bucket.clone(),
                object,
                ..DeleteObjectRequest::default()
            };
            async move { gone_is_fine(self.client.delete_object(&request).await.map_err(classify)) }
        });
        let mut deleting = futures::stream::iter(deletes).buffer_unordered(DELETES_IN_FLIGHT);
        while let Some(result) = deleting.next().await {
            result?;
        }
        Ok(())
    }

    async fn signed_url(&self, name: &str, ttl: Duration) -> Result<String> {
        let options = SignedURLOptions {
            method: SignedURLMethod::GET,
            expires: ttl,
            ..SignedURLOptions::default()
        };
        self.client
            .signed_url(&self.bucket, name, None, None, options)
            .await
            .map_err(|err| Error::Io(io::Error::other(format!("signing a GCS URL: {err}"))))
    }

    async fn ping(&self) -> Result<()> {
        // A listing: a missing bucket fails it, as it should.
        match self.listing("_stowage_ping/", Some("/")).await {
            Ok(_) => Ok(()),
            Err(Error::NotFound) => {
                Err(Error::Io(io::Error::other("the GCS bucket does not exist")))
            }
            Err(err) => Err(err),
        }
    }

    async fn put_part(&self, name: &str, data: Bytes) -> Result<String> {
        let id = nonce();
        self.put(&part_name(name, &id), data).await?;
        Ok(id)
    }

    async fn assemble(&self, name: &str, ids: &[String], dest: &str, _size: u64) -> Result<()> {
        let parts: Vec<String> = ids.iter().map(|id| part_name(name, id)).collect();
        let mut sources = parts.clone();
        let mut made = Vec::new();
        // Rounds of 32 into intermediate objects, until one compose makes the destination.
        let mut round = 0;
        while sources.len() > COMPOSE_LIMIT {
            let mut next = Vec::new();
            for (index, group) in sources.chunks(COMPOSE_LIMIT).enumerate() {
                let joined = format!("{name}.compose-{round}-{index}");
                self.compose(group, &joined).await?;
                next.push(joined);
            }
            made.extend(next.iter().cloned());
            sources = next;
            round += 1;
        }
        self.compose(&sources, dest).await?;
        made.extend(parts);
        self.delete(made).await
    }

    async fn discard(&self, name: &str) -> Result<()> {
        let (dir, file) = split_parent(name);
        let (parts, joined) = (format!("{file}.part-"), format!("{file}.compose-"));
        let leftovers = self
            .list_dir(dir)
            .await?
            .into_iter()
            .filter(|found| found.starts_with(&parts) || found.starts_with(&joined))
            .map(|found| format!("{dir}{found}"))
            .collect();
        self.delete(leftovers).await
    }

    async fn copy(&self, from: &str, to: &str, _size: u64) -> Result<()> {
        // A rewrite may take several calls for a large object; each returns a token to go on.
        let mut rewrite_token = None;
        loop {
            let request = RewriteObjectRequest {
                source_bucket: self.bucket.clone(),
                source_object: from.to_owned(),
                destination_bucket: self.bucket.clone(),
                destination_object: to.to_owned(),
                rewrite_token: rewrite_token.take(),
                ..RewriteObjectRequest::default()
            };
            let rewritten = self
                .client
                .rewrite_object(&request)
                .await
                .map_err(classify)?;
            if rewritten.done {
                return Ok(());
            }
            rewrite_token = rewritten.rewrite_token;
            if rewrite_token.is_none() {
                return Err(Error::Io(io::Error::other(
                    "a GCS rewrite stopped without finishing",
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_sit_beside_their_write() {
        let name = "docker/registry/v2/repositories/a/_uploads/u1/data";
        assert_eq!(
            part_name(name, "ab12"),
            "docker/registry/v2/repositories/a/_uploads/u1/data.part-ab12"
        );
    }
}
