//! The pull-through cache: repositories below a configured prefix mirror an upstream registry.
//!
//! Manifests by tag are served from the cache while fresh (`tag-ttl`), then revalidated with a
//! `HEAD` and refetched only when the digest moved; content by digest is immutable and cached
//! until gc. Blobs stream to the client while they are written to storage and verified; a blob
//! not yet cached is fetched once per replica however many clients ask for it at once.
//! Everything cached is stored like pushed content, so any replica serves it, and tags, the
//! referrers API and gc work as usual. Per-replica state (when a tag was last checked, which
//! fetches are under way) lives in memory only: replicas never write state for each other.

mod blobs;
mod manifests;
mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use blobs::BlobAnswer;
pub use manifests::Served;
pub use upstream::{Upstream, UpstreamSettings};

use crate::client::ClientError;
use crate::metrics::Metrics;
use crate::oci::{Digest, RepositoryName};
use crate::registry::{self, Registry};

/// Tags whose last check is remembered, per replica.
const VALIDATED_TAGS: usize = 100_000;

/// Why a pull through the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// The upstream could not be reached, refused us, or answered with an error.
    #[error("upstream {upstream}: {reason}")]
    Upstream { upstream: String, reason: String },
    /// The upstream sent content that does not match its digest.
    #[error("upstream {upstream} sent corrupt content: {reason}")]
    Corrupt { upstream: String, reason: String },
}

impl Error {
    fn upstream(upstream: &Upstream, err: ClientError) -> Self {
        match err {
            ClientError::Verification(reason) => Self::Corrupt {
                upstream: upstream.config.url.to_string(),
                reason,
            },
            other => Self::Upstream {
                upstream: upstream.config.url.to_string(),
                reason: other.to_string(),
            },
        }
    }
}

/// What a proxied request found, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache without asking the upstream.
    Hit,
    /// The upstream confirmed the cached tag.
    Revalidated,
    /// Fetched from the upstream.
    Miss,
    /// The upstream failed; a cached tag was served anyway.
    Stale,
    /// The upstream failed and nothing cached could answer.
    UpstreamError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Revalidated => "revalidated",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::UpstreamError => "upstream_error",
        }
    }
}

/// The pull-through cache, as `config` resolves it.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub upstreams: Vec<UpstreamSettings>,
    pub retention: Option<Duration>,
}

/// The upstreams, and this replica's memory of them.
pub struct Proxy {
    /// Longest prefix first, so `mirror/team` wins over `mirror`.
    upstreams: Vec<Upstream>,
    /// `name:tag` → when the upstream last confirmed it.
    validated: quick_cache::sync::Cache<String, Instant>,
    /// Blob fetches under way here, so concurrent pulls share one.
    fetches: Arc<Mutex<HashMap<Digest, watch::Receiver<bool>>>>,
    /// `name` → the last day a pull of it was recorded from here.
    pulls: quick_cache::sync::Cache<String, u64>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("upstreams", &self.upstreams)
            .finish_non_exhaustive()
    }
}

/// The upstream serving a repository, the repository's name there, and when the request that
/// asked must have the upstream's answer.
pub struct Route<'a> {
    pub upstream: &'a Upstream,
    pub remote: String,
    deadline: tokio::time::Instant,
}

impl Route<'_> {
    /// `call` to the upstream, within what is left of the request's deadline: the upstream's
    /// `timeout` bounds the whole exchange, however many requests it takes.
    async fn within<T>(
        &self,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout_at(self.deadline, call)
            .await
            .unwrap_or_else(|_| {
                Err(self
                    .upstream
                    .client
                    .no_answer_within(self.upstream.config.timeout))
            })
    }
}

impl Proxy {
    /// The proxy for `config`; `None` when it has no upstream.
    pub fn new(
        config: &Settings,
        reload_interval: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Option<Arc<Self>>, String> {
        if config.upstreams.is_empty() {
            return Ok(None);
        }
        let mut upstreams = config
            .upstreams
            .iter()
            .map(|upstream| {
                Upstream::new(upstream.clone(), reload_interval)
                    .map_err(|err| format!("upstream {}: {err}", upstream.prefix))
            })
            .collect::<Result<Vec<_>, _>>()?;
        upstreams.sort_by_key(|u| std::cmp::Reverse(u.prefix().len()));
        Ok(Some(Arc::new(Self {
            upstreams,
            validated: quick_cache::sync::Cache::new(VALIDATED_TAGS),
            fetches: Arc::default(),
            pulls: quick_cache::sync::Cache::new(VALIDATED_TAGS),
            metrics,
        })))
    }

    /// The upstream `name` is mirrored from, if any, for a request arriving now.
    pub fn route(&self, name: &RepositoryName) -> Option<Route<'_>> {
        self.upstreams.iter().find_map(|upstream| {
            upstream.remote_name(name).map(|remote| Route {
                upstream,
                remote,
                deadline: tokio::time::Instant::now() + upstream.config.timeout,
            })
        })
    }

    fn record(
        &self,
        route: &Route<'_>,
        name: &RepositoryName,
        kind: &'static str,
        what: &str,
        outcome: Outcome,
    ) {
        // Hits are the hot path and the access log already has them; the rest is news.
        macro_rules! log_at {
            ($level:expr) => {
                tracing::event!(
                    target: "stowage::proxy",
                    $level,
                    upstream = route.upstream.prefix(),
                    repository = %name,
                    kind,
                    reference = what,
                    outcome = outcome.as_str(),
                    "pull through"
                )
            };
        }
        if matches!(outcome, Outcome::Hit | Outcome::Revalidated) {
            log_at!(tracing::Level::DEBUG);
        } else {
            log_at!(tracing::Level::INFO);
        }
        if let Some(metrics) = &self.metrics {
            metrics.proxy_outcome(route.upstream.prefix(), kind, outcome.as_str());
        }
    }

    /// Records, at most once a day per repository and replica, that `name` was pulled, so gc
    /// can drop what nobody pulls any more. Best effort: a failed write only delays that.
    async fn mark_pulled(&self, registry: &Registry, name: &RepositoryName) {
        let day = crate::registry::pulls::today();
        if self.pulls.get(name.as_str()) == Some(day) {
            return;
        }
        match registry.mark_mirror_pulled(name, day).await {
            Ok(()) => self.pulls.insert(name.to_string(), day),
            Err(err) => tracing::debug!(repository = %name, %err, "cannot record the pull"),
        }
    }
}
