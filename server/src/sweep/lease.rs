//! A collection's side of the announcement: announce, hold it while the sweep runs (renewing
//! its lease, and stopping the sweep when it cannot), withdraw it.
//!
//! The timing, from the start of the last renewal that succeeded (by the collection's clock):
//! the lease names [`LEASE`] later; the collection stops [`STOP_BEFORE`] that; a replica goes
//! ahead [`CLOCK_ALLOWANCE`] after it (by its own clock). So whatever the collection still had
//! in flight when it stopped has landed before a write goes ahead, with `STOP_BEFORE +
//! CLOCK_ALLOWANCE` to spare for clock skew and a slow request.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Error, Lease, Pending, pending, read_lease, unix_millis};
use crate::oci::Digest;
use crate::storage::{BlobStore, layout};

/// How long a renewal holds the announcement.
pub const LEASE: Duration = Duration::from_secs(20);
/// How often the collection renews; several renewals may fail before it has to stop.
const RENEW_EVERY: Duration = Duration::from_secs(4);
/// How long before its lease ends the collection stops, if it could not renew.
pub const STOP_BEFORE: Duration = Duration::from_secs(8);
/// How long after a lease ends a replica still waits on it: clocks differ.
pub const CLOCK_ALLOWANCE: Duration = Duration::from_secs(4);
/// How soon a failed renewal is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often a collection looks whether another's live announcement has ended.
const BUSY_POLL: Duration = Duration::from_secs(1);

/// A sweep this collection announced, and holds while its lease is renewed.
#[derive(Debug)]
pub struct Announcement {
    sweep: String,
    /// When the lease was last renewed (its first write counts).
    renewed: Instant,
}

impl Announcement {
    /// Announces `digests` as about to be deleted. Another collection's announcement that
    /// stands is waited out for a lease's length (a collection that just died lets go by
    /// then); still live, it makes this one [`Error::Busy`].
    pub async fn announce(store: &dyn BlobStore, digests: BTreeSet<Digest>) -> Result<Self, Error> {
        let started = Instant::now();
        while let Some(standing) = pending(store).await? {
            if standing.lease.is_none() || standing.lapsed(store).await? {
                tracing::warn!(
                    announced = standing.announced,
                    "a collection died mid-sweep: this one takes its place"
                );
                break;
            }
            if started.elapsed() >= LEASE + CLOCK_ALLOWANCE {
                return Err(Error::Busy {
                    announced: standing.announced,
                });
            }
            tokio::time::sleep(BUSY_POLL).await;
        }
        let renewed = Instant::now();
        let now = SystemTime::now();
        let lease = Lease {
            sweep: uuid::Uuid::new_v4().to_string(),
            holds_until: unix_millis(now + LEASE),
        };
        let pending = Pending {
            announced: unix_millis(now) / 1000,
            digests,
            lease: Some(lease.clone()),
        };
        // The lease first: a replica reading this marker never finds an older one beside it.
        write(store, &layout::gc_lease(), &lease).await?;
        write(store, &layout::gc_marker(), &pending).await?;
        Ok(Self {
            sweep: lease.sweep,
            renewed,
        })
    }

    /// Runs `work` (the wait, the judging again, the deletions) while renewing the lease. When
    /// the lease cannot be renewed in time, or another collection announced over this one,
    /// `work` is dropped where it stands and the error returned.
    pub async fn hold<T, E: From<Error>>(
        &self,
        store: &dyn BlobStore,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        tokio::select! {
            biased;
            lost = self.keep(store) => Err(lost.into()),
            done = work => done,
        }
    }

