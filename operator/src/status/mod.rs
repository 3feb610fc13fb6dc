//! The Registry's status, computed from what the operator applied and read. Pure, so every
//! condition can be unit tested.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use serde::Deserialize;

use crate::crd::{
    CollectionMode, GarbageCollectionRun, JobResult, NamespaceUsage, QuotaUsage, Reconciled,
    ReconciledRule, Registry, RegistryStatus, RetentionOutcome,
};
use crate::resources;
use crate::storage::{Health, StorageCheck};

/// What the status is computed from.
pub struct Observed<'a> {
    pub deployment: Option<&'a Deployment>,
    pub storage: &'a StorageCheck,
    /// Whether the certificate is there, when `spec.tls` asks for one.
    pub tls: Option<&'a Check>,
    /// Whether the ServiceMonitor was made, when `spec.monitoring.serviceMonitor` asks for one.
    pub service_monitor: Option<&'a Check>,
    pub last_gc: Option<GarbageCollectionRun>,
    /// The most recent finished full garbage collection.
    pub last_full_gc: Option<GarbageCollectionRun>,
    /// The most recent finished replication reconciliation.
    pub last_replication: Option<Reconciled>,
    /// The most recent finished retention run, while there are retention rules.
    pub last_retention: Option<RetentionOutcome>,
    /// Why the last reconcile failed, if it did.
    pub error: Option<String>,
    pub now: Time,
}

/// What the operator found of something optional the spec asks for: the certificate, the
/// ServiceMonitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Check {
    pub fn ready(reason: &'static str, message: String) -> Self {
        Self {
            ready: true,
            reason,
            message,
        }
    }

    pub fn not_ready(reason: &'static str, message: String) -> Self {
        Self {
            ready: false,
            reason,
            message,
        }
    }
}

