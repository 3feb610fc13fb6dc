//! Resumable writes on S3.
//!
//! Bytes are buffered up to the part size. Full parts go into an S3 multipart upload at the
//! write's key, several at once ([`super::parts`]), each sent with its SHA-256 checksum, which
//! the server verifies and records. Bytes short of a full part are kept in a *tail* object named by
//! a fresh nonce on every append. The [`WriteState`] records the multipart upload id, the number of
//! parts, a hash chain over their checksums, and the tail's nonce and length, so:
//! - any replica can continue the write: the state is all it needs, with no lookups;
//! - an older state names a tail that no longer exists, so it is refused as stale;
//! - a commit lists the parts and checks them against the chain, so an upload whose parts were
//!   overwritten by a racing request (with the same, older state) can never be published.
//!
//! A commit makes the tail the last part by server-side copy, completes the multipart upload and
//! copies the result to its destination inside S3 (a multipart copy above 5 GiB), so no byte
//! travels back through the registry.

use std::io;
use std::sync::Arc;

use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::parts::{PartsInFlight, Target, send_part};
use super::{S3Store, classify};
use crate::storage::{ByteStream, Checkpoint, Error, Result, WriteState, checkpoint_at, nonce};

/// The backend part of a resumable write's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Multipart {
    /// The multipart upload, created when the first full part is ready.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    upload_id: Option<String>,
    /// Parts uploaded so far, numbered 1..=parts, each exactly `part_size` bytes.
    #[serde(rename = "p")]
    parts: u32,
    /// sha256(previous chain || part number || part sha256), over every part in order.
    #[serde(rename = "c")]
    chain: String,
    /// Nonce naming the tail object; fresh on every append.
    #[serde(rename = "t")]
    tail: String,
    #[serde(rename = "l")]
    tail_len: u64,
}

impl Multipart {
    fn decode(state: &WriteState) -> Result<Self> {
        state.backend()
    }

    fn encode(&self, size: u64) -> WriteState {
        WriteState::with_backend(size, self)
    }
}

fn chain_next(chain: &str, part_number: u32, checksum: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(chain.as_bytes());
    hasher.update(part_number.to_be_bytes());
    hasher.update(checksum.as_bytes());
    STANDARD.encode(hasher.finalize())
}

impl S3Store {
    fn tail_key(&self, key: &str, nonce: &str) -> Result<String> {
        self.key(&format!("{key}.tail-{nonce}"))
    }

