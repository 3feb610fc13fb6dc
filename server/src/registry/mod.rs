//! Repositories over storage: blobs linked into repositories, manifests and tags, listings,
//! referrers and when manifests were last pulled. Knows the OCI rules, not HTTP.

mod blobs;
mod cache;
pub mod descriptors;
mod listing;
mod manifests;
mod mirror;
pub mod pulls;
mod quota;
mod referrers;
mod retention;

use std::sync::Arc;

use crate::index::{ReferenceIndex, StoredIndex};
use crate::oci::Digest;
use crate::storage::{self, BlobStore, layout};
use crate::{manifest, oci};
use cache::ManifestCache;

pub use listing::Page;
pub use manifests::{PutOutcome, StoredManifest};
pub use quota::OverQuota;

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use crate::sweep::MANIFEST_PUT_DEADLINE;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    #[error(transparent)]
    ManifestInvalid(#[from] manifest::Error),
    #[error("manifest digest {actual} does not match {expected}")]
    ManifestDigestMismatch { expected: Digest, actual: Digest },
    #[error("the manifest push took too long; retry")]
    TooSlow,
    #[error("stored link is corrupt: {0}")]
    CorruptLink(String),
    #[error(transparent)]
    Storage(storage::Error),
    /// Finishing an upload failed before its blob was linked.
    #[error(transparent)]
    Upload(#[from] crate::upload::Error),
    #[error("{0}")]
    OverQuota(Box<OverQuota>),
}

impl From<storage::Error> for Error {
    fn from(err: storage::Error) -> Self {
        Self::Storage(err)
    }
}

/// Limits and switches the registry enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_size: u64,
    /// Bytes of manifest bodies kept in memory; 0 for none.
    pub manifest_cache_bytes: u64,
}

/// The registry's view of storage.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn BlobStore>,
    /// Every link this registry writes is recorded here first (see `crate::index`).
    index: Arc<dyn ReferenceIndex>,
    limits: Limits,
    manifests: Option<Arc<ManifestCache>>,
    descriptors: Option<Arc<descriptors::BlobDescriptors>>,
    pulls: Arc<pulls::PullMarks>,
    quotas: Arc<quota::Quotas>,
}

impl Registry {
    pub fn new(store: Arc<dyn BlobStore>, limits: Limits) -> Self {
        let manifests = ManifestCache::new(limits.manifest_cache_bytes).map(Arc::new);
        Self {
            index: Arc::new(StoredIndex::new(store.clone())),
            store,
            limits,
            manifests,
            descriptors: None,
            pulls: Arc::default(),
            quotas: Arc::new(quota::Quotas::new(Vec::new(), None)),
        }
    }

    /// The same registry, refusing pushes that would take a repository or namespace over one of
    /// `quotas`, and counting the refusals in `metrics`.
    #[must_use]
    pub fn with_quotas(
        mut self,
        quotas: Vec<crate::policies::Quota>,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Self {
        self.quotas = Arc::new(quota::Quotas::new(quotas, metrics));
        self
    }

    /// The same registry, answering blob lookups from `descriptors` where it can.
    #[must_use]
    pub fn with_descriptors(
        mut self,
        descriptors: Option<Arc<descriptors::BlobDescriptors>>,
    ) -> Self {
        self.descriptors = descriptors;
        self
    }

    /// The same registry, recording its links in `index` rather than in its storage.
    #[must_use]
    pub fn with_index(mut self, index: Arc<dyn ReferenceIndex>) -> Self {
        self.index = index;
        self
    }

    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    pub fn index(&self) -> &Arc<dyn ReferenceIndex> {
        &self.index
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reads the digest a link file points at; `None` when there is no link.
    async fn read_link(&self, key: &str) -> Result<Option<Digest>> {
        match storage::read_if_present(self.store.as_ref(), key, 1024).await? {
            Some(bytes) => layout::parse_link(&bytes)
                .map(Some)
                .ok_or_else(|| Error::CorruptLink(key.into())),
            None => Ok(None),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.stat(key).await {
            Ok(_) => Ok(true),
            Err(storage::Error::NotFound) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    async fn write_link(&self, key: &str, digest: &Digest) -> Result<()> {
        Ok(self.store.put(key, layout::link_content(digest)).await?)
    }

    /// Fails with `NameUnknown` unless the repository has been pushed to.
    async fn require_repository(&self, name: &oci::RepositoryName) -> Result<()> {
        match self.store.list(&layout::repository(name)).await {
            Ok(_) => Ok(()),
            Err(storage::Error::NotFound) => Err(Error::NameUnknown),
            Err(err) => Err(err.into()),
        }
    }
}
