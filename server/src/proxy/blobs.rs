//! Blobs through the cache: served from storage once cached; otherwise fetched from the
//! upstream once per replica, streamed to the client while it is written to storage, and
//! verified on the way. The last bytes reach the client only after the digest checked out, and
//! storage commits only then: a corrupt upstream leaves nothing behind and no client with a
//! whole corrupt blob.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::{Error, Outcome, Proxy, Route};
use crate::oci::{Digest, DigestHasher, RepositoryName};
use crate::registry::{self, Registry};
use crate::storage::ByteStream;

/// How long a pull waits for another pull's fetch of the same blob before trying itself.
const SHARED_FETCH_WAIT: Duration = Duration::from_secs(600);
/// Fetches a pull starts or waits for before it gives up.
const ATTEMPTS: usize = 3;
/// Chunks buffered between the upstream and a slow client.
const CLIENT_BUFFER: usize = 16;

/// How to answer a blob request in a mirrored repository.
pub enum BlobAnswer {
    /// The blob is stored here (this size): serve it as any other.
    Cached { size: u64 },
    /// A `HEAD` the upstream answered: the blob's size and media type.
    Upstream {
        size: u64,
        media_type: Option<String>,
    },
    /// Streaming from the upstream while it is stored; `done` turns true when storing ended.
    Streaming {
        size: Option<u64>,
        body: ByteStream,
        done: watch::Receiver<bool>,
    },
}

impl Proxy {
    pub async fn blob(
        &self,
        registry: &Registry,
        name: &RepositoryName,
        route: &Route<'_>,
        digest: &Digest,
        head: bool,
    ) -> Result<BlobAnswer, Error> {
        let what = digest.to_string();
        let upstream = route.upstream;
        for _ in 0..ATTEMPTS {
            match registry.blob_size(name, digest).await {
                Ok(size) => {
                    self.record(route, name, "blob", &what, Outcome::Hit);
                    return Ok(BlobAnswer::Cached { size });
                }
                Err(registry::Error::BlobUnknown) => {}
                Err(err) => return Err(err.into()),
            }
            if head {
                return match route
                    .within(upstream.client.blob_head(&route.remote, digest))
                    .await
                {
                    Ok(Some(head)) => Ok(BlobAnswer::Upstream {
                        size: head.size,
                        media_type: head.media_type,
                    }),
                    Ok(None) => Err(registry::Error::BlobUnknown.into()),
                    Err(err) => {
                        self.record(route, name, "blob", &what, Outcome::UpstreamError);
                        Err(Error::upstream(upstream, err))
                    }
                };
            }
            match Fetch::join(&self.fetches, digest) {
                Joined::Wait(mut done) => {
                    let _ = tokio::time::timeout(SHARED_FETCH_WAIT, done.wait_for(|d| *d)).await;
                }
                Joined::Lead(fetch) => {
                    let answer = self.fetch_blob(registry, name, route, digest, fetch).await;
                    let outcome = match &answer {
                        Ok(_) => Outcome::Miss,
                        Err(Error::Registry(registry::Error::BlobUnknown)) => Outcome::Miss,
                        Err(_) => Outcome::UpstreamError,
                    };
                    self.record(route, name, "blob", &what, outcome);
                    return answer;
                }
            }
        }
        Err(Error::Upstream {
            upstream: upstream.config.url.to_string(),
            reason: format!("{digest} could not be fetched"),
        })
    }

    /// Starts streaming `digest` from the upstream into storage and to the client.
    async fn fetch_blob(
        &self,
        registry: &Registry,
        name: &RepositoryName,
        route: &Route<'_>,
        digest: &Digest,
        fetch: Fetch,
    ) -> Result<BlobAnswer, Error> {
        let upstream = route.upstream;
        let response = route
            .within(upstream.client.fetch_blob(&route.remote, digest, 0))
            .await
            .map_err(|err| Error::upstream(upstream, err))?
            .ok_or(registry::Error::BlobUnknown)?;
        let size = response.content_length();
        let (to_client, for_client) = mpsc::channel(CLIENT_BUFFER);
        let incoming = response
            .bytes_stream()
            .map(|chunk| chunk.map_err(io::Error::other))
            .boxed();
        let checked = verified_tee(incoming, digest.clone(), to_client);
        let done = fetch.done();
        let (registry, name, digest) = (registry.clone(), name.clone(), digest.clone());
        let prefix = upstream.prefix().to_owned();
        tokio::spawn(async move {
            if let Err(err) = registry.store_mirrored_blob(&name, &digest, checked).await {
                tracing::warn!(upstream = prefix, repository = %name, %digest, %err, "a blob from the upstream was not cached");
            }
            drop(fetch);
        });
        let body = futures::stream::unfold(for_client, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        })
        .boxed();
        Ok(BlobAnswer::Streaming { size, body, done })
    }
}

