//! The reconcile loop: read what the objects depend on, server-side apply every child, then
//! write the status. Children carry owner references, so deleting a Registry deletes them
//! through Kubernetes' garbage collector and no finalizer is needed.

mod access;
mod keys;
mod optional;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::crd::{Registry, RegistryStatus};
use crate::events::Events;
use crate::metrics::Metrics;
use crate::resources::{self, ClusterFacts, FIELD_MANAGER, Inputs, KeyKind, Task};
use crate::status::{self, Observed};
use crate::storage::{self, StorageCheck};

/// What the reconcile loop shares.
pub struct Context {
    pub client: Client,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// The server image for Registries that name none.
    pub default_image: String,
    /// The cluster's service account issuer, for workload identity; see
    /// [`crate::cli::service_account_issuer`].
    pub service_account_issuer: Option<String>,
    /// Consecutive failures per Registry, for the error backoff.
    failures: Mutex<HashMap<ObjectRef<Registry>, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, default_image: String) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            events: Events::new(client.clone(), reporter),
            client,
            metrics,
            default_image,
            service_account_issuer: None,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// With the cluster's service account issuer known.
    #[must_use]
    pub fn with_service_account_issuer(mut self, issuer: Option<String>) -> Self {
        self.service_account_issuer = issuer;
        self
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{what} Secret {1:?} does not exist", what = .0.what())]
    KeyMissing(KeyKind, String),
    #[error("{what} Secret {1:?} needs a `current` key of at least 32 bytes", what = .0.what())]
    KeyInvalid(KeyKind, String),
    #[error("{0} Secret {1:?} does not exist")]
    AuthSecretMissing(&'static str, String),
    #[error("the Registry has no namespace")]
    NoNamespace,
}

impl Error {
    /// Whether the API server refused a write because the namespace is being deleted.
    pub fn namespace_terminating(&self) -> bool {
        matches!(self, Self::Kube { source, .. } if crate::events::namespace_terminating(source))
    }

    /// The `reason` label of the failure metric, and the event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "ApiError",
            Self::KeyMissing(KeyKind::Upload, _) => "UploadKeyMissing",
            Self::KeyMissing(KeyKind::Token, _) => "TokenKeyMissing",
            Self::KeyInvalid(KeyKind::Upload, _) => "UploadKeyInvalid",
            Self::KeyInvalid(KeyKind::Token, _) => "TokenKeyInvalid",
            Self::AuthSecretMissing(..) => "AuthSecretMissing",
            Self::NoNamespace => "NoNamespace",
        }
    }
}

fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube {
        action,
        source: Box::new(source),
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Runs the controller until a shutdown signal, for every Registry `registries` can see.
pub async fn run(context: Arc<Context>, registries: Api<Registry>, namespace: Option<&str>) {
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    // Every watch is scoped like the Registries: one namespace, or all.
    macro_rules! scoped_api {
        ($kind:ty) => {
            match namespace {
                Some(ns) => Api::<$kind>::namespaced(context.client.clone(), ns),
                None => Api::<$kind>::all(context.client.clone()),
            }
        };
    }
    let (secrets, jobs) = (scoped_api!(Secret), scoped_api!(Job));
    let controller = Controller::new(registries, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(scoped_api!(Deployment), owned.clone())
        .owns(scoped_api!(Service), owned.clone())
        .owns(scoped_api!(ConfigMap), owned.clone())
        .owns(scoped_api!(HorizontalPodAutoscaler), owned.clone())
        .owns(scoped_api!(PodDisruptionBudget), owned.clone())
        .owns(scoped_api!(CronJob), owned.clone())
        // A finished gc Job updates the status; the Job is the CronJob's, so map it by label.
        .watches(jobs, owned, |job| {
            let registry = job.labels().get(resources::REGISTRY_LABEL).cloned();
            registry.map(|name| {
                let reference = ObjectRef::new(&name);
                match job.namespace() {
                    Some(ns) => reference.within(&ns),
                    None => reference,
                }
            })
        })
        // A changed upload key or S3 credentials Secret rolls the pods of the Registries using it.
        .watches(secrets, watcher::Config::default(), move |secret| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            store
                .state()
                .into_iter()
                .filter(|registry| {
                    registry.namespace() == namespace && uses_secret(registry, &name)
                })
                .map(|registry| ObjectRef::from_obj(&*registry))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(registry = %object, "reconciled"),
                // Deleted while a reconcile of it was queued (its namespace going, say).
                Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                    tracing::debug!(registry = %object, "gone before its reconcile");
                }
                Err(error) => tracing::warn!(%error, "reconcile failed"),
            }
        })
        .await;
}

fn uses_secret(registry: &Registry, secret: &str) -> bool {
    resources::KeyKind::ALL
        .iter()
        .any(|kind| kind.spec(registry).is_some() && kind.secret_name(registry) == secret)
        || access::secrets(registry).iter().any(|name| name == secret)
        || registry
            .spec
            .storage
            .s3
            .as_ref()
            .and_then(|s3| s3.credentials_secret.as_ref())
            .is_some_and(|c| c.name == secret)
}

