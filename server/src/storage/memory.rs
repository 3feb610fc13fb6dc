//! An in-memory backend for tests and benchmarks. Nothing survives the process.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{
    BlobStore, ByteStream, Checkpoint, Error, ObjectInfo, ObjectMeta, Result, WriteState,
    checkpoint_at, stream_of,
};

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<String, (Bytes, SystemTime)>,
    /// Resumable writes: their generation (the state's `backend`) and bytes.
    writes: BTreeMap<String, (u64, BytesMut)>,
    next_generation: u64,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated, so recover.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// The write at `key` if `state` is its latest state.
    fn current_write(&mut self, key: &str, state: &WriteState) -> Result<&mut BytesMut> {
        let (generation, data) = self.writes.get_mut(key).ok_or(Error::NotFound)?;
        if state.backend != generation.to_be_bytes() || (data.len() as u64) < state.size {
            return Err(Error::Stale);
        }
        data.truncate(state.size as usize);
        Ok(data)
    }
}

#[async_trait]
impl BlobStore for MemoryStore {
    async fn stat(&self, key: &str) -> Result<ObjectMeta> {
        let inner = self.lock();
        let (data, modified) = inner.objects.get(key).ok_or(Error::NotFound)?;
        Ok(ObjectMeta {
            size: data.len() as u64,
            modified: *modified,
        })
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let data = self
            .lock()
            .objects
            .get(key)
            .ok_or(Error::NotFound)?
            .0
            .clone();
        let range = range.unwrap_or(0..data.len() as u64);
        let end = (range.end as usize).min(data.len());
        let start = (range.start as usize).min(end);
        Ok(stream_of(data.slice(start..end)))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.lock()
            .objects
            .insert(key.to_owned(), (data, SystemTime::now()));
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        let inner = self.lock();
        let children: BTreeSet<String> = below(&inner.objects, &dir)
            .map(|(key, _)| key)
            .chain(below(&inner.writes, &dir).map(|(key, _)| key))
            .filter_map(|key| key.strip_prefix(&dir))
            .filter_map(|rest| rest.split('/').next())
            .map(str::to_owned)
            .collect();
        if children.is_empty() {
            return Err(Error::NotFound);
        }
        Ok(children.into_iter().collect())
    }

    async fn walk(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        let inner = self.lock();
        Ok(below(&inner.objects, &dir)
            .filter_map(|(key, (data, modified))| {
                let key = key.strip_prefix(&dir)?.to_owned();
                Some(ObjectInfo {
                    key,
                    size: data.len() as u64,
                    modified: *modified,
                })
            })
            .collect())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut inner = self.lock();
        let object = inner.objects.remove(from).ok_or(Error::NotFound)?;
        inner.objects.insert(to.to_owned(), object);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let dir = format!("{}/", key.trim_end_matches('/'));
        let mut inner = self.lock();
        let doomed: Vec<String> = below(&inner.objects, &dir)
            .map(|(k, _)| k.clone())
            .chain(below(&inner.writes, &dir).map(|(k, _)| k.clone()))
            .collect();
        for k in doomed.iter().map(String::as_str).chain([key]) {
            inner.objects.remove(k);
            inner.writes.remove(k);
        }
        Ok(())
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        let mut inner = self.lock();
        for key in keys {
            inner.objects.remove(key);
        }
        Ok(())
    }

    async fn presigned_get_url(&self, _key: &str, _ttl: Duration) -> Result<Option<String>> {
        Ok(None)
    }

    async fn create_resumable(&self, key: &str) -> Result<WriteState> {
        let mut inner = self.lock();
        let generation = inner.generation();
        inner
            .writes
            .insert(key.to_owned(), (generation, BytesMut::new()));
        Ok(WriteState {
            size: 0,
            backend: generation.to_be_bytes().to_vec(),
        })
    }

    async fn append_with_checkpoint(
        &self,
        key: &str,
        state: &WriteState,
        body: ByteStream,
        checkpoint: Option<&dyn Checkpoint>,
    ) -> Result<WriteState> {
        self.lock().current_write(key, state)?;
        // Collect outside the lock; a concurrent append is caught by the second check below.
        let mut incoming = BytesMut::new();
        let mut body = body;
        while let Some(chunk) = body.next().await {
            incoming.extend_from_slice(&chunk.map_err(Error::Body)?);
        }
        let generation = self.lock().generation();
        let next = WriteState {
            size: state.size + incoming.len() as u64,
            backend: generation.to_be_bytes().to_vec(),
        };
        checkpoint_at(checkpoint, &next).await?;
        let mut inner = self.lock();
        inner
            .current_write(key, state)?
            .extend_from_slice(&incoming);
        let entry = inner.writes.get_mut(key).ok_or(Error::NotFound)?;
        entry.0 = generation;
        Ok(next)
    }

    async fn is_current(&self, key: &str, state: &WriteState) -> Result<bool> {
        Ok(self
            .lock()
            .writes
            .get(key)
            .is_some_and(|(generation, data)| {
                state.backend == generation.to_be_bytes() && data.len() as u64 >= state.size
            }))
    }

    async fn commit_resumable(&self, key: &str, state: &WriteState, dest: &str) -> Result<()> {
        let mut inner = self.lock();
        let data = inner.current_write(key, state)?.split().freeze();
        inner.writes.remove(key);
        inner
            .objects
            .insert(dest.to_owned(), (data, SystemTime::now()));
        Ok(())
    }

    async fn abort_resumable(&self, key: &str) -> Result<()> {
        self.lock().writes.remove(key);
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

/// The entries of `map` below directory `dir` (which ends in `/`), by a range scan: a
/// listing costs what it returns, as it does on a real backend.
fn below<'a, V>(
    map: &'a BTreeMap<String, V>,
    dir: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    map.range::<str, _>((std::ops::Bound::Included(dir), std::ops::Bound::Unbounded))
        .take_while(move |(key, _)| key.starts_with(dir))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run_all(&super::MemoryStore::default()).await;
    }
}
