//! The status computed from what the operator observed: every condition and its reason.

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;

use super::*;
use crate::resources::fixtures::s3_registry;

fn time(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_790_000_000 + seconds).expect("time"))
}

fn deployment(replicas: i32, ready: i32, observed: i64) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            generation: Some(2),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            ..DeploymentSpec::default()
        }),
        status: Some(DeploymentStatus {
            replicas: Some(replicas),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            updated_replicas: Some(replicas),
            observed_generation: Some(observed),
            ..DeploymentStatus::default()
        }),
    }
}

fn observe<'a>(deployment: Option<&'a Deployment>, storage: &'a StorageCheck) -> Observed<'a> {
    Observed {
        deployment,
        storage,
        tls: None,
        service_monitor: None,
        last_gc: None,
        last_full_gc: None,
        last_replication: None,
        last_retention: None,
        error: None,
        now: time(0),
    }
}

#[test]
fn tls_ready_appears_with_spec_tls_and_tells_what_is_missing() {
    let storage = StorageCheck::unknown("NotChecked", "x");
    let plain = compute(&s3_registry(), observe(None, &storage));
    assert!(plain.conditions.iter().all(|c| c.type_ != "TlsReady"));
    let mut registry = s3_registry();
    registry.spec.tls = Some(crate::crd::Tls {
        secret_name: Some("cert".to_owned()),
        ..crate::crd::Tls::default()
    });
    let missing = Check::not_ready("SecretMissing", "TLS Secret cert does not exist".into());
    let status = compute(
        &registry,
        Observed {
            tls: Some(&missing),
            ..observe(None, &storage)
        },
    );
    let tls = condition(&status, "TlsReady");
    assert_eq!(
        (tls.status.as_str(), tls.reason.as_str()),
        ("False", "SecretMissing")
    );
    let ready = Check::ready("CertificateReady", "serving".into());
    let status = compute(
        &registry,
        Observed {
            tls: Some(&ready),
            ..observe(None, &storage)
        },
    );
    assert_eq!(condition(&status, "TlsReady").status, "True");
}

fn condition<'a>(status: &'a RegistryStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition")
}

#[test]
fn a_rolled_out_registry_is_ready() {
    let storage = StorageCheck::ready("bucket configured");
    let deployment = deployment(3, 3, 2);
    let status = compute(&s3_registry(), observe(Some(&deployment), &storage));
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert_eq!(status.endpoint.as_deref(), Some("images.team-a.svc:5000"));
    assert!(status.selector.contains("stowage.dev/registry=images"));
    assert_eq!(condition(&status, "Ready").status, "True");
    assert_eq!(condition(&status, "Progressing").status, "False");
    assert_eq!(condition(&status, "Degraded").status, "False");
    assert_eq!(condition(&status, "StorageReady").status, "True");
    assert_eq!(condition(&status, "GarbageCollected").status, "Unknown");
}

#[test]
fn a_rollout_under_way_is_progressing() {
    let storage = StorageCheck::ready("ok");
    let mut rolling = deployment(3, 1, 1);
    let status = compute(&s3_registry(), observe(Some(&rolling), &storage));
    assert_eq!(
        condition(&status, "Ready").status,
        "True",
        "one replica serves"
    );
    assert_eq!(condition(&status, "Progressing").status, "True");

    rolling.status = Some(DeploymentStatus::default());
    let status = compute(&s3_registry(), observe(Some(&rolling), &storage));
    assert_eq!(condition(&status, "Ready").status, "False");
    assert_eq!(condition(&status, "Ready").reason, "Unavailable");
}

#[test]
fn missing_storage_and_stuck_rollouts_degrade() {
    let missing = StorageCheck::unavailable("CredentialsMissing", "secret s3-creds not found");
    let deployment = deployment(3, 3, 2);
    let status = compute(&s3_registry(), observe(Some(&deployment), &missing));
    assert_eq!(condition(&status, "StorageReady").status, "False");
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "CredentialsMissing")
    );

    let mut stuck = deployment;
    if let Some(s) = stuck.status.as_mut() {
        s.conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".to_owned(),
            status: "False".to_owned(),
            reason: Some("ProgressDeadlineExceeded".to_owned()),
            ..DeploymentCondition::default()
        }]);
    }
    let ok = StorageCheck::ready("ok");
    let status = compute(&s3_registry(), observe(Some(&stuck), &ok));
    assert_eq!(
        condition(&status, "Degraded").reason,
        "ProgressDeadlineExceeded"
    );
}

#[test]
fn storage_not_heard_from_is_unknown_not_fine() {
    let waiting = StorageCheck::unknown("WaitingForPods", "no pod has reported yet");
    let deployment = deployment(3, 0, 2);
    let status = compute(&s3_registry(), observe(Some(&deployment), &waiting));
    let storage = condition(&status, "StorageReady");
    assert_eq!(
        (storage.status.as_str(), storage.reason.as_str()),
        ("Unknown", "WaitingForPods")
    );
    assert_eq!(condition(&status, "Degraded").status, "False");
}

