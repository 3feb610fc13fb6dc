//! The shared tier: facts in Redis, where every replica finds what one of them learned.
//!
//! Redis is a help, never a dependency: each call is bounded by [`CALL_TIMEOUT`], and after a
//! failure the tier stands aside for [`STAND_ASIDE`], so requests go to storage as if there were
//! no Redis at all.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Known, SHARED_TTL};
use crate::metrics::Metrics;
use crate::oci::{Digest, RepositoryName};

/// The most a Redis call may take before the request goes on without it.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the tier is left alone after a failure.
const STAND_ASIDE: Duration = Duration::from_secs(5);

/// A Redis URL (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS). Its password
/// is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks that `url` is one the Redis client can connect to.
    pub fn parse(url: &str) -> Result<Self, String> {
        redis::Client::open(url).map_err(|err| format!("invalid Redis URL: {err}"))?;
        Ok(Self(url.to_owned()))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the host part: `user:password@` is the secret.
        let host = self.0.rsplit('@').next().unwrap_or_default();
        let scheme = self.0.split("://").next().unwrap_or_default();
        let host = host.strip_prefix(&format!("{scheme}://")).unwrap_or(host);
        write!(f, "{scheme}://{host}")
    }
}

pub(super) struct SharedTier {
    connection: ConnectionManager,
    prefix: String,
    /// Milliseconds since `epoch` until which the tier stands aside; 0 when it does not.
    aside_until: AtomicU64,
    epoch: Instant,
    metrics: Option<Arc<Metrics>>,
}

impl fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTier")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedTier {
    /// Connects lazily: a Redis that is down at start-up only means no shared tier for now.
    pub(super) fn new(url: &RedisUrl, namespace: &str, metrics: Option<Arc<Metrics>>) -> Self {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(STAND_ASIDE);
        let connection = redis::Client::open(url.0.as_str())
            .and_then(|client| ConnectionManager::new_lazy_with_config(client, config))
            .expect("a Redis URL checked when the configuration was read");
        Self {
            connection,
            prefix: format!("stowage:{namespace}"),
            aside_until: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        }
    }

    /// Keys of one blob share a hash tag, so they live together on a Redis cluster too.
    fn size_key(&self, digest: &Digest) -> String {
        format!("{}:{{{digest}}}:size", self.prefix)
    }

    fn link_key(&self, repository: &RepositoryName, digest: &Digest) -> String {
        format!("{}:{{{digest}}}:link:{repository}", self.prefix)
    }

    pub(super) async fn lookup(&self, repository: &RepositoryName, digest: &Digest) -> Known {
        let keys = [self.size_key(digest), self.link_key(repository, digest)];
        let mut command = redis::cmd("MGET");
        command.arg(&keys);
        let found: Option<(Option<u64>, Option<u8>)> = self.call(command).await;
        let known = found.map_or_else(Known::default, |(size, linked)| Known {
            size,
            linked: linked.is_some(),
        });
        self.count(if known.size.is_some() && known.linked {
            "hit"
        } else {
            "miss"
        });
        known
    }

    pub(super) async fn remember(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        known: Known,
    ) {
        let ttl = SHARED_TTL.as_secs();
        let mut pipe = redis::pipe();
        if let Some(size) = known.size {
            pipe.set_ex(self.size_key(digest), size, ttl).ignore();
        }
        if known.linked {
            pipe.set_ex(self.link_key(repository, digest), 1u8, ttl)
                .ignore();
        }
        let _: Option<()> = self.call(pipe).await;
    }

    pub(super) async fn forget_link(&self, repository: &RepositoryName, digest: &Digest) {
        let mut command = redis::cmd("DEL");
        command.arg(self.link_key(repository, digest));
        let _: Option<()> = self.call(command).await;
    }

    /// Runs `command` unless the tier stands aside; `None` when it does or the call fails.
    async fn call<C, T>(&self, command: C) -> Option<T>
    where
        C: Runnable,
        T: redis::FromRedisValue,
    {
        let now = self.now_ms();
        if now < self.aside_until.load(Ordering::Relaxed) {
            self.count("bypassed");
            return None;
        }
        let mut connection = self.connection.clone();
        match tokio::time::timeout(CALL_TIMEOUT, command.run(&mut connection)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(err)) => {
                self.stand_aside(&err.to_string());
                None
            }
            Err(_) => {
                self.stand_aside("timed out");
                None
            }
        }
    }

    fn stand_aside(&self, why: &str) {
        let until = self.now_ms() + u64::try_from(STAND_ASIDE.as_millis()).unwrap_or(u64::MAX);
        let previous = self.aside_until.swap(until, Ordering::Relaxed);
        if previous < self.now_ms() {
            tracing::warn!(
                error = why,
                "Redis blob cache unavailable: answering from storage for {STAND_ASIDE:?}"
            );
        }
        self.count("error");
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn count(&self, outcome: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.blob_cache("redis", outcome);
        }
    }
}

/// A single command or a pipeline.
trait Runnable {
    async fn run<T: redis::FromRedisValue>(
        &self,
        connection: &mut ConnectionManager,
    ) -> redis::RedisResult<T>;
}

impl Runnable for redis::Cmd {
    async fn run<T: redis::FromRedisValue>(
        &self,
        connection: &mut ConnectionManager,
    ) -> redis::RedisResult<T> {
        self.query_async(connection).await
    }
}

impl Runnable for redis::Pipeline {
    async fn run<T: redis::FromRedisValue>(
        &self,
        connection: &mut ConnectionManager,
    ) -> redis::RedisResult<T> {
        self.query_async(connection).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_their_password() {
        let url = RedisUrl::parse("redis://cache:s3cret@redis.example:6379/2").unwrap();
        let printed = format!("{url:?}");
        assert_eq!(printed, "redis://redis.example:6379/2");
        assert!(RedisUrl::parse("http://nope").is_err());
    }
}
