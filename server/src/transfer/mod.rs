//! Images between registries and OCI image layouts, sending only what the destination lacks:
//! the engine under `stowage copy` and replication.
//!
//! [`plan`] walks the source's image graph; every blob the destination does not hold is then
//! mounted (same registry), or streamed with bounded memory and verified against its digest
//! on the way ([`upload`] resumes interrupted uploads); manifests are stored last, children
//! first, and a layout's `index.json` is written at the very end. The client side of the
//! protocol (credentials, the token flow) is [`crate::client`].

mod endpoint;
mod ends;
mod error;
mod layout;
mod manifest;
mod plan;
mod progress;
mod registry;
mod staging;
mod upload;

use futures::{StreamExt, TryStreamExt};

pub use endpoint::{Endpoint, LayoutReference};
pub use ends::{BlobOutcome, BlobStream, Destination, Fetched, Naming, Source, Wanted, verified};
pub use error::CopyError;
pub use layout::{LayoutDestination, LayoutSource};
pub use manifest::{Descriptor, Manifest, PlatformFilter, media_type_of};
pub use plan::{Plan, Selection, plan};
pub use progress::{Display, Meter, Progress, Summary};
pub use registry::RegistryRepository;
pub use upload::{DEFAULT_CHUNK_SIZE, ResumeDir, ResumeRecords, Saved, Uploads};

/// Which manifests a copy stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manifests {
    /// Every manifest of the plan (`stowage copy`: one request each, no question asked).
    All,
    /// Those the destination does not hold as named yet (replication, which sees the same
    /// image many times).
    Missing,
}

/// Copies the image `plan` describes: every blob the destination lacks, `jobs` at once, then
/// the manifests, children first. The caller commits the destination.
pub async fn copy_plan(
    plan: &Plan,
    source: &dyn Source,
    destination: &dyn Destination,
    jobs: usize,
    manifests: Manifests,
    progress: &Progress,
) -> Result<(), CopyError> {
    let mount_from = mount_source(source, destination);
    // Collected first (futures do nothing until polled): a closure mapping a stream of
    // references would make the future unsendable for want of a higher-ranked lifetime.
    let copies: Vec<_> = plan
        .blobs
        .iter()
        .map(|blob| copy_blob(blob, source, destination, mount_from.as_deref(), progress))
        .collect();
    futures::stream::iter(copies)
        .buffer_unordered(jobs.max(1))
        .try_collect::<()>()
        .await?;
    for (manifest, naming) in &plan.manifests {
        if manifests == Manifests::Missing && destination.holds_manifest(manifest, naming).await? {
            continue;
        }
        destination.put_manifest(manifest, naming).await?;
        progress.manifest_done(&manifest.descriptor);
    }
    Ok(())
}

/// The source repository to mount from, when both ends are repositories of one registry.
fn mount_source(source: &dyn Source, destination: &dyn Destination) -> Option<String> {
    let (source_host, source_repository) = source.registry_repository()?;
    let (destination_host, destination_repository) = destination.registry_repository()?;
    (Endpoint::api_host(source_host) == Endpoint::api_host(destination_host)
        && source_repository != destination_repository)
        .then(|| source_repository.to_owned())
}

async fn copy_blob(
    blob: &Descriptor,
    source: &dyn Source,
    destination: &dyn Destination,
    mount_from: Option<&str>,
    progress: &Progress,
) -> Result<(), CopyError> {
    if destination.has_blob(blob).await? {
        progress.blob_done(blob, &Meter::silent(), BlobOutcome::Present);
        return Ok(());
    }
    let meter = progress.blob(blob);
    match destination.put_blob(blob, source, mount_from, &meter).await {
        Ok(outcome) => {
            progress.blob_done(blob, &meter, outcome);
            Ok(())
        }
        Err(err) => {
            progress.blob_failed(&meter);
            Err(err)
        }
    }
}
