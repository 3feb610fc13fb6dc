//! Garbage collection that runs while replicas keep serving: `stowage gc` and
//! `stowage purge-uploads`.
//!
//! # Mark and sweep, online
//! 1. **Scan** every repository's links and every blob, with their times, in two listings.
//! 2. **Mark** from the roots (tagged manifests; with `delete_untagged` off, every manifest; and
//!    anything younger than the grace period): manifests, the children of indexes, the referrers
//!    of kept manifests, and the config and layer blobs they reference.
//! 3. **Announce** the candidates (unmarked, older than the grace period) in a marker object that
//!    every replica reads before accepting a manifest: a manifest referencing a candidate is
//!    refused with `MANIFEST_BLOB_UNKNOWN`.
//! 4. **Wait** longer than a manifest push may take ([`crate::sweep::MANIFEST_PUT_DEADLINE`]),
//!    so every push that started before the marker existed has finished.
//! 5. **Re-scan**, and mark from every manifest written since the first scan (a new or rewritten
//!    revision link), and every blob linked since: pushes that finished before the marker protect
//!    what they reference.
//! 6. **Sweep** what is still unmarked, then links left dangling, then remove the marker.
//!
//! So a racing manifest push either fails cleanly or keeps its blobs: never a stored manifest
//! pointing at a deleted blob.

mod mirrors;
mod purge;
mod retention;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use serde::Serialize;

use crate::manifest;
use crate::oci::{Digest, RepositoryName};
use crate::storage::{self, BlobStore, ObjectInfo, layout};

pub use crate::sweep::{MIN_SWEEP_WAIT, Pending};
pub use mirrors::MirrorRetention;
pub use purge::{PurgeOptions, purge_uploads};
pub use retention::{
    ACTOR as RETENTION_ACTOR, Deletion, RetentionOptions, RetentionReport, apply_retention,
};

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
    /// Also delete manifests no tag (and nothing kept) refers to.
    pub delete_untagged: bool,
    /// Nothing younger than this is deleted.
    pub grace_period: Duration,
    /// How long the announced candidates stand before the sweep; at least [`MIN_SWEEP_WAIT`]
    /// while replicas serve (only an offline collection may use less).
    pub sweep_wait: Duration,
    /// Drop the pull-through cache's repositories that nobody pulled for this long.
    pub mirror_retention: Option<MirrorRetention>,
}

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub manifests_deleted: usize,
    pub blobs_deleted: usize,
    pub links_deleted: usize,
    pub uploads_deleted: usize,
    /// Mirrored repositories dropped for not being pulled within the retention.
    pub mirrors_expired: usize,
    pub bytes_freed: u64,
    pub duration_seconds: f64,
    pub storage_requests: u64,
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
        format!(
            "{verb} {mirrors}{} manifests, {} blobs, {} dangling links and {} upload sessions, \
             freeing {} bytes, in {:.2}s with {} storage requests",
            self.manifests_deleted,
            self.blobs_deleted,
            self.links_deleted,
            self.uploads_deleted,
            self.bytes_freed,
            self.duration_seconds,
            self.storage_requests
        )
    }
}

/// One link found in a repository.
#[derive(Debug, Clone)]
struct Link {
    repository: RepositoryName,
    digest: Digest,
    key: String,
    modified: SystemTime,
}

/// What two listings tell about the registry.
#[derive(Debug, Default)]
struct Scan {
    revisions: Vec<Link>,
    layers: Vec<Link>,
    /// Tags' `current` links (their targets are read in the mark phase).
    tags: Vec<(RepositoryName, String)>,
    /// Tag history entries, `(link, manifest digest)`.
    tag_history: Vec<Link>,
    /// When manifests were last pulled.
    pulls: Vec<Link>,
    /// `(repository, subject)` → referrer entries.
    referrers: HashMap<(RepositoryName, Digest), Vec<Link>>,
    /// Mirrored repositories → when their last pull was recorded.
    mirror_pulls: HashMap<RepositoryName, SystemTime>,
    /// Blob digest → (size, time).
    blobs: HashMap<Digest, (u64, SystemTime)>,
}

