//! The scheduled reconciliation: every tag a rule covers, compared with the destination, and
//! what is missing or different sent (blobs a destination lost included); with `deletes`, the
//! destination's covered tags that are gone here deleted. Events do the day-to-day work; this
//! repairs drift (a destination wiped or edited, an event refused) and reports the lag.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Rule;
use super::sink::{Done, Replicator};
use super::source::LocalRepository;
use crate::events::claims::{self, Start};
use crate::oci::{Digest, RepositoryName, Tag};
use crate::registry::{Page, Registry};
use crate::storage;
use crate::transfer::{self, CopyError, Destination, Naming, Selection, Source, Wanted};

/// What one reconciliation found and did, as `stowage replicate --once` prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconciled {
    pub rule: String,
    pub destination: String,
    pub dry_run: bool,
    pub repositories: usize,
    pub tags_checked: usize,
    /// `repository:tag` sent (or that would be), and why.
    pub copied: Vec<Change>,
    /// `repository:tag` deleted at the destination (or that would be).
    pub deleted: Vec<Change>,
    /// What the destination refused, for good.
    pub refused: Vec<Change>,
    /// Events waiting in the rule's outbox, and the age of the oldest: the lag.
    pub pending_events: usize,
    pub oldest_pending_seconds: f64,
    /// When it finished (RFC 3339).
    pub finished: String,
    pub seconds: f64,
}

/// One tag's change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    pub image: String,
    pub reason: String,
}

/// Why a tag needs sending.
fn difference(here: &Digest, there: Option<&Digest>) -> Option<&'static str> {
    match there {
        None => Some("missing at the destination"),
        Some(there) if there != here => Some("names another manifest there"),
        Some(_) => None,
    }
}

/// Reconciles `rule` once; `dry_run` only reports.
pub async fn reconcile(
    rule: &Arc<Rule>,
    registry: &Registry,
    dry_run: bool,
) -> Result<Reconciled, CopyError> {
    let started = Instant::now();
    let replicator = Replicator::new(Arc::clone(rule), registry.clone(), None);
    let mut report = Reconciled {
        rule: rule.name().to_owned(),
        destination: rule.settings.url.to_string(),
        dry_run,
        ..Reconciled::default()
    };
    let every = Page {
        n: None,
        last: None,
    };
    let (names, _) = registry
        .catalog(&every, &|name| rule.covers_repository(name))
        .await
        .map_err(|err| CopyError::Unavailable(err.to_string()))?;
    for name in names {
        let Ok(name) = name.parse::<RepositoryName>() else {
            continue;
        };
        report.repositories += 1;
        if let Err(err) =
            reconcile_repository(rule, registry, &replicator, &name, &mut report).await
        {
            if err.is_transient() {
                return Err(err);
            }
            report.refused.push(Change {
                image: name.to_string(),
                reason: err.to_string(),
            });
        }
    }
    let (pending, oldest) = pending(rule, registry).await;
    report.pending_events = pending;
    report.oldest_pending_seconds = oldest.as_secs_f64();
    report.finished = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    report.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(report)
}

