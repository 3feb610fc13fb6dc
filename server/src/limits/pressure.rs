//! What overload looks like from inside a replica: connections refused, requests shed or
//! rate-limited, clients cut off by a timeout. Counted as they happen and logged once per
//! interval (one line per kind that occurred), never one line per request, so an attack does
//! not also flood the logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A kind of event counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A connection beyond `--max-connections`, answered 503 and closed.
    ConnectionRefused,
    /// A request beyond `--max-concurrent-requests`, answered 503 at once.
    RequestShed,
    /// A request over its client's rate limit, answered 429.
    RateLimited,
    /// A connection that did not send a request's headers in time.
    HeaderTimeout,
    /// A request body that sent nothing for `--body-idle-timeout`.
    BodyIdleTimeout,
}

const EVENTS: [Event; 5] = [
    Event::ConnectionRefused,
    Event::RequestShed,
    Event::RateLimited,
    Event::HeaderTimeout,
    Event::BodyIdleTimeout,
];

impl Event {
    fn name(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "connections refused",
            Self::RequestShed => "requests shed",
            Self::RateLimited => "requests rate-limited",
            Self::HeaderTimeout => "header read timeouts",
            Self::BodyIdleTimeout => "body idle timeouts",
        }
    }
}

/// Counts of each [`Event`], in total and since the last log line.
#[derive(Debug, Default)]
pub struct Pressure {
    total: [AtomicU64; EVENTS.len()],
    logged: [AtomicU64; EVENTS.len()],
}

impl Pressure {
    pub fn count(&self, event: Event) {
        self.total[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many `event`s happened since the process started.
    pub fn total(&self, event: Event) -> u64 {
        self.total[event as usize].load(Ordering::Relaxed)
    }

    /// Logs what happened since the last call, one line per kind.
    fn log_since_last(&self) {
        for event in EVENTS {
            let total = self.total(event);
            let before = self.logged[event as usize].swap(total, Ordering::Relaxed);
            if total > before {
                tracing::warn!(
                    count = total - before,
                    total,
                    "{} in the last interval",
                    event.name()
                );
            }
        }
    }

    /// Logs every `interval` for as long as `pressure` is used elsewhere.
    pub fn log_periodically(pressure: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(pressure);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(pressure) = weak.upgrade() else {
                    return;
                };
                pressure.log_since_last();
            }
        });
    }
}
