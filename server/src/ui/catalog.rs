//! The repository list the pages search and page through, kept by each replica: walking the
//! catalog costs a listing per directory, which on S3 is too slow to repeat for every page view.
//! A list older than [`CATALOG_TTL`] is still served while a walk in the background replaces
//! it, so only a replica's first view waits for a walk.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::registry::{self, Page, Registry};

/// How long a walked catalog is served before a view starts the next walk.
pub const CATALOG_TTL: Duration = Duration::from_secs(10);

/// Every repository's name, sorted, as of a recent walk.
#[derive(Debug, Default)]
pub struct Catalog {
    walked: Mutex<Option<(Instant, Arc<Vec<String>>)>>,
    refreshing: AtomicBool,
}

impl Catalog {
    /// The names: as last walked, starting a walk in the background when that is older than
    /// [`CATALOG_TTL`]; the first call walks while the views waiting for it share the one walk.
    pub async fn names(
        self: &Arc<Self>,
        registry: &Registry,
    ) -> Result<Arc<Vec<String>>, registry::Error> {
        let mut walked = self.walked.lock().await;
        if let Some((at, names)) = walked.as_ref() {
            if at.elapsed() >= CATALOG_TTL && !self.refreshing.swap(true, Ordering::AcqRel) {
                tokio::spawn(Arc::clone(self).refresh(registry.clone()));
            }
            return Ok(Arc::clone(names));
        }
        let names = walk(registry).await?;
        *walked = Some((Instant::now(), Arc::clone(&names)));
        Ok(names)
    }

    async fn refresh(self: Arc<Self>, registry: Registry) {
        match walk(&registry).await {
            Ok(names) => *self.walked.lock().await = Some((Instant::now(), names)),
            Err(err) => tracing::warn!(%err, "the web interface could not walk the catalog"),
        }
        self.refreshing.store(false, Ordering::Release);
    }
}

async fn walk(registry: &Registry) -> Result<Arc<Vec<String>>, registry::Error> {
    let (names, _) = registry.catalog(&Page::default(), &|_| true).await?;
    Ok(Arc::new(names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{BlobStore, MemoryStore, layout};

    async fn add_repository(store: &MemoryStore, name: &str) {
        let name: crate::oci::RepositoryName = name.parse().unwrap();
        let key = format!(
            "{}/_manifests/tags/v1/current/link",
            layout::repository(&name)
        );
        store
            .put(&key, bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_list_is_served_while_a_walk_replaces_it() {
        let store = Arc::new(MemoryStore::default());
        add_repository(&store, "team/a").await;
        let registry = Registry::new(
            Arc::clone(&store) as Arc<dyn BlobStore>,
            registry::Limits {
                max_manifest_size: 1024,
                manifest_cache_bytes: 0,
            },
        );
        let catalog = Arc::new(Catalog::default());
        assert_eq!(*catalog.names(&registry).await.unwrap(), ["team/a"]);
        add_repository(&store, "team/b").await;
        assert_eq!(
            *catalog.names(&registry).await.unwrap(),
            ["team/a"],
            "within the TTL"
        );
        tokio::time::advance(CATALOG_TTL).await;
        assert_eq!(
            *catalog.names(&registry).await.unwrap(),
            ["team/a"],
            "stale, while the walk runs"
        );
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *catalog.names(&registry).await.unwrap(),
            ["team/a", "team/b"]
        );
    }
}
