//! Files read again when they change on disk: the htpasswd file, the access policy and the TLS
//! certificate. Kubernetes updates a mounted Secret or ConfigMap by swapping a symlink, and
//! cert-manager rotates certificates in place, so the files are polled for their contents
//! rather than watched for events. A version that fails to load is logged and ignored: the last
//! good one stays in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

/// A value loaded from files, replaced when they change.
pub struct Watched<T> {
    what: &'static str,
    current: ArcSwap<T>,
    version: AtomicU64,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("what", &self.what)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A file that could not be read or loaded.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct LoadError {
    pub what: &'static str,
    pub reason: String,
}

type Loader<T> = dyn Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync;

impl<T: Send + Sync + 'static> Watched<T> {
    /// Loads `paths` now (failing if they do not load), then checks them every `interval` for
    /// as long as the value is in use.
    pub fn start(
        what: &'static str,
        paths: Vec<PathBuf>,
        interval: Duration,
        load: impl Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, LoadError> {
        let contents = read_all(&paths).map_err(|reason| LoadError { what, reason })?;
        let value = load(&contents).map_err(|reason| LoadError { what, reason })?;
        let watched = Arc::new(Self {
            what,
            current: ArcSwap::from_pointee(value),
            version: AtomicU64::new(1),
        });
        let load: Box<Loader<T>> = Box::new(load);
        let weak = Arc::downgrade(&watched);
        let mut seen = fingerprint(&contents);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(watched) = weak.upgrade() else {
                    return;
                };
                let contents = match read_all(&paths) {
                    Ok(contents) => contents,
                    Err(reason) => {
                        tracing::warn!(
                            what = watched.what,
                            reason,
                            "cannot read; keeping the loaded version"
                        );
                        continue;
                    }
                };
                let now = fingerprint(&contents);
                if now == seen {
                    continue;
                }
                seen = now;
                match load(&contents) {
                    Ok(value) => {
                        watched.current.store(Arc::new(value));
                        let version = watched.version.fetch_add(1, Ordering::AcqRel) + 1;
                        tracing::info!(what = watched.what, version, "reloaded");
                    }
                    Err(reason) => tracing::error!(
                        what = watched.what,
                        reason,
                        "the changed file does not load; keeping the previous version"
                    ),
                }
            }
        });
        Ok(watched)
    }
}

impl<T> Watched<T> {
    /// A value no file backs: it never changes, and nothing polls.
    pub fn fixed(what: &'static str, value: T) -> Arc<Self> {
        Arc::new(Self {
            what,
            current: ArcSwap::from_pointee(value),
            version: AtomicU64::new(1),
        })
    }

    /// The version in force and its number (which grows with each reload).
    pub fn current(&self) -> (u64, Arc<T>) {
        // Read the number first: a reload in between yields a newer value under an older
        // number, which at worst forgets a remembered login.
        let version = self.version.load(Ordering::Acquire);
        (version, self.current.load_full())
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|path| std::fs::read(path).map_err(|err| format!("reading {}: {err}", path.display())))
        .collect()
}

fn fingerprint(contents: &[Vec<u8>]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for content in contents {
        hash.update((content.len() as u64).to_be_bytes());
        hash.update(content);
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reloads_changes_and_keeps_the_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let watched = Watched::start(
            "number",
            vec![path.clone()],
            Duration::from_millis(20),
            |c| {
                String::from_utf8_lossy(&c[0])
                    .trim()
                    .parse::<u32>()
                    .map_err(|e| e.to_string())
            },
        )
        .unwrap();
        assert_eq!(**watched.load(), 1);
        std::fs::write(&path, "2").unwrap();
        let changed = async {
            while **watched.load() != 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), changed)
            .await
            .unwrap();
        assert_eq!(watched.current().0, 2);
        std::fs::write(&path, "not a number").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(**watched.load(), 2, "a bad version is ignored");
        assert!(
            Watched::start(
                "number",
                vec![dir.path().join("missing")],
                Duration::from_secs(1),
                |_| Ok(0)
            )
            .is_err()
        );
    }
}
