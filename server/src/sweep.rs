//! The announcement of a sweep: what garbage collection is about to delete, in a marker object
//! every replica reads before it accepts a manifest (and its blob-descriptor cache before it
//! answers for a blob). It sits below both `registry`, which reads it, and `gc`, which writes it.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::oci::Digest;
use crate::storage::{self, BlobStore, layout};

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

/// The candidates a sweep announces to every replica.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pending {
    /// Unix seconds when the sweep was announced.
    pub announced: u64,
    /// Blobs and manifests about to be deleted.
    pub digests: BTreeSet<Digest>,
}

/// Reads the announced sweep, if one is under way.
pub async fn pending(store: &dyn BlobStore) -> storage::Result<Option<Pending>> {
    let marker = storage::read_if_present(store, &layout::gc_marker(), MARKER_LIMIT).await?;
    Ok(marker.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Announces `pending` to every replica.
pub async fn announce(store: &dyn BlobStore, pending: &Pending) -> storage::Result<()> {
    let marker = serde_json::to_vec(pending).map_err(std::io::Error::other)?;
    store.put(&layout::gc_marker(), marker.into()).await
}

/// Ends the announcement, once the sweep is done.
pub async fn withdraw(store: &dyn BlobStore) -> storage::Result<()> {
    store.delete(&layout::gc_marker()).await
}

/// How often a write waiting on a sweep looks whether it is over.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// The longest a write waits for a sweep to let go of what it needs: far longer than a sweep
/// stands announced, so only a collection that died mid-way (whose marker the next one
/// replaces) makes a write give up.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Waits until no announced sweep names any of `needed`; the first still named after
/// [`WAIT_LIMIT`], if any. A write that needs a candidate waits the sweep out rather than fail:
/// afterwards it finds the candidate either kept (its own reference was seen in time) or gone.
pub async fn wait_out(
    store: &dyn BlobStore,
    needed: &[&Digest],
) -> storage::Result<Option<Digest>> {
    let started = std::time::Instant::now();
    loop {
        let named = pending(store).await?.and_then(|p| {
            needed
                .iter()
                .find(|d| p.digests.contains(**d))
                .map(|d| (*d).clone())
        });
        match named {
            None => return Ok(None),
            Some(digest) if started.elapsed() >= WAIT_LIMIT => return Ok(Some(digest)),
            Some(_) => tokio::time::sleep(WAIT_POLL).await,
        }
    }
}
