//! Garbage collection that runs while replicas keep serving: `stowage gc` and
//! `stowage purge-uploads`.
//!
//! A collection decides from the reverse index and the review journal ([`crate::index`]): an
//! **incremental** run ([`incremental`]) reads only the journal written since the last one and
//! looks only at what it names, so its cost follows what changed, not what is stored. A **full**
//! run ([`full`]: `stowage gc --full`, and the first run on a registry whose index was never
//! whole) marks and sweeps from every link, audits the index against them (recording what it
//! lacks, pruning what nothing calls for) and leaves it whole.
//!
//! # No write is refused, none is broken
//! Both modes end the same way:
//! 1. **Announce** the candidates in the marker ([`crate::sweep`]) every replica reads before
//!    it builds on a blob or manifest: such a write waits until the sweep is over, then finds
//!    the candidate either kept or gone (and a blob upload writes it anew).
//! 2. **Wait** longer than a write may take ([`crate::sweep::MANIFEST_PUT_DEADLINE`]), so every
//!    write that started before the marker existed has finished.
//! 3. **Judge again** from fresh reads: a write that finished in time recorded its reference
//!    (in the index, before its link) and keeps what it needs.
//! 4. **Sweep** what is still condemned, then its index entries, then withdraw the marker.
//!
//! So a racing push keeps its blobs: never a stored manifest pointing at a deleted blob. Steps
//! 2 to 4 run while the announcement's lease is renewed ([`crate::sweep::Announcement::hold`]),
//! and stop where they stand when it cannot be: a collection that dies holds writes up for a
//! lease's length, and one that lives never deletes under a write that went ahead.
//!
//! Before judging, a run records into the index what pushes journaled
//! ([`crate::index::Journaled`]), and an incremental run does so again after the wait.

mod audit;
mod full;
mod incremental;
mod mirrors;
mod purge;
mod retention;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::index::{ReferenceIndex, StoredIndex, Usage};
use crate::manifest;
use crate::oci::Digest;
use crate::storage::{self, BlobStore, layout};

pub use crate::sweep::{CLOCK_ALLOWANCE, Lease, MIN_SWEEP_WAIT, Pending, pending};
pub use mirrors::MirrorRetention;
pub use purge::{PurgeOptions, purge_uploads};
pub use retention::{
    ACTOR as RETENTION_ACTOR, Deletion, RetentionOptions, RetentionReport, apply_retention,
};

/// What stops a collection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// Announcing or holding the sweep's announcement failed (see [`crate::sweep`]).
    #[error(transparent)]
    Sweep(#[from] crate::sweep::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// S3 times objects to the second: a manifest rewritten within the second of the first scan
/// keeps its time, so anything that recent counts as written during the run.
const TIMESTAMP_GRANULARITY: Duration = Duration::from_secs(1);
/// Manifests larger than this are not read (and so mark nothing); pushes are capped far lower.
const MANIFEST_READ_LIMIT: u64 = 16 * 1024 * 1024;

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Report what would go, delete nothing.
    pub dry_run: bool,
    /// Mark and sweep from every link and audit the index, rather than review the journal.
    pub full: bool,
    /// Run in full anyway when the index was last audited (found whole) longer ago than this:
    /// one schedule runs both kinds, never two collections at once.
    pub full_every: Option<Duration>,
    /// Also delete manifests no tag (and nothing kept) refers to.
    pub delete_untagged: bool,
    /// Nothing younger than this is deleted.
    pub grace_period: Duration,
    /// How long the announced candidates stand before the sweep; at least [`MIN_SWEEP_WAIT`]
    /// while replicas serve (only an offline collection may use less).
    pub sweep_wait: Duration,
    /// Drop the pull-through cache's repositories that nobody pulled for this long.
    pub mirror_retention: Option<MirrorRetention>,
    /// Quotas a full run reports usage against.
    pub quotas: Vec<crate::policies::Quota>,
}

impl Options {
    /// What is older than this, in a run started at `run_start`, is past the grace period.
    fn cutoff(&self, run_start: SystemTime) -> SystemTime {
        run_start
            .checked_sub(self.grace_period)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// How a run decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// From the journal and the index.
    #[default]
    Incremental,
    /// From every link, auditing the index.
    Full,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incremental => "incremental",
            Self::Full => "full",
        }
    }
}

