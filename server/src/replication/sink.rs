//! A rule's sink: what delivering a batch of events does at the destination.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};

use super::Rule;
use super::source::{LocalRepository, current};
use crate::events::{Action, Event, Sink};
use crate::metrics::Metrics;
use crate::oci::{Digest, Reference, RepositoryName, Tag};
use crate::registry::Registry;
use crate::transfer::{
    self, CopyError, Destination, Manifests, Naming, RegistryRepository, Selection, Wanted,
};

/// How often a tag is copied again because it moved while it was being copied, before the
/// next event (or reconciliation) is left to finish the job.
const CHASES: usize = 3;
/// A blob event's media type: blobs travel with their manifests, never on their own.
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// One thing to make true at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// The tag as it is here now, with its referrers.
    Tag(RepositoryName, Tag),
    /// A manifest pushed by digest: sent when it is a referrer whose subject is there.
    Manifest(RepositoryName, Digest),
    /// Gone here: delete it there, unless it is back.
    DeleteTag(RepositoryName, Tag),
    DeleteManifest(RepositoryName, Digest),
}

/// What came of one piece of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Copied,
    Deleted,
    /// Nothing to do: already there, gone, or not for this rule.
    Skipped,
}

/// Replicates events for one rule.
pub struct Replicator {
    rule: Arc<Rule>,
    registry: Registry,
    metrics: Option<Arc<Metrics>>,
}

impl Replicator {
    pub fn new(rule: Arc<Rule>, registry: Registry, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            rule,
            registry,
            metrics,
        }
    }

    /// The work `event` calls for, if any.
    fn work(&self, event: &Event) -> Option<Work> {
        let target = &event.target;
        let name: RepositoryName = target.repository.parse().ok()?;
        let tag = target.tag.as_deref().and_then(|t| t.parse::<Tag>().ok());
        let digest = target
            .digest
            .as_deref()
            .and_then(|d| d.parse::<Digest>().ok());
        match (event.action, tag, digest) {
            (Action::Push, Some(tag), _) => Some(Work::Tag(name, tag)),
            (Action::Push, None, Some(digest)) => Some(Work::Manifest(name, digest)),
            (Action::Delete, Some(tag), _) if self.rule.settings.deletes => {
                Some(Work::DeleteTag(name, tag))
            }
            (Action::Delete, None, Some(digest)) if self.rule.settings.deletes => {
                Some(Work::DeleteManifest(name, digest))
            }
            _ => None,
        }
    }

    /// Does `work`; an error that is not transient means the destination refuses it for good.
    pub async fn apply(&self, work: &Work) -> Result<Done, CopyError> {
        match work {
            Work::Tag(name, tag) => self.copy_tag(name, tag).await,
            Work::Manifest(name, digest) => self.copy_referrer(name, digest).await,
            Work::DeleteTag(name, tag) => self.delete_tag(name, tag).await,
            Work::DeleteManifest(name, digest) => self.delete_manifest(name, digest).await,
        }
    }

    /// Copies what `tag` names now, again if it moved meanwhile.
    async fn copy_tag(&self, name: &RepositoryName, tag: &Tag) -> Result<Done, CopyError> {
        let reference = Reference::Tag(tag.clone());
        let Some(mut digest) = current(&self.registry, name, &reference).await? else {
            return Ok(Done::Skipped);
        };
        for _ in 0..CHASES {
            self.copy(
                name,
                Wanted::Digest(digest.clone()),
                Naming::Tag(tag.to_string()),
            )
            .await?;
            match current(&self.registry, name, &reference).await? {
                Some(moved) if moved != digest => digest = moved,
                // Still the same, or deleted meanwhile (its delete event, if the rule wants
                // deletes, follows).
                _ => return Ok(Done::Copied),
            }
        }
        Ok(Done::Copied)
    }

    /// A manifest pushed by digest is sent when it refers to a subject the destination has
    /// (a signature made after its image was pushed); an index's children come with the
    /// index, and the rest waits for a tag.
    async fn copy_referrer(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<Done, CopyError> {
        let source = LocalRepository::new(&self.registry, name);
        let fetched =
            match transfer::Source::manifest(&source, &Wanted::Digest(digest.clone())).await {
                Ok(fetched) => fetched,
                Err(CopyError::NotFound(_)) => return Ok(Done::Skipped),
                Err(err) => return Err(err),
            };
        let Some(subject) = transfer::Manifest::parse(&fetched.bytes)
            .ok()
            .and_then(|m| m.subject)
        else {
            return Ok(Done::Skipped);
        };
        let destination = self.rule.destination(name.as_str(), &self.registry);
        let subject_there = destination
            .client()
            .manifest_digest(destination.repository(), &subject.digest.to_string())
            .await?;
        if subject_there.is_none() {
            return Ok(Done::Skipped);
        }
        self.copy(name, Wanted::Digest(digest.clone()), Naming::Root)
            .await?;
        Ok(Done::Copied)
    }

    pub(super) async fn copy(
        &self,
        name: &RepositoryName,
        wanted: Wanted,
        naming: Naming,
    ) -> Result<(), CopyError> {
        let source = LocalRepository::new(&self.registry, name);
        let destination = self.rule.destination(name.as_str(), &self.registry);
        let selection = Selection {
            platform: None,
            referrers: true,
        };
        let plan = transfer::plan(&source, &wanted, naming, &selection).await?;
        transfer::copy_plan(
            &plan,
            &source,
            &destination,
            self.rule.settings.jobs,
            Manifests::Missing,
            &self.rule.progress,
        )
        .await?;
        destination.commit().await
    }

    pub(super) async fn delete_tag(
        &self,
        name: &RepositoryName,
        tag: &Tag,
    ) -> Result<Done, CopyError> {
        if current(&self.registry, name, &Reference::Tag(tag.clone()))
            .await?
            .is_some()
        {
            return Ok(Done::Skipped);
        }
        let destination = self.rule.destination(name.as_str(), &self.registry);
        if matches!(delete(&destination, tag.as_str()).await?, Deleted::Yes) {
            return Ok(Done::Deleted);
        }
        // Distribution deletes manifests, not tags (it answers 404 or 405 by tag): delete what
        // the tag names there, unless a tag here still names it.
        let Some(there) = destination
            .client()
            .manifest_digest(destination.repository(), tag.as_str())
            .await?
        else {
            return Ok(Done::Skipped);
        };
        let still_tagged = !self
            .registry
            .tags_pointing_at(name, &there)
            .await
            .map_err(|err| CopyError::Unavailable(err.to_string()))?
            .is_empty();
        if still_tagged {
            return Ok(Done::Skipped);
        }
        Ok(delete(&destination, &there.to_string()).await?.into())
    }

    async fn delete_manifest(
        &self,
        name: &RepositoryName,
        digest: &Digest,
    ) -> Result<Done, CopyError> {
        if current(&self.registry, name, &Reference::Digest(digest.clone()))
            .await?
            .is_some()
        {
            return Ok(Done::Skipped);
        }
        let destination = self.rule.destination(name.as_str(), &self.registry);
        Ok(delete(&destination, &digest.to_string()).await?.into())
    }

    fn count(&self, outcome: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.replication_outcome(self.rule.name(), outcome);
        }
    }
}

