//! The full collection: `stowage gc --full`, and the first run on a registry whose index is
//! not yet complete (one Distribution or an older Stowage wrote).
//!
//! # Mark and sweep, online
//! 1. **Scan** every repository's links and every blob, with their times, in two listings.
//! 2. **Mark** from the roots (tagged manifests; with `delete_untagged` off, every manifest; and
//!    anything younger than the grace period): manifests, the children of indexes, the referrers
//!    of kept manifests, and the config and layer blobs they reference.
//! 3. **Audit** the index: record every entry the links call for that it lacks (drift), so the
//!    index is complete from this run on.
//! 4. **Announce** the candidates (unmarked, older than the grace period) in the marker every
//!    replica reads before it builds on a blob or manifest: such a write waits the sweep out.
//! 5. **Wait** longer than a manifest push may take ([`crate::sweep::MANIFEST_PUT_DEADLINE`]),
//!    so every push that started before the marker existed has finished.
//! 6. **Re-scan**, and mark from every manifest written since the first scan (a new or rewritten
//!    revision link), and every blob linked since: pushes that finished before the marker protect
//!    what they reference.
//! 7. **Sweep** what is still unmarked, then links left dangling, then remove the marker.
//!
//! So a racing manifest push keeps its blobs: never a stored manifest pointing at a deleted blob.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::SystemTime;

use futures::StreamExt;

use super::{
    Error, Mode, Options, Report, Result, TIMESTAMP_GRANULARITY, audit, delete_in_batches, mirrors,
};
use crate::index::{self, Entry, Journaled, LinkKind, ReferenceIndex, Usage};
use crate::manifest;
use crate::oci::{Digest, RepositoryName};
use crate::storage::{self, BlobStore, ObjectInfo, layout};
use crate::sweep::Announcement;

/// One link found in a repository.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub(super) repository: RepositoryName,
    pub(super) digest: Digest,
    pub(super) key: String,
    pub(super) modified: SystemTime,
}

/// What two listings tell about the registry.
#[derive(Debug, Default, Clone)]
pub(super) struct Scan {
    pub(super) revisions: Vec<Link>,
    pub(super) layers: Vec<Link>,
    /// Tags' `current` links (their targets are read in the mark phase).
    pub(super) tags: Vec<(RepositoryName, String)>,
    /// Tag history entries, `(link, manifest digest)`.
    pub(super) tag_history: Vec<Link>,
    /// When manifests were last pulled.
    pub(super) pulls: Vec<Link>,
    /// `(repository, subject)` → referrer entries.
    pub(super) referrers: HashMap<(RepositoryName, Digest), Vec<Link>>,
    /// Mirrored repositories → when their last pull was recorded.
    pub(super) mirror_pulls: HashMap<RepositoryName, SystemTime>,
    /// Blob digest → (size, time).
    pub(super) blobs: HashMap<Digest, (u64, SystemTime)>,
}

impl Scan {
    async fn take(store: &dyn BlobStore) -> storage::Result<Self> {
        let mut scan = Self::default();
        for object in store.walk(&layout::repositories_root()).await? {
            scan.add_repository_object(&object);
        }
        scan.take_blobs(store).await?;
        Ok(scan)
    }

    /// The links of the repositories below `prefix` only (no blobs).
    pub(super) async fn of_repositories_below(
        store: &dyn BlobStore,
        prefix: &RepositoryName,
    ) -> storage::Result<Self> {
        let mut scan = Self::default();
        let root = format!("{}/{prefix}", layout::repositories_root());
        for mut object in store.walk(&root).await? {
            object.key = format!("{prefix}/{}", object.key);
            scan.add_repository_object(&object);
        }
        Ok(scan)
    }

