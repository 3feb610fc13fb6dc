//! An outbox in storage and the loop that drains it into a [`Sink`]: in time order, in
//! batches, backing off when the sink fails, and counting what happens.
//!
//! Each replica drains the entries it wrote at once, and takes over entries older than
//! `takeover_after` (their writer died, or the sink was down). A delivery that runs longer than
//! that (a replication sending a large image) claims its entries meanwhile, in
//! `_stowage/claims/<outbox>/<entry>`, so no other replica takes them over while it works; a
//! claim not renewed for `takeover_after` is void (see [`super::claims`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::claims::{self, Start, unix_nanos};
use super::event::Event;
use crate::metrics::Metrics;
use crate::storage::{self, BlobStore};

/// Entries handed to the sink in one call at most.
const BATCH: usize = 50;
/// How often the outbox is looked at when nothing wakes the drainer: for entries other
/// replicas left behind.
const SCAN_INTERVAL: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where events go: a webhook, a replication rule.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Names the sink in logs and metrics, and its outbox in storage.
    fn name(&self) -> &str;

    /// The outbox's directory in storage.
    fn outbox(&self) -> String;

    /// Whether the sink takes events like `event`; the rest are not written for it.
    fn wants(&self, event: &Event) -> bool;

    /// Delivers `events`, oldest first. An error leaves them all in the outbox to be tried
    /// again after a backoff, so a sink answers `Ok` for an event it can never deliver (and
    /// reports that itself).
    async fn deliver(&self, events: &[Event]) -> Result<(), String>;
}

/// How an outbox is drained.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// The first wait after a failure; it doubles up to a minute.
    pub backoff: Duration,
    /// When another replica's entries are taken over.
    pub takeover_after: Duration,
}

/// A sink, its outbox, and the signals of the loop that drains it.
pub struct Outlet {
    sink: Arc<dyn Sink>,
    pacing: Pacing,
    wake: Notify,
    /// Cuts a backoff short: the replica is stopping and wants its entries out.
    hurry: Notify,
    metrics: Option<Arc<Metrics>>,
}

