//! When each manifest was last pulled, without a write per pull: a small object per manifest
//! holding the day of its last pull, written at most once a day by each replica. Retention
//! rules and the web interface read it.

use std::time::SystemTime;

use quick_cache::sync::Cache;

use super::{Registry, Result};
use crate::oci::{Digest, RepositoryName};
use crate::storage::{self, layout};

/// Manifests a replica remembers having marked today; beyond, a pull may mark again.
const REMEMBERED: usize = 20_000;

/// What this replica has marked, and on which day.
#[derive(Debug)]
pub struct PullMarks(Cache<(RepositoryName, Digest), u64>);

impl Default for PullMarks {
    fn default() -> Self {
        Self(Cache::new(REMEMBERED))
    }
}

/// Days since the epoch, the unit pulls are recorded in.
pub fn today() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 86_400)
}

impl Registry {
    /// Whether this replica recorded a pull of `digest` of `name` today: then a pull needs no
    /// write, nor a task to make one.
    pub fn pull_recorded_today(&self, name: &RepositoryName, digest: &Digest) -> bool {
        self.pulls.0.get(&(name.clone(), digest.clone())) == Some(today())
    }

    /// Records that `digest` of `name` was pulled today, unless this replica did already. Best
    /// effort: a failed write is logged and the next pull tries again.
    pub async fn record_pull(&self, name: &RepositoryName, digest: &Digest) {
        let day = today();
        let key = (name.clone(), digest.clone());
        if self.pulls.0.get(&key) == Some(day) {
            return;
        }
        match self
            .store
            .put(&layout::last_pull(name, digest), day.to_string().into())
            .await
        {
            Ok(()) => self.pulls.0.insert(key, day),
            Err(err) => {
                tracing::debug!(repository = %name, %digest, %err, "cannot record the pull")
            }
        }
    }

    /// The day `digest` of `name` was last recorded as pulled, if ever.
    pub async fn last_pulled(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<u64>> {
        self.read_day(&layout::last_pull(name, digest)).await
    }

    /// The day number a pull record at `key` holds; `None` when there is none, or it is not a
    /// day number.
    pub(super) async fn read_day(&self, key: &str) -> Result<Option<u64>> {
        let bytes = storage::read_if_present(self.store.as_ref(), key, 64).await?;
        Ok(bytes.and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse().ok()))
    }
}