/// Runs one collection over `store`: full when asked for, when the index was never whole, or
/// when its last audit is older than `full_every`; incremental otherwise.
pub async fn run_once(store: Arc<dyn BlobStore>, options: &Options) -> Result<Report> {
    let started = Instant::now();
    let counting = Arc::new(storage::Counting::new(store));
    let index = StoredIndex::new(counting.clone());
    let audited = index.complete_since().await?;
    let overdue = |since: SystemTime| {
        options
            .full_every
            .is_some_and(|every| since.elapsed().is_ok_and(|age| age >= every))
    };
    let full = options.full || audited.is_none_or(overdue);
    let mut report = if full {
        full::collect(counting.as_ref(), &index, options).await?
    } else {
        incremental::collect(counting.as_ref(), &index, options).await?
    };
    report.duration_seconds = started.elapsed().as_secs_f64();
    report.storage_requests = counting.requests();
    Ok(report)
}

/// Marks a registry's index whole when nothing was ever stored in it, so that its first
/// collection is already incremental. A registry with content keeps waiting for a full run.
pub async fn adopt_if_empty(store: Arc<dyn BlobStore>) -> storage::Result<bool> {
    let index = StoredIndex::new(store.clone());
    if index.complete_since().await?.is_some() {
        return Ok(false);
    }
    match store.list(&layout::repositories_root()).await {
        Err(storage::Error::NotFound) => {}
        Ok(names) if names.is_empty() => {}
        Ok(_) => return Ok(false),
        Err(err) => return Err(err),
    }
    index.mark_complete(std::time::SystemTime::now()).await?;
    Ok(true)
}

/// The manifest stored as `digest`; `None` when it is missing, too large or not a manifest.
async fn read_manifest(
    store: &dyn BlobStore,
    digest: &Digest,
) -> storage::Result<Option<manifest::Manifest>> {
    let body =
        storage::read_if_present(store, &layout::blob_data(digest), MANIFEST_READ_LIMIT).await?;
    Ok(body.and_then(|b| manifest::parse(&b, None).ok()))
}

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub mode: Mode,
    pub manifests_deleted: usize,
    pub blobs_deleted: usize,
    pub links_deleted: usize,
    pub uploads_deleted: usize,
    /// Mirrored repositories dropped for not being pulled within the retention.
    pub mirrors_expired: usize,
    pub bytes_freed: u64,
    /// Journal reviews this run settled.
    pub reviewed: usize,
    /// Journal pages left for a later run (too young to review).
    pub journal_pending: usize,
    /// Index entries the audit found missing (drift) and recorded.
    pub index_entries_added: usize,
    /// Index entries that stood for nothing any more, pruned.
    pub index_entries_pruned: usize,
    pub duration_seconds: f64,
    pub storage_requests: u64,
    /// What is stored once the run is over, counted from the links (a full run reads them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// With the usage: each repository and namespace under a quota, the fullest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<crate::index::usage::QuotaUsage>,
    /// `blob <digest>`, `manifest <repository>@<digest>` and `upload <repository>/<id>` for
    /// everything deleted.
    pub deleted: Vec<String>,
}

impl Report {
    /// The human summary `stowage gc` prints.
    pub fn summary(&self) -> String {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let mirrors = if self.mirrors_expired > 0 {
            format!("{} unused mirrored repositories, ", self.mirrors_expired)
        } else {
            String::new()
        };
        let drift = if self.index_entries_added + self.index_entries_pruned > 0 {
            format!(
                "; the index lacked {} entries and had {} stale",
                self.index_entries_added, self.index_entries_pruned
            )
        } else {
            String::new()
        };
        format!(
            "{} run: {verb} {mirrors}{} manifests, {} blobs, {} dangling links and {} upload \
             sessions, freeing {} bytes, in {:.2}s with {} storage requests ({} reviews \
             settled, {} journal pages pending){drift}",
            self.mode.as_str(),
            self.manifests_deleted,
            self.blobs_deleted,
            self.links_deleted,
            self.uploads_deleted,
            self.bytes_freed,
            self.duration_seconds,
            self.storage_requests,
            self.reviewed,
            self.journal_pending
        )
    }
}

async fn delete_in_batches(store: &dyn BlobStore, keys: &[String]) -> storage::Result<()> {
    for batch in keys.chunks(storage::DELETE_BATCH) {
        store.delete_objects(batch).await?;
    }
    Ok(())
}