/// A fetch under way on this replica; when dropped, it is no longer under way, and whoever
/// waits for it is told.
pub(super) struct Fetch {
    fetches: Arc<Mutex<std::collections::HashMap<Digest, watch::Receiver<bool>>>>,
    digest: Digest,
    done: watch::Sender<bool>,
}

enum Joined {
    Lead(Fetch),
    Wait(watch::Receiver<bool>),
}

impl Fetch {
    fn join(
        fetches: &Arc<Mutex<std::collections::HashMap<Digest, watch::Receiver<bool>>>>,
        digest: &Digest,
    ) -> Joined {
        let mut under_way = fetches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(done) = under_way.get(digest) {
            return Joined::Wait(done.clone());
        }
        let (done, waiting) = watch::channel(false);
        under_way.insert(digest.clone(), waiting);
        Joined::Lead(Self {
            fetches: Arc::clone(fetches),
            digest: digest.clone(),
            done,
        })
    }

    fn done(&self) -> watch::Receiver<bool> {
        self.done.subscribe()
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.fetches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.digest);
        let _ = self.done.send(true);
    }
}

/// The upstream's bytes for storage, each chunk also sent to the client one chunk late: the
/// last one goes only once the whole blob hashed to `digest`. A mismatch or an upstream error
/// ends both streams with an error instead.
fn verified_tee(
    upstream: ByteStream,
    digest: Digest,
    to_client: mpsc::Sender<io::Result<Bytes>>,
) -> ByteStream {
    struct State {
        upstream: ByteStream,
        hasher: DigestHasher,
        digest: Digest,
        held: Option<Bytes>,
        to_client: Option<mpsc::Sender<io::Result<Bytes>>>,
        ended: bool,
    }
    impl State {
        async fn tell_client(&mut self, item: io::Result<Bytes>) {
            if let Some(client) = &self.to_client
                && client.send(item).await.is_err()
            {
                // The client left; the blob is still worth caching.
                self.to_client = None;
            }
        }
    }
    let state = State {
        upstream,
        hasher: DigestHasher::new(digest.algorithm()),
        digest,
        held: None,
        to_client: Some(to_client),
        ended: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        match state.upstream.next().await {
            Some(Ok(chunk)) => {
                state.hasher.update(&chunk);
                if let Some(previous) = state.held.replace(chunk.clone()) {
                    state.tell_client(Ok(previous)).await;
                }
                Some((Ok(chunk), state))
            }
            Some(Err(err)) => {
                state.ended = true;
                state
                    .tell_client(Err(io::Error::other("the upstream failed mid-blob")))
                    .await;
                Some((Err(err), state))
            }
            None => {
                state.ended = true;
                let actual = std::mem::replace(
                    &mut state.hasher,
                    DigestHasher::new(state.digest.algorithm()),
                )
                .finish();
                if actual == state.digest {
                    if let Some(last) = state.held.take() {
                        state.tell_client(Ok(last)).await;
                    }
                    None
                } else {
                    let why = format!("the upstream sent {actual} for {}", state.digest);
                    state.tell_client(Err(io::Error::other(why.clone()))).await;
                    Some((Err(io::Error::other(why)), state))
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        parts: &[&'static [u8]],
        digest: Digest,
    ) -> (Vec<io::Result<Bytes>>, Vec<io::Result<Bytes>>) {
        let parts: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        let upstream = futures::stream::iter(parts).boxed();
        let (to_client, mut client) = mpsc::channel(16);
        let stored: Vec<_> = verified_tee(upstream, digest, to_client).collect().await;
        let mut received = Vec::new();
        while let Ok(item) = client.try_recv() {
            received.push(item);
        }
        (stored, received)
    }

    #[tokio::test]
    async fn the_client_gets_the_last_bytes_only_when_they_check_out() {
        let good = Digest::sha256_of(b"hello world");
        let (stored, received) = run(&[b"hello ", b"world"], good.clone()).await;
        assert!(stored.iter().all(Result::is_ok) && stored.len() == 2);
        let received: Vec<Bytes> = received.into_iter().map(Result::unwrap).collect();
        assert_eq!(received, vec![Bytes::from("hello "), Bytes::from("world")]);

        let (stored, received) = run(&[b"hello ", b"wOrld"], good).await;
        assert!(stored.last().unwrap().is_err(), "storage must not commit");
        assert_eq!(received.len(), 2);
        assert_eq!(received[0].as_ref().unwrap(), "hello ");
        assert!(
            received[1].is_err(),
            "the client never gets the corrupt last chunk"
        );
    }
}
