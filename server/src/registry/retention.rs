//! What retention needs to know of a repository, read from storage: its tags and when each was
//! pushed, its manifests with what they list and refer to, and their last pulls. And the
//! deletions retention decides, each re-checked right before it is made, so a tag pushed again
//! since the decision is never lost.

use std::time::{Duration, SystemTime};

use super::{Registry, Result};
use crate::manifest;
use crate::oci::{Digest, Reference, RepositoryName, Tag};
use crate::policies::retention::{Facts, Manifest, Tag as TagFact};
use crate::storage::layout;

impl Registry {
    /// The tags and manifests of `name`, for retention to judge. A request per tag (its link)
    /// and up to two per manifest (its body and its pull record), after two listings.
    pub async fn retention_facts(&self, name: &RepositoryName) -> Result<Facts> {
        let mut facts = Facts::default();
        for (tag, pushed) in self.tag_times(name).await? {
            let Ok(parsed) = tag.parse::<Tag>() else {
                continue;
            };
            if let Some(digest) = self
                .read_link(&layout::tag_current_link(name, &parsed))
                .await?
            {
                facts.tags.push(TagFact {
                    name: tag,
                    digest,
                    pushed,
                });
            }
        }
        for (digest, pushed) in self.revisions(name).await? {
            let parsed = match self.read_manifest(digest.clone()).await {
                Ok(stored) => manifest::parse(&stored.body, None).ok(),
                // A revision whose manifest is gone is gc's to clean, not retention's.
                Err(super::Error::ManifestUnknown) => continue,
                Err(err) => return Err(err),
            };
            let last_pulled = self
                .last_pulled(name, &digest)
                .await?
                .map(|day| SystemTime::UNIX_EPOCH + Duration::from_secs(day * 86_400));
            facts.manifests.push(Manifest {
                children: parsed
                    .as_ref()
                    .map(|m| m.manifests.iter().map(|d| d.digest.clone()).collect())
                    .unwrap_or_default(),
                subject: parsed.and_then(|m| m.subject).map(|s| s.digest),
                digest,
                pushed,
                last_pulled,
            });
        }
        Ok(facts)
    }

    /// The manifests of `name` (its revision links) and when each was pushed.
    async fn revisions(&self, name: &RepositoryName) -> Result<Vec<(Digest, SystemTime)>> {
        let dir = format!(
            "{}/{}/revisions",
            layout::repository(name),
            layout::MANIFESTS_DIR
        );
        let objects = match self.store.walk(&dir).await {
            Ok(objects) => objects,
            Err(crate::storage::Error::NotFound) => return Ok(Vec::new()),
            Err(err) => return Err(err.into()),
        };
        Ok(objects
            .into_iter()
            .filter_map(|object| {
                let (algorithm, rest) = object.key.strip_suffix("/link")?.split_once('/')?;
                let digest = format!("{algorithm}:{rest}").parse().ok()?;
                Some((digest, object.modified))
            })
            .collect())
    }

    /// Deletes `tag` of `name` if it still names `digest`; whether it did.
    pub async fn delete_tag_if_at(
        &self,
        name: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool> {
        if self
            .read_link(&layout::tag_current_link(name, tag))
            .await?
            .as_ref()
            != Some(digest)
        {
            return Ok(false);
        }
        self.delete_manifest(name, &Reference::Tag(tag.clone()))
            .await
            .map(|_| true)
    }

    /// Deletes manifest `digest` of `name` if no tag names it now; whether it did.
    pub async fn delete_manifest_if_untagged(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool> {
        if !self.tags_pointing_at(name, digest).await?.is_empty() {
            return Ok(false);
        }
        match self
            .delete_manifest(name, &Reference::Digest(digest.clone()))
            .await
        {
            Ok(_) => Ok(true),
            Err(super::Error::ManifestUnknown) => Ok(false),
            Err(err) => Err(err),
        }
    }
}