/// The status to write for `registry`.
pub fn compute(registry: &Registry, observed: Observed<'_>) -> RegistryStatus {
    let previous = registry
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = registry.metadata.generation;
    let deployment_status = observed
        .deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let desired = observed
        .deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(deployment_status.replicas.unwrap_or(0));
    let replicas = deployment_status.replicas.unwrap_or(0);
    let ready = deployment_status.ready_replicas.unwrap_or(0);
    let available = deployment_status.available_replicas.unwrap_or(0);
    let updated = deployment_status.updated_replicas.unwrap_or(0);
    let deployment_current = match (observed.deployment, deployment_status.observed_generation) {
        (Some(d), Some(seen)) => Some(seen) >= d.metadata.generation,
        _ => false,
    };
    let deadline_exceeded = deployment_status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });

    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        make_condition(
            previous,
            generation,
            &observed.now,
            type_,
            status,
            reason,
            message,
        )
    };
    let unknown = |type_: &str, reason: &str, message: &str| {
        let message = message.to_owned();
        make_condition(
            previous,
            generation,
            &observed.now,
            type_,
            "Unknown",
            reason,
            message,
        )
    };

    let ready_condition = if let Some(error) = &observed.error {
        condition("Ready", false, "ReconcileFailed", error.clone())
    } else if desired == 0 {
        condition(
            "Ready",
            false,
            "ScaledToZero",
            "no replicas are asked for".to_owned(),
        )
    } else if available > 0 {
        condition(
            "Ready",
            true,
            "Available",
            format!("{available} of {desired} replicas available"),
        )
    } else {
        condition(
            "Ready",
            false,
            "Unavailable",
            "no replica is available yet".to_owned(),
        )
    };

    let rolling = !deployment_current || updated < replicas || available < desired;
    let progressing = if rolling && !deadline_exceeded {
        condition(
            "Progressing",
            true,
            "RollingOut",
            format!("{updated} of {desired} replicas updated, {available} available"),
        )
    } else {
        condition(
            "Progressing",
            false,
            "Settled",
            format!("{available} replicas available"),
        )
    };

    let degraded = if let Some(error) = &observed.error {
        condition("Degraded", true, "ReconcileFailed", error.clone())
    } else if observed.storage.is_unavailable() {
        condition(
            "Degraded",
            true,
            observed.storage.reason,
            observed.storage.message.clone(),
        )
    } else if deadline_exceeded {
        condition(
            "Degraded",
            true,
            "ProgressDeadlineExceeded",
            "the rollout has stopped progressing".to_owned(),
        )
    } else {
        condition(
            "Degraded",
            false,
            "AsExpected",
            "nothing is wrong".to_owned(),
        )
    };

    let storage = match observed.storage.health {
        Health::Unknown => unknown(
            "StorageReady",
            observed.storage.reason,
            &observed.storage.message,
        ),
        health => condition(
            "StorageReady",
            health == Health::Ready,
            observed.storage.reason,
            observed.storage.message.clone(),
        ),
    };

    let gc = match &observed.last_gc {
        _ if registry.spec.garbage_collection.suspend => unknown(
            "GarbageCollected",
            "Suspended",
            "garbage collection is suspended",
        ),
        None => unknown(
            "GarbageCollected",
            "NotRunYet",
            "no garbage collection has finished yet",
        ),
        Some(run) => condition(
            "GarbageCollected",
            run.result == JobResult::Succeeded,
            match run.result {
                JobResult::Succeeded => "Succeeded",
                JobResult::Failed => "Failed",
            },
            gc_message(run, observed.last_full_gc.as_ref()),
        ),
    };

    let mut conditions = vec![ready_condition, progressing, degraded, storage, gc];
    if let Some(replication) = &registry.spec.replication {
        let (status, reason, message) = match &observed.last_replication {
            None if replication.reconciliation.suspend => (
                "Unknown",
                "Suspended",
                "the reconciliation is suspended; pushes are replicated as they happen".to_owned(),
            ),
            None => (
                "Unknown",
                "NotRunYet",
                "no replication reconciliation has finished yet".to_owned(),
            ),
            Some(run) => replicated(run),
        };
        conditions.push(make_condition(
            previous,
            generation,
            &observed.now,
            "Replicated",
            status,
            reason,
            message,
        ));
    }
    let optional = [
        ("TlsReady", registry.spec.tls.is_some(), observed.tls),
        (
            "ServiceMonitorReady",
            registry.spec.monitoring.service_monitor.is_some(),
            observed.service_monitor,
        ),
    ];
    for (type_, asked, check) in optional {
        if !asked {
            continue;
        }
        conditions.push(match check {
            Some(check) => condition(type_, check.ready, check.reason, check.message.clone()),
            None => unknown(type_, "NotChecked", "not checked: the reconcile failed"),
        });
    }
    RegistryStatus {
        observed_generation: generation,
        conditions,
        replicas,
        ready_replicas: ready,
        selector: resources::selector_string(registry),
        endpoint: Some(resources::endpoint(registry)),
        last_garbage_collection: observed.last_gc,
        last_full_garbage_collection: observed.last_full_gc,
        last_replication: observed.last_replication,
        last_retention: observed.last_retention,
    }
}

/// What the last collection did, and what the last full one found of the index.
fn gc_message(run: &GarbageCollectionRun, full: Option<&GarbageCollectionRun>) -> String {
    let mode = match run.mode {
        Some(CollectionMode::Full) => "full ",
        Some(CollectionMode::Incremental) => "incremental ",
        None => "",
    };
    let mut message = format!(
        "{mode}job {}: {} blobs and {} manifests deleted, {} bytes freed; {} journal pages \
         pending",
        run.job, run.blobs_deleted, run.manifests_deleted, run.bytes_freed, run.journal_pending
    );
    if let Some(full) = full {
        message.push_str(&format!(
            "; the last full run ({}) found the index lacking {} entries and {} stale",
            full.job, full.index_entries_added, full.index_entries_pruned
        ));
    }
    message
}

