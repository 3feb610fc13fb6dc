//! The filesystem backend: the embedded default, and Distribution's `filesystem` driver layout.
//!
//! Atomicity comes from rename: every object is written to a temporary file under
//! `<root>/.stowage-tmp` (same filesystem), fsynced, then renamed into place, and the parent
//! directory fsynced so the rename itself survives a crash.
//!
//! A resumable write at key `k` is the file `k.<nonce>`, where the nonce is in its [`WriteState`].
//! Each append, under an advisory lock on `k.lock`, writes at the state's offset and then renames
//! the file to a fresh nonce. An older state names a file that no longer exists, so it can neither
//! write nor commit: the bytes on disk always match the latest state. A process that dies
//! mid-append releases its lock with it, and leaves at most bytes past the state's offset, which
//! the next append truncates.

use std::ffi::OsString;
use std::io::{self, ErrorKind, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::fs;
use tokio::io::AsyncSeekExt;

mod streams;

use super::{
    BlobStore, ByteStream, Checkpoint, Error, ObjectInfo, ObjectMeta, Result, WriteState,
    checkpoint_at,
};

const TMP_DIR: &str = ".stowage-tmp";
/// Temporary files older than this at startup belong to writers that died.
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);
/// How long an append waits for another request to release the same upload.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// Reads up to this size are done in one go (tag links, manifests, configs).
const SMALL_READ: u64 = 64 * 1024;
const NONCE_LEN: usize = 16;

/// Objects as files below a root directory.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    tmp: PathBuf,
    fsync: bool,
}

impl FsStore {
    /// Opens (creating if needed) the store at `root`, removing temporary files left by crashed
    /// writers. With `fsync` off, writes are faster but may be lost (never torn) on power failure.
    pub async fn open(root: &Path, fsync: bool) -> Result<Self> {
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp).await?;
        let store = Self {
            root: root.to_owned(),
            tmp,
            fsync,
        };
        store.sweep_temporary_files().await?;
        Ok(store)
    }

    async fn sweep_temporary_files(&self) -> Result<()> {
        let mut entries = fs::read_dir(&self.tmp).await?;
        while let Some(entry) = entries.next_entry().await? {
            // Other processes sharing the root rename their temporary files away at any moment.
            let modified = match entry.metadata().await.and_then(|m| m.modified()) {
                Ok(modified) => modified,
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => return Err(err.into()),
            };
            if modified.elapsed().unwrap_or_default() > STALE_TMP_AGE {
                let _ = fs::remove_file(entry.path()).await;
            }
        }
        Ok(())
    }

    /// The file for `key`, refusing any key that could leave the root.
    fn path_of(&self, key: &str) -> Result<PathBuf> {
        let safe = !key.is_empty()
            && !key.contains(['\\', '\0'])
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !safe {
            return Err(
                io::Error::new(ErrorKind::InvalidInput, format!("unsafe key {key:?}")).into(),
            );
        }
        Ok(self.root.join(key))
    }

    /// Moves `from` to `to` atomically, creating `to`'s directory and making the move durable.
    async fn rename_into_place(&self, from: &Path, to: &Path) -> Result<()> {
        let (from, to, fsync) = (from.to_owned(), to.to_owned(), self.fsync);
        blocking(move || rename_into_place(&from, &to, fsync)).await
    }
}

/// Runs filesystem work on the blocking pool in one trip: each trip is a thread hand-off, so
/// a sequence of calls costs one hand-off instead of one per call.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::Io(io::Error::other(err)))?
}

