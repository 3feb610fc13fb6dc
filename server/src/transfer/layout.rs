//! OCI image layouts (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) as a source and as a
//! destination.
//!
//! A destination stages every new file in a hidden directory inside the layout and moves them
//! into `blobs/` only at [`Destination::commit`], then writes `index.json` last, each file
//! atomically (a temporary name, then a rename). A copy that fails, or is killed, leaves the
//! layout as it was: still valid, nothing half-written in `blobs/`. The next copy into the
//! layout takes over what a killed one staged ([`super::staging`]) and resumes its blobs.

use std::collections::HashMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

use super::ends::{
    BlobOutcome, BlobStream, Destination, Fetched, Naming, Source, Wanted, verified,
};
use super::error::CopyError;
use super::manifest::{Descriptor, Manifest, media_type_of};
use super::progress::Meter;
use super::staging::Staging;
use crate::client::MAX_MANIFEST_BYTES;
use crate::oci::{Algorithm, Digest, DigestHasher, media_type};

/// The annotation naming an image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_VERSION: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";
/// Reads and writes move this much at a time.
const BUFFER: usize = 256 << 10;

/// `index.json`, keeping whatever this client does not interpret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutIndex {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

impl Default for LayoutIndex {
    fn default() -> Self {
        Self {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            other: serde_json::Map::new(),
        }
    }
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex())
}

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor.annotations.get(REF_NAME).map(String::as_str)
}

/// An image layout read as a source.
pub struct LayoutSource {
    dir: PathBuf,
    index: LayoutIndex,
    /// `(subject, referrer)` pairs among the layout's top-level manifests, found on first use.
    referrers: OnceCell<Vec<(Digest, Descriptor)>>,
}

impl LayoutSource {
    pub async fn open(dir: &Path) -> Result<Self, CopyError> {
        if !tokio::fs::try_exists(dir.join(LAYOUT_FILE))
            .await
            .unwrap_or(false)
        {
            return Err(CopyError::NotFound(format!(
                "oci:{} (no image layout there)",
                dir.display()
            )));
        }
        let path = dir.join(INDEX_FILE);
        let text = tokio::fs::read(&path)
            .await
            .map_err(|err| CopyError::io(&path, &err))?;
        let index = serde_json::from_slice(&text)
            .map_err(|err| CopyError::Layout(format!("{}: {err}", path.display())))?;
        Ok(Self {
            dir: dir.to_owned(),
            index,
            referrers: OnceCell::new(),
        })
    }

    /// Reads a manifest blob, at most [`MAX_MANIFEST_BYTES`], checked against its digest.
    async fn read_manifest(&self, digest: &Digest) -> Result<Bytes, CopyError> {
        let path = blob_path(&self.dir, digest);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => {
                    CopyError::NotFound(format!("oci:{}@{digest}", self.dir.display()))
                }
                _ => CopyError::io(&path, &err),
            })?;
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(
            &mut tokio::io::AsyncReadExt::take(file, MAX_MANIFEST_BYTES + 1),
            &mut bytes,
        )
        .await
        .map_err(|err| CopyError::io(&path, &err))?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(CopyError::Layout(format!(
                "{}: a manifest larger than {MAX_MANIFEST_BYTES} bytes",
                path.display()
            )));
        }
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(CopyError::Verification(format!(
                "manifest {digest} is corrupt at its source: its content hashes to {actual}"
            )));
        }
        Ok(Bytes::from(bytes))
    }

    async fn fetch(
        &self,
        listed: Option<&Descriptor>,
        digest: &Digest,
    ) -> Result<Fetched, CopyError> {
        let bytes = self.read_manifest(digest).await?;
        let manifest =
            Manifest::parse(&bytes).map_err(|why| CopyError::Layout(format!("{digest}: {why}")))?;
        let mut descriptor = match listed {
            Some(listed) => listed.clone(),
            None => Descriptor::new(&media_type_of(None, &manifest), digest.clone(), 0),
        };
        descriptor.annotations.remove(REF_NAME);
        descriptor.size = bytes.len() as u64;
        Ok(Fetched { descriptor, bytes })
    }
}

