//! Blobs as members of repositories: a blob is readable through a repository only when the
//! repository links it.

use std::ops::Range;

use super::descriptors::{BlobDescriptors, Known, Ticket};
use super::{Error, Registry, Result};
use crate::index::{Entry, LinkKind, Review};
use crate::oci::{Digest, RepositoryName};
use crate::storage::{ByteStream, layout};
use crate::upload::{UploadState, Uploads};

impl Registry {
    /// The size of a blob linked into `name`, from the blob-descriptor cache where it can.
    pub async fn blob_size(&self, name: &RepositoryName, digest: &Digest) -> Result<u64> {
        let Some((cache, ticket, known)) = self.cached(name, digest).await else {
            return self
                .blob_size_in_storage(name, digest, Known::default())
                .await;
        };
        if let (Some(size), true) = (known.size, known.linked) {
            return Ok(size);
        }
        let size = self.blob_size_in_storage(name, digest, known).await?;
        let found = Known {
            size: Some(size),
            linked: true,
        };
        if found != known {
            cache.remember(ticket, name, digest, found).await;
        }
        Ok(size)
    }

    /// As [`Registry::blob_size`], with the link read from storage, never the cache: for writes
    /// that must not build on a blob another replica just deleted from the repository.
    pub async fn blob_size_linked_now(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<u64> {
        let known = Known {
            size: self
                .cached(name, digest)
                .await
                .and_then(|(_, _, known)| known.size),
            linked: false,
        };
        self.blob_size_in_storage(name, digest, known).await
    }

    /// What the blob-descriptor cache knows, with the cache and the ticket to store more under;
    /// `None` when there is no cache or it may not be used for `digest` now.
    async fn cached(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Option<(&BlobDescriptors, Ticket, Known)> {
        let cache = self.descriptors.as_deref()?;
        let ticket = cache.ticket(digest)?;
        Some((cache, ticket, cache.lookup(ticket, name, digest).await))
    }

    /// Asks storage what `known` does not already tell: is the blob linked, how big is it.
    async fn blob_size_in_storage(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        known: Known,
    ) -> Result<u64> {
        if !known.linked && !self.exists(&layout::layer_link(name, digest)).await? {
            return Err(Error::BlobUnknown);
        }
        if let Some(size) = known.size {
            return Ok(size);
        }
        match self.store.stat(&layout::blob_data(digest)).await {
            Ok(meta) => Ok(meta.size),
            Err(crate::storage::Error::NotFound) => Err(Error::BlobUnknown),
            Err(other) => Err(other.into()),
        }
    }

    /// A small blob of `name` (an image's config) whole, when it is at most `limit` bytes.
    pub async fn read_small_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        limit: u64,
    ) -> Result<bytes::Bytes> {
        self.blob_size(name, digest).await?;
        crate::storage::read_small(self.store.as_ref(), &layout::blob_data(digest), limit)
            .await
            .map_err(|err| match err {
                crate::storage::Error::NotFound => Error::BlobUnknown,
                other => other.into(),
            })
    }

    /// Streams a blob (or a range of it) that `blob_size` found.
    pub async fn open_blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream> {
        self.store
            .get(&layout::blob_data(digest), range)
            .await
            .map_err(|err| match err {
                crate::storage::Error::NotFound => Error::BlobUnknown,
                other => other.into(),
            })
    }

    /// A URL the client can fetch the blob from directly, when storage offers one.
    pub async fn blob_redirect(
        &self,
        digest: &Digest,
        ttl: std::time::Duration,
    ) -> Result<Option<String>> {
        Ok(self
            .store
            .presigned_get_url(&layout::blob_data(digest), ttl)
            .await?)
    }

    /// Makes a finished upload blob `digest` of its repository: commits its bytes (unless the
    /// blob is stored already), records the link in the index and the journal, links it, and
    /// closes the session. A blob over a quota is refused, and its session closed.
    ///
    /// A blob a sweep has announced is waited out first: a push never builds on a blob about
    /// to go. When the blob was already stored and linking took longer than a sweep waits (so
    /// a sweep announced meanwhile may not have seen the link), the sweep is waited out again
    /// and the bytes committed anew if it took the blob.
    pub async fn finish_upload(
        &self,
        uploads: &Uploads,
        state: &UploadState,
        digest: &Digest,
    ) -> Result<()> {
        let name: RepositoryName = state.repository.parse().map_err(|_| Error::BlobUnknown)?;
        if let Some(doomed) = crate::sweep::wait_out(self.store.as_ref(), &[digest]).await? {
            return Err(Error::ManifestBlobUnknown(doomed));
        }
        let _admitted = match self.admit(&name, digest, state.offset()).await {
            Ok(admitted) => admitted,
            Err(refused @ Error::OverQuota(_)) => {
                // Nothing of a refused blob stays: not its bytes (nor a multipart upload
                // holding them), not its session.
                if let Err(err) = uploads.cancel(state).await {
                    tracing::warn!(upload = %state.id, error = %err, "a refused upload's session was left for purging");
                }
                return Err(refused);
            }
            Err(err) => return Err(err),
        };
        for _ in 0..2 {
            let started = std::time::Instant::now();
            let wrote = uploads.commit(state, digest).await?;
            self.link_blob(&name, digest, state.offset()).await?;
            if wrote || started.elapsed() <= super::MANIFEST_PUT_DEADLINE {
                break;
            }
            if let Some(doomed) = crate::sweep::wait_out(self.store.as_ref(), &[digest]).await? {
                return Err(Error::ManifestBlobUnknown(doomed));
            }
            if self.exists(&layout::blob_data(digest)).await? {
                break;
            }
        }
        uploads.close(state).await;
        Ok(())
    }

    /// Links stored blob `digest`, of `size` bytes, into `name`: the index entries and the
    /// review first (nothing may use the blob yet, so gc looks at it after the grace period),
    /// then the link.
    pub(super) async fn link_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let entries = [
            Entry::Links {
                blob: digest.clone(),
                repository: name.clone(),
            },
            Entry::stores(name, LinkKind::Layer, digest, size),
        ];
        let review = [Review::Blob(digest.clone())];
        futures::try_join!(self.index.record(&entries), self.index.append(&review))?;
        self.write_link(&layout::layer_link(name, digest), digest)
            .await
    }