/// Makes a rename into `dir` durable: it is only once the directory entry is. A directory
/// deleted meanwhile took the entry with it: nothing is left to make durable.
fn sync_dir(dir: &Path) -> Result<()> {
    match std::fs::File::open(dir) {
        Ok(file) => Ok(file.sync_all()?),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Moves `from` to `to` atomically, creating `to`'s directory, and (with `fsync`) durably.
fn rename_into_place(from: &Path, to: &Path, fsync: bool) -> Result<()> {
    let parent = to
        .parent()
        .ok_or_else(|| io::Error::other("object without parent"))?;
    let mut attempts = 0;
    loop {
        std::fs::create_dir_all(parent)?;
        match std::fs::rename(from, to) {
            Ok(()) => break,
            // A concurrent delete (garbage collection) removed the fresh directory: again.
            Err(err)
                if err.kind() == ErrorKind::NotFound
                    && attempts < 3
                    && std::fs::metadata(from).is_ok() =>
            {
                attempts += 1;
            }
            Err(err) => return Err(err.into()),
        }
    }
    if fsync {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes `data` to the temporary file `tmp` and renames it to `target`; the temporary file
/// never outlives a failure.
fn write_into_place(tmp: &Path, target: &Path, data: &[u8], fsync: bool) -> Result<()> {
    use std::io::Write;
    let mut guard = DeleteOnDrop(Some(tmp.to_owned()));
    let mut file = std::fs::File::create(tmp)?;
    file.write_all(data)?;
    if fsync {
        file.sync_all()?;
    }
    drop(file);
    rename_into_place(tmp, target, fsync)?;
    guard.0 = None;
    Ok(())
}

/// Removes a directory tree that other processes may be changing: entries that vanish are fine,
/// and a directory that gained entries meanwhile is tried again.
async fn remove_tree(path: &Path) -> io::Result<()> {
    let mut attempts = 0;
    loop {
        match fs::remove_dir_all(path).await {
            Ok(()) => return Ok(()),
            Err(err)
                if err.kind() == ErrorKind::NotFound
                    && fs::symlink_metadata(path).await.is_err() =>
            {
                return Ok(());
            }
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::NotFound | ErrorKind::DirectoryNotEmpty
                ) && attempts < 3 =>
            {
                attempts += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

fn random_nonce() -> [u8; NONCE_LEN] {
    rand::random()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The data file a resumable-write state names, or `Stale` for a state this backend never made.
fn resumable_file(path: &Path, state: &WriteState) -> Result<PathBuf> {
    if state.backend.len() != NONCE_LEN {
        return Err(Error::Stale);
    }
    Ok(suffixed(path, &format!(".{}", hex(&state.backend))))
}

/// A file opened for reading: read whole when small, else positioned at the range's start.
enum Opened {
    Whole(Bytes),
    Stream(std::fs::File, u64),
}

/// Opens `path` for reading `range` (all of it by default), on a blocking thread.
fn open_for_read(path: &Path, range: Option<Range<u64>>) -> Result<Opened> {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(path).map_err(not_found_as_error)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::NotFound);
    }
    let range = range.unwrap_or(0..meta.len());
    let len = range.end.saturating_sub(range.start);
    file.seek(SeekFrom::Start(range.start))?;
    if len <= SMALL_READ {
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(len).read_to_end(&mut bytes)?;
        return Ok(Opened::Whole(Bytes::from(bytes)));
    }
    Ok(Opened::Stream(file, len))
}

fn not_found_as_error(err: io::Error) -> Error {
    match err.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory => Error::NotFound,
        _ => Error::Io(err),
    }
}

/// Removes a temporary file unless it was renamed into place.
struct DeleteOnDrop(Option<PathBuf>);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Holds the advisory lock of one resumable write; released on drop, or when the process dies.
struct WriteLock {
    _file: std::fs::File,
}

async fn lock_resumable(path: &Path) -> Result<WriteLock> {
    let lock_path = suffixed(path, ".lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&lock_path)
        .map_err(not_found_as_error)?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(WriteLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Busy),
            Err(std::fs::TryLockError::Error(err)) => return Err(err.into()),
        }
    }
}

/// Opens the data file of the latest state, dropping bytes a dead request left past its offset.
async fn open_current(path: &Path, state: &WriteState) -> Result<(fs::File, PathBuf)> {
    let current = resumable_file(path, state)?;
    let file = match fs::OpenOptions::new().write(true).open(&current).await {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => return Err(Error::Stale),
        Err(err) => return Err(err.into()),
    };
    let len = file.metadata().await?.len();
    if len < state.size {
        return Err(Error::Stale);
    }
    if len > state.size {
        file.set_len(state.size).await?;
    }
    Ok((file, current))
}

#[async_trait]
impl BlobStore for FsStore {
    async fn stat(&self, key: &str) -> Result<ObjectMeta> {
        let meta = fs::metadata(self.path_of(key)?)
            .await
            .map_err(not_found_as_error)?;
        if !meta.is_file() {
            return Err(Error::NotFound);
        }
        Ok(ObjectMeta {
            size: meta.len(),
            modified: meta.modified()?,
        })
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let path = self.path_of(key)?;
        // Open, stat, seek (and for a small read, read) in one trip to the blocking pool: each
        // tokio::fs call is a thread hand-off, which dominates reading a tag link or a manifest.
        let opened = blocking(move || open_for_read(&path, range)).await?;
        Ok(match opened {
            Opened::Whole(bytes) => futures::stream::once(async { Ok(bytes) }).boxed(),
            Opened::Stream(file, len) => streams::read_body(file, len),
        })
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let target = self.path_of(key)?;
        let tmp = self.tmp.join(hex(&random_nonce()));
        let fsync = self.fsync;
        blocking(move || write_into_place(&tmp, &target, &data, fsync)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut entries = fs::read_dir(self.path_of(prefix)?)
            .await
            .map_err(not_found_as_error)?;
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    async fn walk(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.path_of(prefix)?;
        let mut found = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let mut entries = match fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(err)
                    if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) =>
                {
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            loop {
                let entry = match entries.next_entry().await {
                    Ok(Some(entry)) => entry,
                    Ok(None) => break,
                    // The directory went away while it was listed.
                    Err(err) if err.kind() == ErrorKind::NotFound => break,
                    Err(err) => return Err(err.into()),
                };
                let meta = match entry.metadata().await {
                    Ok(meta) => meta,
                    // Removed since it was listed.
                    Err(err) if err.kind() == ErrorKind::NotFound => continue,
                    Err(err) => return Err(err.into()),
                };
                if meta.is_dir() {
                    dirs.push(entry.path());
                } else if let Ok(relative) = entry.path().strip_prefix(&root) {
                    found.push(ObjectInfo {
                        key: relative.to_string_lossy().into_owned(),
                        size: meta.len(),
                        modified: meta.modified()?,
                    });
                }
            }
        }
        Ok(found)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let from = self.path_of(from)?;
        let to = self.path_of(to)?;
        if let Err(err) = fs::metadata(&from).await {
            return Err(not_found_as_error(err));
        }
        self.rename_into_place(&from, &to).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        let result = match fs::symlink_metadata(&path).await {
            Ok(meta) if meta.is_dir() => remove_tree(&path).await,
            Ok(_) => fs::remove_file(&path).await,
            Err(err) => Err(err),
        };
        match result {
            Err(err) if err.kind() != ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            let path = self.path_of(key)?;
            match fs::remove_file(&path).await {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(err.into()),
            }
            // Distribution removes a blob's or link's directory with it; an emptied directory
            // goes, one still in use stays.
            if let Some(parent) = path.parent() {
                let _ = fs::remove_dir(parent).await;
            }
        }
        Ok(())
    }

    async fn presigned_get_url(&self, _key: &str, _ttl: Duration) -> Result<Option<String>> {
        Ok(None)
    }

    async fn create_resumable(&self, key: &str) -> Result<WriteState> {
        let path = self.path_of(key)?;
        let dir = path
            .parent()
            .ok_or_else(|| io::Error::other("object without parent"))?;
        fs::create_dir_all(dir).await?;
        fs::File::create(suffixed(&path, ".lock")).await?;
        let state = WriteState {
            size: 0,
            backend: random_nonce().to_vec(),
        };
        fs::File::create(resumable_file(&path, &state)?).await?;
        Ok(state)
    }

    async fn append_with_checkpoint(
        &self,
        key: &str,
        state: &WriteState,
        body: ByteStream,
        checkpoint: Option<&dyn Checkpoint>,
    ) -> Result<WriteState> {
        let path = self.path_of(key)?;
        let _lock = lock_resumable(&path).await?;
        let (mut file, current) = open_current(&path, state).await?;
        file.seek(SeekFrom::Start(state.size)).await?;
        let (written, file) = streams::write_body(file.into_std().await, body).await?;
        drop(file);
        let next = WriteState {
            size: state.size + written,
            backend: random_nonce().to_vec(),
        };
        // The rename is the commit point: before it, `state` is still the current one.
        checkpoint_at(checkpoint, &next).await?;
        fs::rename(&current, resumable_file(&path, &next)?).await?;
        Ok(next)
    }

    async fn is_current(&self, key: &str, state: &WriteState) -> Result<bool> {
        let Ok(current) = resumable_file(&self.path_of(key)?, state) else {
            return Ok(false);
        };
        match fs::metadata(&current).await {
            Ok(meta) => Ok(meta.len() >= state.size),
            Err(err) => match not_found_as_error(err) {
                Error::NotFound => Ok(false),
                err => Err(err),
            },
        }
    }

    async fn commit_resumable(&self, key: &str, state: &WriteState, dest: &str) -> Result<()> {
        let path = self.path_of(key)?;
        let dest = self.path_of(dest)?;
        let _lock = lock_resumable(&path).await?;
        let (file, current) = open_current(&path, state).await?;
        if self.fsync {
            file.sync_all().await?;
        }
        drop(file);
        self.rename_into_place(&current, &dest).await
    }

    async fn abort_resumable(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(());
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let mut entries = match fs::read_dir(dir).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        while let Some(entry) = entries.next_entry().await? {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path()).await;
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        let meta = fs::metadata(&self.root).await?;
        if !meta.is_dir() {
            return Err(io::Error::other("storage root is not a directory").into());
        }
        // A read-only or full volume must not report ready.
        let probe = self.tmp.join(format!("ping-{}", hex(&random_nonce())));
        fs::write(&probe, b"").await?;
        fs::remove_file(&probe).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path(), true).await.unwrap();
        super::super::conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn refuses_keys_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path(), false).await.unwrap();
        for key in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\\b",
        ] {
            assert!(
                store.put(key, Bytes::from_static(b"x")).await.is_err(),
                "{key:?}"
            );
            assert!(store.get(key, None).await.is_err(), "{key:?}");
        }
    }

    #[tokio::test]
    async fn sweeps_old_temporary_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(TMP_DIR);
        std::fs::create_dir_all(&tmp).unwrap();
        let old = tmp.join("old");
        let young = tmp.join("young");
        std::fs::write(&old, b"x").unwrap();
        std::fs::write(&young, b"x").unwrap();
        let long_ago = SystemTime::now() - 2 * STALE_TMP_AGE;
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        FsStore::open(dir.path(), false).await.unwrap();
        assert!(!old.exists());
        assert!(young.exists());
    }
}