/// Requeues a failed Registry after 5s, doubling per consecutive failure up to 5 minutes.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature kube's Controller::run calls"
)]
pub fn error_policy(registry: Arc<Registry>, error: &Error, context: Arc<Context>) -> Action {
    let attempts = {
        let mut failures = context
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(ObjectRef::from_obj(&*registry)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = Duration::from_secs(5)
        .saturating_mul(2_u32.saturating_pow(attempts.saturating_sub(1).min(6)))
        .min(Duration::from_secs(300));
    tracing::warn!(registry = %registry.name_any(), %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Brings every child of `registry` to what its spec asks for, then writes its status.
pub async fn reconcile(registry: Arc<Registry>, context: Arc<Context>) -> Result<Action, Error> {
    let _timer = context.metrics.reconcile_started();
    if registry.metadata.deletion_timestamp.is_some() {
        // Owner references take the children away; nothing to do.
        return Ok(Action::await_change());
    }
    let namespace = registry.namespace().ok_or(Error::NoNamespace)?;
    let client = context.client.clone();
    let applied = apply_children(&registry, &context, &namespace).await;
    let (observed_deployment, storage, tls, service_monitor, last_gc, error) = match &applied {
        Ok(applied) => (
            Some(&applied.deployment),
            applied.storage.clone(),
            applied.tls.clone(),
            applied.service_monitor.clone(),
            applied.last_gc.clone(),
            None,
        ),
        Err(error) => (
            None,
            StorageCheck::unknown("NotChecked", "not checked: the reconcile failed"),
            None,
            None,
            registry
                .status
                .as_ref()
                .and_then(|s| s.last_garbage_collection.clone()),
            Some(error.to_string()),
        ),
    };
    let status = status::compute(
        &registry,
        Observed {
            deployment: observed_deployment,
            storage: &storage,
            tls: tls.as_ref(),
            service_monitor: service_monitor.as_ref(),
            last_gc,
            error,
            now: Time(Timestamp::now()),
        },
    );
    if let Err(error) = &applied
        && error.namespace_terminating()
    {
        return Ok(leave_to_garbage_collector(&registry, error));
    }
    let status_written = write_status(&client, &registry, &namespace, &status).await;

    match applied {
        Ok(applied) => {
            status_written?;
            if let Ok(mut failures) = context.failures.lock() {
                failures.remove(&ObjectRef::from_obj(&*registry));
            }
            let generation_changed = registry.status.as_ref().and_then(|s| s.observed_generation)
                != registry.metadata.generation;
            if generation_changed {
                publish(
                    &context,
                    &registry,
                    EventType::Normal,
                    "Reconciled",
                    format!(
                        "applied generation {}",
                        registry.metadata.generation.unwrap_or_default()
                    ),
                )
                .await;
            }
            for (reason, note) in applied.events {
                publish(&context, &registry, EventType::Normal, reason, note).await;
            }
            if storage.is_unavailable() {
                publish(
                    &context,
                    &registry,
                    EventType::Warning,
                    storage.reason,
                    storage.message,
                )
                .await;
            }
            let settling = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Progressing" && c.status == "True");
            Ok(Action::requeue(Duration::from_secs(if settling {
                15
            } else {
                300
            })))
        }
        Err(error) => {
            let recorded = publish(
                &context,
                &registry,
                EventType::Warning,
                error.reason(),
                error.to_string(),
            )
            .await;
            if !recorded {
                // Its Secrets went first, so what is missing is no news either.
                return Ok(leave_to_garbage_collector(&registry, &error));
            }
            context.metrics.reconcile_failed(error.reason());
            Err(error)
        }
    }
}

/// A namespace being deleted takes the Registry's children away and refuses anything new: what
/// fails then is no news and no reason to try again.
fn leave_to_garbage_collector(registry: &Registry, error: &Error) -> Action {
    tracing::debug!(registry = %registry.name_any(), %error, "the namespace is being deleted; leaving the Registry to the garbage collector");
    Action::await_change()
}

/// What applying the children found out.
struct Applied {
    deployment: Deployment,
    storage: StorageCheck,
    /// Whether the certificate is there, when `spec.tls` asks for one.
    tls: Option<status::Check>,
    /// Whether the ServiceMonitor was made, when the spec asks for one.
    service_monitor: Option<status::Check>,
    last_gc: Option<crate::crd::GarbageCollectionRun>,
    /// Events worth telling: `(reason, note)`.
    events: Vec<(&'static str, String)>,
}

async fn apply_children(
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
    for task in Task::ALL {
        apply(
            client,
            namespace,
            &resources::cron_job(registry, &inputs, task),
        )
        .await?;
    }
    let last_gc = last_garbage_collection(client, registry, namespace).await?;
    let storage = match settings.problem {
        Some(problem) => problem,
        None => observe_storage(client, registry, namespace, claim.as_ref()).await?,
    };
    Ok(Applied {
        deployment,
        storage,
        tls,
        service_monitor,
        last_gc,
        events,
    })
}

/// Server-side applies `object` with the operator's field manager, taking over fields others
/// changed (the spec is the truth), and returns what the API server made of it.
async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, Error>
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
async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<(), Error>
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

/// What the pods' storage settings refer to, as found in the cluster.
struct StorageSettings {
    /// What is wrong with them, if anything is.
    problem: Option<StorageCheck>,
    /// The S3 credentials Secret, for the checksum that rolls the pods when it changes.
    credentials: Option<Secret>,
    /// The existing claim a filesystem Registry mounts.
    existing_claim: Option<PersistentVolumeClaim>,
}

/// Checks that what the pods will mount and read exists: the S3 credentials Secret with the
/// keys the pods read, or the existing claim to mount.
async fn check_storage_settings(
    client: &Client,
    registry: &Registry,
    namespace: &str,
) -> Result<StorageSettings, Error> {
    let fine = StorageSettings {
        problem: None,
        credentials: None,
        existing_claim: None,
    };
    let problem = |reason, message: String| StorageSettings {
        problem: Some(StorageCheck::unavailable(reason, message)),
        credentials: None,
        existing_claim: None,
    };
    if let Some(fs) = &registry.spec.storage.filesystem {
        if fs.existing_claim.is_none() {
            return Ok(fine);
        }
        let claim = resources::data_claim_name(registry);
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        let found = api
            .get_opt(&claim)
            .await
            .map_err(kube_error(format!("reading PersistentVolumeClaim {claim}")))?;
        return Ok(match found {
            Some(found) => StorageSettings {
                existing_claim: Some(found),
                ..fine
            },
            None => problem(
                "ClaimMissing",
                format!("PersistentVolumeClaim {claim} does not exist"),
            ),
        });
    }
    let Some(s3) = &registry.spec.storage.s3 else {
        return Ok(problem("NoStorage", "no storage kind is set".to_owned()));
    };
    let Some(credentials) = &s3.credentials_secret else {
        return Ok(fine);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(&credentials.name)
        .await
        .map_err(kube_error(format!("reading Secret {}", credentials.name)))?;
    let Some(secret) = secret else {
        return Ok(problem(
            "CredentialsMissing",
            format!("S3 credentials Secret {} does not exist", credentials.name),
        ));
    };
    for key in [
        &credentials.access_key_id_key,
        &credentials.secret_access_key_key,
    ] {
        if keys::secret_value_len(&secret, key).is_none() {
            return Ok(StorageSettings {
                credentials: Some(secret),
                ..problem(
                    "CredentialsMissing",
                    format!(
                        "S3 credentials Secret {} has no key {key}",
                        credentials.name
                    ),
                )
            });
        }
    }
    Ok(StorageSettings {
        credentials: Some(secret),
        ..fine
    })
}

/// Whether storage works for the pods: the claim must be bound, and then the server pods'
/// readiness (their probe reads and writes storage) tells.
async fn observe_storage(
    client: &Client,
    registry: &Registry,
    namespace: &str,
    claim: Option<&PersistentVolumeClaim>,
) -> Result<StorageCheck, Error> {
    if let Some(problem) = claim.and_then(storage::claim_problem) {
        return Ok(problem);
    }
    let described = match &registry.spec.storage.s3 {
        Some(s3) => format!("bucket {}", s3.bucket),
        None => format!("volume claim {}", resources::data_claim_name(registry)),
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&resources::selector_string(registry)))
        .await
        .map_err(kube_error("listing server pods"))?;
    Ok(storage::from_pods(
        &pods.items,
        &described,
        &Time(Timestamp::now()),
    ))
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

/// The newest finished gc run; the pods of a Job already in the status are not read again.
async fn last_garbage_collection(
    client: &Client,
    registry: &Registry,
    namespace: &str,
) -> Result<Option<crate::crd::GarbageCollectionRun>, Error> {
    let known = registry
        .status
        .as_ref()
        .and_then(|s| s.last_garbage_collection.clone());
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{}={},app.kubernetes.io/component={}",
        resources::REGISTRY_LABEL,
        registry.name_any(),
        Task::GarbageCollection.command()
    );
    let list = jobs
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_error("listing gc Jobs"))?;
    let Some((job, finished_at, result)) = status::latest_finished_job(&list.items) else {
        return Ok(known);
    };
    if known
        .as_ref()
        .is_some_and(|k| k.job == job.name_any() && k.result == result)
    {
        return Ok(known);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
        .await
        .map_err(kube_error("listing gc pods"))?;
    Ok(Some(status::gc_run(job, finished_at, result, &pods.items)))
}

/// Writes the status when it changed (an unchanged status is not written, so a status write
/// does not feed the watch that triggered it).
async fn write_status(
    client: &Client,
    registry: &Registry,
    namespace: &str,
    status: &RegistryStatus,
) -> Result<(), Error> {
    if registry.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<Registry> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &registry.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_error("writing the status"))?;
    Ok(())
}

/// Publishes an event about `registry`; a failure to record it is logged, never fatal. `false`
/// when the namespace is being deleted.
async fn publish(
    context: &Context,
    registry: &Registry,
    type_: EventType,
    reason: &str,
    note: String,
) -> bool {
    context
        .events
        .publish(&registry.object_ref(&()), type_, reason, note)
        .await
}
