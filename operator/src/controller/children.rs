//! Applying a Registry's children: every object it needs, made or updated by server-side apply,
//! after what the pods cannot start without has been checked.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::storage::{check_storage_settings, observe_storage};
use super::{Context, Error, access, is_not_found, keys, kube_error};
use crate::crd::{GarbageCollectionRun, JobResult, JobRun, Reconciled, Registry, RetentionOutcome};
use crate::resources::{self, ClusterFacts, FIELD_MANAGER, InUseDigests, Inputs, KeyKind, Task};
use crate::status;
use crate::storage::StorageCheck;

/// What applying the children found out.
pub(super) struct Applied {
    pub(super) deployment: Deployment,
    pub(super) storage: StorageCheck,
    /// Whether the certificate is there, when `spec.tls` asks for one.
    pub(super) tls: Option<status::Check>,
    /// Whether the ServiceMonitor was made, when the spec asks for one.
    pub(super) service_monitor: Option<status::Check>,
    pub(super) runs: LastRuns,
    /// Events worth telling: `(reason, note)`.
    pub(super) events: Vec<(&'static str, String)>,
}

/// The most recent finished run of each maintenance task that reports.
#[derive(Clone, Default)]
pub(super) struct LastRuns {
    pub(super) gc: Option<GarbageCollectionRun>,
    pub(super) full_gc: Option<GarbageCollectionRun>,
    pub(super) replication: Option<Reconciled>,
    pub(super) retention: Option<RetentionOutcome>,
}

pub(super) async fn apply_children(
    registry: &Registry,
    context: &Context,
    namespace: &str,
) -> Result<Applied, Error> {
    let client = &context.client;
    let mut events = Vec::new();
    // What the pods cannot start without is checked before anything is made.
    access::check_auth_secrets(client, registry, namespace).await?;
    let upload_key =
        keys::signing_key(client, registry, namespace, KeyKind::Upload, &mut events).await?;
    let token_key = match KeyKind::Token.spec(registry) {
        Some(_) => {
            Some(keys::signing_key(client, registry, namespace, KeyKind::Token, &mut events).await?)
        }
        None => None,
    };
    let settings = check_storage_settings(client, registry, namespace).await?;

    let facts = ClusterFacts {
        previous_upload_key: upload_key.has_previous,
        previous_token_key: token_key.as_ref().is_some_and(|key| key.has_previous),
        service_account_issuer: context.service_account_issuer.clone(),
    };
    if resources::workload_identity_without_issuer(registry, &facts) {
        events.push((
            "WorkloadIdentityUnavailable",
            "the cluster's service account issuer is unknown (the operator's own token names \
             none): set spec.auth.workloadIdentity.issuer"
                .to_owned(),
        ));
    }
    let config = resources::server_config(registry, &facts);
    let retains = resources::rules_hash(registry).is_some();
    let in_use_digests = match (&context.in_use, retains) {
        (Some(scope), true) => {
            context
                .in_use_collector
                .record(client, registry, namespace, scope)
                .await?
        }
        _ => InUseDigests::NotCollected,
    };
    let known = registry.status.clone().unwrap_or_default();
    let gc = last_run(
        client,
        registry,
        namespace,
        Task::GarbageCollection,
        known.last_garbage_collection,
        status::gc_run,
    )
    .await?;
    let runs = LastRuns {
        full_gc: status::last_full_gc(gc.as_ref(), known.last_full_garbage_collection),
        gc,
        replication: if registry.spec.replication.is_some() {
            let (task, read) = (Task::Replication, status::replication_run);
            last_run(
                client,
                registry,
                namespace,
                task,
                known.last_replication,
                read,
            )
            .await?
        } else {
            None
        },
        retention: if retains {
            let (task, read) = (Task::Retention, status::retention_run);
            last_run(
                client,
                registry,
                namespace,
                task,
                known.last_retention,
                read,
            )
            .await?
        } else {
            None
        },
    };
    let secrets_read = std::iter::once(&upload_key.secret)
        .chain(token_key.as_ref().map(|key| &key.secret))
        .chain(settings.credentials.as_ref());
    let inputs = Inputs {
        image: registry
            .spec
            .image
            .clone()
            .unwrap_or_else(|| context.default_image.clone()),
        has_previous_key: upload_key.has_previous,
        checksum: checksum(&config, secrets_read),
        in_use_digests,
        retention_previewed: resources::rules_previewed(registry, runs.retention.as_ref()),
    };
    if let Some(policy) = resources::policy_secret(registry) {
        apply(client, namespace, &policy).await?;
    }
    let tls = access::apply_tls(client, registry, namespace).await?;
    let service_monitor = access::apply_service_monitor(client, registry, namespace).await?;

    apply(client, namespace, &resources::service_account(registry)).await?;
    apply(client, namespace, &resources::config_map(registry, config)).await?;
    let claim = match resources::persistent_volume_claim(registry) {
        Some(claim) => Some(apply::<PersistentVolumeClaim>(client, namespace, &claim).await?),
        None => settings.existing_claim,
    };
    let deployment = apply_deployment(client, registry, namespace, &inputs).await?;
    apply(client, namespace, &resources::service(registry)).await?;
    match resources::horizontal_pod_autoscaler(registry) {
        Some(hpa) => drop(apply(client, namespace, &hpa).await?),
        None => delete::<HorizontalPodAutoscaler>(client, namespace, &registry.name_any()).await?,
    }
    match resources::pod_disruption_budget(registry) {
        Some(pdb) => drop(apply(client, namespace, &pdb).await?),
        None => delete::<PodDisruptionBudget>(client, namespace, &registry.name_any()).await?,
    }
    for task in Task::ALWAYS {
        apply(
            client,
            namespace,
            &resources::cron_job(registry, &inputs, task),
        )
        .await?;
    }
    let replication_job = Task::Replication.cron_job_name(registry);
    if registry.spec.replication.is_some() {
        let job = resources::cron_job(registry, &inputs, Task::Replication);
        apply(client, namespace, &job).await?;
    } else {
        delete::<CronJob>(client, namespace, &replication_job).await?;
    }
    let retention_job = Task::Retention.cron_job_name(registry);
    if retains {
        let job = resources::cron_job(registry, &inputs, Task::Retention);
        apply(client, namespace, &job).await?;
    } else {
        delete::<CronJob>(client, namespace, &retention_job).await?;
    }
    if in_use_digests == InUseDigests::NotCollected {
        let name = resources::in_use_config_map_name(registry);
        delete::<ConfigMap>(client, namespace, &name).await?;
    }

    let storage = match settings.problem {
        Some(problem) => problem,
        None => observe_storage(client, registry, namespace, claim.as_ref()).await?,
    };
    Ok(Applied {
        deployment,
        storage,
        tls,
        service_monitor,
        runs,
        events,
    })
}

/// Server-side applies `object` with the operator's field manager, taking over fields others
/// changed (the spec is the truth), and returns what the API server made of it.
pub(super) async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(kube_error(format!("applying {} {name}", K::kind(&()))))
}

