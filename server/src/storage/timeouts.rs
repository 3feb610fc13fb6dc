//! How long a storage call may take, so that a hung backend (a black-holed endpoint, a frozen S3
//! server, a stuck network mount) fails a request within a known ceiling instead of holding it.

use std::time::Duration;

/// The default [`Timeouts::request`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(6);
/// The default [`Timeouts::min_throughput`]: 1 MiB/s.
pub const DEFAULT_MIN_THROUGHPUT: u64 = 1024 * 1024;

/// Time limits of storage calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The most a call that moves no bulk data (a HEAD, a small GET or PUT, a listing page, a
    /// delete) may take, retries included. A request that needs storage fails within this.
    pub request: Duration,
    /// Bytes per second below which a bulk transfer (a part upload, a copy) counts as hung: its
    /// limit grows by its size at this rate.
    pub min_throughput: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            request: DEFAULT_REQUEST_TIMEOUT,
            min_throughput: DEFAULT_MIN_THROUGHPUT,
        }
    }
}

impl Timeouts {
    /// One attempt of a call: half the limit, so that a retry still fits in it.
    pub fn attempt(&self) -> Duration {
        self.request / 2
    }

    /// Establishing a connection, within an attempt.
    pub fn connect(&self) -> Duration {
        self.attempt().min(Duration::from_secs(2))
    }

    /// The limit of a call that moves `bytes`.
    pub fn for_bytes(&self, bytes: u64) -> Duration {
        let transfer = Duration::from_secs_f64(bytes as f64 / self.min_throughput.max(1) as f64);
        self.request.saturating_add(transfer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_calls_get_time_for_their_bytes() {
        let timeouts = Timeouts::default();
        assert_eq!(timeouts.attempt(), Duration::from_secs(3));
        assert_eq!(timeouts.connect(), Duration::from_secs(2));
        assert_eq!(timeouts.for_bytes(0), Duration::from_secs(6));
        assert_eq!(timeouts.for_bytes(8 * 1024 * 1024), Duration::from_secs(14));
        let short = Timeouts {
            request: Duration::from_secs(2),
            ..timeouts
        };
        assert_eq!(short.connect(), Duration::from_secs(1));
    }
}
