//! The incremental collection: the journal's reviews old enough to be due, judged from the
//! index, so a run reads what changed and what it touches, never every blob or repository.
//!
//! # Judging
//! - A **manifest** is alive while its revision link is younger than the grace period, or (with
//!   `delete_untagged` off) while it has one at all, or while a tag names it, an index that is
//!   alive lists it, or its subject is alive. Its holders come from the index; each is checked
//!   against the link it stands for, so an entry left by a failed push keeps nothing alive for
//!   long. A dead manifest makes its blobs, children and referrers due in the same run.
//! - A **blob** is alive while it is younger than the grace period, or while a manifest whose
//!   revision link exists (and that this run does not condemn) uses it, or a link to it is
//!   younger than the grace period.
//!
//! An entry whose link is missing keeps nothing alive; it is pruned once older than a write may
//! take (younger, it may be a push in flight, whose link the judgement after the sweep wait
//! sees).
//!
//! A review whose subject is too young goes back to the journal, due when it is old enough.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::SystemTime;

use futures::future::{BoxFuture, FutureExt};
use futures::{StreamExt, TryStreamExt};

use super::{
    Error, Mode, Options, Report, Result, TIMESTAMP_GRANULARITY, audit, delete_in_batches, full,
    mirrors,
};
use crate::index::{self, Entry, Journaled, LinkKind, Recorded, ReferenceIndex, Review};
use crate::manifest::Manifest;
use crate::oci::{Digest, RepositoryName};
use crate::storage::{self, BlobStore, layout};
use crate::sweep::Announcement;

/// Index users of a blob checked at once: most blobs are decided by their first.
const USER_CHECKS: usize = 16;
/// Blobs judged at once: each judgement is a few requests, one after the other.
const BLOB_JUDGEMENTS: usize = 16;
/// How deep the holders of a manifest are followed (index → index → …, referrer → subject).
const HOLDER_DEPTH: usize = 16;

/// A manifest of a repository.
type ManifestKey = (RepositoryName, Digest);

/// What a judgement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Referenced: nothing to do.
    Alive,
    /// Too young to judge: reviewed again later.
    Young,
    /// Unreferenced and old: to be deleted.
    Dead,
    /// Already deleted: only what it leaves behind to settle.
    Gone,
}

/// One run's judgements and what they read, so nothing is read twice.
struct Run<'a> {
    store: &'a dyn BlobStore,
    index: &'a dyn ReferenceIndex,
    options: &'a Options,
    run_start: SystemTime,
    cutoff: SystemTime,
    /// Blob content written since this is too young: the cutoff, and once the sweep wait is
    /// over, also content written during the run (whose time the storage may round down).
    young_since: SystemTime,
    settle: SystemTime,
    /// Manifests condemned so far: they protect nothing.
    condemned: HashSet<ManifestKey>,
    alive: HashMap<ManifestKey, bool>,
    parsed: HashMap<Digest, Option<Manifest>>,
    /// Entries found to stand for nothing, to forget.
    stale: BTreeSet<Entry>,
}

