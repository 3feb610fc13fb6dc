//! Resumable writes on Azure and GCS.
//!
//! Bytes are buffered up to the part size. Full parts are stored by the cloud's [`Parts`] (Azure:
//! uncommitted blocks of the write's blob; GCS: part objects), several at once, each under a
//! fresh random id, so two requests racing with the same state never overwrite each other's
//! parts. Bytes short of a part, and the ids of the parts so far in order, are kept in a *tail*
//! object named by a fresh nonce on every append:
//!
//! ```text
//! <key>.tail-<nonce>   u32 (big-endian) header length | header: ["<part id>", …] | bytes
//! ```
//!
//! The [`WriteState`] names the tail and records its length, the number of parts and a hash
//! over their ids, so:
//! - any replica can continue the write: the state and the tail it names are all it needs;
//! - an older state names a tail that no longer exists, so it is refused as stale;
//! - a tail is written once, by the one request that chose its nonce, and the state's hash
//!   vouches for its list: a commit publishes exactly the parts its state describes, never those
//!   of a request that raced it from the same state (on S3 the chain of part checksums does
//!   this; here the parts' names do).
//!
//! A commit stores the tail's bytes as the last part and has the cloud join the parts into the
//! destination (Azure: a block list, then a copy; GCS: a compose straight into it), so no byte
//! travels back through the registry.

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::AbortOnDropHandle;

use super::{Cloud, CloudStore, split_parent};
use crate::storage::{ByteStream, Checkpoint, Error, Result, WriteState, checkpoint_at, nonce};

/// The most parts one write may have: Azure's limit of committed blocks per blob.
const MAX_PARTS: usize = 50_000;

/// The backend part of a resumable write's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TailRef {
    /// Nonce naming the tail object; fresh on every append.
    #[serde(rename = "t")]
    nonce: String,
    /// The tail object's length in bytes.
    #[serde(rename = "l")]
    len: u64,
    /// Parts stored so far.
    #[serde(rename = "p")]
    parts: usize,
    /// sha256 over the parts' ids, in order.
    #[serde(rename = "h")]
    hash: String,
}

impl TailRef {
    fn decode(state: &WriteState) -> Result<Self> {
        state.backend()
    }

    fn encode(&self, size: u64) -> WriteState {
        WriteState::with_backend(size, self)
    }
}

/// What a tail object holds.
struct Tail {
    ids: Vec<String>,
    bytes: Bytes,
}

fn ids_hash(ids: &[String]) -> String {
    let mut hasher = Sha256::new();
    for id in ids {
        hasher.update((id.len() as u32).to_be_bytes());
        hasher.update(id.as_bytes());
    }
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

impl Tail {
    fn encode(&self) -> Bytes {
        let header = serde_json::to_vec(&self.ids).unwrap_or_default();
        let mut out = BytesMut::with_capacity(4 + header.len() + self.bytes.len());
        out.put_u32(u32::try_from(header.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.bytes);
        out.freeze()
    }

    /// Reads a tail back, checking it against the state that names it.
    fn decode(mut object: Bytes, state: &TailRef) -> Result<Self> {
        if object.len() as u64 != state.len || object.len() < 4 {
            return Err(Error::Stale);
        }
        let header_len = object.get_u32() as usize;
        if header_len > object.len() {
            return Err(Error::Stale);
        }
        let header = object.split_to(header_len);
        let ids: Vec<String> = serde_json::from_slice(&header).map_err(|_| Error::Stale)?;
        let well_formed = ids
            .iter()
            .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()));
        if ids.len() != state.parts || ids_hash(&ids) != state.hash || !well_formed {
            return Err(Error::Stale);
        }
        Ok(Self { ids, bytes: object })
    }
}

/// The parts of one append on their way to the cloud, several at once. An upload has at most
/// `limit` in flight; beyond its first, each also takes a permit from a budget the whole
/// process shares, so memory stays bounded however many uploads run. Dropping it cancels them.
struct PartsInFlight {
    sending: VecDeque<AbortOnDropHandle<Result<String>>>,
    limit: usize,
    budget: Arc<Semaphore>,
}

impl PartsInFlight {
    fn new(limit: usize, budget: Arc<Semaphore>) -> Self {
        Self {
            sending: VecDeque::new(),
            limit: limit.max(1),
            budget,
        }
    }

