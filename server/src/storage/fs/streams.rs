//! Moving bulk bytes between async streams and files, with a blocking thread on the file side.
//!
//! Every tokio file call is a hand-off to the blocking pool, one at a time, in the size of the
//! caller's chunk (a request body arrives in frames of a few KiB). Here one blocking task owns
//! the file for the whole transfer and moves blocks, a few ahead of the other side: reading the
//! socket and hashing overlap writing the disk, and reading the disk overlaps sending. Memory
//! per transfer is a block × ([`AHEAD`] + 1): [`WRITE_BLOCK`] for an upload, the smaller
//! [`READ_BLOCK`] for a pull, as pulls run by the hundred.

use std::fs::File;
use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::storage::{ByteStream, Error, Result};

/// The unit of an upload's disk writes.
const WRITE_BLOCK: usize = 512 * 1024;
/// The unit of a pull's disk reads.
const READ_BLOCK: usize = 256 * 1024;
/// Blocks queued between the two sides.
const AHEAD: usize = 2;

/// Writes `body` to `file` at its current position; the bytes written, and the file.
pub(super) async fn write_body(file: File, mut body: ByteStream) -> Result<(u64, File)> {
    let (blocks, mut queue) = mpsc::channel::<Bytes>(AHEAD);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<File> {
        let mut file = file;
        while let Some(block) = queue.blocking_recv() {
            file.write_all(&block)?;
        }
        Ok(file)
    });
    let mut written = 0u64;
    let mut filling = BytesMut::with_capacity(WRITE_BLOCK);
    let mut failed = None;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                failed = Some(Error::Body(err));
                break;
            }
        };
        written += chunk.len() as u64;
        filling.extend_from_slice(&chunk);
        if filling.len() >= WRITE_BLOCK {
            let block =
                std::mem::replace(&mut filling, BytesMut::with_capacity(WRITE_BLOCK)).freeze();
            if blocks.send(block).await.is_err() {
                // The writer stopped: its error says why.
                break;
            }
        }
    }
    if failed.is_none() && !filling.is_empty() {
        let _ = blocks.send(filling.freeze()).await;
    }
    drop(blocks);
    let file = writer
        .await
        .map_err(|err| Error::Io(io::Error::other(err)))??;
    match failed {
        Some(err) => Err(err),
        None => Ok((written, file)),
    }
}

/// Streams `len` bytes of `file` from its current position.
pub(super) fn read_body(file: File, len: u64) -> ByteStream {
    let (blocks, queue) = mpsc::channel::<io::Result<Bytes>>(AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut reader = file.take(len);
        loop {
            let left = usize::try_from(reader.limit()).unwrap_or(READ_BLOCK);
            let mut block = BytesMut::zeroed(left.min(READ_BLOCK));
            let read = match read_full(&mut reader, &mut block) {
                Ok(0) => return,
                Ok(read) => read,
                Err(err) => {
                    let _ = blocks.blocking_send(Err(err));
                    return;
                }
            };
            block.truncate(read);
            // A reader that went away (the client hung up) ends the loop.
            if blocks.blocking_send(Ok(block.freeze())).is_err() {
                return;
            }
        }
    });
    tokio_stream_of(queue)
}

/// Reads until `buf` is full or the reader ends; the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

fn tokio_stream_of(mut queue: mpsc::Receiver<io::Result<Bytes>>) -> ByteStream {
    futures::stream::poll_fn(move |cx| queue.poll_recv(cx)).boxed()
}