impl Scan {
    async fn take(store: &dyn BlobStore) -> storage::Result<Self> {
        let mut scan = Self::default();
        for object in store.walk(&layout::repositories_root()).await? {
            scan.add_repository_object(&object);
        }
        for object in store.walk(&layout::blobs_root()).await? {
            // <alg>/<xx>/<hex>/data
            let parts: Vec<&str> = object.key.split('/').collect();
            if let [alg, _, hex, "data"] = parts.as_slice()
                && let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>()
            {
                scan.blobs.insert(digest, (object.size, object.modified));
            }
        }
        Ok(scan)
    }

    fn add_repository_object(&mut self, object: &ObjectInfo) {
        let parts: Vec<&str> = object.key.split('/').collect();
        let Some(split) = parts.iter().position(|p| p.starts_with('_')) else {
            return;
        };
        let Ok(repository) = parts[..split].join("/").parse::<RepositoryName>() else {
            return;
        };
        let key = format!("{}/{}", layout::repositories_root(), object.key);
        let link = |alg: &str, hex: &str| {
            format!("{alg}:{hex}")
                .parse::<Digest>()
                .ok()
                .map(|digest| Link {
                    repository: repository.clone(),
                    digest,
                    key: key.clone(),
                    modified: object.modified,
                })
        };
        match &parts[split..] {
            ["_manifests", "revisions", alg, hex, "link"] => self.revisions.extend(link(alg, hex)),
            ["_layers", alg, hex, "link"] => self.layers.extend(link(alg, hex)),
            ["_pulls", alg, hex] => self.pulls.extend(link(alg, hex)),
            ["_proxy", "lastpull"] => {
                self.mirror_pulls
                    .insert(repository.clone(), object.modified);
            }
            ["_manifests", "tags", tag, "current", "link"] => {
                self.tags.push((repository.clone(), (*tag).to_owned()));
            }
            ["_manifests", "tags", _, "index", alg, hex, "link"] => {
                self.tag_history.extend(link(alg, hex));
            }
            ["_referrers", s_alg, s_hex, alg, hex, "link"] => {
                if let (Ok(subject), Some(entry)) =
                    (format!("{s_alg}:{s_hex}").parse::<Digest>(), link(alg, hex))
                {
                    self.referrers
                        .entry((repository.clone(), subject))
                        .or_default()
                        .push(entry);
                }
            }
            _ => {}
        }
    }
}

/// The marking state, kept across the first mark and the re-scan.
#[derive(Default)]
struct Marks {
    manifests: HashSet<(RepositoryName, Digest)>,
    blobs: HashSet<Digest>,
    /// Manifest bodies already read, by digest: a manifest in many repositories is read once.
    parsed: HashMap<Digest, Option<manifest::Manifest>>,
}

impl Marks {
    /// Marks `roots` and everything reachable from them.
    async fn mark(
        &mut self,
        store: &dyn BlobStore,
        scan: &Scan,
        roots: Vec<(RepositoryName, Digest)>,
    ) -> storage::Result<()> {
        let mut queue = roots;
        while let Some((repository, digest)) = queue.pop() {
            if !self.manifests.insert((repository.clone(), digest.clone())) {
                continue;
            }
            self.blobs.insert(digest.clone());
            if !self.parsed.contains_key(&digest) {
                let body = storage::read_if_present(
                    store,
                    &layout::blob_data(&digest),
                    MANIFEST_READ_LIMIT,
                )
                .await?;
                let parsed = body.and_then(|b| manifest::parse(&b, None).ok());
                self.parsed.insert(digest.clone(), parsed);
            }
            if let Some(Some(parsed)) = self.parsed.get(&digest) {
                let blobs = parsed.config.iter().chain(&parsed.layers);
                self.blobs.extend(blobs.map(|d| d.digest.clone()));
                queue.extend(
                    parsed
                        .manifests
                        .iter()
                        .map(|d| (repository.clone(), d.digest.clone())),
                );
            }
            if let Some(referrers) = scan.referrers.get(&(repository.clone(), digest.clone())) {
                queue.extend(
                    referrers
                        .iter()
                        .map(|r| (repository.clone(), r.digest.clone())),
                );
            }
        }
        Ok(())
    }
}

