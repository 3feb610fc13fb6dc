//! The index and journal as small objects in the registry's own storage, shared by every
//! replica and by gc with nothing else to run.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{Entry, JournalPage, LinkKind, Recorded, ReferenceIndex, Review, keys};
use crate::oci::{Digest, RepositoryName};
use crate::storage::{self, BlobStore, layout};

/// Writes or reads in flight at once for one call.
const CONCURRENCY: usize = 16;
/// The largest journal page read: far more reviews than one change appends.
const PAGE_LIMIT: u64 = 4 * 1024 * 1024;
/// How a journal page marks an entry (its key in the index) rather than a review.
const ENTRY_LINE: &str = "entry ";

/// A journal page as listed, before it is read.
struct ListedPage {
    shard: String,
    page: String,
    written: SystemTime,
}

impl ListedPage {
    fn id(&self) -> String {
        format!("{}/{}", self.shard, self.page)
    }
}

/// [`ReferenceIndex`] over a [`BlobStore`].
#[derive(Debug, Clone)]
pub struct StoredIndex {
    store: Arc<dyn BlobStore>,
}

impl StoredIndex {
    pub fn new(store: Arc<dyn BlobStore>) -> Self {
        Self { store }
    }

    /// The entries below `dir`, whose keys are relative to `root` once `dir`'s part is put back.
    async fn walk_entries(&self, dir: &str) -> storage::Result<Vec<Recorded>> {
        let relative = dir
            .strip_prefix(&layout::index_root())
            .unwrap_or_default()
            .trim_start_matches('/');
        Ok(self
            .store
            .walk(dir)
            .await?
            .into_iter()
            .filter_map(|object| {
                let key = if relative.is_empty() {
                    object.key
                } else {
                    format!("{relative}/{}", object.key)
                };
                keys::parse(&key).map(|entry| Recorded {
                    entry,
                    at: object.modified,
                })
            })
            .collect())
    }

    /// Every journal page, by name and the time its name tells.
    async fn list_pages(&self) -> storage::Result<Vec<ListedPage>> {
        let mut listed = Vec::new();
        for shard in self.shards().await? {
            if keys::shard_start(&shard).is_none() {
                continue;
            }
            let dir = format!("{}/{shard}", layout::journal_root());
            let pages = match self.store.list(&dir).await {
                Ok(pages) => pages,
                Err(storage::Error::NotFound) => continue,
                Err(err) => return Err(err),
            };
            for page in pages {
                if let Some(written) = keys::page_written(&page) {
                    listed.push(ListedPage {
                        shard: shard.clone(),
                        page,
                        written,
                    });
                }
            }
        }
        Ok(listed)
    }

    /// Reads `listed`, oldest first.
    async fn read_pages(&self, listed: Vec<ListedPage>) -> storage::Result<Vec<JournalPage>> {
        let reads = listed.into_iter().map(|listed| async move {
            let key = format!("{}/{}", layout::journal_root(), listed.id());
            let body = storage::read_if_present(self.store.as_ref(), &key, PAGE_LIMIT).await?;
            let text = body
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let mut reviews = Vec::new();
            let mut entries = Vec::new();
            for line in text.lines() {
                match line.strip_prefix(ENTRY_LINE) {
                    Some(key) => entries.extend(keys::parse(key)),
                    None => reviews.extend(line.parse().ok()),
                }
            }
            Ok::<_, storage::Error>(JournalPage {
                id: listed.id(),
                written: listed.written,
                reviews,
                entries,
            })
        });
        let mut pages: Vec<JournalPage> = futures::stream::iter(reads)
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        pages.sort_by_key(|p| p.written);
        Ok(pages)
    }

