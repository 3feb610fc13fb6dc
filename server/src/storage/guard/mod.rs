//! The guard between the registry and its storage backend, so that storage that hangs (a
//! black-holed endpoint, a frozen S3 server, a stuck network mount) cannot hang the registry:
//!
//! - every call is bounded in time ([`Timeouts`]), and a read stream that stalls fails;
//! - a circuit breaker counts consecutive failures; past a threshold it *opens*, and calls fail
//!   at once with [`Error::Unavailable`] instead of each waiting out its limit;
//! - one background probe (a [`BlobStore::ping`]) runs at a fixed interval, the only call made
//!   while the breaker is open; its first success closes the breaker. It also keeps the
//!   [`Health`] that `/readyz` reports, so readiness never waits on storage.
//!
//! The breaker logs one line when it opens and one when it closes, never one per request.

use std::fmt;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::idle::IdleTimer;

use super::{
    BlobStore, ByteStream, Checkpoint, Error, ObjectInfo, ObjectMeta, Result, Timeouts, WriteState,
};

/// Room above a backend's own limit, so that its (more telling) error arrives first.
const MARGIN: Duration = Duration::from_secs(1);

/// How long a probe may wait on storage before the replica stops saying it is ready, though
/// the probe itself waits longer: storage that answers takes well under this (a slow S3 that
/// answers in 2 s keeps its replicas ready), and a hung one should lose its replica traffic
/// now, not when the probe's own time limit runs out.
const PROBE_OVERDUE: Duration = Duration::from_secs(3);

/// Whether storage answers, as the breaker and the probe see it.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
    /// Consecutive failures that open the breaker.
    failures_to_open: u32,
}

#[derive(Debug, Default)]
struct State {
    open_since: Option<Instant>,
    consecutive_failures: u32,
    last_error: Option<String>,
    /// When the probe last ran, and whether storage answered it.
    last_probe: Option<(Instant, bool)>,
    /// When the probe under way, if any, started waiting on storage (tokio's clock, which
    /// tests can move).
    probing_since: Option<tokio::time::Instant>,
}

/// What `/readyz` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Storage answered the last probe and the breaker is closed.
    pub ready: bool,
    /// The breaker is open: requests that need storage fail at once.
    pub failing_fast: bool,
    /// How long ago the probe last ran; `None` before its first run.
    pub checked_ago: Option<Duration>,
    pub last_error: Option<String>,
}

impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ago = match self.checked_ago {
            Some(ago) => format!("checked {:.1}s ago", ago.as_secs_f64()),
            None => "not checked yet".to_owned(),
        };
        match (self.ready, &self.last_error) {
            (true, _) => write!(f, "ok: storage answers ({ago})"),
            (false, Some(error)) => write!(f, "storage unavailable: {error} ({ago})"),
            (false, None) => write!(f, "storage unavailable ({ago})"),
        }
    }
}