/// Runs one collection over `store`.
pub async fn run_once(store: Arc<dyn BlobStore>, options: &Options) -> storage::Result<Report> {
    let started = Instant::now();
    let counting = Arc::new(storage::Counting::new(store));
    let store: &dyn BlobStore = counting.as_ref();
    let run_start = SystemTime::now();
    let cutoff = run_start
        .checked_sub(options.grace_period)
        .unwrap_or(SystemTime::UNIX_EPOCH);

    let mut scan = Scan::take(store).await?;
    let expired = match &options.mirror_retention {
        Some(retention) => {
            mirrors::expire(store, &mut scan, retention, run_start, options.dry_run).await?
        }
        None => Vec::new(),
    };
    let mut marks = Marks::default();
    let roots = roots(store, &scan, options, cutoff).await?;
    marks.mark(store, &scan, roots).await?;

    let (mut blobs, mut manifests) = candidates(&scan, &marks, options, cutoff);
    let nothing_to_delete = blobs.is_empty() && manifests.is_empty();
    if !options.dry_run && !nothing_to_delete {
        let announced = Pending {
            announced: crate::upload::token::unix_seconds(SystemTime::now()),
            digests: blobs
                .iter()
                .cloned()
                .chain(manifests.iter().map(|l| l.digest.clone()))
                .collect(),
        };
        crate::sweep::announce(store, &announced).await?;
        tokio::time::sleep(options.sweep_wait).await;
        // Manifests pushed since the first scan (new, or rewritten) protect what they reference.
        let rescan = Scan::take(store).await?;
        let seen: HashMap<&str, SystemTime> = scan
            .revisions
            .iter()
            .map(|r| (r.key.as_str(), r.modified))
            .collect();
        let recent = run_start
            .checked_sub(TIMESTAMP_GRANULARITY)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let fresh: Vec<_> = rescan
            .revisions
            .iter()
            .filter(|r| seen.get(r.key.as_str()) != Some(&r.modified) || r.modified >= recent)
            .map(|r| (r.repository.clone(), r.digest.clone()))
            .collect();
        marks.mark(store, &rescan, fresh).await?;
        // So do blobs linked since (an upload that found its blob already there only links it).
        let linked: HashMap<&str, SystemTime> = scan
            .layers
            .iter()
            .map(|l| (l.key.as_str(), l.modified))
            .collect();
        marks.blobs.extend(
            rescan
                .layers
                .iter()
                .filter(|l| linked.get(l.key.as_str()) != Some(&l.modified) || l.modified >= recent)
                .map(|l| l.digest.clone()),
        );
        blobs.retain(|digest| !marks.blobs.contains(digest));
        manifests.retain(|link| {
            !marks
                .manifests
                .contains(&(link.repository.clone(), link.digest.clone()))
        });
    }

    let mut report = Report {
        dry_run: options.dry_run,
        mirrors_expired: expired.len(),
        deleted: expired
            .iter()
            .map(|name| format!("mirror {name}"))
            .collect(),
        ..Report::default()
    };
    let deleted_manifests: HashSet<(RepositoryName, Digest)> = manifests
        .iter()
        .map(|l| (l.repository.clone(), l.digest.clone()))
        .collect();
    let mut doomed: Vec<String> = Vec::new();
    for link in &manifests {
        report
            .deleted
            .push(format!("manifest {}@{}", link.repository, link.digest));
        report.manifests_deleted += 1;
        doomed.push(link.key.clone());
    }
    // The tag history, referrers entries and pull records of deleted manifests go with them.
    let entries = scan
        .tag_history
        .iter()
        .chain(scan.referrers.values().flatten())
        .chain(&scan.pulls);
    doomed.extend(
        entries
            .filter(|e| deleted_manifests.contains(&(e.repository.clone(), e.digest.clone())))
            .map(|e| e.key.clone()),
    );
    for digest in &blobs {
        let size = scan.blobs.get(digest).map_or(0, |(size, _)| *size);
        report.deleted.push(format!("blob {digest}"));
        report.blobs_deleted += 1;
        report.bytes_freed += size;
        doomed.push(layout::blob_data(digest));
    }
    if !options.dry_run {
        delete_in_batches(store, &doomed).await?;
    }
    report.links_deleted =
        sweep_dangling_links(store, &scan, &blobs, cutoff, options.dry_run).await?;
    if !options.dry_run && store.stat(&layout::gc_marker()).await.is_ok() {
        crate::sweep::withdraw(store).await?;
    }
    report.deleted.sort();
    report.duration_seconds = started.elapsed().as_secs_f64();
    report.storage_requests = counting.requests();
    Ok(report)
}

