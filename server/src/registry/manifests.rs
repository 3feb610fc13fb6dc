//! Storing, resolving and deleting manifests and tags.
//!
//! Write order matters for readers and for garbage collection: the index entries, the review
//! journal and the content first, then the revision link, then the referrers entry, and the tag
//! last, so a name never points at something that is not there yet, and the index always holds
//! at least what the links say (see `crate::index`).

use bytes::Bytes;
use futures::future::try_join_all;

use super::{Error, Registry, Result};
use crate::index::{Entry, LinkKind, Review};
use crate::manifest::{self, Kind};
use crate::oci::{Digest, Reference, RepositoryName, Tag};
use crate::storage::{self, layout};

/// Manifests pushed by other registries may exceed our own push limit; reading is capped higher.
const READ_LIMIT_FLOOR: u64 = 16 * 1024 * 1024;

/// What a successful manifest push produced.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// A manifest as served.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

impl Registry {
    /// Validates and stores a manifest pushed to `name` under `reference`.
    pub async fn put_manifest(
        &self,
        name: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutOutcome> {
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &body);
                if &actual != expected {
                    return Err(Error::ManifestDigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&body),
        };
        let parsed = manifest::parse(&body, content_type)?;
        // A sweep under way may be about to delete what this manifest needs: wait it out, then
        // check afresh what is there. Only what no manifest used is ever swept, so a wait is rare.
        let needed: Vec<&Digest> = std::iter::once(&digest)
            .chain(parsed.required_blobs().map(|d| &d.digest))
            .chain(parsed.manifests.iter().map(|d| &d.digest))
            .collect();
        if let Some(doomed) = crate::sweep::wait_out(self.store.as_ref(), &needed).await? {
            return Err(Error::ManifestBlobUnknown(doomed));
        }
        let _admitted = self.admit(name, &digest, body.len() as u64).await?;
        // From here to the revision link, no longer than a sweep waits after its announcement.
        let started = std::time::Instant::now();
        let previous = async {
            match reference {
                Reference::Tag(tag) => self.read_link(&layout::tag_current_link(name, tag)).await,
                Reference::Digest(_) => Ok(None),
            }
        };
        let ((), previous) = futures::try_join!(self.check_references(name, &parsed), previous)?;
        if started.elapsed() > super::MANIFEST_PUT_DEADLINE {
            return Err(Error::TooSlow);
        }

        // Its references (what it uses and lists, and the tag) are journaled, in the one page
        // a push writes; only what it stores is recorded at once, for usage and quotas.
        let mut journaled = crate::index::entries_of_manifest(name, &digest, &parsed);
        let stores = [Entry::stores(
            name,
            LinkKind::Manifest,
            &digest,
            body.len() as u64,
        )];
        let mut reviews = Vec::new();
        match reference {
            Reference::Tag(tag) => {
                journaled.push(Entry::Tags {
                    manifest: digest.clone(),
                    repository: name.clone(),
                    tag: tag.to_string(),
                });
                // The manifest the tag named before may be left untagged.
                reviews.extend(
                    previous
                        .filter(|old| old != &digest)
                        .map(|old| Review::Manifest(name.clone(), old)),
                );
            }
            // Pushed by digest alone, nothing may ever tag it.
            Reference::Digest(_) => reviews.push(Review::Manifest(name.clone(), digest.clone())),
        }
        let content = layout::blob_data(&digest);
        futures::try_join!(
            self.store.put(&content, body),
            self.index.record(&stores),
            self.index.append_page(&reviews, &journaled),
        )?;
        self.write_link(&layout::revision_link(name, &digest), &digest)
            .await?;
        let subject = parsed.subject.map(|subject| subject.digest);
        if let Some(subject) = &subject {
            self.write_link(&layout::referrer_link(name, subject, &digest), &digest)
                .await?;
        }
        if let Reference::Tag(tag) = reference {
            self.write_link(&layout::tag_index_link(name, tag, &digest), &digest)
                .await?;
            self.write_link(&layout::tag_current_link(name, tag), &digest)
                .await?;
        }
        Ok(PutOutcome { digest, subject })
    }

    /// Every blob an image needs, and every manifest an index lists, must already be in `name`.
    async fn check_references(
        &self,
        name: &RepositoryName,
        parsed: &manifest::Manifest,
    ) -> Result<()> {
        let checks = match parsed.kind {
            Kind::Image => parsed
                .required_blobs()
                .map(|d| self.require_blob(name, &d.digest))
                .collect::<Vec<_>>(),
            Kind::Index => parsed
                .manifests
                .iter()
                .map(|d| self.require_manifest(name, &d.digest))
                .collect::<Vec<_>>(),
        };
        try_join_all(checks).await?;
        Ok(())
    }

