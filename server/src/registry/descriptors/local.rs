//! The in-memory tier: a bounded cache per replica.

use std::collections::BTreeSet;
use std::time::Instant;

use quick_cache::sync::Cache;

use super::{Known, LINK_TTL};
use crate::oci::{Digest, RepositoryName};

/// A fact kept in memory.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum Key {
    Size(Digest),
    Link(RepositoryName, Digest),
}

/// A size, or when a membership was learned.
#[derive(Debug, Clone, Copy)]
enum Value {
    Size(u64),
    LinkedSince(Instant),
}

pub(super) struct LocalTier(Cache<Key, Value>);

impl std::fmt::Debug for LocalTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTier")
            .field("entries", &self.0.len())
            .finish()
    }
}

impl LocalTier {
    pub(super) fn new(entries: u64) -> Self {
        Self(Cache::new(usize::try_from(entries).unwrap_or(usize::MAX)))
    }

    pub(super) fn lookup(&self, repository: &RepositoryName, digest: &Digest) -> Known {
        let size = match self.0.get(&Key::Size(digest.clone())) {
            Some(Value::Size(size)) => Some(size),
            _ => None,
        };
        let link = Key::Link(repository.clone(), digest.clone());
        let linked = match self.0.get(&link) {
            Some(Value::LinkedSince(since)) if since.elapsed() < LINK_TTL => true,
            Some(_) => {
                self.0.remove(&link);
                false
            }
            None => false,
        };
        Known { size, linked }
    }

    pub(super) fn remember(&self, repository: &RepositoryName, digest: &Digest, known: Known) {
        if let Some(size) = known.size {
            self.0.insert(Key::Size(digest.clone()), Value::Size(size));
        }
        if known.linked {
            self.0.insert(
                Key::Link(repository.clone(), digest.clone()),
                Value::LinkedSince(Instant::now()),
            );
        }
    }

    pub(super) fn forget_link(&self, repository: &RepositoryName, digest: &Digest) {
        self.0
            .remove(&Key::Link(repository.clone(), digest.clone()));
    }

    /// Forgets both facts about `digest` in `repository`.
    pub(super) fn forget(&self, repository: &RepositoryName, digest: &Digest) {
        self.forget_link(repository, digest);
        self.0.remove(&Key::Size(digest.clone()));
    }

    /// Forgets every fact about these blobs, in any repository.
    pub(super) fn evict(&self, digests: &BTreeSet<Digest>) {
        self.0.retain(|key, _| match key {
            Key::Size(digest) | Key::Link(_, digest) => !digests.contains(digest),
        });
    }

    pub(super) fn clear(&self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> RepositoryName {
        name.parse().unwrap()
    }

    #[test]
    fn keeps_sizes_and_memberships_apart() {
        let tier = LocalTier::new(1000);
        let digest = Digest::sha256_of(b"layer");
        let other = Digest::sha256_of(b"other");
        assert_eq!(tier.lookup(&repo("a"), &digest), Known::default());
        let both = Known {
            size: Some(5),
            linked: true,
        };
        tier.remember(&repo("a"), &digest, both);
        tier.remember(&repo("a"), &other, both);
        assert_eq!(tier.lookup(&repo("a"), &digest), both);
        // The size is the blob's everywhere; the membership is a's only.
        assert_eq!(
            tier.lookup(&repo("b"), &digest),
            Known {
                size: Some(5),
                linked: false
            }
        );
        tier.forget_link(&repo("a"), &digest);
        assert!(!tier.lookup(&repo("a"), &digest).linked);
        tier.evict(&BTreeSet::from([digest.clone()]));
        assert_eq!(tier.lookup(&repo("a"), &digest), Known::default());
        assert_eq!(tier.lookup(&repo("a"), &other), both);
        tier.clear();
        assert_eq!(tier.lookup(&repo("a"), &other), Known::default());
    }
}
