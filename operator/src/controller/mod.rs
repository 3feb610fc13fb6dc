//! The reconcile loop: read what the objects depend on, server-side apply every child, then
//! write the status. Children carry owner references, so deleting a Registry deletes them
//! through Kubernetes' garbage collector and no finalizer is needed.

mod access;
mod children;
mod in_use;
mod keys;
mod optional;
mod storage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::crd::{Registry, RegistryStatus};
use crate::events::Events;
use crate::metrics::Metrics;
use crate::resources::{self, FIELD_MANAGER, KeyKind};
use crate::status::{self, Observed};
use crate::storage::StorageCheck;
use children::{apply, apply_children};
pub use in_use::InUseScope;

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
    /// Where the digests pods run are collected for retention; nowhere when `None`.
    pub in_use: Option<InUseScope>,
    in_use_collector: in_use::Collector,
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
            in_use: None,
            in_use_collector: in_use::Collector::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// With the cluster's service account issuer known.
    #[must_use]
    pub fn with_service_account_issuer(mut self, issuer: Option<String>) -> Self {
        self.service_account_issuer = issuer;
        self
    }

    /// Collecting the digests pods run in `scope`, which retention then keeps.
    #[must_use]
    pub fn with_in_use_digests(mut self, scope: Option<InUseScope>) -> Self {
        self.in_use = scope;
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
        // A changed upload key or storage credentials Secret rolls the pods of the Registries using it.
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
        || resources::credentials_secret(registry).is_some_and(|c| c.name == secret)
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
    let known = registry.status.clone().unwrap_or_default();
    let (observed_deployment, storage, tls, service_monitor, runs, error) = match &applied {
        Ok(applied) => (
            Some(&applied.deployment),
            applied.storage.clone(),
            applied.tls.clone(),
            applied.service_monitor.clone(),
            applied.runs.clone(),
            None,
        ),
        Err(error) => (
            None,
            StorageCheck::unknown("NotChecked", "not checked: the reconcile failed"),
            None,
            None,
            children::LastRuns {
                gc: known.last_garbage_collection.clone(),
                full_gc: known.last_full_garbage_collection.clone(),
                replication: known.last_replication.clone(),
                retention: known.last_retention.clone(),
            },
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
            last_gc: runs.gc,
            last_full_gc: runs.full_gc,
            last_replication: runs.replication,
            last_retention: runs.retention,
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
            let new_replication = status.last_replication.as_ref().map(|r| &r.job)
                != known.last_replication.as_ref().map(|r| &r.job);
            let replicated = status.conditions.iter().find(|c| c.type_ == "Replicated");
            if let Some(condition) = replicated.filter(|_| new_replication) {
                let (type_, reason) = if condition.status == "True" {
                    (EventType::Normal, "Replicated")
                } else {
                    (EventType::Warning, "ReplicationIncomplete")
                };
                publish(
                    &context,
                    &registry,
                    type_,
                    reason,
                    condition.message.clone(),
                )
                .await;
            }
            let new_retention = status.last_retention.as_ref().map(|r| (&r.job, r.result))
                != known.last_retention.as_ref().map(|r| (&r.job, r.result));
            if let Some(run) = status.last_retention.as_ref().filter(|_| new_retention) {
                let (reason, note) = status::retention_event(run);
                let type_ = if run.result == crate::crd::JobResult::Succeeded {
                    EventType::Normal
                } else {
                    EventType::Warning
                };
                publish(&context, &registry, type_, reason, note).await;
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
    let mut fields = serde_json::to_value(status).unwrap_or_default();
    // A merge patch keeps what it leaves out: a field the status no longer has (the last
    // replication, once `spec.replication` is gone) is removed by naming it null.
    let previous = registry.status.as_ref().map(serde_json::to_value);
    if let (Some(Ok(serde_json::Value::Object(previous))), Some(now)) =
        (previous, fields.as_object_mut())
    {
        for key in previous.keys() {
            now.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    let patch = serde_json::json!({ "status": fields });
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
