//! Blob uploads to a registry: a cross-repository mount when the blob is in a repository of the
//! same registry, one `PUT` for a blob up to a chunk, else `PATCH` chunks that resume, the next
//! chunk read from the source while one is sent.
//!
//! A chunked upload records its location and offset in a small file under the resume directory
//! after every chunk. When a chunk fails, or when a copy killed mid-blob is run again, the
//! client asks the registry where the upload stands (`GET` on the location) and goes on from
//! the registry's offset instead of starting over.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::{Method, StatusCode, Url, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::ends::{BlobOutcome, BlobStream, Source};
use super::error::CopyError;
use super::manifest::Descriptor;
use super::progress::Meter;
use super::registry::RegistryRepository;
use crate::client::repository_scope;

/// Chunks are this large unless `--chunk-size` or the registry's minimum says otherwise.
pub const DEFAULT_CHUNK_SIZE: u64 = 16 << 20;
/// How often one blob's upload may fail and resume before the copy gives up.
const RESUMES: u32 = 5;
const CHUNK_MIN_LENGTH: &str = "oci-chunk-min-length";

/// How blobs are uploaded.
#[derive(Clone, Default)]
pub struct Uploads {
    /// The chunk size asked for; `None` for the default.
    pub chunk_size: Option<u64>,
    /// Where interrupted uploads are recorded; `None` to record nothing.
    pub resume: Option<Arc<dyn ResumeRecords>>,
}

/// What a mount request did.
pub enum Mount {
    Mounted,
    /// The registry did not mount, but started an upload session at this location instead.
    Started(Url),
}

/// Asks the registry to link `descriptor` from repository `from` into this one.
pub async fn mount(
    repository: &RegistryRepository,
    descriptor: &Descriptor,
    from: &str,
) -> Result<Mount, CopyError> {
    let mut url = repository.url("blobs/uploads/").await?;
    url.query_pairs_mut()
        .append_pair("mount", &descriptor.digest.to_string())
        .append_pair("from", from);
    let mut scopes = repository.scopes().to_vec();
    scopes.push(repository_scope(from, "pull"));
    let response = repository
        .client()
        .send(&scopes, Method::POST, &url, false, |r| {
            r.header(header::CONTENT_LENGTH, 0)
        })
        .await?;
    match response.status() {
        StatusCode::CREATED => Ok(Mount::Mounted),
        StatusCode::ACCEPTED => Ok(Mount::Started(location(repository, &response).await?)),
        _ => Err(repository.error(response).await),
    }
}

