//! The staging directory of a copy into a layout, where blobs are written before the copy
//! commits them into `blobs/`.
//!
//! Each copy holds an exclusive lock on a file in its own staging directory, which the kernel
//! releases however the copy ends. A directory whose lock nobody holds was left by a copy that
//! was killed: the next copy into the layout takes it over, resumes the blobs it left half
//! written, and removes it when done, so a killed copy leaves nothing behind for good. Copies
//! running at once each keep their own.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::oci::Digest;

const PREFIX: &str = ".stowage-copy-";
const LOCK: &str = ".lock";
/// A staging directory without a lock file may be one a copy is making right now.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// A staging directory this copy holds.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    /// Held for as long as the copy runs.
    _lock: File,
}

impl Staging {
    /// Takes over a staging directory a killed copy left in `layout` (removing any further
    /// ones such copies left), or makes a new one.
    pub fn open(layout: &Path) -> io::Result<Self> {
        let mut taken: Option<Self> = None;
        for entry in std::fs::read_dir(layout)?.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
                continue;
            }
            let Some(abandoned) = Self::take_over(&entry.path()) else {
                continue;
            };
            if taken.is_none() {
                tracing::debug!(staging = %abandoned.dir.display(), "resuming what a killed copy left");
                taken = Some(abandoned);
            }
            // A further one is dropped here, which removes it.
        }
        if let Some(staging) = taken {
            return Ok(staging);
        }
        loop {
            let dir = layout.join(format!("{PREFIX}{:016x}", rand::random::<u64>()));
            std::fs::create_dir(&dir)?;
            let lock = File::create(dir.join(LOCK))?;
            match lock.try_lock() {
                Ok(()) => return Ok(Self { dir, _lock: lock }),
                // Another copy took it over between the two steps: it may keep it.
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(err)) => return Err(err),
            }
        }
    }

    /// The directory at `path`, if the copy that made it is gone.
    fn take_over(path: &Path) -> Option<Self> {
        let lock_path = path.join(LOCK);
        let lock = match File::options().write(true).open(&lock_path) {
            Ok(lock) => lock,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let age = std::fs::metadata(path)
                    .and_then(|meta| meta.modified())
                    .ok()
                    .and_then(|modified| modified.elapsed().ok())?;
                if age < UNLOCKED_GRACE {
                    return None;
                }
                File::create(&lock_path).ok()?
            }
            Err(_) => return None,
        };
        lock.try_lock().ok()?;
        Some(Self {
            dir: path.to_owned(),
            _lock: lock,
        })
    }

    /// Where `digest` is staged.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}", digest.algorithm().as_str(), digest.hex()))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stagings(layout: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(layout)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(PREFIX))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn a_live_copys_staging_is_left_alone_and_an_abandoned_one_is_taken_over() {
        let layout = tempfile::tempdir().unwrap();
        let live = Staging::open(layout.path()).unwrap();
        let other = Staging::open(layout.path()).unwrap();
        assert_ne!(live.dir, other.dir, "a copy under way keeps its own");
        drop(other);
        // What a killed copy leaves: its files, and a lock no process holds.
        let orphan = layout.path().join(format!("{PREFIX}0000000000000001"));
        std::fs::create_dir(&orphan).unwrap();
        File::create(orphan.join(LOCK)).unwrap();
        std::fs::write(orphan.join("sha256-partial"), b"half").unwrap();
        let resumed = Staging::open(layout.path()).unwrap();
        assert_eq!(resumed.dir, orphan, "the abandoned staging is taken over");
        assert!(
            resumed.dir.join("sha256-partial").exists(),
            "with what it held"
        );
        assert!(live.dir.exists());
        drop(resumed);
        drop(live);
        assert!(stagings(layout.path()).is_empty(), "nothing is left behind");
    }

    #[test]
    fn further_abandoned_stagings_are_removed_and_fresh_unlocked_ones_kept() {
        let layout = tempfile::tempdir().unwrap();
        for n in 1..=2 {
            let dir = layout.path().join(format!("{PREFIX}000000000000000{n}"));
            std::fs::create_dir(&dir).unwrap();
            File::create(dir.join(LOCK)).unwrap();
        }
        // Being made by a copy that has not locked it yet.
        let fresh = layout.path().join(format!("{PREFIX}0000000000000009"));
        std::fs::create_dir(&fresh).unwrap();
        let staging = Staging::open(layout.path()).unwrap();
        assert_eq!(
            stagings(layout.path()),
            vec![staging.dir.clone(), fresh.clone()]
        );
        drop(staging);
        assert_eq!(stagings(layout.path()), vec![fresh]);
    }
}
