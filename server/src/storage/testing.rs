//! Backends for tests that misbehave on demand.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BlobStore, ByteStream, Checkpoint, MemoryStore, ObjectInfo, ObjectMeta, Result, WriteState,
};

/// A backend that hangs on every call while `hung` is set.
#[derive(Debug, Default)]
pub(crate) struct Hangs {
    pub(crate) hung: AtomicBool,
    store: MemoryStore,
}

impl Hangs {
    async fn maybe_hang(&self) {
        if self.hung.load(Ordering::SeqCst) {
            futures::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl BlobStore for Hangs {
    async fn stat(&self, key: &str) -> Result<ObjectMeta> {
        self.maybe_hang().await;
        self.store.stat(key).await
    }
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        self.maybe_hang().await;
        self.store.get(key, range).await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.maybe_hang().await;
        self.store.put(key, data).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.store.list(prefix).await
    }
    async fn walk(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.store.walk(prefix).await
    }
    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.store.rename(from, to).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.store.delete(key).await
    }
    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        self.store.delete_objects(keys).await
    }
    async fn presigned_get_url(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        self.store.presigned_get_url(key, ttl).await
    }
    async fn create_resumable(&self, key: &str) -> Result<WriteState> {
        self.store.create_resumable(key).await
    }
    async fn append_with_checkpoint(
        &self,
        key: &str,
        state: &WriteState,
        body: ByteStream,
        checkpoint: Option<&dyn Checkpoint>,
    ) -> Result<WriteState> {
        self.store
            .append_with_checkpoint(key, state, body, checkpoint)
            .await
    }
    async fn is_current(&self, key: &str, state: &WriteState) -> Result<bool> {
        self.store.is_current(key, state).await
    }
    async fn commit_resumable(&self, key: &str, state: &WriteState, dest: &str) -> Result<()> {
        self.store.commit_resumable(key, state, dest).await
    }
    async fn abort_resumable(&self, key: &str) -> Result<()> {
        self.store.abort_resumable(key).await
    }
    async fn ping(&self) -> Result<()> {
        self.maybe_hang().await;
        Ok(())
    }
}