/// Uploads `descriptor` from `source`, in an upload already `started` if there is one.
pub async fn upload(
    repository: &RegistryRepository,
    descriptor: &Descriptor,
    source: &dyn Source,
    meter: &Meter,
    started: Option<Url>,
) -> Result<BlobOutcome, CopyError> {
    let record = Record::for_blob(repository, descriptor);
    let resumed = match (&record, started.is_none()) {
        (Some(record), true) => match record.load().await {
            Some(saved) => status(repository, &saved).await.ok().flatten(),
            None => None,
        },
        _ => None,
    };
    let (mut location, mut offset, minimum) = match resumed {
        Some((location, offset)) => (location, offset, None),
        None => match started {
            Some(location) => (location, 0, None),
            None => start(repository).await?,
        },
    };
    let chunk = chunk_size(repository.uploads().chunk_size, minimum);

    if offset == 0 && descriptor.size <= chunk {
        let stream = meter.wrap(source.blob(descriptor, 0).await?);
        let body = ChunkReader::new(stream).read(descriptor.size).await?;
        finish(repository, descriptor, &location, body).await?;
        return Ok(BlobOutcome::Sent {
            bytes: descriptor.size,
        });
    }

    let mut sent = 0;
    let mut resumes = 0;
    meter.set_position(offset);
    let mut reader = ChunkReader::new(meter.wrap(source.blob(descriptor, offset).await?));
    // The chunk read while the one before it was sent: the source, and the rate limit that
    // paces it, never wait for the destination. Two chunks at most are held.
    let mut ahead: Option<Result<Bytes, CopyError>> = None;
    while offset < descriptor.size {
        let length = chunk.min(descriptor.size - offset);
        let body = match ahead.take() {
            Some(read) => read,
            None => reader.read(length).await,
        };
        let body = match body {
            Ok(body) => body,
            Err(err) => {
                // The source is corrupt or gone: nothing of it may become a blob.
                cancel(repository, &location).await;
                if let Some(record) = &record {
                    record.forget().await;
                }
                return Err(err);
            }
        };
        let next_length = chunk.min(descriptor.size - offset - length);
        let sent_chunk = if next_length > 0 {
            let (sent_chunk, next) = tokio::join!(
                patch(repository, &location, offset, body),
                reader.read(next_length)
            );
            ahead = Some(next);
            sent_chunk
        } else {
            patch(repository, &location, offset, body).await
        };
        match sent_chunk {
            Ok(next) => {
                location = next;
                offset += length;
                sent += length;
                if let Some(record) = &record {
                    record.save(&location, offset).await;
                }
            }
            Err(Chunk::Interrupted(err)) if resumes < RESUMES => {
                resumes += 1;
                tokio::time::sleep(Duration::from_millis(200 << resumes)).await;
                let Some((now, registry_offset)) = status(repository, &location).await? else {
                    return Err(err);
                };
                tracing::debug!(digest = %descriptor.digest, offset = registry_offset, "resuming upload");
                location = now;
                offset = registry_offset;
                ahead = None;
                meter.set_position(offset);
                reader = ChunkReader::new(meter.wrap(source.blob(descriptor, offset).await?));
            }
            Err(Chunk::Interrupted(err) | Chunk::Refused(err)) => return Err(err),
        }
    }
    finish(repository, descriptor, &location, Bytes::new()).await?;
    if let Some(record) = &record {
        record.forget().await;
    }
    Ok(BlobOutcome::Sent { bytes: sent })
}

/// The chunk size: what was asked for (or the default), at least the registry's minimum and a
/// multiple of it.
fn chunk_size(asked: Option<u64>, minimum: Option<u64>) -> u64 {
    let asked = asked.unwrap_or(DEFAULT_CHUNK_SIZE).max(1);
    match minimum.filter(|m| *m > 0) {
        Some(minimum) => asked.div_ceil(minimum) * minimum,
        None => asked,
    }
}

/// How a chunk failed: on the way (resume from the registry's offset) or refused outright.
enum Chunk {
    Interrupted(CopyError),
    Refused(CopyError),
}

/// `POST …/blobs/uploads/`: a new session's location, and the registry's minimum chunk.
async fn start(repository: &RegistryRepository) -> Result<(Url, u64, Option<u64>), CopyError> {
    let url = repository.url("blobs/uploads/").await?;
    let response = repository
        .send(Method::POST, &url, true, |r| {
            r.header(header::CONTENT_LENGTH, 0)
        })
        .await?;
    if response.status() != StatusCode::ACCEPTED {
        return Err(repository.error(response).await);
    }
    let minimum = response
        .headers()
        .get(CHUNK_MIN_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok((location(repository, &response).await?, 0, minimum))
}

/// `PATCH` one chunk at `offset`; the next location.
async fn patch(
    repository: &RegistryRepository,
    location: &Url,
    offset: u64,
    body: Bytes,
) -> Result<Url, Chunk> {
    let last = offset + body.len() as u64 - 1;
    let sent = repository
        .send(Method::PATCH, location, false, |r| {
            r.header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_RANGE, format!("{offset}-{last}"))
                .header(header::CONTENT_LENGTH, body.len())
                .body(body.clone())
        })
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) if err.is_transient() => return Err(Chunk::Interrupted(err)),
        Err(err) => return Err(Chunk::Refused(err)),
    };
    let status = response.status();
    if status != StatusCode::ACCEPTED {
        let err = repository.error(response).await;
        // A range the registry did not expect means it holds more, or less, than was thought.
        let interrupted = status.is_server_error()
            || status == StatusCode::RANGE_NOT_SATISFIABLE
            || status == StatusCode::TOO_MANY_REQUESTS;
        return Err(if interrupted {
            Chunk::Interrupted(err)
        } else {
            Chunk::Refused(err)
        });
    }
    location_of(repository, &response, location)
        .await
        .map_err(Chunk::Refused)
}

