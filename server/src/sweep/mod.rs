//! The announcement of a sweep: what garbage collection is about to delete, in a marker object
//! every replica reads before it accepts a manifest (and its blob-descriptor cache before it
//! answers for a blob). It sits below both `registry`, which reads it, and `gc`, which writes it.
//!
//! # A lease, so a dead collection holds nothing up
//! A collection holds its announcement as a lease ([`lease`]): it renews it every few seconds
//! in a small object beside the marker, and stops (deleting nothing more) when it could not
//! renew in time. A write waiting on the announcement goes ahead once the lease has lapsed, by
//! its own clock, [`CLOCK_ALLOWANCE`] later than the collection stops by its own: so a
//! collection killed mid-sweep holds pushes up for a lease's length, not until the next run,
//! and a live collection never deletes under a write that went ahead.

mod lease;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::oci::Digest;
use crate::storage::{self, BlobStore, layout};

pub use lease::{Announcement, CLOCK_ALLOWANCE, LEASE, STOP_BEFORE};

/// A manifest push gives up rather than write after this long: garbage collection waits longer
/// than this between announcing a sweep and sweeping, so a push that did not see the
/// announcement has always finished before the sweep looks for what it references.
pub const MANIFEST_PUT_DEADLINE: Duration = Duration::from_secs(5);

/// The least time a sweep stands announced before it deletes, when replicas are serving: longer
/// than a manifest push may take, and long enough that every replica's blob-descriptor cache has
/// let go of the candidates (see `registry::descriptors`).
pub const MIN_SWEEP_WAIT: Duration = Duration::from_secs(2 * MANIFEST_PUT_DEADLINE.as_secs());

/// The largest marker read: a sweep of a million digests.
const MARKER_LIMIT: u64 = 64 * 1024 * 1024;

/// What went wrong holding an announcement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// Another collection's announcement stands and its lease is live.
    #[error(
        "another collection is sweeping (announced at unix time {announced}); this one starts \
         when it is done or its lease lapses"
    )]
    Busy { announced: u64 },
    /// The lease could not be renewed in time, so writes may go ahead: the sweep stopped.
    #[error(
        "the sweep's announcement could not be renewed in time, so the collection stopped; \
         what it did not delete is reviewed again by the next run"
    )]
    Lapsed,
    /// Another collection announced over this one's: that one sweeps, this one stopped.
    #[error("another collection announced a sweep over this one's, so this one stopped")]
    TakenOver,
}

/// Who holds an announcement, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Names the collection that announced, so a renewal never extends another's.
    pub sweep: String,
    /// Unix milliseconds (by the collection's clock) after which the announcement has lapsed.
    pub holds_until: u64,
}

/// The candidates a sweep announces to every replica.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pending {
    /// Unix seconds when the sweep was announced.
    pub announced: u64,
    /// Blobs and manifests about to be deleted.
    pub digests: BTreeSet<Digest>,
    /// The lease as first announced; renewals go to the lease object. A marker without one
    /// (from an older collection) stands until a collection replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

impl Pending {
    /// When the announcement lapses: its lease as last renewed. `None` for a marker with no
    /// lease, which never lapses.
    pub async fn holds_until(&self, store: &dyn BlobStore) -> storage::Result<Option<u64>> {
        let Some(lease) = &self.lease else {
            return Ok(None);
        };
        let renewed = read_lease(store)
            .await?
            .filter(|renewed| renewed.sweep == lease.sweep)
            .map_or(0, |renewed| renewed.holds_until);
        Ok(Some(lease.holds_until.max(renewed)))
    }

    /// Whether the collection that announced this has stopped renewing it, judged by this
    /// machine's clock with [`CLOCK_ALLOWANCE`] to spare.
    pub async fn lapsed(&self, store: &dyn BlobStore) -> storage::Result<bool> {
        Ok(self
            .holds_until(store)
            .await?
            .is_some_and(|until| unix_millis(SystemTime::now()) > until + millis(CLOCK_ALLOWANCE)))
    }
}

/// Reads the announced sweep, if one is under way.
pub async fn pending(store: &dyn BlobStore) -> storage::Result<Option<Pending>> {
    let marker = storage::read_if_present(store, &layout::gc_marker(), MARKER_LIMIT).await?;
    Ok(marker.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Removes an announcement whose collection died (its lease lapsed) or that has no lease, so
/// replicas' blob caches stop passing over its candidates. Whether one was removed.
pub async fn clear_lapsed(store: &dyn BlobStore) -> storage::Result<bool> {
    let Some(standing) = pending(store).await? else {
        return Ok(false);
    };
    if standing.lease.is_some() && !standing.lapsed(store).await? {
        return Ok(false);
    }
    store.delete(&layout::gc_marker()).await?;
    store.delete(&layout::gc_lease()).await?;
    Ok(true)
}

/// The lease as last renewed, if any.
async fn read_lease(store: &dyn BlobStore) -> storage::Result<Option<Lease>> {
    let bytes = storage::read_if_present(store, &layout::gc_lease(), 4096).await?;
    Ok(bytes.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// How often a write waiting on a sweep looks whether it is over.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// The longest a write waits for a live sweep to let go of what it needs. A dead collection's
/// announcement lapses long before (within [`LEASE`] and [`CLOCK_ALLOWANCE`]).
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Waits until no announced sweep names any of `needed`, or the announcement naming them has
/// lapsed; the first still named after [`WAIT_LIMIT`], if any. A write that needs a candidate
/// waits the sweep out rather than fail: afterwards it finds the candidate either kept (its
/// own reference was seen in time) or gone.
pub async fn wait_out(
    store: &dyn BlobStore,
    needed: &[&Digest],
) -> storage::Result<Option<Digest>> {
    let started = std::time::Instant::now();
    loop {
        let Some(pending) = pending(store).await? else {
            return Ok(None);
        };
        let Some(named) = needed.iter().find(|d| pending.digests.contains(**d)) else {
            return Ok(None);
        };
        if pending.lapsed(store).await? {
            tracing::warn!(
                announced = pending.announced,
                "a collection stopped renewing its sweep's announcement (it died mid-sweep): \
                 writes go ahead, and the next collection takes its place"
            );
            return Ok(None);
        }
        if started.elapsed() >= WAIT_LIMIT {
            return Ok(Some((*named).clone()));
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    millis(time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
