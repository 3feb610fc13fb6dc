//! Claims: small objects in storage by which a replica tells the others it is doing some work
//! (delivering an outbox entry, reconciling a rule), renewed while it works. A claim not renewed
//! for its time to live is void, so the work is taken over when its replica dies.
//!
//! Claims keep replicas from doing the same work at once; they are not locks. Two replicas that
//! look at the same moment may both start, so what they guard must be safe to do twice.

use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::storage::{self, BlobStore};

#[derive(Serialize, Deserialize)]
struct Claim {
    instance: String,
    /// Unix nanoseconds of its last renewal.
    renewed: u128,
}

pub(super) fn unix_nanos(at: SystemTime) -> u128 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}

/// Whether a replica other than `instance` renewed its claim at `key` within `ttl`.
pub async fn held_elsewhere(
    store: &dyn BlobStore,
    key: &str,
    instance: &str,
    ttl: Duration,
) -> bool {
    let Ok(body) = storage::read_small(store, key, 4096).await else {
        return false;
    };
    let Ok(claim) = serde_json::from_slice::<Claim>(&body) else {
        return false;
    };
    let now = unix_nanos(SystemTime::now());
    claim.instance != instance && now.saturating_sub(claim.renewed) < ttl.as_nanos()
}

async fn renew(store: &dyn BlobStore, keys: &[String], instance: &str) {
    let claim = Claim {
        instance: instance.to_owned(),
        renewed: unix_nanos(SystemTime::now()),
    };
    let body = Bytes::from(serde_json::to_vec(&claim).unwrap_or_default());
    for key in keys {
        if let Err(err) = store.put(key, body.clone()).await {
            tracing::warn!(key, %err, "cannot renew a claim");
        }
    }
}

/// When a claim is first written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Before the work starts.
    Now,
    /// Only once the work has run for one renewal interval: short work writes nothing.
    IfLong,
}

/// Runs `work` while claiming `keys` for `instance`, renewed every `renew_every`; the claims
/// are deleted when it ends.
pub async fn holding<F: Future>(
    store: &dyn BlobStore,
    keys: &[String],
    instance: &str,
    renew_every: Duration,
    start: Start,
    work: F,
) -> F::Output {
    let mut claimed = start == Start::Now;
    if claimed {
        renew(store, keys, instance).await;
    }
    tokio::pin!(work);
    let output = loop {
        tokio::select! {
            output = &mut work => break output,
            () = tokio::time::sleep(renew_every) => {
                claimed = true;
                renew(store, keys, instance).await;
            }
        }
    };
    if claimed {
        let _ = store.delete_objects(keys).await;
    }
    output
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::MemoryStore;

    #[tokio::test]
    async fn a_claim_holds_while_renewed_and_goes_with_its_work() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::default());
        let keys = vec!["_stowage/claims/work".to_owned()];
        let ttl = Duration::from_millis(300);
        let work = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            // Renewed every 100 ms, so still live after more than its time to live.
            (
                held_elsewhere(store.as_ref(), &keys[0], "b", ttl).await,
                held_elsewhere(store.as_ref(), &keys[0], "a", ttl).await,
            )
        };
        let renew_every = Duration::from_millis(100);
        let (by_other, by_self) =
            holding(store.as_ref(), &keys, "a", renew_every, Start::Now, work).await;
        assert!(by_other, "another replica sees the claim");
        assert!(!by_self, "its own claim does not stop a replica");
        assert!(
            !held_elsewhere(store.as_ref(), &keys[0], "b", ttl).await,
            "released when the work ends"
        );
    }

    #[tokio::test]
    async fn a_claim_not_renewed_is_void_and_short_work_writes_none() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::default());
        let keys = vec!["_stowage/claims/work".to_owned()];
        renew(store.as_ref(), &keys, "dead").await;
        let ttl = Duration::from_millis(200);
        assert!(held_elsewhere(store.as_ref(), &keys[0], "b", ttl).await);
        tokio::time::sleep(ttl).await;
        assert!(!held_elsewhere(store.as_ref(), &keys[0], "b", ttl).await);

        let other = vec!["_stowage/claims/short".to_owned()];
        let seen = holding(
            store.as_ref(),
            &other,
            "a",
            Duration::from_secs(10),
            Start::IfLong,
            async { held_elsewhere(store.as_ref(), &other[0], "b", ttl).await },
        )
        .await;
        assert!(!seen, "nothing is written for work shorter than a renewal");
    }
}
