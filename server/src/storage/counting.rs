//! A store that counts the requests made through it, for reports and benchmarks.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobStore, ByteStream, Checkpoint, ObjectInfo, ObjectMeta, Result, WriteState};

/// Keys in one page of an S3 `ListObjectsV2` answer.
pub const LIST_PAGE: usize = 1000;

/// Wraps a store and counts every call made through it.
#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn BlobStore>,
    requests: AtomicU64,
}

impl Counting {
    pub fn new(inner: Arc<dyn BlobStore>) -> Self {
        Self {
            inner,
            requests: AtomicU64::new(0),
        }
    }

    /// Calls made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A listing counts as the pages S3 would answer it in ([`LIST_PAGE`] keys each, one at
    /// least), so a count means the same on every backend: listing a million objects is a
    /// thousand requests, not one.
    fn count_pages(&self, listed: usize) {
        let pages = listed.div_ceil(LIST_PAGE).max(1);
        self.requests.fetch_add(pages as u64, Ordering::Relaxed);
    }

    fn count(&self) -> &dyn BlobStore {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.as_ref()
    }
}

#[async_trait]
impl BlobStore for Counting {
    async fn stat(&self, key: &str) -> Result<ObjectMeta> {
        self.count().stat(key).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        self.count().get(key, range).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.count().put(key, data).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let listed = self.inner.list(prefix).await?;
        self.count_pages(listed.len());
        Ok(listed)
    }

    async fn walk(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let walked = self.inner.walk(prefix).await?;
        self.count_pages(walked.len());
        Ok(walked)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.count().rename(from, to).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.count().delete(key).await
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        self.count().delete_objects(keys).await
    }

    async fn presigned_get_url(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        self.count().presigned_get_url(key, ttl).await
    }

    async fn create_resumable(&self, key: &str) -> Result<WriteState> {
        self.count().create_resumable(key).await
    }

    async fn append_with_checkpoint(
        &self,
        key: &str,
        state: &WriteState,
        body: ByteStream,
        checkpoint: Option<&dyn Checkpoint>,
    ) -> Result<WriteState> {
        self.count()
            .append_with_checkpoint(key, state, body, checkpoint)
            .await
    }

    async fn is_current(&self, key: &str, state: &WriteState) -> Result<bool> {
        self.count().is_current(key, state).await
    }

    async fn commit_resumable(&self, key: &str, state: &WriteState, dest: &str) -> Result<()> {
        self.count().commit_resumable(key, state, dest).await
    }

    async fn abort_resumable(&self, key: &str) -> Result<()> {
        self.count().abort_resumable(key).await
    }

    async fn ping(&self) -> Result<()> {
        self.count().ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    #[tokio::test]
    async fn a_listing_counts_as_the_pages_s3_would_answer() {
        let counting = Counting::new(Arc::new(MemoryStore::default()));
        counting.walk("empty/").await.unwrap();
        assert_eq!(
            counting.requests(),
            1,
            "an empty listing is still a request"
        );
        for n in 0..2500 {
            counting
                .put(&format!("many/{n:05}"), Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        let before = counting.requests();
        assert_eq!(counting.walk("many/").await.unwrap().len(), 2500);
        assert_eq!(counting.requests() - before, 3);
        counting.list("many/").await.unwrap();
        assert_eq!(counting.requests() - before, 6);
    }
}