/// Applies the server Deployment. With autoscaling on, `spec.replicas` is the autoscaler's: a
/// new Deployment is created at `minReplicas`, and while the operator still owns the field alone
/// (just created, or autoscaling just switched on), the current count is first handed to
/// [`resources::REPLICAS_HANDOVER_MANAGER`] so that leaving the field out does not reset the
/// Deployment to one pod.
async fn apply_deployment(
    client: &Client,
    registry: &Registry,
    namespace: &str,
    inputs: &Inputs,
) -> Result<Deployment, Error> {
    let mut deployment = resources::deployment(registry, inputs);
    if let Some(autoscaling) = &registry.spec.autoscaling {
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let name = registry.name_any();
        let existing = api
            .get_opt(&name)
            .await
            .map_err(kube_error(format!("reading Deployment {name}")))?;
        match existing {
            None => {
                if let Some(spec) = deployment.spec.as_mut() {
                    spec.replicas = Some(autoscaling.min_replicas);
                }
            }
            Some(existing) if !resources::replicas_owned_by_others(&existing) => {
                let current = existing.spec.as_ref().and_then(|s| s.replicas);
                let replicas = current
                    .unwrap_or(autoscaling.min_replicas)
                    .max(autoscaling.min_replicas)
                    .min(autoscaling.max_replicas);
                api.patch(
                    &name,
                    &PatchParams::apply(resources::REPLICAS_HANDOVER_MANAGER).force(),
                    &Patch::Apply(resources::replicas_handover(registry, replicas)),
                )
                .await
                .map_err(kube_error(format!(
                    "handing the replicas of Deployment {name} to the autoscaler"
                )))?;
            }
            Some(_) => {}
        }
    }
    apply(client, namespace, &deployment).await
}

/// Deletes a child the spec no longer asks for; gone already is fine.
pub(super) async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(kube_error(format!("deleting {} {name}", K::kind(&())))(
            error,
        )),
    }
}

/// SHA-256 over the config and every Secret value the pods read at start-up (not the ones they
/// read again when they change: htpasswd, policy, certificate).
fn checksum<'a>(config: &str, secrets: impl Iterator<Item = &'a Secret>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(config.as_bytes());
    for secret in secrets {
        for (key, value) in secret.data.iter().flatten() {
            hasher.update((key.len() as u64).to_be_bytes());
            hasher.update(key.as_bytes());
            hasher.update((value.0.len() as u64).to_be_bytes());
            hasher.update(&value.0);
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The most recently finished Job of `task`, with its pods, unless it is `known` already (the
/// same Job with the same result): the status then keeps what it has, and no pods are listed.
async fn latest_run(
    client: &Client,
    registry: &Registry,
    namespace: &str,
    task: Task,
    known: Option<(&str, JobResult)>,
) -> Result<Option<(Job, Option<Time>, JobResult, Vec<Pod>)>, Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{}={},app.kubernetes.io/component={}",
        resources::REGISTRY_LABEL,
        registry.name_any(),
        task.command()
    );
    let list = jobs
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_error(format!("listing {} Jobs", task.command())))?;
    let Some((job, finished_at, result)) = status::latest_finished_job(&list.items) else {
        return Ok(None);
    };
    if known == Some((job.name_any().as_str(), result)) {
        return Ok(None);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
        .await
        .map_err(kube_error(format!("listing {} pods", task.command())))?;
    Ok(Some((job.clone(), finished_at, result, pods.items)))
}

/// A task's last run: the newest finished Job's, as `read` makes it out from its pods, or
/// `known` (what the status holds) when that Job is the one it records.
async fn last_run<T: JobRun>(
    client: &Client,
    registry: &Registry,
    namespace: &str,
    task: Task,
    known: Option<T>,
    read: fn(&Job, Option<Time>, JobResult, &[Pod]) -> T,
) -> Result<Option<T>, Error> {
    let key = known.as_ref().map(|k| (k.job(), k.result()));
    Ok(
        match latest_run(client, registry, namespace, task, key).await? {
            Some((job, at, result, pods)) => Some(read(&job, at, result, &pods)),
            None => known,
        },
    )
}