async fn reconcile_repository(
    rule: &Rule,
    registry: &Registry,
    replicator: &Replicator,
    name: &RepositoryName,
    report: &mut Reconciled,
) -> Result<(), CopyError> {
    let source = LocalRepository::new(registry, name);
    let destination = rule.destination(name.as_str(), registry);
    let tags_here: Vec<String> = source
        .tags()
        .await?
        .into_iter()
        .filter(|tag| rule.covers_tag(tag))
        .collect();
    let selection = Selection {
        platform: None,
        referrers: true,
    };
    // Blobs seen at the destination already, shared by the repository's tags.
    let mut present: HashSet<Digest> = HashSet::new();
    for tag in &tags_here {
        report.tags_checked += 1;
        let image = format!("{name}:{tag}");
        let plan = match transfer::plan(
            &source,
            &Wanted::Tag(tag.clone()),
            Naming::Tag(tag.clone()),
            &selection,
        )
        .await
        {
            Ok(plan) => plan,
            // Deleted since it was listed.
            Err(CopyError::NotFound(_)) => continue,
            Err(err) => return Err(err),
        };
        let Some((root, _)) = plan.manifests.last() else {
            continue;
        };
        let there = destination
            .client()
            .manifest_digest(destination.repository(), tag)
            .await?;
        let mut reason = difference(&root.descriptor.digest, there.as_ref()).map(str::to_owned);
        if reason.is_none() {
            for blob in &plan.blobs {
                if present.contains(&blob.digest) {
                    continue;
                }
                if destination.has_blob(blob).await? {
                    present.insert(blob.digest.clone());
                } else {
                    reason = Some(format!("blob {} missing at the destination", blob.short()));
                    break;
                }
            }
        }
        let Some(reason) = reason else {
            continue;
        };
        if !dry_run_or_copy(report, replicator, name, &root.descriptor.digest, tag).await? {
            continue;
        }
        report.copied.push(Change { image, reason });
    }
    if rule.settings.deletes {
        let tags_there = match destination.tags().await {
            Ok(tags) => tags,
            Err(CopyError::NotFound(_)) => Vec::new(),
            Err(err) => return Err(err),
        };
        for tag in tags_there {
            if !rule.covers_tag(&tag) || tags_here.contains(&tag) {
                continue;
            }
            let Ok(parsed) = tag.parse::<Tag>() else {
                continue;
            };
            let image = format!("{name}:{tag}");
            let reason = "gone here".to_owned();
            if report.dry_run {
                report.deleted.push(Change { image, reason });
                continue;
            }
            if replicator.delete_tag(name, &parsed).await? == Done::Deleted {
                report.deleted.push(Change { image, reason });
            }
        }
    }
    Ok(())
}

/// Copies `tag` (as `digest`) unless the run is a dry run; whether it counts as copied.
async fn dry_run_or_copy(
    report: &mut Reconciled,
    replicator: &Replicator,
    name: &RepositoryName,
    digest: &Digest,
    tag: &str,
) -> Result<bool, CopyError> {
    if report.dry_run {
        return Ok(true);
    }
    match replicator
        .copy(
            name,
            Wanted::Digest(digest.clone()),
            Naming::Tag(tag.to_owned()),
        )
        .await
    {
        Ok(()) => Ok(true),
        Err(err) if err.is_transient() => Err(err),
        Err(err) => {
            report.refused.push(Change {
                image: format!("{name}:{tag}"),
                reason: err.to_string(),
            });
            Ok(false)
        }
    }
}

/// How many events wait in `rule`'s outbox, and how old the oldest is; none when storage
/// cannot tell.
pub async fn pending(rule: &Rule, registry: &Registry) -> (usize, Duration) {
    crate::events::pending(registry.store().as_ref(), &rule.outbox())
        .await
        .unwrap_or_default()
}

/// The last reconciliation of a rule, kept in storage for status pages and the next run.
fn last_key(rule: &Rule) -> String {
    format!("{}/last-reconciliation.json", rule.state_dir())
}

/// The report of `rule`'s last reconciliation, by whichever replica ran it.
pub async fn last_reconciliation(rule: &Rule, registry: &Registry) -> Option<Reconciled> {
    let body = storage::read_small(registry.store().as_ref(), &last_key(rule), 1 << 20)
        .await
        .ok()?;
    serde_json::from_slice(&body).ok()
}

/// How long a reconciliation's claim lasts unless renewed; it is renewed three times as often.
const CLAIM_TTL: Duration = Duration::from_secs(90);

/// Reconciles each rule that asks for it every `reconcile_every`, for as long as the process
/// lives. Replicas share the schedule: a rule reconciled recently by any of them is left, and
/// one being reconciled (its claim renewed) is left to that replica.
pub async fn reconcile_on_schedule(rules: Vec<Arc<Rule>>, registry: Registry) {
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let tasks = rules
        .into_iter()
        .filter_map(|rule| Some((rule.settings.reconcile_every?, rule)))
        .map(|(every, rule)| {
            let (registry, instance) = (registry.clone(), instance.clone());
            tokio::spawn(async move {
                loop {
                    // Spread replicas out, so that one of them goes first and the others see it.
                    let jitter = Duration::from_millis(rand::random::<u64>() % 5_000);
                    tokio::time::sleep(every.min(Duration::from_secs(60)) + jitter).await;
                    reconcile_if_due(&rule, &registry, every, &instance).await;
                }
            })
        })
        .collect::<Vec<_>>();
    for task in tasks {
        let _ = task.await;
    }
}