#[async_trait]
impl Source for LayoutSource {
    async fn manifest(&self, wanted: &Wanted) -> Result<Fetched, CopyError> {
        let (listed, digest) = match wanted {
            Wanted::Tag(name) => {
                let listed = self
                    .index
                    .manifests
                    .iter()
                    .find(|d| ref_name(d) == Some(name))
                    .ok_or_else(|| {
                        CopyError::NotFound(format!("oci:{}:{name}", self.dir.display()))
                    })?;
                (Some(listed), listed.digest.clone())
            }
            Wanted::Digest(digest) => (
                self.index.manifests.iter().find(|d| &d.digest == digest),
                digest.clone(),
            ),
            Wanted::Only => match self.index.manifests.as_slice() {
                [only] => (Some(only), only.digest.clone()),
                [] => {
                    return Err(CopyError::NotFound(format!(
                        "oci:{} (the layout holds no image)",
                        self.dir.display()
                    )));
                }
                many => {
                    return Err(CopyError::Usage(format!(
                        "oci:{} holds {} images: name one, oci:<dir>:<name> or oci:<dir>@<digest>",
                        self.dir.display(),
                        many.len()
                    )));
                }
            },
        };
        self.fetch(listed, &digest).await
    }

    async fn blob(&self, descriptor: &Descriptor, offset: u64) -> Result<BlobStream, CopyError> {
        let path = blob_path(&self.dir, &descriptor.digest);
        let algorithm = descriptor.digest.algorithm();
        let (file, hasher) = {
            let opened = path.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                let mut file = std::fs::File::open(&opened)?;
                // The bytes before a resume point are hashed here, locally, so the whole blob
                // is still verified.
                let hasher = hash_prefix(&mut file, algorithm, offset)?;
                file.seek(SeekFrom::Start(offset))?;
                Ok((file, hasher))
            })
            .await
            .map_err(|err| CopyError::Layout(err.to_string()))?
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => CopyError::Verification(format!(
                    "blob {} is missing from oci:{}",
                    descriptor.digest,
                    self.dir.display()
                )),
                _ => CopyError::io(&path, &err),
            })?
        };
        let stream =
            tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), BUFFER)
                .map_err(move |err| CopyError::io(&path, &err))
                .boxed();
        Ok(verified(stream, descriptor, hasher, offset))
    }

    async fn tags(&self) -> Result<Vec<String>, CopyError> {
        Ok(self
            .index
            .manifests
            .iter()
            .filter_map(|d| ref_name(d).map(str::to_owned))
            .collect())
    }

    async fn referrers(&self, subject: &Descriptor) -> Result<Vec<Descriptor>, CopyError> {
        let all = self
            .referrers
            .get_or_try_init(|| async {
                let mut pairs = Vec::new();
                for listed in &self.index.manifests {
                    let bytes = self.read_manifest(&listed.digest).await?;
                    if let Ok(Manifest {
                        subject: Some(subject),
                        ..
                    }) = Manifest::parse(&bytes)
                    {
                        let mut referrer = listed.clone();
                        referrer.annotations.remove(REF_NAME);
                        pairs.push((subject.digest, referrer));
                    }
                }
                Ok::<_, CopyError>(pairs)
            })
            .await?;
        Ok(all
            .iter()
            .filter(|(of, _)| of == &subject.digest)
            .map(|(_, referrer)| referrer.clone())
            .collect())
    }
}

/// The hash of the next `length` bytes of `file`.
fn hash_prefix(
    file: &mut std::fs::File,
    algorithm: Algorithm,
    length: u64,
) -> std::io::Result<DigestHasher> {
    let mut hasher = DigestHasher::new(algorithm);
    let mut prefix = file.take(length);
    let mut buffer = vec![0; BUFFER];
    loop {
        let n = prefix.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher);
        }
        hasher.update(&buffer[..n]);
    }
}

/// An image layout written as a destination.
pub struct LayoutDestination {
    dir: PathBuf,
    staging: Staging,
    /// Whether this copy made the directory (and removes it again if the copy fails).
    created: bool,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// Staged file → its place in `blobs/`.
    staged: HashMap<PathBuf, PathBuf>,
    index: LayoutIndex,
    index_changed: bool,
    committed: bool,
}

