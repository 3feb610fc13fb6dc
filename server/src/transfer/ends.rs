//! What a copy reads from and writes to. A registry and an image layout each implement both
//! sides, so every pairing (layout → registry, registry → registry, registry → layout, layout →
//! layout) is one walk of the image graph.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use super::error::CopyError;
use super::manifest::Descriptor;
use super::progress::Meter;
use crate::oci::{Digest, DigestHasher};

/// Blob bytes as they arrive.
pub type BlobStream = BoxStream<'static, Result<Bytes, CopyError>>;

/// Which manifest of a source to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    Tag(String),
    Digest(Digest),
    /// A layout's one and only image.
    Only,
}

/// A manifest and the exact bytes it was served as.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub descriptor: Descriptor,
    pub bytes: Bytes,
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Uploaded or written; `bytes` is what went over the wire this time (less on a resume).
    Sent { bytes: u64 },
    /// Linked from another repository of the same registry, nothing sent.
    Mounted,
    /// Already there.
    Present,
}

#[async_trait]
pub trait Source: Send + Sync {
    /// The manifest `wanted` names, its bytes checked against the digest it is known by.
    async fn manifest(&self, wanted: &Wanted) -> Result<Fetched, CopyError>;

    /// The blob's bytes from `offset`. From offset 0 they are verified as they stream: the
    /// stream ends with an error instead of its last bytes when size or digest do not match.
    async fn blob(&self, descriptor: &Descriptor, offset: u64) -> Result<BlobStream, CopyError>;

    /// The tags (layout names) there are, for `--all-tags`.
    async fn tags(&self) -> Result<Vec<String>, CopyError>;

    /// Manifests whose subject is `subject`: signatures, SBOMs and other attachments.
    async fn referrers(&self, subject: &Descriptor) -> Result<Vec<Descriptor>, CopyError>;

    /// `(host, repository)` of a registry source, so a destination on the same registry can
    /// mount instead of upload.
    fn registry_repository(&self) -> Option<(&str, &str)> {
        None
    }
}

/// How a manifest is named at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// Under this tag (a layout's ref name).
    Tag(String),
    /// By digest only, and listed as a root of its own (a layout's `index.json` names it).
    Root,
    /// By digest only, as a child of an index pushed after it.
    Child,
}

#[async_trait]
pub trait Destination: Send + Sync {
    /// Whether the blob is already there, so nothing needs sending.
    async fn has_blob(&self, descriptor: &Descriptor) -> Result<bool, CopyError>;

    /// Sends the blob from `source`: mounted from `mount_from` (a repository of the same
    /// registry) when that works, else streamed, resuming an interrupted upload when one is
    /// recorded.
    async fn put_blob(
        &self,
        descriptor: &Descriptor,
        source: &dyn Source,
        mount_from: Option<&str>,
        meter: &Meter,
    ) -> Result<BlobOutcome, CopyError>;

    /// Stores a manifest whose blobs and children are all there already.
    async fn put_manifest(&self, manifest: &Fetched, naming: &Naming) -> Result<(), CopyError>;

    /// Whether `manifest` is already stored as `naming` says (a tag naming exactly it), so
    /// storing it again can be skipped. Destinations that cannot tell cheaply say no.
    async fn holds_manifest(
        &self,
        _manifest: &Fetched,
        _naming: &Naming,
    ) -> Result<bool, CopyError> {
        Ok(false)
    }

    /// Makes what was stored visible, atomically where the destination can (a layout's
    /// `index.json` is written last).
    async fn commit(&self) -> Result<(), CopyError>;

    /// `(host, repository)` of a registry destination.
    fn registry_repository(&self) -> Option<(&str, &str)> {
        None
    }
}