#[test]
fn a_failed_reconcile_is_reported() {
    let storage = StorageCheck::ready("ok");
    let status = compute(
        &s3_registry(),
        Observed {
            error: Some("applying Deployment: 500".to_owned()),
            ..observe(None, &storage)
        },
    );
    assert_eq!(condition(&status, "Ready").reason, "ReconcileFailed");
    assert_eq!(
        condition(&status, "Degraded").message,
        "applying Deployment: 500"
    );
}

#[test]
fn transition_times_move_only_on_change() {
    let storage = StorageCheck::ready("ok");
    let deployment = deployment(3, 3, 2);
    let mut registry = s3_registry();
    registry.status = Some(compute(&registry, observe(Some(&deployment), &storage)));
    let later = compute(
        &registry,
        Observed {
            now: time(60),
            ..observe(Some(&deployment), &storage)
        },
    );
    assert_eq!(condition(&later, "Ready").last_transition_time, time(0));

    let down = StorageCheck::unavailable("CredentialsMissing", "gone");
    let later = compute(
        &registry,
        Observed {
            now: time(60),
            ..observe(Some(&deployment), &down)
        },
    );
    assert_eq!(
        condition(&later, "StorageReady").last_transition_time,
        time(60)
    );
    assert_eq!(condition(&later, "Ready").last_transition_time, time(0));
}

