//! Blobs as members of repositories: a blob is readable through a repository only when the
//! repository links it.

use std::ops::Range;

use super::{Error, Registry, Result};
use crate::oci::{Digest, RepositoryName};
use crate::storage::{ByteStream, ObjectMeta, layout};

impl Registry {
    /// Size and time of a blob linked into `name`.
    pub async fn blob_meta(&self, name: &RepositoryName, digest: &Digest) -> Result<ObjectMeta> {
        if !self.exists(&layout::layer_link(name, digest)).await? {
            return Err(Error::BlobUnknown);
        }
        self.store
            .stat(&layout::blob_data(digest))
            .await
            .map_err(|err| match err {
                crate::storage::Error::NotFound => Error::BlobUnknown,
                other => other.into(),
            })
    }

    /// Streams a blob (or a range of it) that `blob_meta` found.
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

    /// Unlinks a blob from `name`. The content stays until garbage collection.
    pub async fn delete_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<()> {
        let link = layout::layer_link(name, digest);
        if !self.exists(&link).await? {
            return Err(Error::BlobUnknown);
        }
        // Delete the link's directory, as Distribution does, so no empty entry lingers.
        let dir = link.trim_end_matches("/link");
        Ok(self.store.delete(dir).await?)
    }

    /// Links a blob that `from` holds into `name`; false when `from` does not hold it.
    pub async fn mount_blob(
        &self,
        name: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool> {
        match self.blob_meta(from, digest).await {
            Ok(_) => {}
            Err(Error::BlobUnknown) => return Ok(false),
            Err(err) => return Err(err),
        }
        self.write_link(&layout::layer_link(name, digest), digest)
            .await?;
        Ok(true)
    }
}
