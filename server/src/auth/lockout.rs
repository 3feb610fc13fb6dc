//! Failed logins, counted per client address and per user name over a fixed window. Past the
//! limit, further attempts are refused before any password is checked, so guessing costs the
//! guesser time and costs us no bcrypt. One replica's memory, bounded: when full, entries whose
//! window has passed are dropped, and if that frees nothing, the oldest half.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most.
const MAX_TRACKED: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    User(String),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: Instant,
}

/// The limiter.
#[derive(Debug)]
pub struct Lockout {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<Key, Failures>>,
}

impl Lockout {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            failures: Mutex::default(),
        }
    }

    fn keys(address: Option<IpAddr>, user: &str) -> impl Iterator<Item = Key> {
        address
            .map(Key::Address)
            .into_iter()
            .chain((!user.is_empty()).then(|| Key::User(user.to_owned())))
    }

    /// How long until this client or user may try again; `None` when they may now.
    pub fn retry_after(&self, address: Option<IpAddr>, user: &str) -> Option<Duration> {
        let now = Instant::now();
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self::keys(address, user)
            .filter_map(|key| failures.get(&key))
            .filter(|f| f.count >= self.max_failures)
            .map(|f| (f.window_start + self.window).saturating_duration_since(now))
            .filter(|wait| !wait.is_zero())
            .max()
    }

    /// Counts a failed attempt.
    pub fn failed(&self, address: Option<IpAddr>, user: &str) {
        let now = Instant::now();
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED {
            let window = self.window;
            failures.retain(|_, f| now.duration_since(f.window_start) < window);
            if failures.len() >= MAX_TRACKED {
                let mut starts: Vec<Instant> = failures.values().map(|f| f.window_start).collect();
                starts.sort_unstable();
                let median = starts[starts.len() / 2];
                failures.retain(|_, f| f.window_start > median);
            }
        }
        for key in Self::keys(address, user) {
            let entry = failures.entry(key).or_insert(Failures {
                count: 0,
                window_start: now,
            });
            if now.duration_since(entry.window_start) >= self.window {
                *entry = Failures {
                    count: 0,
                    window_start: now,
                };
            }
            entry.count = entry.count.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_an_address_or_a_user_until_the_window_passes() {
        let lockout = Lockout::new(3, Duration::from_millis(300));
        let here: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let there: Option<IpAddr> = Some("192.0.2.2".parse().unwrap());
        for _ in 0..2 {
            lockout.failed(here, "alice");
            assert_eq!(lockout.retry_after(here, "alice"), None);
        }
        lockout.failed(here, "alice");
        assert!(
            lockout.retry_after(here, "bob").is_some(),
            "the address is locked out"
        );
        assert!(
            lockout.retry_after(there, "alice").is_some(),
            "the user is locked out"
        );
        assert_eq!(lockout.retry_after(there, "bob"), None);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(lockout.retry_after(here, "alice"), None);
    }

    #[test]
    fn stays_bounded() {
        let lockout = Lockout::new(1, Duration::from_secs(60));
        for n in 0..(MAX_TRACKED as u32 + 10) {
            lockout.failed(None, &format!("user{n}"));
        }
        assert!(lockout.failures.lock().unwrap().len() <= MAX_TRACKED);
    }
}
