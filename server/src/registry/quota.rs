//! Quotas enforced as blobs and manifests join a repository.
//!
//! Each commit a quota covers reads its namespace's usage from the index (one listing), and
//! holds a lock per namespace on this replica until its link is written, so this replica's
//! next commit counts it. Replicas do not wait for each other: a commit on another replica
//! may not yet be counted, so concurrent pushes overshoot a quota by at most one blob (or
//! manifest) per other replica, and never by more than each replica's single commit in flight.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Error, Registry, Result};
use crate::index::{Entry, Usage};
use crate::metrics::Metrics;
use crate::oci::{Digest, RepositoryName};
use crate::policies::{Quota, QuotaScope};
use crate::units::human_size;

/// Locks namespaces are spread over: namespaces sharing one only wait for each other.
const STRIPES: usize = 64;

/// The quota rules, this replica's namespace locks, and where refusals are counted.
#[derive(Debug)]
pub(super) struct Quotas {
    rules: Vec<Quota>,
    stripes: Vec<Arc<Mutex<()>>>,
    metrics: Option<Arc<Metrics>>,
}

impl Quotas {
    pub(super) fn new(rules: Vec<Quota>, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            rules,
            stripes: (0..STRIPES).map(|_| Arc::default()).collect(),
            metrics,
        }
    }

    async fn lock(&self, namespace: &str) -> OwnedMutexGuard<()> {
        let mut hasher = DefaultHasher::new();
        namespace.hash(&mut hasher);
        let stripe = (hasher.finish() % STRIPES as u64) as usize;
        Arc::clone(&self.stripes[stripe]).lock_owned().await
    }
}

/// A push that would take a repository or namespace over its quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    pub quota: String,
    pub scope: QuotaScope,
    /// The repository or namespace counted.
    pub counted: String,
    pub used: u64,
    pub limit: u64,
    pub adding: u64,
}

impl std::fmt::Display for OverQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "quota {:?} allows {} {} to store {}: it stores {} and this push adds {}",
            self.quota,
            self.scope.as_str(),
            self.counted,
            human_size(self.limit),
            human_size(self.used),
            human_size(self.adding),
        )
    }
}

/// A commit every quota covering its repository admits; while it is held, this replica's other
/// commits to the same namespace wait, so they count this one.
#[must_use = "hold it until the link is written"]
pub(super) struct Admitted {
    _held: Option<OwnedMutexGuard<()>>,
}

impl Registry {
    /// Admits blob `digest` of `size` bytes joining `name`, or refuses it when a quota would be
    /// exceeded. A blob `name` (or, for a namespace quota, its namespace) stores already adds
    /// nothing, so it is always admitted.
    pub(super) async fn admit(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<Admitted> {
        let covering: Vec<(&Quota, &str)> = self
            .quotas
            .rules
            .iter()
            .filter_map(|quota| quota.scope_of(name).map(|counted| (quota, counted)))
            .collect();
        if covering.is_empty() {
            return Ok(Admitted { _held: None });
        }
        let held = self.quotas.lock(name.namespace()).await;
        let namespace_wide = covering
            .iter()
            .any(|(quota, _)| quota.scope == QuotaScope::Namespace);
        let root = if namespace_wide {
            name.namespace_root()
        } else {
            name.clone()
        };
        let stored = self.index.stored(Some(&root)).await?;
        let usage = Usage::of_recorded(&stored);
        // Whether `digest` is stored already, by `within` (or anywhere in the listing).
        let stores_it = |within: Option<&RepositoryName>| {
            stored.iter().any(|recorded| {
                matches!(&recorded.entry, Entry::Stores { repository, blob, .. }
                    if blob == digest && within.is_none_or(|name| name == repository))
            })
        };
        for (quota, counted) in covering {
            let (used, known) = match quota.scope {
                QuotaScope::Repository => (usage.repositories.get(counted), stores_it(Some(name))),
                QuotaScope::Namespace => (usage.namespaces.get(counted), stores_it(None)),
            };
            let used = used.copied().unwrap_or(0);
            let adding = if known { 0 } else { size };
            if !quota.admits(used, adding) {
                if let Some(metrics) = &self.quotas.metrics {
                    metrics.quota_refused(&quota.name);
                }
                return Err(Error::OverQuota(Box::new(OverQuota {
                    quota: quota.name.clone(),
                    scope: quota.scope,
                    counted: counted.to_owned(),
                    used,
                    limit: quota.limit,
                    adding,
                })));
            }
        }
        Ok(Admitted { _held: Some(held) })
    }
}
