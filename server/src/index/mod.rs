//! The reverse index and the review journal: what lets garbage collection decide from what
//! changed, not from everything stored.
//!
//! - The **index** answers "who uses this blob?" (the manifests that reference it, the
//!   repositories that link it) and "who holds this manifest?" (the tags that may name it, the
//!   indexes that list it). It is a **superset of the truth**: every replica records an entry
//!   *before* the link that makes it true, and an entry goes only after that link is gone. A
//!   deletion decided from the index is therefore safe whatever crashes in between: the worst a
//!   crash leaves is an entry too many, which keeps something alive until it is checked again.
//! - The **journal** lists what may have become unreferenced (a manifest deleted or untagged, a
//!   blob uploaded or unlinked), in time-ordered keys sharded by hour so replicas never write
//!   the same key. A collection reads only the entries old enough to be reviewed.
//!
//! - **Usage** falls out of the index: every link a repository holds is recorded with the size
//!   of what it links ([`Entry::Stores`]), so what a repository or a namespace stores is one
//!   listing away ([`usage`]), with no counter replicas would contend for.
//!
//! Both live in the registry's own storage ([`StoredIndex`]), so there is no new moving part;
//! [`ReferenceIndex`] is the boundary another store (a database) could implement.

mod keys;
mod stored;
pub mod usage;

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::oci::{Digest, RepositoryName};
use crate::storage;

pub use stored::StoredIndex;
pub use usage::Usage;

/// One fact the index records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    /// `manifest` of `repository` uses `blob`: its config, a layer, or its own content.
    Uses {
        blob: Digest,
        repository: RepositoryName,
        manifest: Digest,
    },
    /// `repository` links `blob` (an upload finished, a mount, a mirrored blob).
    Links {
        blob: Digest,
        repository: RepositoryName,
    },
    /// `tag` of `repository` may name `manifest`.
    Tags {
        manifest: Digest,
        repository: RepositoryName,
        tag: String,
    },
    /// `index` of `repository` lists `manifest`.
    Lists {
        manifest: Digest,
        repository: RepositoryName,
        index: Digest,
    },
    /// `repository` links `blob`, of `size` bytes, as a layer or a manifest: what its usage
    /// counts.
    Stores {
        repository: RepositoryName,
        link: LinkKind,
        blob: Digest,
        size: u64,
    },
}

impl Entry {
    /// That `repository` stores `blob`, of `size` bytes, through a link of `link`.
    pub fn stores(repository: &RepositoryName, link: LinkKind, blob: &Digest, size: u64) -> Self {
        Self::Stores {
            repository: repository.clone(),
            link,
            blob: blob.clone(),
            size,
        }
    }
}

/// Which link of a repository a [`Entry::Stores`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkKind {
    /// A layer link: a blob pushed, mounted or mirrored into the repository.
    Layer,
    /// A revision link: a manifest of the repository.
    Manifest,
}

/// An entry, with when it was last recorded (recording again refreshes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub entry: Entry,
    pub at: SystemTime,
}

/// Something a collection should look at again: it may have become unreferenced.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Review {
    /// A blob was uploaded, mounted or unlinked.
    Blob(Digest),
    /// A manifest of a repository was deleted, untagged, or pushed without a tag.
    Manifest(RepositoryName, Digest),
}

impl fmt::Display for Review {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blob(blob) => write!(f, "blob {blob}"),
            Self::Manifest(repository, manifest) => write!(f, "manifest {repository} {manifest}"),
        }
    }
}

impl std::str::FromStr for Review {
    type Err = ();

    fn from_str(line: &str) -> Result<Self, ()> {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["blob", blob] => Ok(Self::Blob(blob.parse().map_err(|_| ())?)),
            ["manifest", repository, manifest] => Ok(Self::Manifest(
                repository.parse().map_err(|_| ())?,
                manifest.parse().map_err(|_| ())?,
            )),
            _ => Err(()),
        }
    }
}

/// One page of the journal: the reviews one change appended, and the entries it journaled
/// rather than recorded, under one key.
#[derive(Debug, Clone)]
pub struct JournalPage {
    /// Names the page for [`ReferenceIndex::consume`].
    pub id: String,
    pub written: SystemTime,
    pub reviews: Vec<Review>,
    /// Entries for collections to record before they judge (see [`Journaled`]).
    pub entries: Vec<Entry>,
}

/// The journal as a collection found it: every page, and so every journaled entry.
#[derive(Debug, Default)]
pub struct Journaled {
    pub pages: Vec<JournalPage>,
}

impl Journaled {
    /// Reads every page of `index`'s journal.
    pub async fn read(index: &dyn ReferenceIndex) -> storage::Result<Self> {
        let pages = index.pages_except(&Default::default()).await?;
        Ok(Self { pages })
    }