/// The `Replicated` condition for a finished reconciliation: true when it succeeded and no
/// destination refused anything.
fn replicated(run: &Reconciled) -> (&'static str, &'static str, String) {
    if run.result == JobResult::Failed {
        return ("False", "Failed", format!("job {} failed", run.job));
    }
    let rules = run
        .rules
        .iter()
        .map(|rule| {
            let refusal = rule
                .first_refusal
                .as_ref()
                .map(|why| format!(", first: {why}"))
                .unwrap_or_default();
            format!(
                "{}: {} of {} tags sent, {} deleted, {} refused{refusal}; {} events pending, \
                 the oldest {}s old",
                rule.rule,
                rule.copied,
                rule.tags_checked,
                rule.deleted,
                rule.refused,
                rule.pending_events,
                rule.oldest_pending_seconds
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!("job {}: {rules}", run.job);
    if run.rules.iter().any(|rule| rule.refused > 0) {
        ("False", "Refused", message)
    } else {
        ("True", "InStep", message)
    }
}

/// A condition of `status` ("True", "False" or "Unknown"), keeping the previous transition time
/// while the status stays the same.
fn make_condition(
    previous: &[Condition],
    generation: Option<i64>,
    now: &Time,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The counts `stowage gc --report-file` writes.
#[derive(Deserialize, Default)]
#[serde(default)]
struct GcSummary {
    bytes_freed: i64,
    blobs_deleted: i64,
    manifests_deleted: i64,
    /// `incremental` or `full`.
    mode: Option<String>,
    journal_pending: i64,
    index_entries_added: i64,
    index_entries_pruned: i64,
    stored_bytes: Option<i64>,
    /// Name to bytes, for the largest namespaces.
    largest_namespaces: std::collections::BTreeMap<String, i64>,
    /// The fullest repositories and namespaces under a quota.
    quotas: Vec<QuotaSummary>,
}

/// One of [`GcSummary::quotas`].
#[derive(Deserialize)]
struct QuotaSummary {
    quota: String,
    scope: String,
    name: String,
    used_bytes: i64,
    limit_bytes: i64,
}

/// How many namespaces the status names, and quotas it shows.
const NAMESPACES_SHOWN: usize = 10;

/// The most recently finished of `jobs`, with when it finished and whether it succeeded.
pub fn latest_finished_job(jobs: &[Job]) -> Option<(&Job, Option<Time>, JobResult)> {
    jobs.iter()
        .filter_map(|job| {
            let conditions = job.status.as_ref()?.conditions.as_ref()?;
            let finished = conditions
                .iter()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
            let result = if finished.type_ == "Complete" {
                JobResult::Succeeded
            } else {
                JobResult::Failed
            };
            let at = job
                .status
                .as_ref()
                .and_then(|s| s.completion_time.clone())
                .or_else(|| finished.last_transition_time.clone());
            Some((job, at, result))
        })
        .max_by(|a, b| a.1.as_ref().map(|t| t.0).cmp(&b.1.as_ref().map(|t| t.0)))
}

/// The report a finished Job's `container` left in its termination message, from a run that
/// succeeded (a failed run leaves its log there instead).
fn job_report(pods: &[Pod], container: &str) -> Option<String> {
    pods.iter()
        .filter_map(|pod| pod.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter(|status| status.name == container)
        .filter_map(|status| status.state.as_ref()?.terminated.as_ref())
        .filter(|terminated| terminated.exit_code == 0)
        .find_map(|terminated| terminated.message.clone())
}

/// The run recorded by a finished gc Job, with the counts its pod left in its termination
/// message (zero when it left none, as a failed run does).
pub fn gc_run(
    job: &Job,
    finished_at: Option<Time>,
    result: JobResult,
    pods: &[Pod],
) -> GarbageCollectionRun {
    let summary = job_report(pods, resources::Task::GarbageCollection.command())
        .and_then(|report| serde_json::from_str::<GcSummary>(&report).ok())
        .unwrap_or_default();
    let mut largest_namespaces: Vec<NamespaceUsage> = summary
        .largest_namespaces
        .into_iter()
        .filter(|(name, _)| name.len() <= 255)
        .map(|(name, bytes)| NamespaceUsage { name, bytes })
        .collect();
    largest_namespaces.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    largest_namespaces.truncate(NAMESPACES_SHOWN);
    let quotas = summary
        .quotas
        .into_iter()
        .filter(|q| q.quota.len() <= 63 && q.scope.len() <= 16 && q.name.len() <= 255)
        .take(NAMESPACES_SHOWN)
        .map(|q| QuotaUsage {
            quota: q.quota,
            scope: q.scope,
            name: q.name,
            used_bytes: q.used_bytes,
            limit_bytes: q.limit_bytes,
        })
        .collect();
    GarbageCollectionRun {
        job: job.name_any(),
        finished_at,
        result,
        bytes_freed: summary.bytes_freed,
        blobs_deleted: summary.blobs_deleted,
        manifests_deleted: summary.manifests_deleted,
        mode: match summary.mode.as_deref() {
            Some("incremental") => Some(CollectionMode::Incremental),
            Some("full") => Some(CollectionMode::Full),
            _ => None,
        },
        journal_pending: summary.journal_pending,
        index_entries_added: summary.index_entries_added,
        index_entries_pruned: summary.index_entries_pruned,
        stored_bytes: summary.stored_bytes,
        largest_namespaces,
        quotas,
    }
}

/// The last full collection, now that `latest` finished: `latest` itself if it was full, else
/// the one known before.
pub fn last_full_gc(
    latest: Option<&GarbageCollectionRun>,
    known: Option<GarbageCollectionRun>,
) -> Option<GarbageCollectionRun> {
    match latest {
        Some(run) if run.mode == Some(CollectionMode::Full) => Some(run.clone()),
        _ => known,
    }
}

/// What `stowage replicate --once --report-file` writes.
#[derive(Deserialize)]
struct ReplicationSummary {
    #[serde(default)]
    rules: Vec<ReconciledRule>,
}

/// The run recorded by a finished reconciliation Job, rule by rule from its report (none when
/// it left none).
pub fn replication_run(
    job: &Job,
    finished_at: Option<Time>,
    result: JobResult,
    pods: &[Pod],
) -> Reconciled {
    let rules = job_report(pods, resources::Task::Replication.command())
        .and_then(|report| serde_json::from_str::<ReplicationSummary>(&report).ok())
        .map(|summary| summary.rules)
        .unwrap_or_default();
    Reconciled {
        job: job.name_any(),
        finished_at,
        result,
        rules,
    }
}

/// What `stowage retention --report-file` writes.
#[derive(Deserialize)]
struct RetentionSummary {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    repositories_checked: i64,
    #[serde(default)]
    tags_deleted: i64,
    #[serde(default)]
    manifests_deleted: i64,
    #[serde(default)]
    skipped_changed: i64,
    #[serde(default)]
    deleted: Vec<RetentionDeletion>,
}

#[derive(Deserialize)]
struct RetentionDeletion {
    what: String,
    why: String,
}

/// Deletions the status lists at most.
const RETENTION_DELETIONS: usize = 20;

/// The run recorded by a finished retention Job, from its report; a run that left none (a
/// failed one) counts as dry, since nothing is known to have been deleted.
pub fn retention_run(
    job: &Job,
    finished_at: Option<Time>,
    result: JobResult,
    pods: &[Pod],
) -> RetentionOutcome {
    let summary = job_report(pods, resources::Task::Retention.command())
        .and_then(|report| serde_json::from_str::<RetentionSummary>(&report).ok());
    let rules = job
        .labels()
        .get(resources::RULES_LABEL)
        .cloned()
        .unwrap_or_default();
    RetentionOutcome {
        job: job.name_any(),
        finished_at,
        result,
        rules,
        dry_run: summary.as_ref().is_none_or(|s| s.dry_run),
        repositories_checked: summary.as_ref().map_or(0, |s| s.repositories_checked),
        tags_deleted: summary.as_ref().map_or(0, |s| s.tags_deleted),
        manifests_deleted: summary.as_ref().map_or(0, |s| s.manifests_deleted),
        skipped_changed: summary.as_ref().map_or(0, |s| s.skipped_changed),
        deletions: summary
            .iter()
            .flat_map(|s| &s.deleted)
            .take(RETENTION_DELETIONS)
            .map(|d| {
                format!("{}: {}", d.what, d.why)
                    .chars()
                    .take(1024)
                    .collect()
            })
            .collect(),
    }
}

/// The event a new retention run is told in: `(reason, note)`.
pub fn retention_event(run: &RetentionOutcome) -> (&'static str, String) {
    let listed = if run.deletions.is_empty() {
        String::new()
    } else {
        format!(": {}", run.deletions.join("; "))
    };
    match (run.result, run.dry_run) {
        (JobResult::Failed, _) => (
            "RetentionFailed",
            format!("retention Job {} failed; see its logs", run.job),
        ),
        (JobResult::Succeeded, true) => (
            "RetentionPreviewed",
            format!(
                "would delete {} tags and {} manifests in {} repositories{listed}",
                run.tags_deleted, run.manifests_deleted, run.repositories_checked
            ),
        ),
        (JobResult::Succeeded, false) => (
            "RetentionApplied",
            format!(
                "deleted {} tags and {} manifests in {} repositories (gc reclaims their \
                 bytes){listed}",
                run.tags_deleted, run.manifests_deleted, run.repositories_checked
            ),
        ),
    }
}

#[cfg(test)]
mod tests;