    /// Starts storing `data` as a part of the write at `key`; ids reach `done` in order.
    async fn send(
        &mut self,
        cloud: &Arc<dyn Cloud>,
        name: &str,
        data: Bytes,
        limit: std::time::Duration,
        done: &mut Vec<String>,
    ) -> Result<()> {
        let permit: Option<OwnedSemaphorePermit> = loop {
            if self.sending.is_empty() {
                break None;
            }
            if self.sending.len() < self.limit
                && let Ok(permit) = Arc::clone(&self.budget).try_acquire_owned()
            {
                break Some(permit);
            }
            self.finish_oldest(done).await?;
        };
        let (cloud, name) = (Arc::clone(cloud), name.to_owned());
        let task = tokio::spawn(async move {
            let _permit = permit;
            tokio::time::timeout(limit, cloud.put_part(&name, data))
                .await
                .map_err(|_| Error::Unavailable(format!("storing a part took over {limit:?}")))?
        });
        self.sending.push_back(AbortOnDropHandle::new(task));
        Ok(())
    }

    async fn finish(mut self, done: &mut Vec<String>) -> Result<()> {
        while !self.sending.is_empty() {
            self.finish_oldest(done).await?;
        }
        Ok(())
    }

    async fn finish_oldest(&mut self, done: &mut Vec<String>) -> Result<()> {
        let Some(task) = self.sending.pop_front() else {
            return Ok(());
        };
        let id = task
            .await
            .map_err(|err| std::io::Error::other(format!("part upload task failed: {err}")))??;
        done.push(id);
        Ok(())
    }
}

impl CloudStore {
    fn tail_name(&self, key: &str, nonce: &str) -> Result<String> {
        self.name(&format!("{key}.tail-{nonce}"))
    }

    /// The tail `state` names, or why it is missing: a newer state replaced it, or the write
    /// is gone.
    async fn read_tail(&self, key: &str, state: &TailRef) -> Result<Tail> {
        match self.read_object(&self.tail_name(key, &state.nonce)?).await {
            Ok(object) => Tail::decode(object, state),
            Err(Error::NotFound) => Err(self.missing_tail(key).await?),
            Err(err) => Err(err),
        }
    }

    async fn missing_tail(&self, key: &str) -> Result<Error> {
        Ok(if self.tails_of(key).await?.is_empty() {
            Error::NotFound
        } else {
            Error::Stale
        })
    }

    /// Every tail object of the write at `key`.
    async fn tails_of(&self, key: &str) -> Result<Vec<String>> {
        let name = self.name(key)?;
        let (dir, file) = split_parent(&name);
        let tail_prefix = format!("{file}.tail-");
        Ok(self
            .names_in(dir)
            .await?
            .into_iter()
            .filter(|found| found.starts_with(&tail_prefix))
            .map(|found| format!("{dir}{found}"))
            .collect())
    }

    async fn put_tail(&self, key: &str, tail: &Tail) -> Result<TailRef> {
        let object = tail.encode();
        let state = TailRef {
            nonce: nonce(),
            len: object.len() as u64,
            parts: tail.ids.len(),
            hash: ids_hash(&tail.ids),
        };
        self.put_object(&self.tail_name(key, &state.nonce)?, object)
            .await?;
        Ok(state)
    }

    pub(super) async fn create_write(&self, key: &str) -> Result<WriteState> {
        let empty = Tail {
            ids: Vec::new(),
            bytes: Bytes::new(),
        };
        Ok(self.put_tail(key, &empty).await?.encode(0))
    }