impl Run<'_> {
    /// The revision link's time, or `None` when the manifest is not in the repository.
    async fn revision(&self, key: &ManifestKey) -> storage::Result<Option<SystemTime>> {
        match self
            .store
            .stat(&layout::revision_link(&key.0, &key.1))
            .await
        {
            Ok(meta) => Ok(Some(meta.modified)),
            Err(storage::Error::NotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn manifest(&mut self, digest: &Digest) -> storage::Result<Option<&Manifest>> {
        if !self.parsed.contains_key(digest) {
            let parsed = super::read_manifest(self.store, digest).await?;
            self.parsed.insert(digest.clone(), parsed);
        }
        Ok(self.parsed.get(digest).and_then(Option::as_ref))
    }

    async fn judge_manifest(&mut self, key: &ManifestKey) -> storage::Result<Verdict> {
        match self.revision(key).await? {
            None => Ok(Verdict::Gone),
            Some(modified) if modified >= self.cutoff => Ok(Verdict::Young),
            Some(_) if self.manifest_alive(key.clone(), 0).await? => Ok(Verdict::Alive),
            Some(_) => Ok(Verdict::Dead),
        }
    }

    /// Whether anything keeps `key` (see the module's rules), memoized for the run.
    fn manifest_alive(
        &mut self,
        key: ManifestKey,
        depth: usize,
    ) -> BoxFuture<'_, storage::Result<bool>> {
        async move {
            if let Some(alive) = self.alive.get(&key) {
                return Ok(*alive);
            }
            let alive = self.find_holder(&key, depth).await?;
            self.alive.insert(key, alive);
            Ok(alive)
        }
        .boxed()
    }

    async fn find_holder(&mut self, key: &ManifestKey, depth: usize) -> storage::Result<bool> {
        if self.condemned.contains(key) {
            return Ok(false);
        }
        // Too deep to follow: kept, to be safe.
        if depth > HOLDER_DEPTH {
            return Ok(true);
        }
        match self.revision(key).await? {
            None => return Ok(false),
            Some(modified) if modified >= self.cutoff => return Ok(true),
            Some(_) if !self.options.delete_untagged => return Ok(true),
            Some(_) => {}
        }
        let (repository, manifest) = key;
        for holder in self.index.holders_of(repository, manifest).await? {
            let holds = match &holder.entry {
                Entry::Tags { tag, .. } => {
                    let Ok(tag) = tag.parse() else { continue };
                    let link = layout::tag_current_link(repository, &tag);
                    let named = storage::read_if_present(self.store, &link, 1024).await?;
                    named.as_deref().and_then(layout::parse_link).as_ref() == Some(manifest)
                }
                Entry::Lists { index, .. } => {
                    self.manifest_alive((repository.clone(), index.clone()), depth + 1)
                        .await?
                }
                Entry::Uses { .. } | Entry::Links { .. } | Entry::Stores { .. } => continue,
            };
            if holds {
                return Ok(true);
            }
            if matches!(holder.entry, Entry::Tags { .. }) && holder.at < self.settle {
                self.stale.insert(holder.entry);
            }
        }
        let subject = self
            .manifest(manifest)
            .await?
            .and_then(|m| m.subject.as_ref())
            .map(|s| s.digest.clone());
        match subject {
            Some(subject) => {
                self.manifest_alive((repository.clone(), subject), depth + 1)
                    .await
            }
            None => Ok(false),
        }
    }

    /// What a manifest that died (or was deleted) makes due: the blobs it used, and with
    /// `delete_untagged` the manifests it listed, and its referrers.
    async fn consequences(&mut self, key: &ManifestKey) -> storage::Result<Vec<Review>> {
        let (repository, manifest) = key;
        let mut due = vec![Review::Blob(manifest.clone())];
        let delete_untagged = self.options.delete_untagged;
        if let Some(parsed) = self.manifest(manifest).await? {
            let blobs = parsed.config.iter().chain(&parsed.layers);
            due.extend(blobs.map(|d| Review::Blob(d.digest.clone())));
            if delete_untagged {
                due.extend(
                    parsed
                        .manifests
                        .iter()
                        .map(|d| Review::Manifest(repository.clone(), d.digest.clone())),
                );
            }
        }
        if delete_untagged {
            let referrers = match self
                .store
                .list(&layout::referrers_dir(repository, manifest))
                .await
            {
                Ok(names) => names,
                Err(storage::Error::NotFound) => Vec::new(),
                Err(err) => return Err(err),
            };
            // `<alg>/<hex>/link` below the subject.
            for alg in referrers {
                let dir = format!("{}/{alg}", layout::referrers_dir(repository, manifest));
                let hexes = match self.store.list(&dir).await {
                    Ok(hexes) => hexes,
                    Err(storage::Error::NotFound) => continue,
                    Err(err) => return Err(err),
                };
                due.extend(hexes.into_iter().filter_map(|hex| {
                    let referrer = format!("{alg}:{hex}").parse().ok()?;
                    Some(Review::Manifest(repository.clone(), referrer))
                }));
            }
        }
        Ok(due)
    }

    /// A blob's verdict, its size, and its index users as listed for it (for a blob too young
    /// to judge, none are listed).
    async fn judge_blob(&self, blob: &Digest) -> storage::Result<BlobJudgement> {
        let judgement = |verdict, size, users, stale| BlobJudgement {
            verdict,
            size,
            users,
            stale,
        };
        let meta = match self.store.stat(&layout::blob_data(blob)).await {
            Ok(meta) => meta,
            Err(storage::Error::NotFound) => {
                let users = self.index.users_of(blob).await?;
                return Ok(judgement(Verdict::Gone, 0, users, Vec::new()));
            }
            Err(err) => return Err(err),
        };
        if meta.modified >= self.young_since {
            return Ok(judgement(Verdict::Young, meta.size, Vec::new(), Vec::new()));
        }
        let users = self.index.users_of(blob).await?;
        if users
            .iter()
            .any(|u| matches!(u.entry, Entry::Links { .. }) && u.at >= self.cutoff)
        {
            return Ok(judgement(Verdict::Alive, meta.size, users, Vec::new()));
        }
        let mut stale = Vec::new();
        let manifests: Vec<&Recorded> = users
            .iter()
            .filter(|u| matches!(u.entry, Entry::Uses { .. }))
            .collect();
        for chunk in manifests.chunks(USER_CHECKS) {
            let checks = chunk.iter().map(|user| async move {
                let Entry::Uses {
                    repository,
                    manifest,
                    ..
                } = &user.entry
                else {
                    return Ok(Use::None);
                };
                let key = (repository.clone(), manifest.clone());
                if self.condemned.contains(&key) {
                    return Ok(Use::None);
                }
                Ok::<_, storage::Error>(match self.revision(&key).await? {
                    Some(_) => Use::Real,
                    None if user.at >= self.settle => Use::None,
                    None => Use::Stale(user.entry.clone()),
                })
            });
            for found in futures::future::try_join_all(checks).await? {
                match found {
                    Use::Real => return Ok(judgement(Verdict::Alive, meta.size, users, stale)),
                    Use::Stale(entry) => stale.push(entry),
                    Use::None => {}
                }
            }
        }
        Ok(judgement(Verdict::Dead, meta.size, users, stale))
    }

    /// Judges `blobs`, several at once (the manifests are judged by now, so each blob's
    /// verdict stands on its own), keeping the stale entries found.
    async fn judge_blobs(
        &mut self,
        blobs: Vec<Digest>,
    ) -> storage::Result<Vec<(Digest, BlobJudgement)>> {
        let this = &*self;
        let judged: Vec<(Digest, BlobJudgement)> = futures::stream::iter(blobs)
            .map(|blob| async move {
                let judgement = this.judge_blob(&blob).await?;
                Ok::<_, storage::Error>((blob, judgement))
            })
            .buffered(BLOB_JUDGEMENTS)
            .try_collect()
            .await?;
        for (_, judgement) in &judged {
            self.stale.extend(judgement.stale.iter().cloned());
        }
        Ok(judged)
    }
}

/// What the judgement of one blob found.
struct BlobJudgement {
    verdict: Verdict,
    size: u64,
    /// Its index users, as listed for the verdict.
    users: Vec<Recorded>,
    /// Users found to stand for nothing.
    stale: Vec<Entry>,
}

impl BlobJudgement {
    /// The `Links` entries of a missing blob older than a write may take: an upload of it in
    /// flight would have refreshed its entry before linking.
    fn dangling_links(&self, settle: SystemTime) -> Vec<Entry> {
        self.users
            .iter()
            .filter(|u| matches!(u.entry, Entry::Links { .. }) && u.at < settle)
            .map(|u| u.entry.clone())
            .collect()
    }
}

/// What one index user of a blob turned out to be.
enum Use {
    /// A manifest in its repository.
    Real,
    /// Recorded for a push that never linked it (or a manifest deleted since).
    Stale(Entry),
    /// Not a user: a manifest this run condemns, or one not (yet) linked.
    None,
}

/// What the judgement of every due review condemned.
#[derive(Default)]
struct Judged {
    manifests: BTreeSet<ManifestKey>,
    /// Condemned blobs, with their size and their index users as last listed (after the wait,
    /// no write can add a user: the sweep goes by this listing).
    blobs: BTreeMap<Digest, BlobJudgement>,
    /// Manifests already deleted: their holders are settled.
    gone_manifests: BTreeSet<ManifestKey>,
    /// Blobs already deleted, with their links old enough to be dangling.
    gone_blobs: BTreeMap<Digest, Vec<Entry>>,
    /// Reviews too young for this run.
    requeue: BTreeSet<Review>,
    reviewed: usize,
}

/// Judges `reviews` and everything their verdicts make due: manifests first, since a manifest's
/// death changes whether its blobs are used.
async fn judge(run: &mut Run<'_>, reviews: Vec<Review>) -> storage::Result<Judged> {
    let mut judged = Judged::default();
    let mut seen: HashSet<Review> = HashSet::new();
    let mut manifests: VecDeque<ManifestKey> = VecDeque::new();
    let mut blobs: BTreeSet<Digest> = BTreeSet::new();
    let mut queue = |review: Review,
                     manifests: &mut VecDeque<ManifestKey>,
                     blobs: &mut BTreeSet<Digest>| {
        if seen.insert(review.clone()) {
            match review {
                Review::Manifest(repository, digest) => manifests.push_back((repository, digest)),
                Review::Blob(digest) => {
                    blobs.insert(digest);
                }
            }
        }
    };
    for review in reviews {
        queue(review, &mut manifests, &mut blobs);
    }
    while let Some(key) = manifests.pop_front() {
        judged.reviewed += 1;
        let verdict = run.judge_manifest(&key).await?;
        match verdict {
            Verdict::Alive => continue,
            Verdict::Young => {
                judged.requeue.insert(Review::Manifest(key.0, key.1));
                continue;
            }
            Verdict::Dead => {
                run.condemned.insert(key.clone());
                // What was decided while this manifest looked alive is decided again.
                run.alive.clear();
                judged.manifests.insert(key.clone());
            }
            Verdict::Gone => {
                judged.gone_manifests.insert(key.clone());
            }
        }
        for review in run.consequences(&key).await? {
            queue(review, &mut manifests, &mut blobs);
        }
    }
    judged.reviewed += blobs.len();
    for (blob, judgement) in run.judge_blobs(blobs.into_iter().collect()).await? {
        match judgement.verdict {
            Verdict::Dead => {
                judged.blobs.insert(blob, judgement);
            }
            Verdict::Young => {
                judged.requeue.insert(Review::Blob(blob));
            }
            Verdict::Gone => {
                let dangling = judgement.dangling_links(run.settle);
                if !dangling.is_empty() {
                    judged.gone_blobs.insert(blob, dangling);
                }
            }
            Verdict::Alive => {}
        }
    }
    Ok(judged)
}

/// Judges the condemned again from fresh reads, once every write that started before the
/// announcement has finished: what a write used in time is kept (and reviewed again later).
async fn rejudge(run: &mut Run<'_>, judged: &mut Judged) -> storage::Result<()> {
    let during_the_run = run
        .run_start
        .checked_sub(TIMESTAMP_GRANULARITY)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    run.young_since = run.cutoff.min(during_the_run);
    run.alive.clear();
    run.stale.clear();
    run.condemned = judged.manifests.iter().cloned().collect();
    // A manifest kept can keep others it lists or is the subject of: judge until none changes.
    loop {
        let mut kept = Vec::new();
        for key in run.condemned.clone() {
            run.condemned.remove(&key);
            run.alive.clear();
            if run.judge_manifest(&key).await? != Verdict::Dead {
                kept.push(key);
            } else {
                run.condemned.insert(key);
            }
        }
        if kept.is_empty() {
            break;
        }
        for key in kept {
            judged.manifests.remove(&key);
            judged.requeue.insert(Review::Manifest(key.0, key.1));
        }
    }
    // A manifest pushed again since it was deleted is no longer gone.
    for key in judged.gone_manifests.clone() {
        if run.revision(&key).await?.is_some() {
            judged.gone_manifests.remove(&key);
            judged.requeue.insert(Review::Manifest(key.0, key.1));
        }
    }
    let blobs: Vec<Digest> = judged.blobs.keys().cloned().collect();
    for (blob, judgement) in run.judge_blobs(blobs).await? {
        if judgement.verdict == Verdict::Dead {
            judged.blobs.insert(blob, judgement);
        } else {
            judged.blobs.remove(&blob);
            judged.requeue.insert(Review::Blob(blob));
        }
    }
    // A missing blob uploaded again since keeps its links.
    let gone: Vec<Digest> = judged.gone_blobs.keys().cloned().collect();
    for (blob, judgement) in run.judge_blobs(gone).await? {
        let dangling = match judgement.verdict {
            Verdict::Gone => judgement.dangling_links(run.settle),
            _ => Vec::new(),
        };
        if dangling.is_empty() {
            judged.gone_blobs.remove(&blob);
        } else {
            judged.gone_blobs.insert(blob, dangling);
        }
    }
    Ok(())
}

/// Runs one incremental collection.
pub(super) async fn collect(
    store: &dyn BlobStore,
    index: &dyn ReferenceIndex,
    options: &Options,
) -> Result<Report> {
    let run_start = SystemTime::now();
    let cutoff = options.cutoff(run_start);
    let mut report = Report {
        dry_run: options.dry_run,
        mode: Mode::Incremental,
        ..Report::default()
    };
    // What pushes journaled goes into the index before anything is judged from it.
    let mut journal = Journaled::read(index).await?;
    journal.record_into(index).await?;
    let (due, pending) = journal.due(cutoff);
    report.journal_pending = pending;
    let mut reviews: Vec<Review> = due.iter().flat_map(|p| p.reviews.clone()).collect();
    let consumed: Vec<String> = due.into_iter().map(|p| p.id.clone()).collect();
    if let Some(retention) = &options.mirror_retention {
        let (expired, made_due) =
            expire_mirrors(store, index, retention, run_start, options.dry_run).await?;
        report.mirrors_expired = expired.len();
        report
            .deleted
            .extend(expired.iter().map(|name| format!("mirror {name}")));
        reviews.extend(made_due);
    }

    let mut run = Run {
        store,
        index,
        options,
        run_start,
        cutoff,
        young_since: cutoff,
        settle: audit::settle(run_start),
        condemned: HashSet::new(),
        alive: HashMap::new(),
        parsed: HashMap::new(),
        stale: BTreeSet::new(),
    };
    let mut judged = judge(&mut run, reviews).await?;
    report.reviewed = judged.reviewed;
    // Manifests already gone are announced too: a push of one again waits the sweep out, so
    // the entries its deletion left can go without a push's fresh ones going with them.
    let condemned = !judged.manifests.is_empty()
        || !judged.gone_manifests.is_empty()
        || !judged.blobs.is_empty()
        || !judged.gone_blobs.is_empty();
    let announcement = if !options.dry_run && condemned {
        let digests = judged
            .blobs
            .keys()
            .chain(judged.gone_blobs.keys())
            .cloned()
            .chain(
                judged
                    .manifests
                    .iter()
                    .chain(&judged.gone_manifests)
                    .map(|(_, d)| d.clone()),
            )
            .collect();
        Some(Announcement::announce(store, digests).await?)
    } else {
        None
    };
    // From the announcement on, everything runs while its lease holds: a write that went
    // ahead of a lapsed one must find nothing of it deleted, nor its entries forgotten.
    let announced = announcement.is_some();
    let finish = async {
        if announced {
            tokio::time::sleep(options.sweep_wait).await;
            // Pushes that finished meanwhile journaled their references: record them first.
            journal.catch_up(index).await?;
            rejudge(&mut run, &mut judged).await?;
        }
        let doomed = sweep(&mut run, &judged, &mut report).await?;
        report.index_entries_pruned = run.stale.len();
        if options.dry_run {
            return Ok::<_, Error>(());
        }
        delete_in_batches(store, &doomed.keys).await?;
        let mut forget: Vec<Entry> = doomed.entries;
        forget.extend(run.stale.iter().cloned());
        index.forget(&forget).await?;
        let requeue: Vec<Review> = std::mem::take(&mut judged.requeue).into_iter().collect();
        if !requeue.is_empty() {
            index.append(&requeue).await?;
        }
        index.consume(&consumed).await?;
        Ok(())
    };
    match announcement {
        Some(announcement) => {
            announcement.hold(store, finish).await?;
            announcement.withdraw(store).await?;
        }
        None => {
            finish.await?;
            if !options.dry_run {
                crate::sweep::clear_lapsed(store).await?;
            }
        }
    }
    report.deleted.sort();
    Ok(report)
}

/// The keys a sweep deletes, and the index entries that go once they are gone.
struct Doomed {
    keys: Vec<String>,
    entries: Vec<Entry>,
}

/// Lists what the condemned leave to delete, and reports it.
async fn sweep(run: &mut Run<'_>, judged: &Judged, report: &mut Report) -> storage::Result<Doomed> {
    let mut keys = Vec::new();
    let mut entries = Vec::new();
    for key in judged.manifests.iter().chain(&judged.gone_manifests) {
        let (repository, manifest) = key;
        let holders = run.index.holders_of(repository, manifest).await?;
        let gone = judged.gone_manifests.contains(key);
        if !gone {
            report
                .deleted
                .push(format!("manifest {repository}@{manifest}"));
            report.manifests_deleted += 1;
            keys.push(layout::revision_link(repository, manifest));
            keys.push(layout::last_pull(repository, manifest));
            // Its tag history goes with it, as does its entry among its subject's referrers.
            for holder in &holders {
                if let Entry::Tags { tag, .. } = &holder.entry
                    && let Ok(tag) = tag.parse()
                {
                    keys.push(layout::tag_index_link(repository, &tag, manifest));
                }
            }
            let subject = run
                .manifest(manifest)
                .await?
                .and_then(|m| m.subject.as_ref())
                .map(|s| s.digest.clone());
            if let Some(subject) = subject {
                keys.push(layout::referrer_link(repository, &subject, manifest));
            }
        }
        // What it used and listed no longer has it as a user. (One deleted through the API is
        // announced too: it cannot be pushed again before the sweep is over, and the judgement
        // after the wait saw any push of it that was under way.)
        if let Some(parsed) = run.manifest(manifest).await? {
            entries.extend(index::entries_of_manifest(repository, manifest, parsed));
        }
        // The holders of a manifest that is no more stand for nothing, nor does what its
        // revision link counted in the usage.
        let stored = run
            .index
            .stored_in(repository, LinkKind::Manifest, manifest)
            .await?;
        entries.extend(holders.into_iter().chain(stored).map(|h| h.entry));
    }
    for (blob, condemned) in &judged.blobs {
        report.deleted.push(format!("blob {blob}"));
        report.blobs_deleted += 1;
        report.bytes_freed += condemned.size;
        keys.push(layout::blob_data(blob));
    }
    // A condemned blob's links, uses and usage go with it; a missing blob's old links too.
    for (blob, condemned) in &judged.blobs {
        for user in condemned.users.iter().cloned() {
            if let Entry::Links { repository, .. } = &user.entry {
                keys.push(layout::layer_link(repository, blob));
                report.links_deleted += 1;
                entries.push(Entry::stores(
                    repository,
                    LinkKind::Layer,
                    blob,
                    condemned.size,
                ));
            }
            entries.push(user.entry);
        }
    }
    for (blob, dangling) in &judged.gone_blobs {
        for entry in dangling {
            if let Entry::Links { repository, .. } = entry {
                keys.push(layout::layer_link(repository, blob));
                report.links_deleted += 1;
                let stored = run
                    .index
                    .stored_in(repository, LinkKind::Layer, blob)
                    .await?;
                entries.extend(stored.into_iter().map(|s| s.entry));
            }
        }
        entries.extend(dangling.iter().cloned());
    }
    Ok(Doomed { keys, entries })
}

/// Drops the mirrored repositories nobody pulled within the retention, journaling first what
/// their deletion leaves to review; returns them and those reviews, due in this run.
async fn expire_mirrors(
    store: &dyn BlobStore,
    index: &dyn ReferenceIndex,
    retention: &mirrors::MirrorRetention,
    now: SystemTime,
    dry_run: bool,
) -> storage::Result<(Vec<RepositoryName>, Vec<Review>)> {
    let mut expired = Vec::new();
    let mut due = Vec::new();
    for prefix in &retention.prefixes {
        let mut scan = full::Scan::of_repositories_below(store, prefix).await?;
        let before = scan.clone();
        let names = mirrors::expire(store, &mut scan, retention, now, true).await?;
        let gone: HashSet<&RepositoryName> = names.iter().collect();
        let reviews: Vec<Review> = before
            .revisions
            .iter()
            .filter(|l| gone.contains(&l.repository))
            .map(|l| Review::Manifest(l.repository.clone(), l.digest.clone()))
            .chain(
                before
                    .layers
                    .iter()
                    .filter(|l| gone.contains(&l.repository))
                    .map(|l| Review::Blob(l.digest.clone())),
            )
            .collect();
        if !dry_run && !names.is_empty() {
            index.append(&reviews).await?;
            for name in &names {
                store.delete(&layout::repository(name)).await?;
                let stored: Vec<Entry> = index
                    .stored(Some(name))
                    .await?
                    .into_iter()
                    .map(|s| s.entry)
                    .filter(|e| matches!(e, Entry::Stores { repository, .. } if repository == name))
                    .collect();
                index.forget(&stored).await?;
            }
        }
        due.extend(reviews);
        expired.extend(names);
    }
    expired.sort();
    Ok((expired, due))
}