    async fn shards(&self) -> storage::Result<Vec<String>> {
        match self.store.list(&layout::journal_root()).await {
            Ok(shards) => Ok(shards),
            Err(storage::Error::NotFound) => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }
}

#[async_trait]
impl ReferenceIndex for StoredIndex {
    async fn record(&self, entries: &[Entry]) -> storage::Result<()> {
        futures::stream::iter(entries.iter().map(keys::of))
            .map(|key| async move { self.store.put(&key, Bytes::new()).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn forget(&self, entries: &[Entry]) -> storage::Result<()> {
        let keys: Vec<String> = entries.iter().map(keys::of).collect();
        for batch in keys.chunks(storage::DELETE_BATCH) {
            self.store.delete_objects(batch).await?;
        }
        Ok(())
    }

    async fn users_of(&self, blob: &Digest) -> storage::Result<Vec<Recorded>> {
        self.walk_entries(&keys::blob_dir(blob)).await
    }

    async fn holders_of(
        &self,
        repository: &RepositoryName,
        manifest: &Digest,
    ) -> storage::Result<Vec<Recorded>> {
        // The walk also finds the repositories below this one (`team/app/web` under `team/app`).
        let mut holders = self
            .walk_entries(&keys::holders_dir(repository, manifest))
            .await?;
        holders.retain(|r| match &r.entry {
            Entry::Tags { repository: r, .. } | Entry::Lists { repository: r, .. } => {
                r == repository
            }
            _ => false,
        });
        Ok(holders)
    }

    async fn stored_in(
        &self,
        repository: &RepositoryName,
        link: LinkKind,
        blob: &Digest,
    ) -> storage::Result<Vec<Recorded>> {
        self.walk_entries(&keys::stored_dir(repository, link, blob))
            .await
    }

    async fn stored(&self, namespace: Option<&RepositoryName>) -> storage::Result<Vec<Recorded>> {
        let mut stored = self.walk_entries(&keys::usage_dir(namespace)).await?;
        stored.retain(|r| matches!(r.entry, Entry::Stores { .. }));
        Ok(stored)
    }

    async fn all(&self) -> storage::Result<Vec<Recorded>> {
        self.walk_entries(&layout::index_root()).await
    }

    async fn complete_since(&self) -> storage::Result<Option<SystemTime>> {
        let body = storage::read_if_present(self.store.as_ref(), &keys::complete(), 64).await?;
        Ok(body
            .and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse::<u64>().ok())
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs)))
    }

    async fn mark_complete(&self, since: SystemTime) -> storage::Result<()> {
        let secs = since
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.store
            .put(&keys::complete(), secs.to_string().into())
            .await
    }

    async fn append_page(&self, reviews: &[Review], entries: &[Entry]) -> storage::Result<()> {
        if reviews.is_empty() && entries.is_empty() {
            return Ok(());
        }
        let now = SystemTime::now();
        let key = format!(
            "{}/{}/{}",
            layout::journal_root(),
            keys::journal_shard(now),
            keys::journal_page(now)
        );
        let mut body: String = reviews.iter().map(|r| format!("{r}\n")).collect();
        body.extend(
            entries
                .iter()
                .map(|e| format!("{ENTRY_LINE}{}\n", keys::relative(e))),
        );
        self.store.put(&key, body.into()).await
    }

    async fn due(&self, before: SystemTime) -> storage::Result<(Vec<JournalPage>, usize)> {
        let (due, newer): (Vec<ListedPage>, Vec<ListedPage>) = self
            .list_pages()
            .await?
            .into_iter()
            .partition(|page| page.written < before);
        Ok((self.read_pages(due).await?, newer.len()))
    }

    async fn pages_except(&self, seen: &HashSet<String>) -> storage::Result<Vec<JournalPage>> {
        let listed = self.list_pages().await?;
        let unseen = listed
            .into_iter()
            .filter(|page| !seen.contains(&page.id()))
            .collect();
        self.read_pages(unseen).await
    }

    async fn consume(&self, ids: &[String]) -> storage::Result<()> {
        let keys: Vec<String> = ids
            .iter()
            .filter(|id| !id.contains(".."))
            .map(|id| format!("{}/{id}", layout::journal_root()))
            .collect();
        for batch in keys.chunks(storage::DELETE_BATCH) {
            self.store.delete_objects(batch).await?;
        }
        Ok(())
    }
}