    /// Starts a multipart upload at `full_key` and returns its id.
    pub(super) async fn create_multipart(
        &self,
        full_key: &str,
        checksum: Option<ChecksumAlgorithm>,
    ) -> Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .set_checksum_algorithm(checksum)
            .send()
            .await
            .map_err(classify)?;
        let id = created
            .upload_id()
            .ok_or_else(|| io::Error::other("no upload id"))?;
        Ok(id.to_owned())
    }

    /// Where the write's parts go, starting its multipart upload if it has none yet.
    async fn part_target(&self, full_key: &str, state: &mut Multipart) -> Result<Target> {
        let upload_id = match &state.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self
                    .create_multipart(full_key, Some(ChecksumAlgorithm::Sha256))
                    .await?;
                state.upload_id = Some(id.clone());
                id
            }
        };
        Ok(self.target(full_key, &upload_id))
    }

    /// Where the parts of the multipart upload `upload_id` at `full_key` go.
    fn target(&self, full_key: &str, upload_id: &str) -> Target {
        Target {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: full_key.to_owned(),
            upload_id: upload_id.to_owned(),
        }
    }

    /// Checks that parts 1..=state.parts are the ones the state's chain vouches for, and returns
    /// them for completion.
    async fn verified_parts(
        &self,
        full_key: &str,
        state: &Multipart,
    ) -> Result<Vec<CompletedPart>> {
        let Some(upload_id) = &state.upload_id else {
            return Ok(Vec::new());
        };
        let mut parts = Vec::new();
        let mut pages = self
            .client
            .list_parts()
            .bucket(&self.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify)?;
            parts.extend(page.parts().iter().cloned());
        }
        let mut chain = String::new();
        let mut completed = Vec::new();
        for number in 1..=state.parts {
            let part = parts
                .iter()
                .find(|p| p.part_number() == Some(number as i32))
                .ok_or(Error::Stale)?;
            let checksum = part.checksum_sha256().ok_or(Error::Stale)?;
            chain = chain_next(&chain, number, checksum);
            completed.push(
                CompletedPart::builder()
                    .part_number(number as i32)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .checksum_sha256(checksum)
                    .build(),
            );
        }
        if chain != state.chain {
            return Err(Error::Stale);
        }
        Ok(completed)
    }

    /// Why a state's tail is missing: a newer state replaced it, or the write is gone.
    async fn missing_tail(&self, key: &str) -> Result<Error> {
        let tails = self.keys_below(&self.tail_key(key, "")?).await?;
        Ok(if tails.is_empty() {
            Error::NotFound
        } else {
            Error::Stale
        })
    }

    async fn abort_uploads_at(&self, full_key: &str) -> Result<()> {
        let listed = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(full_key)
            .send()
            .await
            .map_err(classify)?;
        for upload in listed.uploads() {
            if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                let aborted = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await;
                match aborted.map_err(classify) {
                    Ok(_) | Err(Error::NotFound) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(())
    }

    pub(super) async fn create_write(&self, key: &str) -> Result<WriteState> {
        let state = Multipart {
            upload_id: None,
            parts: 0,
            chain: String::new(),
            tail: nonce(),
            tail_len: 0,
        };
        self.put_bytes(&self.tail_key(key, &state.tail)?, Bytes::new())
            .await?;
        Ok(state.encode(0))
    }

    pub(super) async fn append_write(
        &self,
        key: &str,
        state: &WriteState,
        body: ByteStream,
        checkpoint: Option<&dyn Checkpoint>,
    ) -> Result<WriteState> {
        let full_key = self.key(key)?;
        let mut next = Multipart::decode(state)?;
        let old_tail = self.tail_key(key, &next.tail)?;
        // The tail is also the proof that `state` is current: every append replaces it.
        let tail = match self.read_all(&old_tail).await {
            Ok(tail) if tail.len() as u64 == next.tail_len => tail,
            Ok(_) => return Err(Error::Stale),
            Err(Error::NotFound) => return Err(self.missing_tail(key).await?),
            Err(err) => return Err(err),
        };
        // One part-sized buffer, filled to the brim and never grown, then handed to the parts in
        // flight: memory per upload is that buffer plus the parts in flight (see `parts`).
        let part_size = self.part_size as usize;
        let mut buffer = BytesMut::with_capacity(part_size);
        buffer.extend_from_slice(&tail);
        drop(tail);
        let mut body = body;
        let mut size = state.size;
        let mut target = None;
        let mut in_flight = PartsInFlight::new(self.parts_in_flight, Arc::clone(&self.part_budget));
        // Parts are handed back in order, so the chain follows them one by one.
        let (first, mut started) = (next.parts, 0);
        let (mut parts, mut chain) = (next.parts, std::mem::take(&mut next.chain));
        let mut sent = |number: u32, checksum: String| {
            chain = chain_next(&chain, number, &checksum);
            parts = number;
        };
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(Error::Body)?;
            size += chunk.len() as u64;
            while !chunk.is_empty() {
                let room = part_size - buffer.len();
                buffer.extend_from_slice(&chunk.split_to(room.min(chunk.len())));
                if buffer.len() == part_size {
                    let part = std::mem::take(&mut buffer).freeze();
                    let target = match &mut target {
                        Some(target) => target,
                        slot @ None => slot.insert(self.part_target(&full_key, &mut next).await?),
                    };
                    started += 1;
                    let limits = self.sized(part_size as u64);
                    in_flight
                        .send(target, first + started, part, limits, &mut sent)
                        .await?;
                    buffer = BytesMut::with_capacity(part_size);
                }
            }
        }
        in_flight.finish(&mut sent).await?;
        next.parts = parts;
        next.chain = chain;
        next.tail = nonce();
        next.tail_len = buffer.len() as u64;
        self.put_bytes(&self.tail_key(key, &next.tail)?, buffer.freeze())
            .await?;
        // Removing the old tail is the commit point: before it, `state` is still current.
        let next = next.encode(size);
        checkpoint_at(checkpoint, &next).await?;
        self.delete_keys(vec![old_tail]).await?;
        Ok(next)
    }

    pub(super) async fn write_is_current(&self, key: &str, state: &WriteState) -> Result<bool> {
        let Ok(current) = Multipart::decode(state) else {
            return Ok(false);
        };
        let tail = self.head_size(&self.tail_key(key, &current.tail)?).await?;
        Ok(tail == Some(current.tail_len))
    }

    pub(super) async fn commit_write(
        &self,
        key: &str,
        state: &WriteState,
        dest: &str,
    ) -> Result<()> {
        let full_key = self.key(key)?;
        let dest = self.key(dest)?;
        let current = Multipart::decode(state)?;
        let tail = self.tail_key(key, &current.tail)?;
        match self.head_size(&tail).await? {
            Some(len) if len == current.tail_len => {}
            Some(_) => return Err(Error::Stale),
            None => return Err(self.missing_tail(key).await?),
        }
        let Some(upload_id) = &current.upload_id else {
            // Everything is in the tail: one server-side copy. Removing the tail ends the write.
            self.copy(&tail, &dest, current.tail_len).await?;
            return self.delete_keys(vec![tail]).await;
        };
        let mut parts = self.verified_parts(&full_key, &current).await?;
        if current.tail_len > 0 {
            // The tail goes in as the last part through the registry, not by UploadPartCopy:
            // Garage refuses to copy a part from an object under 1 MiB. It is under a part.
            let number = current.parts + 1;
            let bytes = self.read_all(&tail).await?.freeze();
            let target = self.target(&full_key, upload_id);
            let sent = send_part(target, number, bytes, self.sized(current.tail_len), None).await?;
            parts.push(
                CompletedPart::builder()
                    .part_number(i32::try_from(number).unwrap_or(i32::MAX))
                    .set_e_tag(sent.e_tag)
                    .checksum_sha256(sent.checksum)
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&full_key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(self.sized(state.size))
            .send()
            .await
            .map_err(classify)?;
        self.copy(&full_key, &dest, state.size).await?;
        self.delete_keys(vec![full_key, tail]).await
    }

    pub(super) async fn abort_write(&self, key: &str) -> Result<()> {
        let full_key = self.key(key)?;
        self.abort_uploads_at(&full_key).await?;
        let tails = self.keys_below(&format!("{full_key}.tail-")).await?;
        self.delete_keys(tails).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_refuses_garbage() {
        let state = Multipart {
            upload_id: Some("abc".into()),
            parts: 3,
            chain: chain_next("", 1, "x"),
            tail: nonce(),
            tail_len: 7,
        };
        let encoded = state.encode(42);
        assert_eq!(Multipart::decode(&encoded).unwrap(), state);
        let garbage = WriteState {
            size: 1,
            backend: b"not json".to_vec(),
        };
        assert!(matches!(Multipart::decode(&garbage), Err(Error::Stale)));
    }

    #[test]
    fn chain_depends_on_order_and_content() {
        let ab = chain_next(&chain_next("", 1, "a"), 2, "b");
        let ba = chain_next(&chain_next("", 1, "b"), 2, "a");
        assert_ne!(ab, ba);
        assert_ne!(chain_next("", 1, "a"), chain_next("", 2, "a"));
    }
}