    pub(super) async fn append_write(
        &self,
        key: &str,
        state: &WriteState,
        body: ByteStream,
        checkpoint: Option<&dyn Checkpoint>,
    ) -> Result<WriteState> {
        let current = TailRef::decode(state)?;
        let old_tail = self.tail_name(key, &current.nonce)?;
        let Tail { mut ids, bytes } = self.read_tail(key, &current).await?;
        let name = self.name(key)?;
        // One part-sized buffer, filled to the brim and never grown, then handed to the parts
        // in flight: memory per upload is that buffer plus its parts in flight.
        let part_size = usize::try_from(self.part_size).unwrap_or(usize::MAX);
        let mut buffer = BytesMut::with_capacity(part_size);
        buffer.extend_from_slice(&bytes);
        drop(bytes);
        let mut body = body;
        let mut size = state.size;
        let mut in_flight = PartsInFlight::new(self.parts_in_flight, Arc::clone(&self.part_budget));
        let limit = self.timeouts.for_bytes(self.part_size);
        let mut started = ids.len();
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(Error::Body)?;
            size += chunk.len() as u64;
            while !chunk.is_empty() {
                let room = part_size - buffer.len();
                buffer.extend_from_slice(&chunk.split_to(room.min(chunk.len())));
                if buffer.len() == part_size {
                    started += 1;
                    if started >= MAX_PARTS {
                        return Err(Error::Io(std::io::Error::other(format!(
                            "an upload holds at most {MAX_PARTS} parts of {part_size} bytes"
                        ))));
                    }
                    let part = std::mem::replace(&mut buffer, BytesMut::with_capacity(part_size));
                    in_flight
                        .send(&self.cloud, &name, part.freeze(), limit, &mut ids)
                        .await?;
                }
            }
        }
        in_flight.finish(&mut ids).await?;
        let tail = Tail {
            ids,
            bytes: buffer.freeze(),
        };
        let next = self.put_tail(key, &tail).await?.encode(size);
        // Removing the old tail is the commit point: before it, `state` is still current.
        checkpoint_at(checkpoint, &next).await?;
        self.delete_names(vec![old_tail]).await?;
        Ok(next)
    }

    pub(super) async fn write_is_current(&self, key: &str, state: &WriteState) -> Result<bool> {
        let Ok(current) = TailRef::decode(state) else {
            return Ok(false);
        };
        let tail = self.head(&self.tail_name(key, &current.nonce)?).await?;
        Ok(tail.is_some_and(|tail| tail.size == current.len))
    }

    pub(super) async fn commit_write(
        &self,
        key: &str,
        state: &WriteState,
        dest: &str,
    ) -> Result<()> {
        let current = TailRef::decode(state)?;
        let Tail { mut ids, bytes } = self.read_tail(key, &current).await?;
        let (name, dest) = (self.name(key)?, self.name(dest)?);
        let tail = self.tail_name(key, &current.nonce)?;
        if ids.is_empty() {
            // Everything is in the tail, under a part: one PUT.
            self.put_object(&dest, bytes).await?;
        } else {
            if !bytes.is_empty() {
                let limit = self.timeouts.for_bytes(bytes.len() as u64);
                let last = self
                    .within(limit, self.cloud.put_part(&name, bytes))
                    .await?;
                ids.push(last);
            }
            let limit = self.timeouts.for_bytes(state.size).saturating_mul(2);
            self.within(limit, self.cloud.assemble(&name, &ids, &dest, state.size))
                .await?;
        }
        // Removing the tail ends the write.
        self.delete_names(vec![tail]).await
    }

    pub(super) async fn abort_write(&self, key: &str) -> Result<()> {
        let name = self.name(key)?;
        self.quick(self.cloud.discard(&name)).await?;
        let mut leftovers = self.tails_of(key).await?;
        leftovers.push(name);
        self.delete_names(leftovers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(ids: &[&str], bytes: &'static [u8]) -> (Bytes, TailRef) {
        let ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
        let object = Tail {
            ids: ids.clone(),
            bytes: Bytes::from_static(bytes),
        }
        .encode();
        let state = TailRef {
            nonce: nonce(),
            len: object.len() as u64,
            parts: ids.len(),
            hash: ids_hash(&ids),
        };
        (object, state)
    }

    #[test]
    fn a_tail_reads_back_as_written() {
        let (object, state) = tail(&["a1", "b2"], b"rest");
        let read = Tail::decode(object, &state).unwrap();
        assert_eq!(read.ids, ["a1", "b2"]);
        assert_eq!(read.bytes.as_ref(), b"rest");
        let encoded = state.encode(9);
        assert_eq!(TailRef::decode(&encoded).unwrap(), state);
    }

    #[test]
    fn a_tail_that_differs_from_its_state_is_stale() {
        let (object, state) = tail(&["a1", "b2"], b"rest");
        let other_parts = TailRef {
            hash: ids_hash(&["b2".to_owned(), "a1".to_owned()]),
            ..state.clone()
        };
        assert!(matches!(
            Tail::decode(object.clone(), &other_parts),
            Err(Error::Stale)
        ));
        let other_length = TailRef {
            len: state.len + 1,
            ..state
        };
        assert!(matches!(
            Tail::decode(object, &other_length),
            Err(Error::Stale)
        ));
        let (hostile, hostile_state) = tail(&["../x"], b"");
        assert!(matches!(
            Tail::decode(hostile, &hostile_state),
            Err(Error::Stale)
        ));
        let garbage = WriteState {
            size: 1,
            backend: b"not json".to_vec(),
        };
        assert!(matches!(TailRef::decode(&garbage), Err(Error::Stale)));
    }
}