impl Outlet {
    pub fn new(sink: Arc<dyn Sink>, pacing: Pacing, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            sink,
            pacing,
            wake: Notify::new(),
            hurry: Notify::new(),
            metrics,
        }
    }

    pub fn name(&self) -> &str {
        self.sink.name()
    }

    pub fn outbox(&self) -> String {
        self.sink.outbox()
    }

    pub fn wants(&self, event: &Event) -> bool {
        self.sink.wants(event)
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Returns once none of `instance`'s entries wait in the outbox, retrying without backoff
    /// meanwhile.
    pub async fn idle(&self, instance: &str, store: &Arc<dyn BlobStore>) {
        loop {
            self.hurry.notify_one();
            let names = list(store.as_ref(), &self.outbox())
                .await
                .unwrap_or_default();
            if !names.iter().any(|name| owner(name) == Some(instance)) {
                return;
            }
            self.wake();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Delivers one batch of what is due; whether more is due.
    async fn deliver_due(&self, store: &dyn BlobStore, instance: &str) -> Result<bool, String> {
        let outbox = self.outbox();
        let names = list(store, &outbox).await.map_err(|err| err.to_string())?;
        let now = unix_nanos(SystemTime::now());
        let age = |name: &str| age_at(name, now);
        if let Some(metrics) = &self.metrics {
            metrics.events_pending(self.name(), names.len(), oldest(&names, now));
        }
        let mut due: Vec<&String> = Vec::new();
        for name in &names {
            if due.len() == BATCH {
                break;
            }
            if owner(name) == Some(instance) {
                due.push(name);
            } else if age(name) > self.pacing.takeover_after {
                let claim = claim_key(&outbox, name);
                let ttl = self.pacing.takeover_after;
                if claims::held_elsewhere(store, &claim, instance, ttl).await {
                    continue;
                }
                due.push(name);
            }
        }
        if due.is_empty() {
            return Ok(false);
        }
        let mut events = Vec::with_capacity(due.len());
        let mut keys = Vec::with_capacity(due.len());
        for name in &due {
            let key = format!("{outbox}/{name}");
            match storage::read_small(store, &key, 1 << 20).await {
                Ok(bytes) => match serde_json::from_slice::<Event>(&bytes) {
                    Ok(event) => {
                        events.push(event);
                        keys.push(key);
                    }
                    Err(err) => {
                        tracing::warn!(sink = self.name(), key, %err, "dropping an unreadable event");
                        keys.push(key);
                    }
                },
                // Delivered meanwhile by another replica.
                Err(storage::Error::NotFound) => {}
                Err(err) => return Err(err.to_string()),
            }
        }
        if !events.is_empty() {
            // A long delivery claims its entries, so no other replica takes them over.
            let claims: Vec<String> = due.iter().map(|name| claim_key(&outbox, name)).collect();
            let renew_every = self.pacing.takeover_after / 3;
            let delivery = self.sink.deliver(&events);
            claims::holding(
                store,
                &claims,
                instance,
                renew_every,
                Start::IfLong,
                delivery,
            )
            .await?;
        }
        for batch in keys.chunks(storage::DELETE_BATCH) {
            store
                .delete_objects(batch)
                .await
                .map_err(|err| err.to_string())?;
        }
        if let Some(metrics) = &self.metrics {
            metrics.events_delivered(self.name(), events.len());
        }
        Ok(due.len() == BATCH || names.len() > due.len())
    }
}

fn claim_key(outbox: &str, name: &str) -> String {
    format!("_stowage/claims/{outbox}/{name}")
}

/// The replica that wrote an outbox entry: `<time>-<replica>-<event id>`.
fn owner(name: &str) -> Option<&str> {
    name.split('-').nth(1)
}

/// How old the entry `name` is at `now` (Unix nanoseconds).
fn age_at(name: &str, now: u128) -> Duration {
    let written = name
        .split('-')
        .next()
        .and_then(|n| n.parse::<u128>().ok())
        .unwrap_or(0);
    Duration::from_nanos(u64::try_from(now.saturating_sub(written)).unwrap_or(u64::MAX))
}

/// The age of the oldest of an outbox's entries, listed in time order.
fn oldest(names: &[String], now: u128) -> Duration {
    names
        .first()
        .map_or(Duration::ZERO, |name| age_at(name, now))
}

/// How many entries wait in `outbox`, and how old the oldest is: a sink's lag.
pub async fn pending(store: &dyn BlobStore, outbox: &str) -> storage::Result<(usize, Duration)> {
    let names = list(store, outbox).await?;
    Ok((names.len(), oldest(&names, unix_nanos(SystemTime::now()))))
}

async fn list(store: &dyn BlobStore, outbox: &str) -> storage::Result<Vec<String>> {
    match store.list(outbox).await {
        Ok(names) => Ok(names),
        Err(storage::Error::NotFound) => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// Drains `outlet`'s outbox for as long as the process lives.
pub async fn drain(outlet: Arc<Outlet>, store: Arc<dyn BlobStore>, instance: String) {
    let mut backoff: Option<Duration> = None;
    loop {
        match backoff {
            Some(wait) => {
                let _ = tokio::time::timeout(wait, outlet.hurry.notified()).await;
            }
            None => {
                let _ = tokio::time::timeout(SCAN_INTERVAL, outlet.wake.notified()).await;
            }
        }
        match outlet.deliver_due(store.as_ref(), &instance).await {
            Ok(more) => {
                backoff = None;
                if more {
                    outlet.wake();
                }
            }
            Err(err) => {
                let next = backoff.map_or(outlet.pacing.backoff, |b| (b * 2).min(MAX_BACKOFF));
                tracing::warn!(sink = outlet.name(), error = %err, retry_in = ?next, "event delivery failed");
                if let Some(metrics) = &outlet.metrics {
                    metrics.events_failed(outlet.name(), backoff.is_some());
                }
                backoff = Some(next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_names_carry_their_owner() {
        assert_eq!(
            owner("00000000001764250000-abc123def456-5f0c-4e"),
            Some("abc123def456")
        );
    }
}