/// What the mark phase starts from.
async fn roots(
    store: &dyn BlobStore,
    scan: &Scan,
    options: &Options,
    cutoff: SystemTime,
) -> storage::Result<Vec<(RepositoryName, Digest)>> {
    let mut roots = Vec::new();
    for (repository, tag) in &scan.tags {
        let Ok(tag) = tag.parse() else { continue };
        let key = layout::tag_current_link(repository, &tag);
        let link = storage::read_if_present(store, &key, 1024).await?;
        if let Some(digest) = link.as_deref().and_then(layout::parse_link) {
            roots.push((repository.clone(), digest));
        }
    }
    roots.extend(
        scan.revisions
            .iter()
            .filter(|r| !options.delete_untagged || r.modified >= cutoff)
            .map(|r| (r.repository.clone(), r.digest.clone())),
    );
    Ok(roots)
}

/// Unmarked blobs and (with `delete_untagged`) manifests, older than the grace period.
fn candidates(
    scan: &Scan,
    marks: &Marks,
    options: &Options,
    cutoff: SystemTime,
) -> (BTreeSet<Digest>, Vec<Link>) {
    let blobs = scan
        .blobs
        .iter()
        .filter(|(digest, (_, modified))| *modified < cutoff && !marks.blobs.contains(*digest))
        .map(|(digest, _)| digest.clone())
        .collect();
    let manifests = if options.delete_untagged {
        scan.revisions
            .iter()
            .filter(|r| r.modified < cutoff)
            .filter(|r| {
                !marks
                    .manifests
                    .contains(&(r.repository.clone(), r.digest.clone()))
            })
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    (blobs, manifests)
}

/// Removes layer links whose blob is gone (deleted now, or missing before), when older than the
/// grace period. A blob pushed again since the scan keeps its link: it is checked just before.
async fn sweep_dangling_links(
    store: &dyn BlobStore,
    scan: &Scan,
    deleted: &BTreeSet<Digest>,
    cutoff: SystemTime,
    dry_run: bool,
) -> storage::Result<usize> {
    let dangling: Vec<&Link> = scan
        .layers
        .iter()
        .filter(|l| l.modified < cutoff)
        .filter(|l| deleted.contains(&l.digest) || !scan.blobs.contains_key(&l.digest))
        .collect();
    if dry_run {
        return Ok(dangling.len());
    }
    let owned: Vec<(String, String)> = dangling
        .iter()
        .map(|l| (layout::blob_data(&l.digest), l.key.clone()))
        .collect();
    let checks = owned.into_iter().map(|(blob, link)| async move {
        match store.stat(&blob).await {
            Ok(_) => Ok(None),
            Err(storage::Error::NotFound) => Ok(Some(link)),
            Err(err) => Err(err),
        }
    });
    let still_dangling: Vec<String> = futures::stream::iter(checks)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(Result::transpose)
        .collect::<storage::Result<_>>()?;
    delete_in_batches(store, &still_dangling).await?;
    Ok(still_dangling.len())
}

async fn delete_in_batches(store: &dyn BlobStore, keys: &[String]) -> storage::Result<()> {
    for batch in keys.chunks(storage::DELETE_BATCH) {
        store.delete_objects(batch).await?;
    }
    Ok(())
}