impl Health {
    fn new(failures_to_open: u32) -> Self {
        Self {
            state: Mutex::new(State::default()),
            failures_to_open: failures_to_open.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What `/readyz` reports: from memory, at once.
    pub fn report(&self) -> HealthReport {
        let state = self.lock();
        let probed_ok = state.last_probe.is_some_and(|(_, ok)| ok);
        let waiting = state
            .probing_since
            .map(|since| since.elapsed())
            .filter(|waited| *waited > PROBE_OVERDUE);
        let last_error = match waiting {
            Some(waited) => Some(format!(
                "storage has not answered for {:.1}s",
                waited.as_secs_f64()
            )),
            None => state.last_error.clone(),
        };
        HealthReport {
            ready: state.open_since.is_none() && probed_ok && waiting.is_none(),
            failing_fast: state.open_since.is_some(),
            checked_ago: state.last_probe.map(|(at, _)| at.elapsed()),
            last_error,
        }
    }

    /// Refuses a call while the breaker is open.
    fn admit(&self) -> Result<()> {
        let state = self.lock();
        match (&state.open_since, &state.last_error) {
            (Some(_), error) => Err(Error::Unavailable(format!(
                "storage is not answering ({}); failing fast until it does",
                error.as_deref().unwrap_or("unknown error")
            ))),
            (None, _) => Ok(()),
        }
    }

    /// Counts a call's outcome: storage unavailable (or too slow) is a failure; any answer
    /// from storage, even "not found", is a success; a client's broken body is neither.
    fn record<T>(&self, outcome: &Result<T>) {
        match outcome {
            Err(Error::Unavailable(error)) => self.failed(error),
            Err(Error::Body(_)) => {}
            Ok(_) | Err(_) => self.answered(),
        }
    }

    fn failed(&self, error: &str) {
        let mut state = self.lock();
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        state.last_error = Some(error.to_owned());
        if state.open_since.is_none() && state.consecutive_failures >= self.failures_to_open {
            state.open_since = Some(Instant::now());
            tracing::error!(
                failures = state.consecutive_failures,
                %error,
                "storage is not answering: failing requests that need it at once until a probe \
                 succeeds"
            );
        }
    }

    fn answered(&self) {
        let mut state = self.lock();
        state.consecutive_failures = 0;
        if let Some(since) = state.open_since.take() {
            state.last_error = None;
            tracing::info!(
                after = ?since.elapsed(),
                "storage answers again: serving requests that need it"
            );
        }
    }

    /// Counts the probe's outcome. Storage that answers with an error (a read-only or full
    /// volume) is not ready, but answers: it does not open the breaker, so reads go on.
    fn probed(&self, outcome: &Result<()>) {
        {
            let mut state = self.lock();
            state.last_probe = Some((Instant::now(), outcome.is_ok()));
            state.probing_since = None;
        }
        match outcome {
            Ok(()) => {
                self.answered();
                self.lock().last_error = None;
            }
            Err(Error::Unavailable(error)) => self.failed(error),
            Err(err) => self.lock().last_error = Some(err.to_string()),
        }
    }
}

/// Told the operation, outcome and duration of every call through the guard (metrics).
pub trait StorageObserver: Send + Sync {
    fn observe(&self, operation: &'static str, outcome: &'static str, elapsed: Duration);
}

/// The outcome label of a storage call: `ok`, `not_found`, `unavailable` (failed, timed out or
/// refused by the open breaker) or `error`.
fn outcome_of<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Error::NotFound) => "not_found",
        Err(Error::Unavailable(_)) => "unavailable",
        Err(_) => "error",
    }
}

/// A backend behind time limits and a circuit breaker; see the module documentation.
pub struct Guarded {
    inner: Arc<dyn BlobStore>,
    health: Arc<Health>,
    timeouts: Timeouts,
    observer: Option<Arc<dyn StorageObserver>>,
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Guarded {
    /// Guards `inner`, opening the breaker after `failures_to_open` consecutive failures, and
    /// starts the probe, every `probe_interval` for as long as the guard lives; every call is
    /// reported to `observer`. Needs a tokio runtime.
    pub fn start(
        inner: Arc<dyn BlobStore>,
        timeouts: Timeouts,
        failures_to_open: u32,
        probe_interval: Duration,
        observer: Option<Arc<dyn StorageObserver>>,
    ) -> Arc<Self> {
        let guarded = Arc::new(Self {
            inner,
            health: Arc::new(Health::new(failures_to_open)),
            timeouts,
            observer,
        });
        tokio::spawn(probe(Arc::downgrade(&guarded), probe_interval));
        guarded
    }

    /// The health the breaker and the probe keep.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Runs `call` if the breaker lets it, within `limit` (none: the backend's own limits
    /// apply), and counts its outcome.
    async fn call<T>(
        &self,
        operation: &'static str,
        limit: Option<Duration>,
        call: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        let started = Instant::now();
        let outcome = match self.health.admit() {
            Err(refused) => Err(refused),
            Ok(()) => {
                // A child of the request's span, in traces.
                let call = tracing::Instrument::instrument(
                    call,
                    tracing::info_span!("storage", otel.name = operation, otel.kind = "client"),
                );
                let outcome = match limit {
                    Some(limit) => tokio::time::timeout(limit, call)
                        .await
                        .unwrap_or_else(|_| Err(timed_out(limit))),
                    None => call.await,
                };
                self.health.record(&outcome);
                outcome
            }
        };
        if let Some(observer) = &self.observer {
            observer.observe(operation, outcome_of(&outcome), started.elapsed());
        }
        outcome
    }

    /// The limit of a call that moves no bulk data.
    fn quick(&self) -> Option<Duration> {
        Some(self.timeouts.request + MARGIN)
    }
}

fn timed_out(limit: Duration) -> Error {
    Error::Unavailable(format!("storage did not answer within {limit:?}"))
}

/// Pings storage every `interval` while the guard lives.
async fn probe(guarded: Weak<Guarded>, interval: Duration) {
    loop {
        let Some(guarded) = guarded.upgrade() else {
            return;
        };
        let limit = guarded.timeouts.request + MARGIN;
        guarded.health.lock().probing_since = Some(tokio::time::Instant::now());
        let outcome = tokio::time::timeout(limit, guarded.inner.ping())
            .await
            .unwrap_or_else(|_| Err(timed_out(limit)));
        guarded.health.probed(&outcome);
        drop(guarded);
        tokio::time::sleep(interval).await;
    }
}

#[async_trait]
impl BlobStore for Guarded {
    async fn stat(&self, key: &str) -> Result<ObjectMeta> {
        self.call("stat", self.quick(), self.inner.stat(key)).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let stream = self
            .call("get", self.quick(), self.inner.get(key, range))
            .await?;
        Ok(StallGuard {
            inner: stream,
            timer: IdleTimer::new(self.timeouts.request),
            health: Arc::clone(&self.health),
            failed: false,
        }
        .boxed())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let limit = self.timeouts.for_bytes(data.len() as u64) + MARGIN;
        self.call("put", Some(limit), self.inner.put(key, data))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.call("list", self.quick(), self.inner.list(prefix))
            .await
    }

