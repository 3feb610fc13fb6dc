//! The blob-descriptor cache: what storage said about blobs, so a blob `HEAD` (and the checks of
//! a manifest push, a mount, a pull) need not ask again.
//!
//! It holds two facts, both true for as long as the blob exists:
//! - a blob's **size**, by digest (content never changes);
//! - a blob's **membership** of a repository (its layer link).
//!
//! Facts live in each replica's memory ([`local`]) and, optionally, in Redis ([`shared`]) where
//! every replica finds what one of them learned. Neither tier ever holds "absent": a blob pushed
//! on one replica is visible on all of them at once.
//!
//! # Never a blob gc deleted
//! Only `stowage gc` deletes blob content, and it announces what it will delete
//! ([`crate::sweep::Pending`]) at least [`crate::sweep::MIN_SWEEP_WAIT`] before deleting it. Every
//! replica watches for that announcement ([`sweeps`]) and, while a sweep stands:
//! - answers its candidates from storage only, never from either tier, and evicts them from its
//!   memory;
//! - stores nothing about them.
//!
//! The watch polls every [`sweeps::POLL_INTERVAL`]; a replica that has not heard from storage
//! within [`sweeps::FRESHNESS`] uses neither tier (it might have missed an announcement), and
//! one that comes back after such a gap forgets all it held. Redis entries expire after
//! [`SHARED_TTL`], so anything stored before its writer heard of a sweep is gone before the sweep
//! starts. A blob deleted through the API is forgotten at once by the replica that deleted it and
//! in Redis; other replicas' memories drop a membership within [`LINK_TTL`].

mod local;
mod shared;
mod sweeps;

use std::sync::Arc;
use std::time::Duration;

use crate::oci::{Digest, RepositoryName};
use crate::storage::BlobStore;
use local::LocalTier;
pub use shared::RedisUrl;
use shared::SharedTier;
use sweeps::SweepWatch;

/// How long a replica's memory trusts a blob's membership of a repository: a blob deleted through
/// another replica is still seen here for at most this long.
pub const LINK_TTL: Duration = Duration::from_secs(5);

/// How long Redis keeps a fact. Shorter than the least sweep wait less the watch's freshness, so
/// whatever a replica stored before it heard of a sweep has expired before the sweep deletes.
pub const SHARED_TTL: Duration = Duration::from_secs(5);

const _: () = assert!(
    SHARED_TTL.as_secs() + sweeps::FRESHNESS.as_secs() + 2
        <= crate::sweep::MIN_SWEEP_WAIT.as_secs()
);

/// How a replica caches blob descriptors.
#[derive(Debug, Clone, Default)]
pub struct CacheConfig {
    /// Facts kept in memory; 0 turns the cache off (Redis too).
    pub entries: u64,
    /// The shared tier, when there is one.
    pub redis: Option<RedisUrl>,
    /// Keeps one registry's facts apart from another's in a shared Redis: the storage's identity.
    pub namespace: String,
}

/// What the cache knows of a blob in a repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    pub size: Option<u64>,
    pub linked: bool,
}

/// Permission to store what a storage read found, taken before the read: refused if a sweep was
/// announced (or the watch went stale) in between.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// The cache of one replica.
#[derive(Debug)]
pub struct BlobDescriptors {
    local: LocalTier,
    shared: Option<SharedTier>,
    sweeps: SweepWatch,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl BlobDescriptors {
    /// Starts the cache and its watch on `store`; `None` when `config` turns it off. The watch
    /// runs for as long as the cache lives.
    pub fn start(
        config: &CacheConfig,
        store: Arc<dyn BlobStore>,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Option<Arc<Self>> {
        if config.entries == 0 {
            return None;
        }
        let local = LocalTier::new(config.entries);
        let shared = config
            .redis
            .as_ref()
            .map(|url| SharedTier::new(url, &config.namespace, metrics.clone()));
        if let Some(url) = &config.redis {
            tracing::info!(redis = ?url, "blob cache shared in Redis");
        }
        let cache = Arc::new(Self {
            local,
            shared,
            sweeps: SweepWatch::new(),
            metrics,
        });
        sweeps::spawn(store, Arc::downgrade(&cache));
        Some(cache)
    }

    /// A ticket for `digest`, when the cache may be used for it now.
    pub fn ticket(&self, digest: &Digest) -> Option<Ticket> {
        let ticket = self.sweeps.ticket(digest);
        if ticket.is_none() {
            self.count("bypassed");
        }
        ticket
    }

    /// What either tier knows of `digest` in `repository`.
    pub async fn lookup(
        &self,
        ticket: Ticket,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Known {
        let mut known = self.local.lookup(repository, digest);
        if known.size.is_some() && known.linked {
            self.count("hit");
            return known;
        }
        self.count("miss");
        if let Some(shared) = &self.shared {
            let found = shared.lookup(repository, digest).await;
            // Learned from Redis while a sweep came? Then it may be about a doomed blob.
            if !self.sweeps.still_valid(ticket, digest) {
                return Known::default();
            }
            if found.size.is_some() || found.linked {
                self.remember_locally(ticket, repository, digest, found);
            }
            known.size = known.size.or(found.size);
            known.linked |= found.linked;
        }
        known
    }

    /// Stores what storage said of `digest` in `repository`, unless the ticket has lapsed.
    pub async fn remember(
        &self,
        ticket: Ticket,
        repository: &RepositoryName,
        digest: &Digest,
        known: Known,
    ) {
        if !self.remember_locally(ticket, repository, digest, known) {
            return;
        }
        if let Some(shared) = &self.shared {
            shared.remember(repository, digest, known).await;
        }
    }

    /// Stores in memory, then checks the ticket: a sweep announced at the same moment either
    /// evicts the new entry or lapses the ticket, which takes it back out. False when it lapsed.
    fn remember_locally(
        &self,
        ticket: Ticket,
        repository: &RepositoryName,
        digest: &Digest,
        known: Known,
    ) -> bool {
        self.local.remember(repository, digest, known);
        if self.sweeps.still_valid(ticket, digest) {
            return true;
        }
        self.local.forget(repository, digest);
        false
    }

    /// Forgets that `repository` holds `digest` (a delete through the API), here and in Redis.
    pub async fn forget_link(&self, repository: &RepositoryName, digest: &Digest) {
        self.local.forget_link(repository, digest);
        if let Some(shared) = &self.shared {
            shared.forget_link(repository, digest).await;
        }
    }

    fn count(&self, outcome: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.blob_cache("memory", outcome);
        }
    }

    /// Called by the watch: these blobs are about to be deleted.
    fn evict(&self, digests: &std::collections::BTreeSet<Digest>) {
        self.local.evict(digests);
    }

    /// Called by the watch after a gap in which a sweep might have gone unseen.
    fn forget_everything(&self) {
        self.local.clear();
    }
}
