//! The S3 backend (aws-sdk-s3): any replica reads and writes the same bucket, in Distribution's
//! layout under an optional root prefix (Distribution's `rootdirectory`).
//!
//! Resumable writes (uploads) are multipart uploads: see [`multipart`].

mod multipart;
mod parts;
mod ranges;

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    retry::RetryConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{
    BlobStore, ByteStream, Checkpoint, DELETE_BATCH, Error, ObjectInfo, ObjectMeta, Result,
    Timeouts, WriteState, plain,
};

/// S3 refuses smaller parts (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Parts one upload sends at once, unless configured otherwise.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 4;
/// Bytes of parts in flight beyond each upload's first, across all uploads of the process.
pub const PART_BUDGET: u64 = 256 * 1024 * 1024;
/// The largest object a single CopyObject or UploadPartCopy may copy.
const MAX_COPY_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Where the bucket is and how to reach it.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// A custom endpoint (Garage, MinIO, …); `None` for AWS.
    pub endpoint: Option<String>,
    pub path_style: bool,
    /// Keys are stored below this prefix (Distribution's `rootdirectory`).
    pub root_prefix: String,
    /// Static credentials; `None` uses the SDK's default chain (env, files, web identity, IMDS).
    pub credentials: Option<(String, String)>,
    /// Bytes buffered per upload before they become a multipart part.
    pub part_size: u64,
    /// Parts one upload sends at once.
    pub upload_concurrency: usize,
    /// Answer blob GETs with a redirect to a presigned URL.
    pub redirect: bool,
    /// How long each call may take.
    pub timeouts: Timeouts,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("root_prefix", &self.root_prefix)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<static>"),
            )
            .field("part_size", &self.part_size)
            .field("upload_concurrency", &self.upload_concurrency)
            .field("redirect", &self.redirect)
            .finish()
    }
}

/// Objects in one S3 bucket.
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: u64,
    redirect: bool,
    /// Objects larger than this are copied in parts; S3's own limit outside tests.
    copy_limit: u64,
    timeouts: Timeouts,
    /// Parts one upload sends at once.
    parts_in_flight: usize,
    /// Parts in flight beyond each upload's first, across all uploads.
    part_budget: Arc<tokio::sync::Semaphore>,
    /// Blocks of large reads held beyond each read's first, across all reads.
    read_budget: Arc<tokio::sync::Semaphore>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The SDK's limits for a call that sends or copies `bytes`: an attempt gets half the request
/// limit plus the time the bytes take at the minimum throughput; the call, two attempts' worth.
fn timeout_config(timeouts: &Timeouts, bytes: u64) -> TimeoutConfig {
    let transfer = timeouts.for_bytes(bytes).saturating_sub(timeouts.request);
    let attempt = timeouts.attempt().saturating_add(transfer);
    TimeoutConfig::builder()
        .connect_timeout(timeouts.connect())
        .read_timeout(attempt)
        .operation_attempt_timeout(attempt)
        .operation_timeout(timeouts.request.saturating_add(transfer.saturating_mul(2)))
        .build()
}

/// Sorts SDK failures into what callers act on: missing, unavailable (retry later), or broken.
// By value so it reads as `.map_err(classify)`.
#[allow(clippy::needless_pass_by_value)]
fn classify<E>(err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let describe = |err: &SdkError<E, HttpResponse>| match err {
        // The service's own code and message.
        SdkError::ServiceError(_) => {
            format!("{}", aws_sdk_s3::error::DisplayErrorContext(err))
        }
        // Timeouts and connection failures, in words rather than the SDK's structures.
        _ => plain(err),
    };
    if let SdkError::ServiceError(service) = &err
        && matches!(
            service.err().code(),
            Some("NoSuchKey" | "NotFound" | "NoSuchUpload")
        )
    {
        return Error::NotFound;
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    match (&err, status) {
        (_, Some(404)) => Error::NotFound,
        // Unreachable, too slow, overloaded, or answering garbage: worth retrying later.
        (
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_),
            _,
        )
        | (_, Some(429 | 500 | 502 | 503 | 504)) => Error::Unavailable(describe(&err)),
        // Refused credentials, a missing bucket, a request we built wrong: an operator's problem.
        _ => Error::Io(io::Error::other(describe(&err))),
    }
}