    /// Records in `index` the entries of every page: before a collection judges anything from
    /// the index, so a push that journaled its references is seen as if it had recorded them.
    /// Recording again is harmless (it refreshes an entry), so a page is recorded by every run
    /// until one consumes it.
    pub async fn record_into(&self, index: &dyn ReferenceIndex) -> storage::Result<usize> {
        let entries: Vec<Entry> = self
            .pages
            .iter()
            .flat_map(|page| page.entries.iter().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        index.record(&entries).await?;
        Ok(entries.len())
    }

    /// Reads the pages written since `self` was read, and records their entries; `self` then
    /// holds every page.
    pub async fn catch_up(&mut self, index: &dyn ReferenceIndex) -> storage::Result<usize> {
        let seen: std::collections::HashSet<String> =
            self.pages.iter().map(|p| p.id.clone()).collect();
        let fresh = Self {
            pages: index.pages_except(&seen).await?,
        };
        let recorded = fresh.record_into(index).await?;
        self.pages.extend(fresh.pages);
        self.pages.sort_by_key(|p| p.written);
        Ok(recorded)
    }

    /// The pages written before `before`, and how many are not.
    pub fn due(&self, before: SystemTime) -> (Vec<&JournalPage>, usize) {
        let (due, newer): (Vec<&JournalPage>, Vec<&JournalPage>) =
            self.pages.iter().partition(|p| p.written < before);
        (due, newer.len())
    }
}

/// The index and journal as a collection and every replica use them.
#[async_trait]
pub trait ReferenceIndex: Send + Sync + fmt::Debug + 'static {
    /// Records `entries` (all at once where the store can); call before writing the links.
    async fn record(&self, entries: &[Entry]) -> storage::Result<()>;

    /// Drops `entries`; call only once the links they stand for are gone.
    async fn forget(&self, entries: &[Entry]) -> storage::Result<()>;

    /// Every `Uses` and `Links` entry of `blob`.
    async fn users_of(&self, blob: &Digest) -> storage::Result<Vec<Recorded>>;

    /// Every `Tags` and `Lists` entry of `manifest` in `repository`.
    async fn holders_of(
        &self,
        repository: &RepositoryName,
        manifest: &Digest,
    ) -> storage::Result<Vec<Recorded>>;

    /// The `Stores` entries of `repository` for `blob` through a link of `link`.
    async fn stored_in(
        &self,
        repository: &RepositoryName,
        link: LinkKind,
        blob: &Digest,
    ) -> storage::Result<Vec<Recorded>>;

    /// The `Stores` entries of `namespace` (a repository and those below it), or of every
    /// repository: what [`Usage`] is counted from.
    async fn stored(&self, namespace: Option<&RepositoryName>) -> storage::Result<Vec<Recorded>>;

    /// Every entry: for the audit, which compares the index with the links.
    async fn all(&self) -> storage::Result<Vec<Recorded>>;

    /// When the index was last found complete (by a backfill or an audit); `None` while it has
    /// never been, as in a registry Distribution or an older Stowage wrote.
    async fn complete_since(&self) -> storage::Result<Option<SystemTime>>;

    /// Records that the index holds every link that existed at `since`.
    async fn mark_complete(&self, since: SystemTime) -> storage::Result<()>;

    /// Appends `reviews` and `entries` to the journal as one page; call before the change they
    /// are for. The entries count as recorded for collections ([`Journaled`]) and for nothing
    /// else: only entries no replica reads may go here.
    async fn append_page(&self, reviews: &[Review], entries: &[Entry]) -> storage::Result<()>;

    /// Appends `reviews` to the journal as one page; call before the change they are for.
    async fn append(&self, reviews: &[Review]) -> storage::Result<()> {
        self.append_page(reviews, &[]).await
    }

    /// The journal's pages written before `before`, oldest first, and how many are newer.
    async fn due(&self, before: SystemTime) -> storage::Result<(Vec<JournalPage>, usize)>;

    /// Every page of the journal but those in `seen`, oldest first.
    async fn pages_except(
        &self,
        seen: &std::collections::HashSet<String>,
    ) -> storage::Result<Vec<JournalPage>>;

    /// Removes pages once their reviews are done.
    async fn consume(&self, ids: &[String]) -> storage::Result<()>;
}

/// The entries a manifest push records before its revision link: what the manifest uses, and
/// what it lists (with [`Entry::stores`] for its own bytes).
pub fn entries_of_manifest(
    repository: &RepositoryName,
    manifest: &Digest,
    parsed: &crate::manifest::Manifest,
) -> Vec<Entry> {
    let blobs = std::iter::once(manifest)
        .chain(parsed.config.iter().map(|d| &d.digest))
        .chain(parsed.layers.iter().map(|d| &d.digest));
    let uses = blobs.map(|blob| Entry::Uses {
        blob: blob.clone(),
        repository: repository.clone(),
        manifest: manifest.clone(),
    });
    let lists = parsed.manifests.iter().map(|child| Entry::Lists {
        manifest: child.digest.clone(),
        repository: repository.clone(),
        index: manifest.clone(),
    });
    let mut entries: Vec<Entry> = uses.chain(lists).collect();
    entries.sort();
    entries.dedup();
    entries
}

#[cfg(test)]
mod tests;