enum Deleted {
    Yes,
    Absent,
    /// The destination does not delete by this kind of reference.
    Unsupported,
}

impl From<Deleted> for Done {
    fn from(deleted: Deleted) -> Self {
        match deleted {
            Deleted::Yes => Self::Deleted,
            Deleted::Absent | Deleted::Unsupported => Self::Skipped,
        }
    }
}

/// `DELETE /v2/<name>/manifests/<reference>` at the destination.
async fn delete(destination: &RegistryRepository, reference: &str) -> Result<Deleted, CopyError> {
    let url = destination.url(&format!("manifests/{reference}")).await?;
    let response = destination.send(Method::DELETE, &url, true, |r| r).await?;
    match response.status() {
        status if status.is_success() => Ok(Deleted::Yes),
        StatusCode::NOT_FOUND => Ok(Deleted::Absent),
        StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED => Ok(Deleted::Unsupported),
        _ => Err(destination.error(response).await),
    }
}

/// The work of `events`, in their order, each once.
fn coalesce(replicator: &Replicator, events: &[Event]) -> Vec<Work> {
    let mut work: Vec<Work> = Vec::new();
    for event in events {
        if let Some(next) = replicator.work(event)
            && !work.contains(&next)
        {
            work.push(next);
        }
    }
    work
}

#[async_trait]
impl Sink for Replicator {
    fn name(&self) -> &str {
        self.rule.name()
    }

    fn outbox(&self) -> String {
        self.rule.outbox()
    }

    fn wants(&self, event: &Event) -> bool {
        let target = &event.target;
        let manifest = target.media_type.as_deref() != Some(BLOB_MEDIA_TYPE);
        let action = match event.action {
            Action::Push => manifest,
            Action::Delete => self.rule.settings.deletes && manifest,
            Action::Pull | Action::Mount => false,
        };
        action
            && self.rule.covers_repository(&target.repository)
            && target
                .tag
                .as_deref()
                .is_none_or(|tag| self.rule.covers_tag(tag))
    }

    async fn deliver(&self, events: &[Event]) -> Result<(), String> {
        for work in coalesce(self, events) {
            match self.apply(&work).await {
                Ok(Done::Copied) => {
                    tracing::info!(rule = self.rule.name(), ?work, "replicated");
                    self.count("copied");
                }
                Ok(Done::Deleted) => {
                    tracing::info!(rule = self.rule.name(), ?work, "deleted at the destination");
                    self.count("deleted");
                }
                Ok(Done::Skipped) => self.count("skipped"),
                Err(err) if err.is_transient() => {
                    self.count("retried");
                    return Err(format!("{}: {err}", self.rule.settings.url));
                }
                Err(err) => {
                    // Refused for good (a 403, a repository the destination does not have):
                    // retrying would only block what follows. Reconciliation tries it again.
                    tracing::warn!(rule = self.rule.name(), ?work, error = %err, "the destination refused a replication");
                    self.count("refused");
                }
            }
        }
        Ok(())
    }
}