fn job(name: &str, finished: i64, complete: bool) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        status: Some(JobStatus {
            completion_time: complete.then(|| time(finished)),
            conditions: Some(vec![JobCondition {
                type_: if complete { "Complete" } else { "Failed" }.to_owned(),
                status: "True".to_owned(),
                last_transition_time: Some(time(finished)),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        }),
        ..Job::default()
    }
}

fn pod(exit_code: i32, message: &str) -> Pod {
    Pod {
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "gc".to_owned(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code,
                        message: Some(message.to_owned()),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

#[test]
fn the_latest_finished_gc_job_is_reported_with_its_counts() {
    let running = Job {
        metadata: ObjectMeta {
            name: Some("images-gc-3".to_owned()),
            ..ObjectMeta::default()
        },
        ..Job::default()
    };
    let jobs = [
        job("images-gc-1", 10, true),
        job("images-gc-2", 20, false),
        running,
    ];
    let (latest, at, result) = latest_finished_job(&jobs).expect("a finished job");
    assert_eq!(
        (latest.name_any().as_str(), result),
        ("images-gc-2", JobResult::Failed)
    );
    assert_eq!(at, Some(time(20)));

    let summary = r#"{"dry_run":false,"manifests_deleted":2,"blobs_deleted":7,"links_deleted":1,"uploads_deleted":0,"bytes_freed":123456,"duration_seconds":31.5}"#;
    let run = gc_run(
        &jobs[0],
        Some(time(10)),
        JobResult::Succeeded,
        &[pod(1, "boom"), pod(0, summary)],
    );
    assert_eq!(run.job, "images-gc-1");
    assert_eq!(
        (run.bytes_freed, run.blobs_deleted, run.manifests_deleted),
        (123_456, 7, 2)
    );

    let storage = StorageCheck::ready("ok");
    let status = compute(
        &s3_registry(),
        Observed {
            last_gc: Some(run),
            ..observe(None, &storage)
        },
    );
    let gc = condition(&status, "GarbageCollected");
    assert_eq!(
        (gc.status.as_str(), gc.reason.as_str()),
        ("True", "Succeeded")
    );
    assert!(gc.message.contains("123456 bytes freed"));
}

/// What `stowage gc --report-file` writes after a full run (the server's report test pins the
/// same keys).
const FULL_SUMMARY: &str = r#"{"dry_run":false,"mode":"full","manifests_deleted":0,"blobs_deleted":3,"links_deleted":0,"uploads_deleted":0,"mirrors_expired":0,"bytes_freed":900,"reviewed":4,"journal_pending":2,"index_entries_added":5,"index_entries_pruned":1,"duration_seconds":1.5,"storage_requests":77,"stored_bytes":4000,"largest_namespaces":{"small":1000,"team":3000},"quotas":[{"quota":"teams","scope":"namespace","name":"team","used_bytes":3000,"limit_bytes":4000},{"quota":"teams","scope":"namespace","name":"small","used_bytes":1000,"limit_bytes":4000}]}"#;

#[test]
fn a_full_run_reports_its_drift_and_usage_and_stays_known_after_incremental_ones() {
    let jobs = [job("images-gc-1", 10, true), job("images-gc-2", 20, true)];
    let full = gc_run(
        &jobs[0],
        Some(time(10)),
        JobResult::Succeeded,
        &[pod(0, FULL_SUMMARY)],
    );
    assert_eq!(full.mode, Some(CollectionMode::Full));
    assert_eq!(
        (full.index_entries_added, full.index_entries_pruned),
        (5, 1)
    );
    assert_eq!(full.journal_pending, 2);
    assert_eq!(full.stored_bytes, Some(4000));
    assert_eq!(
        full.largest_namespaces,
        [
            NamespaceUsage {
                name: "team".to_owned(),
                bytes: 3000
            },
            NamespaceUsage {
                name: "small".to_owned(),
                bytes: 1000
            }
        ]
    );
    assert_eq!(
        full.quotas
            .iter()
            .map(|q| (q.name.as_str(), q.used_bytes, q.limit_bytes))
            .collect::<Vec<_>>(),
        [("team", 3000, 4000), ("small", 1000, 4000)],
        "the fullest first, as reported"
    );
    assert!(
        full.quotas
            .iter()
            .all(|q| q.quota == "teams" && q.scope == "namespace")
    );
    let known = last_full_gc(Some(&full), None);
    assert_eq!(known.as_ref(), Some(&full));

    let summary = r#"{"mode":"incremental","blobs_deleted":1,"journal_pending":0}"#;
    let incremental = gc_run(
        &jobs[1],
        Some(time(20)),
        JobResult::Succeeded,
        &[pod(0, summary)],
    );
    assert_eq!(incremental.mode, Some(CollectionMode::Incremental));
    assert_eq!(incremental.stored_bytes, None);
    let still = last_full_gc(Some(&incremental), known);
    assert_eq!(still.as_ref(), Some(&full));

    let storage = StorageCheck::ready("ok");
    let status = compute(
        &s3_registry(),
        Observed {
            last_gc: Some(incremental),
            last_full_gc: still,
            ..observe(None, &storage)
        },
    );
    assert_eq!(
        status
            .last_full_garbage_collection
            .as_ref()
            .and_then(|r| r.stored_bytes),
        Some(4000)
    );
    let gc = condition(&status, "GarbageCollected");
    assert!(
        gc.message.starts_with("incremental job images-gc-2")
            && gc.message.contains("lacking 5 entries and 1 stale"),
        "{}",
        gc.message
    );
}

fn replication_pod(message: &str) -> Pod {
    let mut pod = pod(0, message);
    if let Some(statuses) = pod
        .status
        .as_mut()
        .and_then(|s| s.container_statuses.as_mut())
    {
        statuses[0].name = "replicate".to_owned();
    }
    pod
}

#[test]
fn the_replication_reconciliation_reports_each_rule_and_its_refusals() {
    let storage = StorageCheck::ready("ok");
    let plain = compute(&s3_registry(), observe(None, &storage));
    assert!(
        plain.conditions.iter().all(|c| c.type_ != "Replicated"),
        "only with spec.replication"
    );
    let mut registry = s3_registry();
    registry.spec.replication = serde_json::from_value(serde_json::json!({
        "rules": [{"name": "dr", "url": "https://dr.example"}]
    }))
    .expect("replication");
    let waiting = compute(&registry, observe(None, &storage));
    assert_eq!(condition(&waiting, "Replicated").reason, "NotRunYet");

    let report = r#"{"dryRun":false,"rules":[{"rule":"dr","destination":"dr.example","tagsChecked":40,"copied":3,"deleted":1,"refused":0,"pendingEvents":2,"oldestPendingSeconds":7,"seconds":1.5}]}"#;
    let run = replication_run(
        &job("images-replicate-1", 10, true),
        Some(time(10)),
        JobResult::Succeeded,
        &[pod(0, report), replication_pod(report)],
    );
    assert_eq!(run.rules.len(), 1, "read from the replicate container only");
    let rule = &run.rules[0];
    assert_eq!(
        (
            rule.tags_checked,
            rule.copied,
            rule.deleted,
            rule.pending_events,
            rule.oldest_pending_seconds
        ),
        (40, 3, 1, 2, 7)
    );
    let status = compute(
        &registry,
        Observed {
            last_replication: Some(run),
            ..observe(None, &storage)
        },
    );
    let replicated = condition(&status, "Replicated");
    assert_eq!(
        (replicated.status.as_str(), replicated.reason.as_str()),
        ("True", "InStep")
    );
    assert!(
        replicated.message.contains("dr: 3 of 40 tags sent"),
        "{}",
        replicated.message
    );
    assert!(
        replicated
            .message
            .contains("2 events pending, the oldest 7s old")
    );
    assert_eq!(
        status.last_replication.as_ref().map(|r| r.job.as_str()),
        Some("images-replicate-1")
    );

    let refused = r#"{"rules":[{"rule":"dr","copied":0,"refused":2,"firstRefusal":"team/app:v1: 403 DENIED"}]}"#;
    let run = replication_run(
        &job("images-replicate-2", 20, true),
        Some(time(20)),
        JobResult::Succeeded,
        &[replication_pod(refused)],
    );
    let status = compute(
        &registry,
        Observed {
            last_replication: Some(run),
            ..observe(None, &storage)
        },
    );
    let replicated = condition(&status, "Replicated");
    assert_eq!(
        (replicated.status.as_str(), replicated.reason.as_str()),
        ("False", "Refused")
    );
    assert!(
        replicated
            .message
            .contains("first: team/app:v1: 403 DENIED")
    );

    let failed = replication_run(
        &job("images-replicate-3", 30, false),
        Some(time(30)),
        JobResult::Failed,
        &[],
    );
    let status = compute(
        &registry,
        Observed {
            last_replication: Some(failed),
            ..observe(None, &storage)
        },
    );
    assert_eq!(condition(&status, "Replicated").reason, "Failed");
}