/// `PUT …?digest=`: the upload becomes the blob, with `body` as its last bytes.
async fn finish(
    repository: &RegistryRepository,
    descriptor: &Descriptor,
    location: &Url,
    body: Bytes,
) -> Result<(), CopyError> {
    let mut url = location.clone();
    url.query_pairs_mut()
        .append_pair("digest", &descriptor.digest.to_string());
    let response = repository
        .send(Method::PUT, &url, false, |r| {
            r.header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, body.len())
                .body(body.clone())
        })
        .await?;
    if response.status() != StatusCode::CREATED {
        return Err(repository.error(response).await);
    }
    Ok(())
}

/// Where an upload stands: its current location and offset, or `None` if it is gone.
async fn status(
    repository: &RegistryRepository,
    location: &Url,
) -> Result<Option<(Url, u64)>, CopyError> {
    let response = repository.send(Method::GET, location, true, |r| r).await?;
    match response.status() {
        StatusCode::NO_CONTENT | StatusCode::OK => {}
        StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => return Ok(None),
        _ => return Err(repository.error(response).await),
    }
    // `Range: 0-<last byte>`; `0-0` is what registries answer for an empty upload.
    let offset = response
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('-'))
        .and_then(|(_, last)| last.parse::<u64>().ok())
        .map_or(0, |last| if last == 0 { 0 } else { last + 1 });
    Ok(Some((
        location_of(repository, &response, location).await?,
        offset,
    )))
}

/// Abandons an upload (best effort: a registry purges stale sessions anyway).
async fn cancel(repository: &RegistryRepository, location: &Url) {
    let _ = repository
        .send(Method::DELETE, location, false, |r| r)
        .await;
}

async fn location(
    repository: &RegistryRepository,
    response: &reqwest::Response,
) -> Result<Url, CopyError> {
    let value = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            CopyError::Registry(format!(
                "{}: an upload without a Location",
                repository.client().host()
            ))
        })?;
    Ok(repository.client().resolve(value).await?)
}

/// The response's `Location`, or `current` when it sent none.
async fn location_of(
    repository: &RegistryRepository,
    response: &reqwest::Response,
    current: &Url,
) -> Result<Url, CopyError> {
    if response.headers().contains_key(header::LOCATION) {
        location(repository, response).await
    } else {
        Ok(current.clone())
    }
}

/// Reads a stream in pieces of exactly the length asked for.
struct ChunkReader {
    stream: BlobStream,
    leftover: Bytes,
}

impl ChunkReader {
    fn new(stream: BlobStream) -> Self {
        Self {
            stream,
            leftover: Bytes::new(),
        }
    }

    async fn read(&mut self, length: u64) -> Result<Bytes, CopyError> {
        let length =
            usize::try_from(length).map_err(|_| CopyError::Usage("chunk too large".into()))?;
        if self.leftover.len() >= length {
            return Ok(self.leftover.split_to(length));
        }
        let mut buffer = BytesMut::with_capacity(length);
        while buffer.len() < length {
            if self.leftover.is_empty() {
                self.leftover = match self.stream.next().await {
                    Some(chunk) => chunk?,
                    None => {
                        return Err(CopyError::Verification(format!(
                            "the source ended {} bytes early",
                            length - buffer.len()
                        )));
                    }
                };
            }
            let take = (length - buffer.len()).min(self.leftover.len());
            buffer.extend_from_slice(&self.leftover.split_to(take));
        }
        Ok(buffer.freeze())
    }
}

