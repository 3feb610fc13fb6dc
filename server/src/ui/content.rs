//! What the pages show, gathered from the registry: a tag's row, a manifest in brief, and
//! everything the manifest page shows. Reads only; the handlers in [`super::pages`] decide who
//! may see it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};

use super::image::{self, ImageConfig, IndexEntry};
use super::session::Viewer;
use super::{Error, Ui};
use crate::manifest::{self, Descriptor, Kind};
use crate::oci::{Digest, Reference, RepositoryName, Tag};
use crate::registry::StoredManifest;

/// Tags and manifests fetched at once for one page.
pub(super) const FETCHES_AT_ONCE: usize = 8;

/// A manifest in brief, as the tags page lists it.
#[derive(Debug, Clone)]
pub struct Summary {
    pub kind: Kind,
    pub artifact_type: Option<String>,
    /// The bytes of the config and layers; of an index, of every image in it.
    pub size: u64,
    pub platforms: Vec<String>,
}

/// One row of the tags page.
#[derive(Debug, Clone)]
pub struct TagRow {
    pub tag: String,
    pub pushed: SystemTime,
    pub digest: Digest,
    pub summary: Option<Summary>,
    /// The immutable-tags rule that keeps this tag, if one does.
    pub immutable: Option<String>,
    /// The day (since the epoch) the tag's manifest was last pulled, if it ever was.
    pub pulled: Option<u64>,
}

/// Everything the manifest page shows.
#[derive(Debug)]
pub struct ManifestView {
    pub name: RepositoryName,
    pub digest: Digest,
    pub tag: Option<Tag>,
    pub media_type: String,
    pub size: u64,
    pub manifest: Option<manifest::Manifest>,
    pub entries: Vec<IndexEntry>,
    pub config: Option<ImageConfig>,
    pub referrers: BTreeMap<String, Vec<Descriptor>>,
    /// The rule that keeps `tag`, when one does.
    pub immutable: Option<String>,
    /// `host/name` as the visitor reached this registry.
    pub pull_name: String,
    pub may_delete: bool,
}

impl Ui {
    /// A tag's row; `None` when the tag went away while the page was being made.
    pub(super) async fn tag_row(
        &self,
        name: &RepositoryName,
        tag: String,
        pushed: SystemTime,
    ) -> Result<Option<TagRow>, Error> {
        let Ok(parsed) = tag.parse::<Tag>() else {
            return Ok(None);
        };
        let digest = match self
            .app
            .registry
            .resolve(name, &Reference::Tag(parsed))
            .await
        {
            Ok(digest) => digest,
            Err(crate::registry::Error::ManifestUnknown) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let (summary, pulled) = futures::try_join!(self.summary(name, &digest), async {
            Ok(self.app.registry.last_pulled(name, &digest).await?)
        },)?;
        let immutable = self
            .app
            .policies
            .immutable(name.as_str(), &tag)
            .map(|rule| rule.name.clone());
        Ok(Some(TagRow {
            tag,
            pushed,
            digest,
            summary,
            immutable,
            pulled,
        }))
    }

    /// A manifest in brief; `None` when it cannot be read as one.
    async fn summary(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Summary>, Error> {
        let Some(stored) = self.manifest_if_present(name, digest.clone()).await? else {
            return Ok(None);
        };
        let Ok(parsed) = manifest::parse(&stored.body, None) else {
            return Ok(None);
        };
        let (size, platforms) = match parsed.kind {
            Kind::Image => (image_size(&parsed), Vec::new()),
            Kind::Index => {
                let entries = image::index_entries(&stored.body);
                let platforms = entries
                    .iter()
                    .filter_map(|entry| entry.platform.as_ref().map(ToString::to_string))
                    .collect();
                let sizes: Vec<u64> = futures::stream::iter(entries)
                    .map(|entry| self.image_size_of(name, entry.digest))
                    .buffered(FETCHES_AT_ONCE)
                    .try_collect()
                    .await?;
                (sizes.into_iter().sum(), platforms)
            }
        };
        Ok(Some(Summary {
            kind: parsed.kind,
            artifact_type: parsed.artifact_type.clone(),
            size,
            platforms,
        }))
    }

    /// The size of an image an index lists; 0 when it is not here or not an image.
    async fn image_size_of(&self, name: &RepositoryName, digest: String) -> Result<u64, Error> {
        let Ok(digest) = digest.parse::<Digest>() else {
            return Ok(0);
        };
        let stored = self.manifest_if_present(name, digest).await?;
        Ok(stored
            .and_then(|stored| manifest::parse(&stored.body, None).ok())
            .filter(|m| m.kind == Kind::Image)
            .map_or(0, |m| image_size(&m)))
    }

    /// Manifest `digest` of `name`; `None` when it is not (or no longer) there.
    async fn manifest_if_present(
        &self,
        name: &RepositoryName,
        digest: Digest,
    ) -> Result<Option<StoredManifest>, Error> {
        match self
            .app
            .registry
            .get_manifest(name, &Reference::Digest(digest))
            .await
        {
            Ok(stored) => Ok(Some(stored)),
            Err(crate::registry::Error::ManifestUnknown) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    pub(super) async fn manifest_view(
        &self,
        viewer: &Viewer,
        name: RepositoryName,
        digest: Digest,
        tag: Option<&String>,
        pull_name: String,
    ) -> Result<ManifestView, Error> {
        let registry = &self.app.registry;
        let stored = registry
            .get_manifest(&name, &Reference::Digest(digest.clone()))
            .await?;
        let parsed = manifest::parse(&stored.body, None).ok();
        let entries = match parsed.as_ref().map(|m| m.kind) {
            Some(Kind::Index) => image::index_entries(&stored.body),
            _ => Vec::new(),
        };
        let config = match parsed.as_ref().and_then(|m| m.config.as_ref()) {
            Some(config)
                if config.size <= image::MAX_CONFIG_SIZE && config.media_type.contains("json") =>
            {
                registry
                    .read_small_blob(&name, &config.digest, image::MAX_CONFIG_SIZE)
                    .await
                    .ok()
                    .and_then(|body| image::image_config(&body))
            }
            _ => None,
        };
        let mut referrers: BTreeMap<String, Vec<Descriptor>> = BTreeMap::new();
        for referrer in registry.referrers(&name, &digest, None).await? {
            let kind = referrer
                .artifact_type
                .clone()
                .unwrap_or_else(|| "(no artifact type)".to_owned());
            referrers.entry(kind).or_default().push(referrer);
        }
        // A tag is offered for the pull command only while it names this manifest.
        let tag = match tag.and_then(|tag| tag.parse::<Tag>().ok()) {
            Some(tag) => registry
                .resolve(&name, &Reference::Tag(tag.clone()))
                .await
                .ok()
                .filter(|current| *current == digest)
                .map(|_| tag),
            None => None,
        };
        let may_delete = self.may_delete(viewer, name.as_str());
        let immutable = tag.as_ref().and_then(|tag| {
            self.app
                .policies
                .immutable(name.as_str(), tag.as_str())
                .map(|rule| rule.name.clone())
        });
        Ok(ManifestView {
            immutable,
            media_type: stored.media_type,
            size: stored.body.len() as u64,
            name,
            digest,
            tag,
            manifest: parsed,
            entries,
            config,
            referrers,
            pull_name,
            may_delete,
        })
    }
}

/// The bytes an image pulls: its config and layers.
fn image_size(image: &manifest::Manifest) -> u64 {
    image
        .config
        .iter()
        .chain(&image.layers)
        .map(|d| d.size)
        .sum()
}