impl S3Store {
    /// Connects to the bucket; fails fast (and the replica reports not ready) while S3 is down.
    pub async fn open(config: &S3Config) -> Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        if let Some((id, secret)) = &config.credentials {
            loader =
                loader.credentials_provider(Credentials::new(id, secret, None, None, "stowage"));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            // Parts carry an explicit SHA-256; other requests need no extra checksum work.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Standard retries, bounded: two attempts, each within half the request limit.
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(timeout_config(&config.timeouts, 0));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let prefix = config.root_prefix.trim_matches('/');
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            part_size: config.part_size.max(MIN_PART_SIZE),
            parts_in_flight: config.upload_concurrency.max(1),
            read_budget: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(PART_BUDGET / ranges::BLOCK).unwrap_or(1),
            )),
            part_budget: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(PART_BUDGET / config.part_size.max(MIN_PART_SIZE))
                    .unwrap_or(1)
                    .max(1),
            )),
            redirect: config.redirect,
            timeouts: config.timeouts,
            copy_limit: MAX_COPY_SIZE,
        })
    }

    /// Copies objects above `limit` bytes (at least S3's 5 MiB minimum part) in parts, so tests
    /// can take the multipart-copy path without a 5 GiB blob.
    pub fn with_copy_limit(mut self, limit: u64) -> Self {
        self.copy_limit = limit.max(MIN_PART_SIZE);
        self
    }

    fn key(&self, key: &str) -> Result<String> {
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

    fn copy_source(&self, full_key: &str) -> String {
        let encoded: String = full_key
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        format!("{}/{encoded}", self.bucket)
    }

    /// A per-call override giving a call that moves `bytes` the time they take.
    fn sized(&self, bytes: u64) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default().timeout_config(timeout_config(&self.timeouts, bytes))
    }

    async fn put_bytes(&self, full_key: &str, data: Bytes) -> Result<()> {
        let bytes = data.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full_key)
            .body(S3Body::from(data))
            .customize()
            .config_override(self.sized(bytes))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn read_all(&self, full_key: &str) -> Result<BytesMut> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full_key)
            .send()
            .await
            .map_err(classify)?;
        let limit = self.timeouts.for_bytes(self.part_size);
        let data = tokio::time::timeout(limit, output.body.collect())
            .await
            .map_err(|_| Error::Unavailable(format!("reading {full_key} took over {limit:?}")))?
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(BytesMut::from(data.into_bytes().as_ref()))
    }

    /// Every full key below `prefix` (a full key ending in `/`).
    async fn keys_below(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify)?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        Ok(keys)
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(io::Error::other)?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(io::Error::other)?;
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    /// Server-side copy of `size` bytes from `from` to `to`, in parts above the copy limit.
    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        if size <= self.copy_limit {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(self.copy_source(from))
                .customize()
                .config_override(self.sized(size))
                .send()
                .await
                .map_err(classify)?;
            return Ok(());
        }
        let upload_id = self.create_multipart(to, None).await?;
        let mut parts = Vec::new();
        // Parts of equal size, so none is tiny: Garage refuses to copy a small last part.
        let count = size.div_ceil(self.copy_limit);
        for index in 0..count {
            let start = size * index / count;
            let end = size * (index + 1) / count - 1;
            let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
            let copied = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(to)
                .upload_id(&upload_id)
                .part_number(number)
                .copy_source(self.copy_source(from))
                .copy_source_range(format!("bytes={start}-{end}"))
                .customize()
                .config_override(self.sized(end + 1 - start))
                .send()
                .await
                .map_err(classify)?;
            let etag = copied
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .map(str::to_owned);
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(etag)
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(to)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(self.sized(size))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// The size of the object at `full_key`, or `None` when there is none.
    async fn head_size(&self, full_key: &str) -> Result<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full_key)
            .send()
            .await
            .map_err(classify)
        {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(Error::NotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn stat(&self, key: &str) -> Result<ObjectMeta> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(key)?)
            .send()
            .await
            .map_err(classify)?;
        let modified = head
            .last_modified()
            .and_then(|t| std::time::SystemTime::try_from(*t).ok())
            .unwrap_or(std::time::UNIX_EPOCH);
        Ok(ObjectMeta {
            size: head.content_length().unwrap_or(0).max(0) as u64,
            modified,
        })
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key)?);
        match range {
            Some(range) if range.is_empty() => return Ok(futures::stream::empty().boxed()),
            Some(range) if range.end - range.start >= ranges::THRESHOLD => {
                // The first block is asked for here, so a missing object fails the call.
                let head = ranges::first_block(&range);
                let first = request
                    .range(format!("bytes={}-{}", head.start, head.end - 1))
                    .send()
                    .await
                    .map_err(classify)?;
                return Ok(ranges::read(
                    self.client.clone(),
                    self.bucket.clone(),
                    self.key(key)?,
                    range,
                    first,
                    Arc::clone(&self.read_budget),
                ));
            }
            Some(range) => {
                request = request.range(format!("bytes={}-{}", range.start, range.end - 1))
            }
            None => {}
        }
        let output = request.send().await.map_err(classify)?;
        let stream = futures::stream::unfold(output.body, |mut body| async move {
            match body.next().await {
                Some(Ok(bytes)) => Some((Ok(bytes), body)),
                Some(Err(err)) => Some((Err(io::Error::other(err)), body)),
                None => None,
            }
        });
        Ok(stream.boxed())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_bytes(&self.key(key)?, data).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = format!("{}/", self.key(prefix.trim_end_matches('/'))?);
        let mut names = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&dir)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify)?;
            let dirs = page.common_prefixes().iter().filter_map(|p| p.prefix());
            let files = page.contents().iter().filter_map(|o| o.key());
            for full in dirs.chain(files) {
                if let Some(name) = full.strip_prefix(&dir).map(|n| n.trim_end_matches('/'))
                    && !name.is_empty()
                {
                    names.push(name.to_owned());
                }
            }
        }
        if names.is_empty() {
            return Err(Error::NotFound);
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    async fn walk(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir = format!("{}/", self.key(prefix.trim_end_matches('/'))?);
        let mut found = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&dir)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify)?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&dir)) else {
                    continue;
                };
                let modified = object
                    .last_modified()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                    .unwrap_or(std::time::UNIX_EPOCH);
                let size = object.size().unwrap_or(0).max(0) as u64;
                found.push(ObjectInfo {
                    key: key.to_owned(),
                    size,
                    modified,
                });
            }
        }
        Ok(found)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (self.key(from)?, self.key(to)?);
        let size = self.head_size(&from).await?.ok_or(Error::NotFound)?;
        self.copy(&from, &to, size).await?;
        self.delete_keys(vec![from]).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.key(key)?;
        let mut keys = self.keys_below(&format!("{full}/")).await?;
        keys.push(full);
        self.delete_keys(keys).await
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        let keys = keys
            .iter()
            .map(|k| self.key(k))
            .collect::<Result<Vec<_>>>()?;
        self.delete_keys(keys).await
    }

    async fn presigned_get_url(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        if !self.redirect {
            return Ok(None);
        }
        let presigning = PresigningConfig::expires_in(ttl).map_err(io::Error::other)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key)?)
            .presigned(presigning)
            .await
            .map_err(classify)?;
        Ok(Some(request.uri().to_owned()))
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
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}
