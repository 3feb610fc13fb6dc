//! The referrers API: manifests whose `subject` is a given manifest.
//!
//! A manifest with a subject gets an entry under `_referrers/<subject>/` when it is pushed (and
//! loses it when deleted), so listing referrers reads only the referrers, never the repository.

use futures::future::try_join_all;

use super::{Error, Registry, Result};
use crate::manifest::{self, Descriptor};
use crate::oci::{Digest, RepositoryName};
use crate::storage::{self, layout};

impl Registry {
    /// Descriptors of the manifests in `name` that refer to `subject`, optionally only those of
    /// `artifact_type`, sorted by digest.
    pub async fn referrers(
        &self,
        name: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let dir = layout::referrers_dir(name, subject);
        let mut digests = Vec::new();
        for algorithm in self.list_or_empty(&dir).await? {
            for hex in self.list_or_empty(&format!("{dir}/{algorithm}")).await? {
                if let Ok(digest) = format!("{algorithm}:{hex}").parse::<Digest>() {
                    digests.push(digest);
                }
            }
        }
        let descriptors = try_join_all(digests.into_iter().map(|d| self.referrer(name, d))).await?;
        let mut descriptors: Vec<Descriptor> = descriptors
            .into_iter()
            .flatten()
            .filter(|d| {
                artifact_type.is_none_or(|wanted| d.artifact_type.as_deref() == Some(wanted))
            })
            .collect();
        descriptors.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(descriptors)
    }

    /// The descriptor of one referrer, or `None` if it has since been deleted.
    async fn referrer(&self, name: &RepositoryName, digest: Digest) -> Result<Option<Descriptor>> {
        if !self.exists(&layout::revision_link(name, &digest)).await? {
            return Ok(None);
        }
        let stored = match self.read_manifest(digest).await {
            Ok(stored) => stored,
            Err(Error::ManifestUnknown) => return Ok(None),
            Err(err) => return Err(err),
        };
        let Ok(parsed) = manifest::parse(&stored.body, None) else {
            return Ok(None);
        };
        Ok(Some(Descriptor {
            media_type: parsed.media_type.clone(),
            digest: stored.digest,
            size: stored.body.len() as u64,
            urls: None,
            artifact_type: parsed.effective_artifact_type().map(str::to_owned),
            annotations: parsed.annotations,
        }))
    }

    async fn list_or_empty(&self, dir: &str) -> Result<Vec<String>> {
        match self.store.list(dir).await {
            Ok(names) => Ok(names),
            Err(storage::Error::NotFound) => Ok(Vec::new()),
            Err(err) => Err(err.into()),
        }
    }
}