impl LayoutDestination {
    pub async fn open(dir: &Path) -> Result<Self, CopyError> {
        let created = !tokio::fs::try_exists(dir).await.unwrap_or(false);
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|err| CopyError::io(dir, &err))?;
        let layout = dir.to_owned();
        let staging = tokio::task::spawn_blocking(move || Staging::open(&layout))
            .await
            .map_err(|err| CopyError::Layout(err.to_string()))?
            .map_err(|err| CopyError::io(dir, &err))?;
        let index_path = dir.join(INDEX_FILE);
        let index = match tokio::fs::read(&index_path).await {
            Ok(text) => serde_json::from_slice(&text)
                .map_err(|err| CopyError::Layout(format!("{}: {err}", index_path.display())))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => LayoutIndex::default(),
            Err(err) => return Err(CopyError::io(&index_path, &err)),
        };
        Ok(Self {
            dir: dir.to_owned(),
            staging,
            created,
            pending: Mutex::new(Pending {
                index,
                ..Pending::default()
            }),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_staged(&self, digest: &Digest) -> bool {
        self.pending()
            .staged
            .contains_key(&self.staging.path(digest))
    }

    /// Stages `descriptor`'s blob from `source`. What a killed copy staged of it is kept when
    /// the rest from the source makes the whole blob its digest names; else it starts over.
    async fn stage_blob(
        &self,
        descriptor: &Descriptor,
        source: &dyn Source,
        meter: &Meter,
    ) -> Result<u64, CopyError> {
        let path = self.staging.path(&descriptor.digest);
        let partial = tokio::fs::metadata(&path)
            .await
            .map_or(0, |meta| meta.len());
        if partial > 0 && partial <= descriptor.size {
            match self.resume(descriptor, source, meter, partial).await {
                Err(CopyError::Verification(why)) => {
                    tracing::debug!(digest = %descriptor.digest, %why, "the staged part is not the blob's start; starting over");
                }
                done => return done,
            }
        }
        meter.set_position(0);
        let stream = meter.wrap(source.blob(descriptor, 0).await?);
        self.stage(&descriptor.digest, stream, false).await
    }

    /// Stages the rest of a blob whose first `partial` bytes are staged, checking the whole.
    async fn resume(
        &self,
        descriptor: &Descriptor,
        source: &dyn Source,
        meter: &Meter,
        partial: u64,
    ) -> Result<u64, CopyError> {
        let path = self.staging.path(&descriptor.digest);
        let algorithm = descriptor.digest.algorithm();
        let hasher = tokio::task::spawn_blocking(move || {
            hash_prefix(&mut std::fs::File::open(&path)?, algorithm, partial)
        })
        .await
        .map_err(|err| CopyError::Layout(err.to_string()))?
        .map_err(|err| CopyError::io(&self.staging.path(&descriptor.digest), &err))?;
        tracing::debug!(digest = %descriptor.digest, offset = partial, "resuming a staged blob");
        meter.set_position(partial);
        let rest = if partial < descriptor.size {
            meter.wrap(source.blob(descriptor, partial).await?)
        } else {
            futures::stream::empty().boxed()
        };
        let checked = verified(rest, descriptor, hasher, partial);
        self.stage(&descriptor.digest, checked, true).await
    }

    /// Writes `stream` to the staging file for `digest` (after what it holds, with `append`),
    /// flushed to disk. On an error the file is removed.
    async fn stage(
        &self,
        digest: &Digest,
        mut stream: BlobStream,
        append: bool,
    ) -> Result<u64, CopyError> {
        let path = self.staging.path(digest);
        let mut file = tokio::fs::File::options()
            .write(true)
            .create(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .await
            .map_err(|err| CopyError::io(&path, &err))?;
        let mut written = 0;
        let outcome = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                file.write_all(&chunk)
                    .await
                    .map_err(|err| CopyError::io(&path, &err))?;
                written += chunk.len() as u64;
            }
            file.sync_all()
                .await
                .map_err(|err| CopyError::io(&path, &err))
        }
        .await;
        if let Err(err) = outcome {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(err);
        }
        self.pending()
            .staged
            .insert(path, blob_path(&self.dir, digest));
        Ok(written)
    }
}

#[async_trait]
impl Destination for LayoutDestination {
    async fn has_blob(&self, descriptor: &Descriptor) -> Result<bool, CopyError> {
        if self.is_staged(&descriptor.digest) {
            return Ok(true);
        }
        let path = blob_path(&self.dir, &descriptor.digest);
        Ok(tokio::fs::metadata(&path)
            .await
            .is_ok_and(|meta| meta.len() == descriptor.size))
    }

