//! This registry's repositories as a copy's source: manifests, blobs, tags and referrers read
//! from storage directly, never over HTTP.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};

use crate::oci::{Digest, DigestHasher, Reference, RepositoryName, Tag};
use crate::registry::{self, Page, Registry};
use crate::transfer::{BlobStream, CopyError, Descriptor, Fetched, Source, Wanted, verified};

/// One repository of this registry.
pub struct LocalRepository<'a> {
    registry: &'a Registry,
    name: &'a RepositoryName,
}

impl<'a> LocalRepository<'a> {
    pub fn new(registry: &'a Registry, name: &'a RepositoryName) -> Self {
        Self { registry, name }
    }

    fn error(&self, what: &str, err: registry::Error) -> CopyError {
        match err {
            registry::Error::ManifestUnknown
            | registry::Error::BlobUnknown
            | registry::Error::NameUnknown => CopyError::NotFound(format!("{}{what}", self.name)),
            // Storage that failed now may answer later; anything else here is the same.
            other => CopyError::Unavailable(format!("{}{what}: {other}", self.name)),
        }
    }
}

#[async_trait]
impl Source for LocalRepository<'_> {
    async fn manifest(&self, wanted: &Wanted) -> Result<Fetched, CopyError> {
        let reference = match wanted {
            Wanted::Tag(tag) => Reference::Tag(
                tag.parse::<Tag>()
                    .map_err(|_| CopyError::NotFound(format!("{}:{tag}", self.name)))?,
            ),
            Wanted::Digest(digest) => Reference::Digest(digest.clone()),
            Wanted::Only => Reference::Tag("latest".parse().expect("latest is a tag")),
        };
        let stored = self
            .registry
            .get_manifest(self.name, &reference)
            .await
            .map_err(|err| self.error(&format!(" {reference}"), err))?;
        Ok(Fetched {
            descriptor: Descriptor::new(
                &stored.media_type,
                stored.digest,
                stored.body.len() as u64,
            ),
            bytes: stored.body,
        })
    }

    async fn blob(&self, descriptor: &Descriptor, offset: u64) -> Result<BlobStream, CopyError> {
        let what = format!("@{}", descriptor.digest);
        let size = self
            .registry
            .blob_size(self.name, &descriptor.digest)
            .await
            .map_err(|err| self.error(&what, err))?;
        let range = (offset > 0).then_some(offset..size);
        let stream = self
            .registry
            .open_blob(&descriptor.digest, range)
            .await
            .map_err(|err| self.error(&what, err))?;
        let name = self.name.to_string();
        let stream = stream
            .map_err(move |err| CopyError::Unavailable(format!("{name}{what}: {err}")))
            .boxed();
        if offset == 0 {
            let hasher = DigestHasher::new(descriptor.digest.algorithm());
            Ok(verified(stream, descriptor, hasher, 0))
        } else {
            Ok(stream)
        }
    }

    async fn tags(&self) -> Result<Vec<String>, CopyError> {
        let every = Page {
            n: None,
            last: None,
        };
        let (tags, _) = self
            .registry
            .tags(self.name, &every)
            .await
            .map_err(|err| self.error("", err))?;
        Ok(tags)
    }

    async fn referrers(&self, subject: &Descriptor) -> Result<Vec<Descriptor>, CopyError> {
        let found = self
            .registry
            .referrers(self.name, &subject.digest, None)
            .await
            .map_err(|err| self.error(&format!("@{}", subject.digest), err))?;
        found
            .into_iter()
            .map(|descriptor| {
                let value = serde_json::to_value(descriptor)
                    .map_err(|err| CopyError::Registry(err.to_string()))?;
                serde_json::from_value(value).map_err(|err| CopyError::Registry(err.to_string()))
            })
            .collect()
    }
}

/// The digest `tag` names in `name` now, or `None` when it names nothing.
pub async fn current(
    registry: &Registry,
    name: &RepositoryName,
    reference: &Reference,
) -> Result<Option<Digest>, CopyError> {
    match registry.resolve(name, reference).await {
        Ok(digest) => Ok(Some(digest)),
        Err(registry::Error::ManifestUnknown | registry::Error::NameUnknown) => Ok(None),
        Err(err) => Err(CopyError::Unavailable(format!("{name}: {err}"))),
    }
}
