//! What repositories and namespaces store, counted from the index's `Stores` entries.
//!
//! A repository's usage counts each blob it links once, as a layer or a manifest, whatever
//! number of manifests use it. A namespace (a repository's first path part: `team` for
//! `team/app/web`) counts each blob once across all its repositories, as its storage does; so
//! does the total across the registry.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::{Entry, Recorded, ReferenceIndex};
use crate::oci::{Digest, RepositoryName};
use crate::policies::{Quota, QuotaScope};
use crate::storage;

/// Bytes stored, by repository and by namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Distinct blobs across the registry.
    pub total_bytes: u64,
    pub namespaces: BTreeMap<String, u64>,
    pub repositories: BTreeMap<String, u64>,
}

impl Usage {
    /// The usage the `Stores` among `entries` add up to.
    pub fn of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Self {
        let mut sizes: HashMap<&Digest, u64> = HashMap::new();
        let mut repositories: HashMap<&RepositoryName, HashSet<&Digest>> = HashMap::new();
        for entry in entries {
            if let Entry::Stores {
                repository,
                blob,
                size,
                ..
            } = entry
            {
                sizes.insert(blob, *size);
                repositories.entry(repository).or_default().insert(blob);
            }
        }
        let size = |blobs: &HashSet<&Digest>| blobs.iter().map(|b| sizes[b]).sum::<u64>();
        let mut namespaces: HashMap<&str, HashSet<&Digest>> = HashMap::new();
        for (repository, blobs) in &repositories {
            namespaces
                .entry(repository.namespace())
                .or_default()
                .extend(blobs.iter().copied());
        }
        Self {
            total_bytes: sizes.values().sum(),
            namespaces: namespaces
                .iter()
                .map(|(name, blobs)| ((*name).to_owned(), size(blobs)))
                .collect(),
            repositories: repositories
                .iter()
                .map(|(name, blobs)| (name.to_string(), size(blobs)))
                .collect(),
        }
    }

    /// [`Usage::of`] recorded entries.
    pub fn of_recorded(recorded: &[Recorded]) -> Self {
        Self::of(recorded.iter().map(|r| &r.entry))
    }

    /// The `limit` namespaces storing most, largest first: what fits a status or a scrape.
    pub fn largest_namespaces(&self, limit: usize) -> Vec<(&str, u64)> {
        largest(&self.namespaces, limit)
    }

    /// The `limit` repositories storing most, largest first.
    pub fn largest_repositories(&self, limit: usize) -> Vec<(&str, u64)> {
        largest(&self.repositories, limit)
    }
}

/// What one repository or namespace a quota covers stores, beside the quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaUsage {
    pub quota: String,
    /// `repository` or `namespace`.
    pub scope: &'static str,
    /// The repository or namespace.
    pub name: String,
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

impl Usage {
    /// Every repository and namespace `quotas` cover that stores anything, against its quota:
    /// the fullest first.
    pub fn against(&self, quotas: &[Quota]) -> Vec<QuotaUsage> {
        let mut found = Vec::new();
        for quota in quotas {
            let counted = match quota.scope {
                QuotaScope::Repository => &self.repositories,
                QuotaScope::Namespace => &self.namespaces,
            };
            for (name, used) in counted {
                let Ok(repository) = name.parse::<RepositoryName>() else {
                    continue;
                };
                if quota.scope_of(&repository).is_some() {
                    found.push(QuotaUsage {
                        quota: quota.name.clone(),
                        scope: quota.scope.as_str(),
                        name: name.clone(),
                        used_bytes: *used,
                        limit_bytes: quota.limit,
                    });
                }
            }
        }
        // Fullest first: used/limit compared without division, as used·limit' against used'·limit.
        found.sort_by(|a, b| {
            let fill = |q: &QuotaUsage, other: &QuotaUsage| {
                u128::from(q.used_bytes) * u128::from(other.limit_bytes)
            };
            fill(b, a)
                .cmp(&fill(a, b))
                .then_with(|| (&a.quota, &a.name).cmp(&(&b.quota, &b.name)))
        });
        found
    }
}

fn largest(sizes: &BTreeMap<String, u64>, limit: usize) -> Vec<(&str, u64)> {
    let mut largest: Vec<(&str, u64)> = sizes
        .iter()
        .map(|(name, bytes)| (name.as_str(), *bytes))
        .collect();
    largest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    largest.truncate(limit);
    largest
}

/// A count of what is stored, and whether the index it came from holds every link.
#[derive(Debug, Clone, Serialize)]
pub struct Counted {
    /// False while the index was never found whole (a registry another registry or an older
    /// Stowage wrote, until its first `stowage gc`): the count then misses what it lacks.
    pub complete: bool,
    #[serde(flatten)]
    pub usage: Usage,
}

/// Counts what `namespace` (a repository and those below it), or the whole registry, stores.
/// One listing of the index's usage entries, never a read per blob.
pub async fn count(
    index: &dyn ReferenceIndex,
    namespace: Option<&RepositoryName>,
) -> storage::Result<Counted> {
    let (stored, complete) = futures::try_join!(index.stored(namespace), index.complete_since())?;
    Ok(Counted {
        complete: complete.is_some(),
        usage: Usage::of_recorded(&stored),
    })
}