    /// Unlinks a blob from `name`. The content stays until garbage collection.
    pub async fn delete_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<()> {
        let link = layout::layer_link(name, digest);
        if !self.exists(&link).await? {
            return Err(Error::BlobUnknown);
        }
        self.index.append(&[Review::Blob(digest.clone())]).await?;
        if let Some(cache) = &self.descriptors {
            cache.forget_link(name, digest).await;
        }
        // Delete the link's directory, as Distribution does, so no empty entry lingers.
        let dir = link.trim_end_matches("/link");
        self.store.delete(dir).await?;
        self.forget_stored(name, LinkKind::Layer, digest).await
    }

    /// Forgets that `name` stores `digest` through a `link`, once that link is gone: its usage
    /// drops at once rather than at the next collection.
    pub(super) async fn forget_stored(
        &self,
        name: &RepositoryName,
        link: LinkKind,
        digest: &Digest,
    ) -> Result<()> {
        let stored = self.index.stored_in(name, link, digest).await?;
        let entries: Vec<Entry> = stored.into_iter().map(|r| r.entry).collect();
        Ok(self.index.forget(&entries).await?)
    }

    /// Links a blob that `from` holds into `name`; false when `from` does not hold it, and
    /// refused when it would take `name` over a quota.
    pub async fn mount_blob(
        &self,
        name: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool> {
        // A blob a sweep announced may be gone once it is over: look after it, or, if it
        // stands too long, let the client upload the blob instead.
        if crate::sweep::wait_out(self.store.as_ref(), &[digest])
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let size = match self.blob_size(from, digest).await {
            Ok(size) => size,
            Err(Error::BlobUnknown) => return Ok(false),
            Err(err) => return Err(err),
        };
        let _admitted = self.admit(name, digest, size).await?;
        self.link_blob(name, digest, size).await?;
        Ok(true)
    }
}
