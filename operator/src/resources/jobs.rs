//! The CronJobs that run `stowage gc`, `stowage purge-uploads` and, with `spec.replication`,
//! `stowage replicate --once`, and with retention rules `stowage retention`, on the registry's
//! storage.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Affinity, PodAffinity, PodAffinityTerm, PodSpec, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::pod::{config_args, pod_labels, pod_spec, stowage_container};
use super::retention::{
    IN_USE_KEY, IN_USE_PATH, InUseDigests, RULES_LABEL, in_use_volume, rules_hash,
};
use super::{Inputs, labels, owned_meta, server_selector};
use crate::crd::Registry;

/// The maintenance tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    GarbageCollection,
    UploadPurging,
    /// The replication reconciliation; only while `spec.replication` is set.
    Replication,
    /// The retention rules of `spec.policies`; only while there are some.
    Retention,
}

impl Task {
    /// The tasks every Registry runs.
    pub const ALWAYS: [Self; 2] = [Self::GarbageCollection, Self::UploadPurging];

    /// The subcommand, which is also the component label and the CronJob's name suffix.
    pub fn command(self) -> &'static str {
        match self {
            Self::GarbageCollection => "gc",
            Self::UploadPurging => "purge-uploads",
            Self::Replication => "replicate",
            Self::Retention => "retention",
        }
    }

    pub fn cron_job_name(self, registry: &Registry) -> String {
        format!("{}-{}", registry.name_any(), self.command())
    }
}

/// Where `gc` and `replicate` write their summaries: the container's termination message, which
/// the operator reads into the Registry's status.
pub const REPORT_PATH: &str = "/dev/termination-log";

