//! Walks an image graph at the source: which blobs a copy needs, and which manifests to store
//! in which order (children before their index, a subject before its referrers), so that the
//! destination never holds a manifest whose content is not all there yet.

use std::collections::HashSet;

use futures::future::BoxFuture;

use super::ends::{Fetched, Naming, Source, Wanted};
use super::error::CopyError;
use super::manifest::{Descriptor, Manifest, PlatformFilter};
use crate::oci::Digest;

/// Graphs deeper than this (an index of indexes of …) are refused as hostile.
const MAX_DEPTH: usize = 8;

/// What one image's copy does.
#[derive(Debug, Default)]
pub struct Plan {
    /// Every blob, once.
    pub blobs: Vec<Descriptor>,
    /// Manifests in the order they can be stored.
    pub manifests: Vec<(Fetched, Naming)>,
}

/// What to include.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// One platform of an index, stored under the index's name, instead of all of them.
    pub platform: Option<PlatformFilter>,
    /// The referrers of everything copied, and theirs, recursively.
    pub referrers: bool,
}

/// The plan for copying what `wanted` names, stored at the destination as `naming` says.
pub async fn plan(
    source: &dyn Source,
    wanted: &Wanted,
    naming: Naming,
    selection: &Selection,
) -> Result<Plan, CopyError> {
    let root = source.manifest(wanted).await?;
    let mut walker = Walker {
        source,
        selection,
        plan: Plan::default(),
        blobs: HashSet::new(),
        manifests: HashSet::new(),
    };
    walker.visit(root, naming, 0).await?;
    Ok(walker.plan)
}

struct Walker<'a> {
    source: &'a dyn Source,
    selection: &'a Selection,
    plan: Plan,
    blobs: HashSet<Digest>,
    manifests: HashSet<Digest>,
}

impl Walker<'_> {
    fn visit(
        &mut self,
        fetched: Fetched,
        naming: Naming,
        depth: usize,
    ) -> BoxFuture<'_, Result<(), CopyError>> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(CopyError::Registry(format!(
                    "{}: manifests nested deeper than {MAX_DEPTH}",
                    fetched.descriptor.digest
                )));
            }
            let digest = fetched.descriptor.digest.clone();
            if !self.manifests.insert(digest.clone()) && !matches!(naming, Naming::Tag(_)) {
                return Ok(());
            }
            let manifest = Manifest::parse(&fetched.bytes)
                .map_err(|why| CopyError::Registry(format!("{digest}: {why}")))?;
            if manifest.is_index(&fetched.descriptor.media_type) {
                if let (Some(platform), 0) = (&self.selection.platform, depth) {
                    let chosen = manifest
                        .manifests
                        .iter()
                        .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
                        .ok_or_else(|| {
                            CopyError::NotFound(format!("a {platform} image in {digest}"))
                        })?;
                    let child = self
                        .source
                        .manifest(&Wanted::Digest(chosen.digest.clone()))
                        .await?;
                    return self.visit(child, naming, depth).await;
                }
                for child in &manifest.manifests {
                    let fetched = self
                        .source
                        .manifest(&Wanted::Digest(child.digest.clone()))
                        .await?;
                    self.visit(fetched, Naming::Child, depth + 1).await?;
                }
            } else {
                for blob in manifest.blobs() {
                    if self.blobs.insert(blob.digest.clone()) {
                        self.plan.blobs.push(blob.clone());
                    }
                }
            }
            let subject = fetched.descriptor.clone();
            self.plan.manifests.push((fetched, naming));
            if self.selection.referrers {
                for referrer in self.source.referrers(&subject).await? {
                    let fetched = self
                        .source
                        .manifest(&Wanted::Digest(referrer.digest))
                        .await?;
                    self.visit(fetched, Naming::Root, depth + 1).await?;
                }
            }
            Ok(())
        })
    }
}