/// Reconciles `rule` unless a replica did within `every` or is doing it now.
async fn reconcile_if_due(rule: &Arc<Rule>, registry: &Registry, every: Duration, instance: &str) {
    let due = match last_reconciliation(rule, registry).await {
        Some(last) => humantime::parse_rfc3339(&last.finished)
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_none_or(|since| since >= every),
        None => true,
    };
    let store = registry.store().as_ref();
    let claim = claim_key(rule);
    if !due || claims::held_elsewhere(store, &claim, instance, CLAIM_TTL).await {
        return;
    }
    let work = reconcile(rule, registry, false);
    let claims = [claim];
    match claims::holding(store, &claims, instance, CLAIM_TTL / 3, Start::Now, work).await {
        Ok(report) => {
            tracing::info!(
                rule = rule.name(),
                copied = report.copied.len(),
                deleted = report.deleted.len(),
                refused = report.refused.len(),
                seconds = report.seconds,
                "replication reconciled"
            );
            if let Ok(body) = serde_json::to_vec(&report) {
                let _ = store.put(&last_key(rule), Bytes::from(body)).await;
            }
        }
        Err(err) => {
            tracing::warn!(rule = rule.name(), error = %err, "replication reconciliation failed");
        }
    }
}

/// The claim of the replica reconciling `rule`.
fn claim_key(rule: &Rule) -> String {
    format!("_stowage/claims/{}/reconciliation", rule.state_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::CredentialSource;
    use crate::events::Pacing;
    use crate::registry::Limits;
    use crate::replication::RuleSettings;
    use crate::storage::{BlobStore, MemoryStore};

    fn rule() -> Arc<Rule> {
        let settings = RuleSettings {
            name: "dr".to_owned(),
            // Nothing listens: an empty registry has nothing to send.
            url: "http://127.0.0.1:9".parse().unwrap(),
            prefix: String::new(),
            repositories: Vec::new(),
            tags: Vec::new(),
            deletes: false,
            credentials: CredentialSource::Anonymous,
            tls_verify: true,
            ca_file: None,
            bandwidth: None,
            jobs: 1,
            reconcile_every: Some(Duration::from_secs(3600)),
            timeout: Duration::from_secs(5),
            chunk_size: None,
            pacing: Pacing {
                backoff: Duration::from_secs(1),
                takeover_after: Duration::from_secs(30),
            },
        };
        Arc::new(Rule::new(settings).unwrap())
    }

    #[tokio::test]
    async fn a_rule_another_replica_is_reconciling_is_left_to_it() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::default());
        let limits = Limits {
            max_manifest_size: 1 << 20,
            manifest_cache_bytes: 0,
        };
        let registry = Registry::new(Arc::clone(&store), limits);
        let rule = rule();
        let every = Duration::from_secs(3600);

        // Another replica holds the claim while this one looks.
        let claims = [claim_key(&rule)];
        let other = claims::holding(
            store.as_ref(),
            &claims,
            "other",
            Duration::from_secs(1),
            Start::Now,
            reconcile_if_due(&rule, &registry, every, "this"),
        );
        other.await;
        assert!(
            last_reconciliation(&rule, &registry).await.is_none(),
            "left to the claiming replica"
        );

        reconcile_if_due(&rule, &registry, every, "this").await;
        let first = last_reconciliation(&rule, &registry).await.expect("ran");
        assert_eq!(first.repositories, 0);
        // Marked, so that a second run would show.
        let marked = Reconciled {
            repositories: 99,
            ..first
        };
        let body = Bytes::from(serde_json::to_vec(&marked).unwrap());
        store.put(&last_key(&rule), body).await.unwrap();
        reconcile_if_due(&rule, &registry, every, "this").await;
        let again = last_reconciliation(&rule, &registry).await.expect("kept");
        assert_eq!(again.repositories, 99, "not due again within the hour");
        assert!(
            !claims::held_elsewhere(store.as_ref(), &claims[0], "other", CLAIM_TTL).await,
            "the claim went with the run"
        );
    }
}