    /// Renews the lease for as long as it can; what stopped it, when it could not.
    async fn keep(&self, store: &dyn BlobStore) -> Error {
        let mut renewed = self.renewed;
        let mut next = renewed + RENEW_EVERY;
        loop {
            let stop_at = renewed + LEASE - STOP_BEFORE;
            tokio::time::sleep_until(next.min(stop_at)).await;
            let started = Instant::now();
            if started >= stop_at {
                return Error::Lapsed;
            }
            let holds_until = unix_millis(SystemTime::now() + LEASE);
            match tokio::time::timeout_at(stop_at, self.renew(store, holds_until)).await {
                Err(_) => return Error::Lapsed,
                Ok(Ok(())) => {
                    renewed = started;
                    next = started + RENEW_EVERY;
                }
                Ok(Err(Error::TakenOver)) => return Error::TakenOver,
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "could not renew the sweep's announcement; trying again");
                    next = Instant::now() + RETRY_AFTER;
                }
            }
        }
    }

    /// One renewal, unless another collection's lease stands in this one's place (or none
    /// does: then the announcement was withdrawn under it).
    async fn renew(&self, store: &dyn BlobStore, holds_until: u64) -> Result<(), Error> {
        if !self.still_ours(store).await? {
            return Err(Error::TakenOver);
        }
        let lease = Lease {
            sweep: self.sweep.clone(),
            holds_until,
        };
        Ok(write(store, &layout::gc_lease(), &lease).await?)
    }

    async fn still_ours(&self, store: &dyn BlobStore) -> Result<bool, Error> {
        Ok(read_lease(store)
            .await?
            .is_some_and(|lease| lease.sweep == self.sweep))
    }

    /// Ends the announcement once the sweep is done; one another collection took over is left
    /// to it.
    pub async fn withdraw(self, store: &dyn BlobStore) -> Result<(), Error> {
        if !self.still_ours(store).await? {
            return Err(Error::TakenOver);
        }
        store.delete(&layout::gc_marker()).await?;
        Ok(store.delete(&layout::gc_lease()).await?)
    }
}

