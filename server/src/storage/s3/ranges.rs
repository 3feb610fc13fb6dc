//! Large reads as several ranged GETs at once.
//!
//! One GetObject stream is as fast as the S3 server serves a single request, which for a server
//! that works a request on one core (Garage) is well below what it can serve. A large read is
//! cut into [`BLOCK`]-sized ranges fetched a few at once and handed on in order. The first range
//! in flight is always allowed; the others each take a permit from a budget the whole process
//! shares, so however many pulls run, the blocks held in memory stay bounded (without a permit, a
//! read goes on one range at a time).

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::AbortOnDropHandle;

use super::classify;
use crate::storage::ByteStream;

/// The size of one ranged GET.
pub(super) const BLOCK: u64 = 8 * 1024 * 1024;
/// Reads shorter than this are one GET.
pub(super) const THRESHOLD: u64 = 4 * BLOCK;
/// Ranges one read fetches at once.
const IN_FLIGHT: usize = 3;

/// A fetched block, with the permit that paid for holding it.
type Fetched = (Bytes, Option<OwnedSemaphorePermit>);

struct Reader {
    client: Client,
    bucket: String,
    key: String,
    /// Ranges not started yet, in order.
    next: Range<u64>,
    fetching: VecDeque<AbortOnDropHandle<io::Result<Fetched>>>,
    budget: Arc<Semaphore>,
}

impl Reader {
    /// Starts fetches up to the limit the budget allows.
    fn start_more(&mut self) {
        while !self.next.is_empty() && self.fetching.len() < IN_FLIGHT {
            let permit = if self.fetching.is_empty() {
                None
            } else {
                match Arc::clone(&self.budget).try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => return,
                }
            };
            let end = (self.next.start + BLOCK).min(self.next.end);
            let range = self.next.start..end;
            self.next.start = end;
            let task = tokio::spawn(fetch(
                self.client.clone(),
                self.bucket.clone(),
                self.key.clone(),
                range,
                permit,
            ));
            self.fetching.push_back(AbortOnDropHandle::new(task));
        }
    }
}

/// The first block's range of a read of `range`: ask for it, then hand its answer to [`read`].
pub(super) fn first_block(range: &Range<u64>) -> Range<u64> {
    range.start..(range.start + BLOCK).min(range.end)
}

/// Streams `range` of `key`, several blocks at once; `first` answers its [`first_block`].
pub(super) fn read(
    client: Client,
    bucket: String,
    key: String,
    range: Range<u64>,
    first: GetObjectOutput,
    budget: Arc<Semaphore>,
) -> ByteStream {
    let head = first_block(&range);
    let first = tokio::spawn(async move { Ok((collect(first, &head).await?, None)) });
    let reader = Reader {
        client,
        bucket,
        key,
        next: first_block(&range).end..range.end,
        fetching: VecDeque::from([AbortOnDropHandle::new(first)]),
        budget,
    };
    futures::stream::unfold(reader, |mut reader| async move {
        reader.start_more();
        let task = reader.fetching.pop_front()?;
        let block = match task.await {
            Ok(Ok((block, _permit))) => Ok(block),
            Ok(Err(err)) => Err(err),
            Err(err) => Err(io::Error::other(err)),
        };
        if block.is_err() {
            // Nothing after a failed block is worth fetching.
            reader.next = 0..0;
            reader.fetching.clear();
        }
        Some((block, reader))
    })
    .boxed()
}

async fn fetch(
    client: Client,
    bucket: String,
    key: String,
    range: Range<u64>,
    permit: Option<OwnedSemaphorePermit>,
) -> io::Result<Fetched> {
    let output = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes={}-{}", range.start, range.end - 1))
        .send()
        .await
        .map_err(|err| io::Error::other(classify(err)))?;
    Ok((collect(output, &range).await?, permit))
}

/// The whole body of the answer to a GET of `range`.
async fn collect(output: GetObjectOutput, range: &Range<u64>) -> io::Result<Bytes> {
    let expected = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
    let mut block = BytesMut::with_capacity(expected);
    let mut body = output.body;
    while let Some(chunk) = body.next().await {
        block.extend_from_slice(&chunk.map_err(io::Error::other)?);
    }
    if block.len() != expected {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("a ranged read got {} of {expected} bytes", block.len()),
        ));
    }
    Ok(block.freeze())
}