/// The CronJob running `task`. Runs never overlap, and a suspended task keeps its CronJob (and
/// its history) with `suspend: true`.
pub fn cron_job(registry: &Registry, inputs: &Inputs, task: Task) -> CronJob {
    let spec = &registry.spec;
    let (schedule, suspend, mut args) = match task {
        Task::GarbageCollection => {
            let gc = &spec.garbage_collection;
            let mut args = vec![
                "--grace-period".to_owned(),
                gc.grace_period.clone(),
                "--full-every".to_owned(),
                gc.full_every.clone(),
            ];
            if gc.delete_untagged {
                args.push("--delete-untagged".to_owned());
            }
            args.extend(["--report-file".to_owned(), REPORT_PATH.to_owned()]);
            (gc.schedule.clone(), gc.suspend, args)
        }
        Task::UploadPurging => {
            let purge = &spec.upload_purging;
            let args = vec!["--older-than".to_owned(), purge.max_age.clone()];
            (purge.schedule.clone(), purge.suspend, args)
        }
        Task::Replication => {
            let reconciliation = spec
                .replication
                .as_ref()
                .map(|r| r.reconciliation.clone())
                .unwrap_or_default();
            let args = vec![
                "--once".to_owned(),
                "--report-file".to_owned(),
                REPORT_PATH.to_owned(),
            ];
            (reconciliation.schedule, reconciliation.suspend, args)
        }
        Task::Retention => {
            let run = spec
                .policies
                .as_ref()
                .map(|p| p.retention_run.clone())
                .unwrap_or_default();
            let mut args = Vec::new();
            if inputs.in_use_digests != InUseDigests::NotCollected {
                args.extend([
                    "--in-use-file".to_owned(),
                    format!("{IN_USE_PATH}/{IN_USE_KEY}"),
                ]);
            }
            let dry = run.dry_run
                || !inputs.retention_previewed
                || inputs.in_use_digests == InUseDigests::TooMany;
            if dry {
                args.push("--dry-run".to_owned());
            }
            args.extend(["--report-file".to_owned(), REPORT_PATH.to_owned()]);
            (run.schedule, run.suspend, args)
        }
    };
    args.extend(["--output".to_owned(), "json".to_owned()]);
    let args = [
        vec![task.command().to_owned()],
        config_args().to_vec(),
        args,
    ]
    .concat();
    let mut container = stowage_container(registry, inputs, task.command(), args);
    container.termination_message_policy = Some("FallbackToLogsOnError".to_owned());

    let mut job_labels = labels(registry, task.command());
    let mut pod = PodSpec {
        restart_policy: Some("Never".to_owned()),
        affinity: same_node_as_server(registry),
        ..pod_spec(registry, container)
    };
    if task == Task::Retention {
        if let Some(hash) = rules_hash(registry) {
            job_labels.insert(RULES_LABEL.to_owned(), hash);
        }
        if inputs.in_use_digests != InUseDigests::NotCollected {
            let (volume, mount) = in_use_volume(registry);
            pod.volumes.get_or_insert_default().push(volume);
            pod.containers[0]
                .volume_mounts
                .get_or_insert_default()
                .push(mount);
        }
    }
    CronJob {
        metadata: owned_meta(registry, task.cron_job_name(registry), task.command()),
        spec: Some(CronJobSpec {
            schedule,
            suspend: Some(suspend),
            concurrency_policy: Some("Forbid".to_owned()),
            starting_deadline_seconds: Some(600),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels(registry, task.command())),
                            annotations: Some(
                                [(
                                    super::CHECKSUM_ANNOTATION.to_owned(),
                                    inputs.checksum.clone(),
                                )]
                                .into(),
                            ),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    }
}

/// A filesystem volume is single-node: the task must run where the server has it mounted.
fn same_node_as_server(registry: &Registry) -> Option<Affinity> {
    registry.spec.storage.filesystem.as_ref()?;
    Some(Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(server_selector(registry)),
                topology_key: "kubernetes.io/hostname".to_owned(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAffinity::default()
        }),
        ..Affinity::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{fs_registry, inputs, registry, s3_registry};
    use super::*;

    fn pod(job: &CronJob) -> &PodSpec {
        job.spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod")
    }

    fn args(job: &CronJob) -> Vec<String> {
        pod(job).containers[0].args.clone().expect("args")
    }

    #[test]
    fn gc_runs_on_schedule_never_overlapping() {
        let job = cron_job(&s3_registry(), &inputs(), Task::GarbageCollection);
        assert_eq!(job.metadata.name.as_deref(), Some("images-gc"));
        let spec = job.spec.as_ref().expect("spec");
        assert_eq!(spec.schedule, "*/15 * * * *");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        assert_eq!(spec.suspend, Some(false));
        assert_eq!(
            args(&job),
            [
                "gc",
                "--config",
                "/etc/stowage/config.toml",
                "--grace-period",
                "1h",
                "--full-every",
                "168h",
                "--report-file",
                "/dev/termination-log",
                "--output",
                "json"
            ]
        );
        assert_eq!(pod(&job).restart_policy.as_deref(), Some("Never"));
        assert!(pod(&job).affinity.is_none());
    }

    #[test]
    fn gc_settings_apply() {
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "bkt"}},
            "garbageCollection": {"schedule": "*/30 * * * *", "fullEvery": "24h", "gracePeriod": "2h", "deleteUntagged": true, "suspend": true}
        }));
        let job = cron_job(&registry, &inputs(), Task::GarbageCollection);
        assert_eq!(
            job.spec.as_ref().map(|s| s.schedule.as_str()),
            Some("*/30 * * * *")
        );
        assert_eq!(job.spec.as_ref().and_then(|s| s.suspend), Some(true));
        let args = args(&job);
        assert!(args.windows(2).any(|w| w == ["--grace-period", "2h"]));
        assert!(args.windows(2).any(|w| w == ["--full-every", "24h"]));
        assert!(args.contains(&"--delete-untagged".to_owned()));
    }

    #[test]
    fn purge_uses_the_maximum_age() {
        let job = cron_job(&s3_registry(), &inputs(), Task::UploadPurging);
        assert_eq!(job.metadata.name.as_deref(), Some("images-purge-uploads"));
        assert_eq!(
            args(&job),
            [
                "purge-uploads",
                "--config",
                "/etc/stowage/config.toml",
                "--older-than",
                "168h",
                "--output",
                "json"
            ]
        );
    }

    #[test]
    fn tasks_share_the_servers_storage() {
        let job = cron_job(&fs_registry(), &inputs(), Task::GarbageCollection);
        let pod = pod(&job);
        assert!(
            pod.volumes
                .as_ref()
                .expect("volumes")
                .iter()
                .any(|v| v.persistent_volume_claim.is_some())
        );
        let term = &pod
            .affinity
            .as_ref()
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("affinity")[0];
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let labels = job
            .spec
            .as_ref()
            .and_then(|s| s.job_template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .expect("labels");
        assert_eq!(labels[super::super::REGISTRY_LABEL], "images");
        assert_eq!(labels["app.kubernetes.io/component"], "gc");
    }
}
