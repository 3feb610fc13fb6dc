//! The Registry's status, computed from what the operator applied and read. Pure, so every
//! condition can be unit tested.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use serde::Deserialize;

use crate::crd::{GarbageCollectionRun, GcResult, Registry, RegistryStatus};
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
            run.result == GcResult::Succeeded,
            match run.result {
                GcResult::Succeeded => "Succeeded",
                GcResult::Failed => "Failed",
            },
            format!(
                "job {}: {} blobs and {} manifests deleted, {} bytes freed",
                run.job, run.blobs_deleted, run.manifests_deleted, run.bytes_freed
            ),
        ),
    };

    let mut conditions = vec![ready_condition, progressing, degraded, storage, gc];
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
#[derive(Deserialize)]
struct GcSummary {
    #[serde(default)]
    bytes_freed: i64,
    #[serde(default)]
    blobs_deleted: i64,
    #[serde(default)]
    manifests_deleted: i64,
}

/// The most recently finished of `jobs`, with when it finished and whether it succeeded.
pub fn latest_finished_job(jobs: &[Job]) -> Option<(&Job, Option<Time>, GcResult)> {
    jobs.iter()
        .filter_map(|job| {
            let conditions = job.status.as_ref()?.conditions.as_ref()?;
            let finished = conditions
                .iter()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
            let result = if finished.type_ == "Complete" {
                GcResult::Succeeded
            } else {
                GcResult::Failed
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

/// The run recorded by a finished gc Job, with the counts its pod left in its termination
/// message (zero when it left none, as a failed run does).
pub fn gc_run(
    job: &Job,
    finished_at: Option<Time>,
    result: GcResult,
    pods: &[Pod],
) -> GarbageCollectionRun {
    let summary = pods
        .iter()
        .filter_map(|pod| pod.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter(|status| status.name == resources::Task::GarbageCollection.command())
        .filter_map(|status| status.state.as_ref()?.terminated.as_ref())
        .filter(|terminated| terminated.exit_code == 0)
        .find_map(|terminated| {
            serde_json::from_str::<GcSummary>(terminated.message.as_deref()?).ok()
        });
    GarbageCollectionRun {
        job: job.name_any(),
        finished_at,
        result,
        bytes_freed: summary.as_ref().map_or(0, |s| s.bytes_freed),
        blobs_deleted: summary.as_ref().map_or(0, |s| s.blobs_deleted),
        manifests_deleted: summary.as_ref().map_or(0, |s| s.manifests_deleted),
    }
}

#[cfg(test)]
mod tests {
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
            ("images-gc-2", GcResult::Failed)
        );
        assert_eq!(at, Some(time(20)));

        let summary = r#"{"dry_run":false,"manifests_deleted":2,"blobs_deleted":7,"links_deleted":1,"uploads_deleted":0,"bytes_freed":123456,"duration_seconds":31.5}"#;
        let run = gc_run(
            &jobs[0],
            Some(time(10)),
            GcResult::Succeeded,
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
}