    fn require_blob<'a>(
        &'a self,
        name: &'a RepositoryName,
        digest: &'a Digest,
    ) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.blob_size_linked_now(name, digest).await {
                Ok(_) => Ok(()),
                Err(Error::BlobUnknown) => Err(Error::ManifestBlobUnknown(digest.clone())),
                Err(err) => Err(err),
            }
        })
    }

    fn require_manifest<'a>(
        &'a self,
        name: &'a RepositoryName,
        digest: &'a Digest,
    ) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.exists(&layout::revision_link(name, digest)).await? {
                Ok(())
            } else {
                Err(Error::ManifestBlobUnknown(digest.clone()))
            }
        })
    }

    /// The digest `reference` names in `name`.
    pub async fn resolve(&self, name: &RepositoryName, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Tag(tag) => self
                .read_link(&layout::tag_current_link(name, tag))
                .await?
                .ok_or(Error::ManifestUnknown),
            Reference::Digest(digest) => {
                if self.exists(&layout::revision_link(name, digest)).await? {
                    Ok(digest.clone())
                } else {
                    Err(Error::ManifestUnknown)
                }
            }
        }
    }

    /// The manifest `reference` names in `name`.
    pub async fn get_manifest(
        &self,
        name: &RepositoryName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let digest = self.resolve(name, reference).await?;
        self.read_manifest(digest).await
    }

    pub(super) async fn read_manifest(&self, digest: Digest) -> Result<StoredManifest> {
        let cached = self.manifests.as_ref().and_then(|cache| cache.get(&digest));
        let body = match cached {
            Some(body) => body,
            None => {
                let limit = self.limits.max_manifest_size.max(READ_LIMIT_FLOOR);
                let path = layout::blob_data(&digest);
                let body = storage::read_small(self.store.as_ref(), &path, limit)
                    .await
                    .map_err(|err| match err {
                        storage::Error::NotFound => Error::ManifestUnknown,
                        other => other.into(),
                    })?;
                if let Some(cache) = &self.manifests {
                    cache.insert(digest.clone(), body.clone());
                }
                body
            }
        };
        let media_type = manifest::served_media_type(&body);
        Ok(StoredManifest {
            digest,
            media_type,
            body,
        })
    }

    /// Deletes a tag, or a manifest together with the tags pointing at it and its referrers
    /// entry; the tags a manifest delete removed.
    pub async fn delete_manifest(
        &self,
        name: &RepositoryName,
        reference: &Reference,
    ) -> Result<Vec<Tag>> {
        match reference {
            Reference::Tag(tag) => {
                let Some(named) = self.read_link(&layout::tag_current_link(name, tag)).await?
                else {
                    return Err(Error::ManifestUnknown);
                };
                self.index
                    .append(&[Review::Manifest(name.clone(), named)])
                    .await?;
                self.store.delete(&layout::tag_dir(name, tag)).await?;
                Ok(Vec::new())
            }
            Reference::Digest(digest) => {
                let stored = self.get_manifest(name, reference).await?;
                self.index
                    .append(&[Review::Manifest(name.clone(), digest.clone())])
                    .await?;
                let subject = manifest::parse(&stored.body, None)
                    .ok()
                    .and_then(|m| m.subject);
                let tags = self.tags_pointing_at(name, digest).await?;
                for tag in &tags {
                    self.store.delete(&layout::tag_dir(name, tag)).await?;
                }
                if let Some(subject) = subject {
                    let link = layout::referrer_link(name, &subject.digest, digest);
                    self.store.delete(link.trim_end_matches("/link")).await?;
                }
                let link = layout::revision_link(name, digest);
                self.store.delete(link.trim_end_matches("/link")).await?;
                self.store.delete(&layout::last_pull(name, digest)).await?;
                self.forget_stored(name, LinkKind::Manifest, digest).await?;
                Ok(tags)
            }
        }
    }

    /// The tags of `name` that name `digest` now.
    pub async fn tags_pointing_at(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<Vec<Tag>> {
        let mut tags = Vec::new();
        for tag in self.all_tags(name).await? {
            let Ok(tag) = tag.parse::<Tag>() else {
                continue;
            };
            if self
                .read_link(&layout::tag_current_link(name, &tag))
                .await?
                .as_ref()
                == Some(digest)
            {
                tags.push(tag);
            }
        }
        Ok(tags)
    }
}