async fn write(
    store: &dyn BlobStore,
    key: &str,
    value: &impl serde::Serialize,
) -> crate::storage::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    store.put(key, bytes.into()).await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::storage::MemoryStore;
    use crate::storage::testing::Hangs;

    fn digests() -> BTreeSet<Digest> {
        BTreeSet::from([Digest::sha256_of(b"doomed")])
    }

    /// Puts the lease back as the collection wrote it `ago`: as if it had stopped renewing.
    async fn age_lease(store: &dyn BlobStore, ago: Duration) {
        let mut marker = pending(store).await.unwrap().unwrap();
        let lease = marker.lease.as_mut().unwrap();
        lease.holds_until = unix_millis(SystemTime::now() + LEASE - ago);
        write(store, &layout::gc_lease(), &lease.clone())
            .await
            .unwrap();
        write(store, &layout::gc_marker(), &marker).await.unwrap();
    }

    #[tokio::test]
    async fn an_announcement_stands_while_its_lease_is_live_and_lapses_after() {
        let store = MemoryStore::default();
        let announcement = Announcement::announce(&store, digests()).await.unwrap();
        let marker = pending(&store).await.unwrap().unwrap();
        assert!(!marker.lapsed(&store).await.unwrap());

        age_lease(&store, LEASE + CLOCK_ALLOWANCE - Duration::from_secs(1)).await;
        let marker = pending(&store).await.unwrap().unwrap();
        assert!(
            !marker.lapsed(&store).await.unwrap(),
            "within the allowance"
        );

        age_lease(&store, LEASE + CLOCK_ALLOWANCE + Duration::from_secs(1)).await;
        let marker = pending(&store).await.unwrap().unwrap();
        assert!(marker.lapsed(&store).await.unwrap());
        // A write needing a candidate goes ahead at once.
        let needed = Digest::sha256_of(b"doomed");
        assert_eq!(
            super::super::wait_out(&store, &[&needed]).await.unwrap(),
            None
        );
        drop(announcement);
    }

    #[tokio::test]
    async fn a_renewal_keeps_an_old_announcement_live() {
        let store = MemoryStore::default();
        let announcement = Announcement::announce(&store, digests()).await.unwrap();
        age_lease(&store, LEASE * 2).await;
        let holds_until = unix_millis(SystemTime::now() + LEASE);
        announcement.renew(&store, holds_until).await.unwrap();
        let marker = pending(&store).await.unwrap().unwrap();
        assert_eq!(marker.holds_until(&store).await.unwrap(), Some(holds_until));
        assert!(!marker.lapsed(&store).await.unwrap());
    }

    #[tokio::test]
    async fn a_marker_without_a_lease_never_lapses_but_is_replaced() {
        let store = MemoryStore::default();
        let old = Pending {
            announced: 1,
            digests: digests(),
            lease: None,
        };
        write(&store, &layout::gc_marker(), &old).await.unwrap();
        assert!(!old.lapsed(&store).await.unwrap());
        let announcement = Announcement::announce(&store, digests()).await.unwrap();
        let marker = pending(&store).await.unwrap().unwrap();
        assert_eq!(marker.lease.unwrap().sweep, announcement.sweep);
    }

    #[tokio::test(start_paused = true)]
    async fn a_collection_finding_a_live_announcement_is_busy() {
        let store = MemoryStore::default();
        let first = Announcement::announce(&store, digests()).await.unwrap();
        let err = Announcement::announce(&store, digests()).await.unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        // The first still holds it.
        assert!(first.still_ours(&store).await.unwrap());
        first.withdraw(&store).await.unwrap();
        assert!(pending(&store).await.unwrap().is_none());
        assert!(read_lease(&store).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_collection_takes_the_place_of_a_lapsed_one() {
        let store = MemoryStore::default();
        let dead = Announcement::announce(&store, digests()).await.unwrap();
        age_lease(&store, LEASE + CLOCK_ALLOWANCE + Duration::from_secs(1)).await;
        let next = Announcement::announce(&store, digests()).await.unwrap();
        assert!(next.still_ours(&store).await.unwrap());
        // The dead one, had it lived on, may neither renew nor withdraw the new announcement.
        assert!(matches!(
            dead.renew(&store, u64::MAX).await,
            Err(Error::TakenOver)
        ));
        assert!(matches!(dead.withdraw(&store).await, Err(Error::TakenOver)));
        assert!(pending(&store).await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn holding_renews_the_lease_for_as_long_as_the_work_takes() {
        let store = MemoryStore::default();
        let announcement = Announcement::announce(&store, digests()).await.unwrap();
        let sweep = read_lease(&store).await.unwrap().unwrap().sweep;
        let work = async {
            for _ in 0..5 {
                // Spoil the lease, as if it were long past; the next renewal sets it right.
                let spoiled = Lease {
                    sweep: sweep.clone(),
                    holds_until: 0,
                };
                write(&store, &layout::gc_lease(), &spoiled).await.unwrap();
                tokio::time::sleep(RENEW_EVERY + Duration::from_millis(1)).await;
                let renewed = read_lease(&store).await.unwrap().unwrap();
                assert!(renewed.holds_until > unix_millis(SystemTime::now()));
            }
            Ok::<_, Error>("swept")
        };
        assert_eq!(announcement.hold(&store, work).await.unwrap(), "swept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_collection_another_announced_over_stops_its_work() {
        let store = MemoryStore::default();
        let announcement = Announcement::announce(&store, digests()).await.unwrap();
        let other = Lease {
            sweep: "another".to_owned(),
            holds_until: u64::MAX,
        };
        write(&store, &layout::gc_lease(), &other).await.unwrap();
        let work = std::future::pending::<Result<(), Error>>();
        let started = Instant::now();
        let err = announcement.hold(&store, work).await.unwrap_err();
        assert!(matches!(err, Error::TakenOver), "{err}");
        assert!(started.elapsed() <= RENEW_EVERY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_collection_whose_storage_hangs_stops_before_its_lease_ends() {
        let store = Hangs::default();
        let announcement = Announcement::announce(&store, digests()).await.unwrap();
        store.hung.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let work = std::future::pending::<Result<(), Error>>();
        let err = announcement.hold(&store, work).await.unwrap_err();
        assert!(matches!(err, Error::Lapsed), "{err}");
        assert_eq!(started.elapsed(), LEASE - STOP_BEFORE);
    }
}
