//! The parts of one append on their way to S3, several at once.
//!
//! Each full part goes to a task of its own, which hashes it and sends it, while the append reads
//! on. An upload has at most [`PartsInFlight::limit`] parts in flight. Beyond its first, each one
//! also takes a permit from a budget the whole process shares, so memory stays bounded however
//! many uploads run: an upload holds its filling buffer and its first part in flight, and all of
//! them together at most the budget's worth of further parts.

use std::collections::VecDeque;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::AbortOnDropHandle;

use super::classify;
use crate::storage::Result;

/// Where a write's parts go.
#[derive(Clone)]
pub(super) struct Target {
    pub client: Client,
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
}

/// A part S3 took.
pub(super) struct Sent {
    /// Its SHA-256, base64, as S3 checked and recorded it.
    pub checksum: String,
    pub e_tag: Option<String>,
}

/// One part being sent: its number, and the task that answers for it.
type Sending = (u32, AbortOnDropHandle<Result<Sent>>);

/// The parts of one append still in flight, oldest first. Dropping it cancels them.
pub(super) struct PartsInFlight {
    sending: VecDeque<Sending>,
    limit: usize,
    budget: Arc<Semaphore>,
}

impl PartsInFlight {
    /// `limit` parts at once (at least one), further parts than the first drawing on `budget`.
    pub(super) fn new(limit: usize, budget: Arc<Semaphore>) -> Self {
        Self {
            sending: VecDeque::new(),
            limit: limit.max(1),
            budget,
        }
    }

    /// Starts sending `data` as part `number`. While the upload is at its limit, or the budget
    /// is spent, it first waits for the oldest part, and hands it to `done`: parts reach `done`
    /// in the order they were started.
    pub(super) async fn send(
        &mut self,
        target: &Target,
        number: u32,
        data: Bytes,
        override_config: aws_sdk_s3::config::Builder,
        done: &mut impl FnMut(u32, String),
    ) -> Result<()> {
        let permit = loop {
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
        let task = tokio::spawn(send_part(
            target.clone(),
            number,
            data,
            override_config,
            permit,
        ));
        self.sending
            .push_back((number, AbortOnDropHandle::new(task)));
        Ok(())
    }

    /// Waits for every part in flight, handing each to `done` in order.
    pub(super) async fn finish(mut self, done: &mut impl FnMut(u32, String)) -> Result<()> {
        while !self.sending.is_empty() {
            self.finish_oldest(done).await?;
        }
        Ok(())
    }

    async fn finish_oldest(&mut self, done: &mut impl FnMut(u32, String)) -> Result<()> {
        let Some((number, task)) = self.sending.pop_front() else {
            return Ok(());
        };
        let sent = task
            .await
            .map_err(|err| std::io::Error::other(format!("part upload task failed: {err}")))??;
        done(number, sent.checksum);
        Ok(())
    }
}

/// Hashes and sends one part, with its SHA-256 for S3 to check and record.
pub(super) async fn send_part(
    target: Target,
    number: u32,
    data: Bytes,
    override_config: aws_sdk_s3::config::Builder,
    _permit: Option<OwnedSemaphorePermit>,
) -> Result<Sent> {
    let checksum = STANDARD.encode(Sha256::digest(&data));
    let output = target
        .client
        .upload_part()
        .bucket(target.bucket)
        .key(target.key)
        .upload_id(target.upload_id)
        .part_number(i32::try_from(number).unwrap_or(i32::MAX))
        .checksum_sha256(&checksum)
        .body(S3Body::from(data))
        .customize()
        .config_override(override_config)
        .send()
        .await
        .map_err(classify)?;
    Ok(Sent {
        checksum,
        e_tag: output.e_tag().map(str::to_owned),
    })
}