/// Where interrupted uploads are recorded, so a later attempt resumes them: files for
/// `stowage copy` ([`ResumeDir`]), the registry's own storage for replication, where any
/// replica resumes what another began. A record holds an upload's location, its capability:
/// keep it private. Recording is best effort: without a record a blob starts over, nothing
/// worse.
#[async_trait]
pub trait ResumeRecords: Send + Sync {
    /// The location saved under `key`, if any.
    async fn load(&self, key: &str) -> Option<Url>;
    async fn save(&self, key: &str, location: &Url, offset: u64);
    async fn forget(&self, key: &str);
}

/// What a record holds.
#[derive(Serialize, Deserialize)]
pub struct Saved {
    pub location: String,
    pub offset: u64,
}

/// Records as files in a directory, readable by their owner only.
#[derive(Debug, Clone)]
pub struct ResumeDir(pub PathBuf);

#[async_trait]
impl ResumeRecords for ResumeDir {
    async fn load(&self, key: &str) -> Option<Url> {
        let text = std::fs::read(self.path(key)).ok()?;
        let saved: Saved = serde_json::from_slice(&text).ok()?;
        Url::parse(&saved.location).ok()
    }

    async fn save(&self, key: &str, location: &Url, offset: u64) {
        let saved = Saved {
            location: location.to_string(),
            offset,
        };
        let path = self.path(key);
        if let Err(err) = write_private(&path, &saved) {
            tracing::debug!(path = %path.display(), %err, "cannot record the upload for resuming");
        }
    }

    async fn forget(&self, key: &str) {
        let _ = std::fs::remove_file(self.path(key));
    }
}

impl ResumeDir {
    fn path(&self, key: &str) -> PathBuf {
        self.0.join(format!("{key}.json"))
    }
}

/// The record of one blob's upload into one repository.
struct Record<'a> {
    records: &'a dyn ResumeRecords,
    key: String,
}

impl<'a> Record<'a> {
    fn for_blob(repository: &'a RegistryRepository, descriptor: &Descriptor) -> Option<Self> {
        let records = repository.uploads().resume.as_deref()?;
        let key = Sha256::digest(format!(
            "{}/{}@{}",
            repository.client().host(),
            repository.repository(),
            descriptor.digest
        ));
        Some(Self {
            records,
            key: key.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    async fn load(&self) -> Option<Url> {
        self.records.load(&self.key).await
    }

    async fn save(&self, location: &Url, offset: u64) {
        self.records.save(&self.key, location, offset).await;
    }

    async fn forget(&self) {
        self.records.forget(&self.key).await;
    }
}

/// Writes `saved` readable by its owner only (the location is the upload's capability).
fn write_private(path: &Path, saved: &Saved) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&serde_json::to_vec(saved)?)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_registry_minimum() {
        assert_eq!(chunk_size(None, None), DEFAULT_CHUNK_SIZE);
        assert_eq!(chunk_size(Some(1000), Some(300)), 1200);
        assert_eq!(chunk_size(Some(100), Some(300)), 300);
        assert_eq!(chunk_size(Some(0), None), 1);
    }

    #[tokio::test]
    async fn chunk_reader_cuts_exact_pieces() {
        let parts = ["abc", "defgh", "", "ij"].map(|p| Ok(Bytes::from_static(p.as_bytes())));
        let mut reader = ChunkReader::new(futures::stream::iter(parts).boxed());
        assert_eq!(reader.read(2).await.unwrap(), "ab");
        assert_eq!(reader.read(5).await.unwrap(), "cdefg");
        assert_eq!(reader.read(3).await.unwrap(), "hij");
        assert!(matches!(
            reader.read(1).await,
            Err(CopyError::Verification(_))
        ));
    }
}
