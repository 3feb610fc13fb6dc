//! The pull-through cache's retention: repositories mirrored from an upstream that nobody has
//! pulled for a while are dropped before marking, so their content becomes garbage like any
//! other unreferenced content. When a repository was last pulled is the time of its
//! `_proxy/lastpull` marker, which replicas rewrite at most once a day: the scan already lists
//! it, so retention costs no extra storage request but the deletions.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::full::Scan;
use crate::oci::RepositoryName;
use crate::storage::{self, BlobStore, layout};

/// Which repositories are mirrors, and how long one may go unpulled.
#[derive(Debug, Clone)]
pub struct MirrorRetention {
    /// The proxy's prefixes: repositories below them are mirrors.
    pub prefixes: Vec<RepositoryName>,
    pub unused_for: Duration,
}

impl MirrorRetention {
    fn mirrors(&self, name: &RepositoryName) -> bool {
        self.prefixes.iter().any(|prefix| {
            name.as_str()
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// The mirrored repositories not pulled since `now - unused_for` (nor written to since, for one
/// cached before pulls were recorded); deleted unless `dry_run`, and taken out of `scan`.
pub(super) async fn expire(
    store: &dyn BlobStore,
    scan: &mut Scan,
    retention: &MirrorRetention,
    now: SystemTime,
    dry_run: bool,
) -> storage::Result<Vec<RepositoryName>> {
    let cutoff = now
        .checked_sub(retention.unused_for)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // The latest sign of use of each mirrored repository: its pull marker, else its links.
    let mut last_used: HashMap<&RepositoryName, SystemTime> = HashMap::new();
    let links = scan
        .revisions
        .iter()
        .chain(&scan.layers)
        .chain(&scan.tag_history);
    for link in links.filter(|l| retention.mirrors(&l.repository)) {
        let seen = last_used
            .entry(&link.repository)
            .or_insert(SystemTime::UNIX_EPOCH);
        *seen = (*seen).max(link.modified);
    }
    for (name, pulled) in &scan.mirror_pulls {
        if let Some(seen) = last_used.get_mut(name) {
            *seen = *pulled;
        }
    }
    let expired: Vec<RepositoryName> = last_used
        .into_iter()
        .filter(|(_, used)| *used < cutoff)
        .map(|(name, _)| name.clone())
        .collect();
    if !dry_run {
        for name in &expired {
            store.delete(&layout::repository(name)).await?;
        }
    }
    let gone: HashSet<&RepositoryName> = expired.iter().collect();
    scan.revisions.retain(|l| !gone.contains(&l.repository));
    scan.layers.retain(|l| !gone.contains(&l.repository));
    scan.tag_history.retain(|l| !gone.contains(&l.repository));
    scan.tags.retain(|(name, _)| !gone.contains(name));
    scan.referrers.retain(|(name, _), _| !gone.contains(name));
    let mut expired = expired;
    expired.sort();
    Ok(expired)
}