    async fn put_blob(
        &self,
        descriptor: &Descriptor,
        source: &dyn Source,
        _mount_from: Option<&str>,
        meter: &Meter,
    ) -> Result<BlobOutcome, CopyError> {
        let bytes = self.stage_blob(descriptor, source, meter).await?;
        Ok(BlobOutcome::Sent { bytes })
    }

    async fn put_manifest(&self, manifest: &Fetched, naming: &Naming) -> Result<(), CopyError> {
        let descriptor = &manifest.descriptor;
        if !self.has_blob(descriptor).await? {
            let bytes = manifest.bytes.clone();
            let stream = futures::stream::once(async move { Ok(bytes) }).boxed();
            self.stage(&descriptor.digest, stream, false).await?;
        }
        let mut pending = self.pending();
        let manifests = &mut pending.index.manifests;
        match naming {
            Naming::Tag(name) => {
                manifests.retain(|d| ref_name(d) != Some(name));
                let mut named = descriptor.clone();
                named.annotations.insert(REF_NAME.to_owned(), name.clone());
                manifests.push(named);
            }
            Naming::Root => {
                if manifests.iter().any(|d| d.digest == descriptor.digest) {
                    return Ok(());
                }
                manifests.push(descriptor.clone());
            }
            Naming::Child => return Ok(()),
        }
        pending.index_changed = true;
        Ok(())
    }

    async fn commit(&self) -> Result<(), CopyError> {
        let (staged, index) = {
            let mut pending = self.pending();
            let staged: Vec<_> = pending.staged.drain().collect();
            let index = pending.index_changed.then(|| pending.index.clone());
            pending.index_changed = false;
            (staged, index)
        };
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || commit_files(&dir, staged, index.as_ref()))
            .await
            .map_err(|err| CopyError::Layout(err.to_string()))??;
        self.pending().committed = true;
        Ok(())
    }
}

/// Moves staged blobs into `blobs/`, then writes `oci-layout` (if missing) and `index.json`.
fn commit_files(
    dir: &Path,
    staged: Vec<(PathBuf, PathBuf)>,
    index: Option<&LayoutIndex>,
) -> Result<(), CopyError> {
    let mut directories = std::collections::BTreeSet::new();
    for (from, to) in staged {
        let parent = to.parent().unwrap_or(dir).to_owned();
        std::fs::create_dir_all(&parent).map_err(|err| CopyError::io(&parent, &err))?;
        std::fs::rename(&from, &to).map_err(|err| CopyError::io(&to, &err))?;
        directories.insert(parent);
    }
    for directory in directories {
        sync_dir(&directory)?;
    }
    let layout = dir.join(LAYOUT_FILE);
    if !layout.exists() {
        write_atomically(&layout, LAYOUT_VERSION.as_bytes())?;
    }
    if let Some(index) = index {
        let bytes = serde_json::to_vec(index).map_err(|err| CopyError::Layout(err.to_string()))?;
        write_atomically(&dir.join(INDEX_FILE), &bytes)?;
    }
    Ok(())
}

/// Writes `path` through a temporary file and a rename, so readers see all of it or none.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CopyError> {
    use std::io::Write as _;
    let temporary = path.with_extension(format!("tmp-{:08x}", rand::random::<u32>()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(CopyError::io(path, &err));
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<(), CopyError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| CopyError::io(dir, &err))
}

impl Drop for LayoutDestination {
    fn drop(&mut self) {
        // The staging directory goes with `staging`, after this.
        if self.created && !self.pending().committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