/// Checks `inner`, which carries `descriptor`'s bytes from `offset` after `hasher` has taken
/// the bytes before it: an error replaces the last bytes when the digest does not match, and
/// comes as soon as there are too many bytes, or at the end when there are too few.
pub fn verified(
    inner: BlobStream,
    descriptor: &Descriptor,
    hasher: DigestHasher,
    offset: u64,
) -> BlobStream {
    struct State {
        inner: BlobStream,
        hasher: Option<DigestHasher>,
        seen: u64,
        size: u64,
        digest: Digest,
    }
    let state = State {
        inner,
        hasher: Some(hasher),
        seen: offset,
        size: descriptor.size,
        digest: descriptor.digest.clone(),
    };
    let corrupt = |state: &State, why: String| {
        CopyError::Verification(format!(
            "blob {} is corrupt at its source: {why}",
            state.digest
        ))
    };
    stream::unfold(state, move |mut state| async move {
        state.hasher.as_ref()?;
        let item = match state.inner.next().await {
            Some(Ok(chunk)) => {
                state.seen += chunk.len() as u64;
                if state.seen > state.size {
                    state.hasher = None;
                    let why = format!("more than its {} bytes", state.size);
                    return Some((Err(corrupt(&state, why)), state));
                }
                if let Some(hasher) = state.hasher.as_mut() {
                    hasher.update(&chunk);
                }
                Ok(chunk)
            }
            Some(Err(err)) => {
                state.hasher = None;
                return Some((Err(err), state));
            }
            None if state.seen < state.size => {
                state.hasher = None;
                let why = format!("{} of its {} bytes", state.seen, state.size);
                return Some((Err(corrupt(&state, why)), state));
            }
            None => Ok(Bytes::new()),
        };
        if state.seen == state.size {
            let actual = state.hasher.take().map(DigestHasher::finish);
            if actual.as_ref() != Some(&state.digest) {
                let why = format!(
                    "its content hashes to {}",
                    actual.map_or_else(String::new, |d| d.to_string())
                );
                return Some((Err(corrupt(&state, why)), state));
            }
        }
        Some((item, state))
    })
    .filter(|item| std::future::ready(!matches!(item, Ok(chunk) if chunk.is_empty())))
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use futures::TryStreamExt;

    fn stream_of(parts: &[&'static [u8]]) -> BlobStream {
        let parts: Vec<_> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        stream::iter(parts).boxed()
    }

    async fn collect(stream: BlobStream) -> Result<Vec<u8>, CopyError> {
        stream
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
    }

    fn descriptor_of(data: &[u8]) -> Descriptor {
        Descriptor::new("x", Digest::sha256_of(data), data.len() as u64)
    }

    #[tokio::test]
    async fn good_bytes_pass_and_bad_ones_fail_before_their_end() {
        let good = descriptor_of(b"hello world");
        let hasher = || DigestHasher::new(Algorithm::Sha256);
        let all = collect(verified(
            stream_of(&[b"hello ", b"world"]),
            &good,
            hasher(),
            0,
        ))
        .await;
        assert_eq!(all.unwrap(), b"hello world");

        // A flipped byte: the first part passes, the last never does.
        let mut flipped = verified(stream_of(&[b"hello ", b"wOrld"]), &good, hasher(), 0);
        assert_eq!(flipped.next().await.unwrap().unwrap(), "hello ");
        assert!(matches!(
            flipped.next().await,
            Some(Err(CopyError::Verification(_)))
        ));
        assert!(flipped.next().await.is_none());

        let short = collect(verified(stream_of(&[b"hello"]), &good, hasher(), 0)).await;
        assert!(matches!(short, Err(CopyError::Verification(m)) if m.contains("5 of its 11")));
        let long = collect(verified(stream_of(&[b"hello world!"]), &good, hasher(), 0)).await;
        assert!(matches!(long, Err(CopyError::Verification(_))));

        let empty = descriptor_of(b"");
        assert!(
            collect(verified(stream_of(&[]), &empty, hasher(), 0))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_resumed_stream_is_checked_with_the_prefix_hashed_first() {
        let good = descriptor_of(b"hello world");
        let mut hasher = DigestHasher::new(Algorithm::Sha256);
        hasher.update(b"hello ");
        let rest = collect(verified(stream_of(&[b"world"]), &good, hasher, 6)).await;
        assert_eq!(rest.unwrap(), b"world");
    }
}