    async fn take_blobs(&mut self, store: &dyn BlobStore) -> storage::Result<()> {
        let scan = self;
        for object in store.walk(&layout::blobs_root()).await? {
            // <alg>/<xx>/<hex>/data
            let parts: Vec<&str> = object.key.split('/').collect();
            if let [alg, _, hex, "data"] = parts.as_slice()
                && let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>()
            {
                scan.blobs.insert(digest, (object.size, object.modified));
            }
        }
        Ok(())
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
    /// The manifest stored as `digest`, read once however many repositories hold it.
    async fn parsed_manifest(
        &mut self,
        store: &dyn BlobStore,
        digest: &Digest,
    ) -> storage::Result<Option<&manifest::Manifest>> {
        if !self.parsed.contains_key(digest) {
            let parsed = super::read_manifest(store, digest).await?;
            self.parsed.insert(digest.clone(), parsed);
        }
        Ok(self.parsed.get(digest).and_then(Option::as_ref))
    }

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
            if let Some(parsed) = self.parsed_manifest(store, &digest).await? {
                let blobs: Vec<Digest> = parsed
                    .config
                    .iter()
                    .chain(&parsed.layers)
                    .map(|d| d.digest.clone())
                    .collect();
                queue.extend(
                    parsed
                        .manifests
                        .iter()
                        .map(|d| (repository.clone(), d.digest.clone())),
                );
                self.blobs.extend(blobs);
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

/// Runs one full collection over `store`, auditing `index` against what it finds.
pub(super) async fn collect(
    store: &dyn BlobStore,
    index: &dyn ReferenceIndex,
    options: &Options,
) -> Result<Report> {
    let run_start = SystemTime::now();
    let cutoff = options.cutoff(run_start);

    let mut scan = Scan::take(store).await?;
    let expired = match &options.mirror_retention {
        Some(retention) => {
            mirrors::expire(store, &mut scan, retention, run_start, options.dry_run).await?
        }
        None => Vec::new(),
    };
    let mut marks = Marks::default();
    let (roots, tags) = roots(store, &scan, options, cutoff).await?;
    marks.mark(store, &scan, roots).await?;

    let (mut blobs, mut manifests) = candidates(&scan, &marks, options, cutoff);
    let nothing_to_delete = blobs.is_empty() && manifests.is_empty();
    let announcement = if !options.dry_run && !nothing_to_delete {
        let digests = blobs
            .iter()
            .cloned()
            .chain(manifests.iter().map(|l| l.digest.clone()))
            .collect();
        Some(Announcement::announce(store, digests).await?)
    } else {
        None
    };
    // From the announcement on, everything runs while its lease holds: a write that went
    // ahead of a lapsed one must find nothing of it deleted, nor its entries pruned.
    let announced = announcement.is_some();
    let sweep = async {
        let mut rescan = None;
        if announced {
            tokio::time::sleep(options.sweep_wait).await;
            // Manifests pushed since the first scan (new, or rewritten) protect what they reference.
            let again = Scan::take(store).await?;
            let seen: HashMap<&str, SystemTime> = scan
                .revisions
                .iter()
                .map(|r| (r.key.as_str(), r.modified))
                .collect();
            let recent = run_start
                .checked_sub(TIMESTAMP_GRANULARITY)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let fresh: Vec<_> = again
                .revisions
                .iter()
                .filter(|r| seen.get(r.key.as_str()) != Some(&r.modified) || r.modified >= recent)
                .map(|r| (r.repository.clone(), r.digest.clone()))
                .collect();
            marks.mark(store, &again, fresh).await?;
            // So do blobs linked since (an upload that found its blob already there only links it).
            let linked: HashMap<&str, SystemTime> = scan
                .layers
                .iter()
                .map(|l| (l.key.as_str(), l.modified))
                .collect();
            marks.blobs.extend(
                again
                    .layers
                    .iter()
                    .filter(|l| {
                        linked.get(l.key.as_str()) != Some(&l.modified) || l.modified >= recent
                    })
                    .map(|l| l.digest.clone()),
            );
            blobs.retain(|digest| !marks.blobs.contains(digest));
            manifests.retain(|link| {
                !marks
                    .manifests
                    .contains(&(link.repository.clone(), link.digest.clone()))
            });
            rescan = Some(again);
        }

        let mut report = Report {
            dry_run: options.dry_run,
            mode: Mode::Full,
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
        let dangling = sweep_dangling_links(store, &scan, &blobs, cutoff, options.dry_run).await?;
        report.links_deleted = dangling.len();

        // The index is audited against the links as they stand now, and is whole from here on.
        let after = rescan.as_ref().unwrap_or(&scan);
        let gone: HashSet<&str> = dangling.iter().map(String::as_str).collect();
        let expected =
            expected_entries(store, after, &tags, &mut marks, &deleted_manifests, &gone).await?;
        let settle = audit::settle(run_start);
        // What pushes journaled is in the index before it is audited: not drift.
        let journal = Journaled::read(index).await?;
        journal.record_into(index).await?;
        let usage = Usage::of(&expected);
        report.quotas = usage.against(&options.quotas);
        report.usage = Some(usage);
        // While the announcement still stands, what this run deleted stood for can leave the index
        // (and the usage) at once, settled or not: nothing can record it again before the end.
        let swept = |entry: &Entry| {
            let deleted_blobs = &blobs;
            let revision = |repository: &RepositoryName, manifest: &Digest| {
                deleted_manifests.contains(&(repository.clone(), manifest.clone()))
            };
            !options.dry_run
                && match entry {
                    Entry::Uses {
                        blob,
                        repository,
                        manifest,
                    } => deleted_blobs.contains(blob) || revision(repository, manifest),
                    Entry::Links { blob, .. } => deleted_blobs.contains(blob),
                    Entry::Stores {
                        repository,
                        link,
                        blob,
                        ..
                    } => {
                        deleted_blobs.contains(blob)
                            || (*link == LinkKind::Manifest && revision(repository, blob))
                    }
                    Entry::Tags {
                        manifest,
                        repository,
                        ..
                    } => revision(repository, manifest),
                    Entry::Lists {
                        manifest,
                        repository,
                        index,
                    } => revision(repository, manifest) || revision(repository, index),
                }
        };
        let drift = audit::reconcile(index, expected, settle, swept, options.dry_run).await?;
        report.index_entries_added = drift.added;
        report.index_entries_pruned = drift.pruned;
        if !options.dry_run {
            index.mark_complete(run_start).await?;
            // Every change journaled before the run settled was seen by the scan.
            let (pages, _) = journal.due(settle);
            report.reviewed = pages.iter().map(|p| p.reviews.len()).sum();
            let ids: Vec<String> = pages.into_iter().map(|p| p.id.clone()).collect();
            index.consume(&ids).await?;
        }
        report.journal_pending = index.due(SystemTime::UNIX_EPOCH).await?.1;

        report.deleted.sort();
        Ok::<_, Error>(report)
    };
    match announcement {
        Some(announcement) => {
            let report = announcement.hold(store, sweep).await?;
            announcement.withdraw(store).await?;
            Ok(report)
        }
        None => {
            let report = sweep.await?;
            if !options.dry_run {
                crate::sweep::clear_lapsed(store).await?;
            }
            Ok(report)
        }
    }
}

/// The entries the links of `scan` call for, less what this run deleted: every revision's
/// `Uses` and `Lists`, every layer link's `Links`, every tag's `Tags`.
async fn expected_entries(
    store: &dyn BlobStore,
    scan: &Scan,
    tags: &[(RepositoryName, String, Digest)],
    marks: &mut Marks,
    deleted: &HashSet<(RepositoryName, Digest)>,
    dangling: &HashSet<&str>,
) -> storage::Result<HashSet<Entry>> {
    let mut expected = HashSet::new();
    let size = |blob: &Digest| scan.blobs.get(blob).map(|(size, _)| *size);
    for revision in &scan.revisions {
        let key = (revision.repository.clone(), revision.digest.clone());
        if deleted.contains(&key) {
            continue;
        }
        if let Some(size) = size(&revision.digest) {
            expected.insert(Entry::stores(
                &revision.repository,
                LinkKind::Manifest,
                &revision.digest,
                size,
            ));
        }
        let parsed = marks.parsed_manifest(store, &revision.digest).await?;
        match parsed {
            Some(parsed) => expected.extend(index::entries_of_manifest(
                &revision.repository,
                &revision.digest,
                parsed,
            )),
            None => {
                expected.insert(Entry::Uses {
                    blob: revision.digest.clone(),
                    repository: revision.repository.clone(),
                    manifest: revision.digest.clone(),
                });
            }
        }
    }
    for layer in scan
        .layers
        .iter()
        .filter(|l| !dangling.contains(l.key.as_str()))
    {
        expected.insert(Entry::Links {
            blob: layer.digest.clone(),
            repository: layer.repository.clone(),
        });
        if let Some(size) = size(&layer.digest) {
            expected.insert(Entry::stores(
                &layer.repository,
                LinkKind::Layer,
                &layer.digest,
                size,
            ));
        }
    }
    expected.extend(tags.iter().map(|(repository, tag, manifest)| Entry::Tags {
        manifest: manifest.clone(),
        repository: repository.clone(),
        tag: tag.clone(),
    }));
    Ok(expected)
}

/// The manifests marking starts from, and every tag with the manifest it names.
type Roots = (
    Vec<(RepositoryName, Digest)>,
    Vec<(RepositoryName, String, Digest)>,
);

/// What the mark phase starts from.
async fn roots(
    store: &dyn BlobStore,
    scan: &Scan,
    options: &Options,
    cutoff: SystemTime,
) -> storage::Result<Roots> {
    let mut roots = Vec::new();
    let mut tags = Vec::new();
    for (repository, name) in &scan.tags {
        let Ok(tag) = name.parse() else { continue };
        let key = layout::tag_current_link(repository, &tag);
        let link = storage::read_if_present(store, &key, 1024).await?;
        if let Some(digest) = link.as_deref().and_then(layout::parse_link) {
            roots.push((repository.clone(), digest.clone()));
            tags.push((repository.clone(), name.clone(), digest));
        }
    }
    roots.extend(
        scan.revisions
            .iter()
            .filter(|r| !options.delete_untagged || r.modified >= cutoff)
            .map(|r| (r.repository.clone(), r.digest.clone())),
    );
    Ok((roots, tags))
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
) -> storage::Result<Vec<String>> {
    let dangling: Vec<&Link> = scan
        .layers
        .iter()
        .filter(|l| l.modified < cutoff)
        .filter(|l| deleted.contains(&l.digest) || !scan.blobs.contains_key(&l.digest))
        .collect();
    if dry_run {
        return Ok(dangling.iter().map(|l| l.key.clone()).collect());
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
    Ok(still_dangling)
}
