//! Watches for gc's announced sweep, so the cache never answers for a blob about to be deleted.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use super::{BlobDescriptors, Ticket};
use crate::oci::Digest;
use crate::storage::{self, BlobStore, layout};

/// How often the watch looks for an announcement.
pub(super) const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long after its last look (from when the look began) the watch still vouches for the
/// cache; past it, the cache is not used until storage answers again.
pub(super) const FRESHNESS: Duration = Duration::from_secs(3);

/// What the watch saw last.
#[derive(Debug)]
struct Seen {
    /// Bumped whenever the announced candidates change, or the watch comes back from a gap.
    generation: u64,
    /// When the last successful look began.
    looked: Option<Instant>,
    /// The announcement's size and time, to read it again only when it changes.
    marker: Option<(u64, SystemTime)>,
    candidates: BTreeSet<Digest>,
}

#[derive(Debug)]
pub(super) struct SweepWatch(RwLock<Seen>);

impl SweepWatch {
    pub(super) fn new() -> Self {
        Self(RwLock::new(Seen {
            generation: 0,
            looked: None,
            marker: None,
            candidates: BTreeSet::new(),
        }))
    }

    fn seen(&self) -> std::sync::RwLockReadGuard<'_, Seen> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A ticket for `digest` when the watch is fresh and no sweep names it.
    pub(super) fn ticket(&self, digest: &Digest) -> Option<Ticket> {
        let seen = self.seen();
        let fresh = seen.looked.is_some_and(|at| at.elapsed() < FRESHNESS);
        (fresh && !seen.candidates.contains(digest)).then_some(Ticket(seen.generation))
    }

    /// Whether what was learned under `ticket` may still be kept and served.
    pub(super) fn still_valid(&self, ticket: Ticket, digest: &Digest) -> bool {
        self.ticket(digest).is_some_and(|now| now.0 == ticket.0)
    }

    /// One look at storage. What the cache must drop, it drops after the generation moved, so a
    /// request storing at the same moment either is evicted or sees its ticket lapse.
    async fn look(&self, store: &dyn BlobStore, cache: &BlobDescriptors) {
        let began = Instant::now();
        let marker = match store.stat(&layout::gc_marker()).await {
            Ok(meta) => Some((meta.size, meta.modified)),
            Err(storage::Error::NotFound) => None,
            Err(err) => {
                tracing::debug!(error = %err, "could not look for a gc sweep");
                return;
            }
        };
        let unchanged = self.seen().marker == marker;
        let candidates = match (&marker, unchanged) {
            (_, true) => None,
            (None, false) => Some(BTreeSet::new()),
            (Some(_), false) => match crate::sweep::pending(store).await {
                Ok(pending) => Some(pending.map(|p| p.digests).unwrap_or_default()),
                Err(err) => {
                    tracing::debug!(error = %err, "could not read the announced gc sweep");
                    return;
                }
            },
        };
        let back_from_gap = {
            let mut seen = self
                .0
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let back_from_gap = seen.looked.is_some_and(|at| began - at >= FRESHNESS);
            if back_from_gap || candidates.is_some() {
                seen.generation += 1;
            }
            if let Some(candidates) = &candidates {
                seen.candidates.clone_from(candidates);
                seen.marker = marker;
            }
            seen.looked = Some(began);
            back_from_gap
        };
        if back_from_gap {
            tracing::info!("storage answers again: the blob cache starts afresh");
            cache.forget_everything();
        } else if let Some(candidates) = candidates.filter(|c| !c.is_empty()) {
            tracing::info!(
                blobs = candidates.len(),
                "gc announced a sweep: its candidates are answered from storage until it ends"
            );
            cache.evict(&candidates);
        }
    }
}

/// Polls for as long as the cache lives.
pub(super) fn spawn(store: Arc<dyn BlobStore>, cache: Weak<BlobDescriptors>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(cache) = cache.upgrade() else { return };
            cache.sweeps.look(store.as_ref(), &cache).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::registry::descriptors::{CacheConfig, Known};
    use crate::storage::MemoryStore;

    fn repo() -> crate::oci::RepositoryName {
        "team/app".parse().unwrap()
    }

    async fn announce(store: &dyn BlobStore, digests: &[&Digest]) {
        let pending = crate::sweep::Pending {
            announced: 1,
            digests: digests.iter().map(|d| (*d).clone()).collect(),
            lease: None,
        };
        store
            .put(
                &layout::gc_marker(),
                Bytes::from(serde_json::to_vec(&pending).unwrap()),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_sweep_takes_its_candidates_out_of_the_cache() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::default());
        let config = CacheConfig {
            entries: 100,
            ..CacheConfig::default()
        };
        let cache = BlobDescriptors::start(&config, Arc::clone(&store), None).unwrap();
        let doomed = Digest::sha256_of(b"doomed");
        let kept = Digest::sha256_of(b"kept");
        // Nothing is vouched for before the first look.
        assert!(cache.ticket(&doomed).is_none());
        cache.sweeps.look(store.as_ref(), &cache).await;
        let both = Known {
            size: Some(6),
            linked: true,
        };
        for digest in [&doomed, &kept] {
            let ticket = cache.ticket(digest).unwrap();
            cache.remember(ticket, &repo(), digest, both).await;
            assert_eq!(cache.lookup(ticket, &repo(), digest).await, both);
        }
        // A request that took its ticket before the announcement cannot store after it.
        let late = cache.ticket(&doomed).unwrap();
        announce(store.as_ref(), &[&doomed]).await;
        cache.sweeps.look(store.as_ref(), &cache).await;
        assert!(cache.ticket(&doomed).is_none());
        cache.remember(late, &repo(), &doomed, both).await;
        assert_eq!(cache.local.lookup(&repo(), &doomed), Known::default());
        let ticket = cache.ticket(&kept).unwrap();
        assert_eq!(cache.lookup(ticket, &repo(), &kept).await, both);
        // After the sweep, the doomed blob is not in the cache to be found again.
        store.delete(&layout::gc_marker()).await.unwrap();
        cache.sweeps.look(store.as_ref(), &cache).await;
        let ticket = cache.ticket(&doomed).unwrap();
        assert_eq!(
            cache.lookup(ticket, &repo(), &doomed).await,
            Known::default()
        );
    }
}