    async fn walk(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // Many pages for a large repository (gc): each page is bounded by the backend.
        self.call("walk", None, self.inner.walk(prefix)).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        // A copy of unknown size on S3, bounded there by size.
        self.call("rename", None, self.inner.rename(from, to)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.call("delete", self.quick(), self.inner.delete(key))
            .await
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        self.call(
            "delete_objects",
            self.quick(),
            self.inner.delete_objects(keys),
        )
        .await
    }

    async fn presigned_get_url(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        self.call(
            "presigned_get_url",
            self.quick(),
            self.inner.presigned_get_url(key, ttl),
        )
        .await
    }

    async fn create_resumable(&self, key: &str) -> Result<WriteState> {
        self.call(
            "create_resumable",
            self.quick(),
            self.inner.create_resumable(key),
        )
        .await
    }

    async fn append_with_checkpoint(
        &self,
        key: &str,
        state: &WriteState,
        body: ByteStream,
        checkpoint: Option<&dyn Checkpoint>,
    ) -> Result<WriteState> {
        // Paced by the client's body; each storage request inside is bounded by the backend.
        self.call(
            "append_with_checkpoint",
            None,
            self.inner
                .append_with_checkpoint(key, state, body, checkpoint),
        )
        .await
    }

    async fn is_current(&self, key: &str, state: &WriteState) -> Result<bool> {
        self.call(
            "is_current",
            self.quick(),
            self.inner.is_current(key, state),
        )
        .await
    }

    async fn commit_resumable(&self, key: &str, state: &WriteState, dest: &str) -> Result<()> {
        let limit = self.timeouts.for_bytes(state.size).saturating_mul(2) + MARGIN;
        self.call(
            "commit_resumable",
            Some(limit),
            self.inner.commit_resumable(key, state, dest),
        )
        .await
    }

    async fn abort_resumable(&self, key: &str) -> Result<()> {
        self.call(
            "abort_resumable",
            self.quick(),
            self.inner.abort_resumable(key),
        )
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.call("ping", self.quick(), self.inner.ping()).await
    }
}

/// A read stream that fails when storage sends nothing for `limit` while it is being waited on
/// (a slow client does not count: the timer runs only while the stream is polled and pending).
struct StallGuard {
    inner: ByteStream,
    timer: IdleTimer,
    health: Arc<Health>,
    failed: bool,
}

impl Stream for StallGuard {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let polled = self.inner.poll_next_unpin(cx);
        if !self.timer.expired(cx, &polled) {
            return polled;
        }
        self.failed = true;
        let error = format!("storage sent nothing for {:?}", self.timer.limit());
        self.health.failed(&error);
        Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::TimedOut, error))))
    }
}

#[cfg(test)]
mod tests;
