//! `stowage retention`: applies the retention rules to every repository they cover. Each
//! deletion is re-checked just before it is made (a tag must still name the digest judged, a
//! manifest must have no tag), so a push racing the run wins; the bytes are then gc's to
//! reclaim. Each deletion is announced to the webhooks as an API delete is, by the actor
//! [`ACTOR`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::events::{Action, Actor, Event, Notifier, RequestInfo, Target};
use crate::oci::{Digest, RepositoryName, Tag};
use crate::policies::Policies;
use crate::policies::retention::Reason;
use crate::registry::{self, Page, Registry};

/// Who the delete events of a retention run name.
pub const ACTOR: &str = "stowage-retention";

/// How a retention run goes.
#[derive(Debug, Clone, Default)]
pub struct RetentionOptions {
    /// Report what would go; delete nothing.
    pub dry_run: bool,
    /// Digests workloads run: whatever the rules say, these stay.
    pub in_use: HashSet<Digest>,
    /// Where deletions are announced, when webhooks are configured.
    pub events: Option<Arc<Notifier>>,
}

/// Records the delete of `target` for the webhooks, as the API does for a client's delete.
async fn announce(options: &RetentionOptions, target: Target) -> registry::Result<()> {
    let Some(notifier) = &options.events else {
        return Ok(());
    };
    let actor = Actor {
        name: Some(ACTOR.to_owned()),
    };
    let event = Event::now(
        Action::Delete,
        target,
        RequestInfo::default(),
        actor,
        notifier.source(),
    );
    Ok(notifier.record(&event).await?)
}

/// What a run deleted (or, dry, would delete), and why.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    pub repositories_checked: usize,
    pub tags_deleted: usize,
    pub manifests_deleted: usize,
    /// Deletions skipped because a push changed the repository after the decision.
    pub skipped_changed: usize,
    pub duration_seconds: f64,
    /// `tag <repository>:<tag>` and `manifest <repository>@<digest>`, each with its reason.
    pub deleted: Vec<Deletion>,
}

/// One deletion and the rule behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Deletion {
    pub what: String,
    pub why: String,
}

fn why(reason: &Reason) -> String {
    match reason {
        Reason::NotKept { rules } if rules.is_empty() => {
            "no rule covering the repository looks at this tag".to_owned()
        }
        Reason::NotKept { rules } => format!("not kept by {}", rules.join(", ")),
        Reason::Untagged => "its last tag goes".to_owned(),
        Reason::UntaggedTooLong { rule } => format!("untagged for longer than {rule} allows"),
        Reason::SubjectGoes { subject } => format!("its subject {subject} goes"),
        Reason::IndexGoes { index } => format!("the index {index} listing it goes"),
    }
}

/// Settles one deletion: when `made` (or, dry, would be), announced and listed with its
/// reason; otherwise counted as left because a push changed it since the decision. Whether it
/// was made.
async fn settle(
    report: &mut RetentionReport,
    options: &RetentionOptions,
    made: bool,
    target: Target,
    what: String,
    reason: &Reason,
) -> registry::Result<bool> {
    if !made {
        report.skipped_changed += 1;
        return Ok(false);
    }
    if !options.dry_run {
        announce(options, target).await?;
    }
    report.deleted.push(Deletion {
        what,
        why: why(reason),
    });
    Ok(true)
}

/// Applies the retention rules of `policies` to every repository of `registry` they cover,
/// keeping the tags its immutable-tags rules protect.
pub async fn apply_retention(
    registry: &Registry,
    policies: &Policies,
    options: &RetentionOptions,
) -> registry::Result<RetentionReport> {
    let started = Instant::now();
    let mut report = RetentionReport {
        dry_run: options.dry_run,
        ..RetentionReport::default()
    };
    let (names, _) = registry.catalog(&Page::default(), &|_| true).await?;
    let retention = policies.retention();
    for name in names.iter().filter(|name| retention.covers(name)) {
        let Ok(repository) = name.parse::<RepositoryName>() else {
            continue;
        };
        report.repositories_checked += 1;
        let facts = registry.retention_facts(&repository).await?;
        let verdict = policies.retention_verdict(name, &facts, &options.in_use, SystemTime::now());
        for (tag, reason) in &verdict.tags {
            let judged = facts.tags.iter().find(|t| &t.name == tag);
            let (Ok(parsed), Some(judged)) = (tag.parse::<Tag>(), judged) else {
                continue;
            };
            let made = options.dry_run
                || registry
                    .delete_tag_if_at(&repository, &parsed, &judged.digest)
                    .await?;
            let target = Target {
                repository: name.clone(),
                tag: Some(tag.clone()),
                ..Target::default()
            };
            let what = format!("tag {name}:{tag}");
            if settle(&mut report, options, made, target, what, reason).await? {
                report.tags_deleted += 1;
            }
        }
        for (digest, reason) in &verdict.manifests {
            let made = options.dry_run
                || registry
                    .delete_manifest_if_untagged(&repository, digest)
                    .await?;
            let target = Target {
                repository: name.clone(),
                digest: Some(digest.to_string()),
                ..Target::default()
            };
            let what = format!("manifest {name}@{digest}");
            if settle(&mut report, options, made, target, what, reason).await? {
                report.manifests_deleted += 1;
            }
        }
    }
    report.duration_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
