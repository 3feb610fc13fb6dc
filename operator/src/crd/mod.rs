//! The `Registry` custom resource: the Rust types are the source of truth for `crds/`.
//!
//! Defaults live in the schema (from the serde defaults) so `kubectl get -o yaml` shows what runs,
//! and the rules that can be checked without looking at the cluster are CEL validations, so a
//! wrong `Registry` is refused by `kubectl apply` rather than reported later in its status.

mod access;
pub mod bounds;
mod cache;
pub mod cost;
mod jobs;
mod monitoring;
mod notifications;
mod pods;
mod policies;
mod proxy;
mod replication;
mod scaling;
mod status;
mod storage;
mod ui;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use access::{
    AccessRule, Auth, CertIssuerRef, Challenge, IssuerKind, RuleAction, SecretFile, Tls,
    TokenIssuer, WorkloadIdentity,
};
pub use cache::BlobCache;
pub use jobs::{GarbageCollection, UploadPurging};
pub use monitoring::{Monitoring, ServiceMonitor};
pub use notifications::{Endpoint, EventAction, Notifications, SecretKey};
pub use pods::{
    Limits, LogLevel, PullPolicy, Scheduling, ServiceSettings, ServiceType, SigningKey,
};
pub use policies::{
    ImmutableTags, Policies, Quota, RetentionRule, RetentionRun, SemverKeep, SemverLine,
};
pub use proxy::{Proxy, Upstream};
pub use replication::{DestinationTls, Reconciliation, Replication, ReplicationRule};
pub use scaling::Autoscaling;
pub use status::{
    CollectionMode, GarbageCollectionRun, JobResult, JobRun, NamespaceUsage, QuotaUsage,
    Reconciled, ReconciledRule, RegistryStatus, RetentionOutcome,
};
pub use storage::{
    AzureClientSecret, AzureStorage, AzureWorkloadIdentity, FilesystemStorage, GcsStorage,
    GkeWorkloadIdentity, S3Credentials, S3Storage, Storage,
};
pub use ui::Ui;

/// The `openAPIV3Schema` of the `Registry` CRD, as the API server reads it.
pub fn schema() -> serde_json::Value {
    use kube::CustomResourceExt;
    let crd = Registry::crd();
    crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_default()
}

/// The API group of every Stowage resource.
pub const GROUP: &str = "stowage.dev";

/// A Stowage OCI registry: a Deployment of `stowage serve` on shared storage, with its Service,
/// autoscaler, disruption budget and the CronJobs that collect garbage and purge stale uploads.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn repeats `type_`, which clippy reads as a repeated attribute"
)]
#[kube(
    group = "stowage.dev",
    version = "v1alpha1",
    kind = "Registry",
    namespaced,
    shortname = "reg",
    category = "stowage",
    status = "RegistryStatus",
    derive = "PartialEq",
    doc = "A Stowage OCI registry",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.storage.filesystem) || (self.replicas <= 1 && (!has(self.autoscaling) || self.autoscaling.maxReplicas <= 1))"
).message("more than one replica needs shared storage: use storage.s3, azure or gcs"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.autoscaling) || !has(oldSelf.autoscaling) || self.replicas == oldSelf.replicas"
).message(
    "replicas cannot change while autoscaling is set: the autoscaler owns the replica count; \
     change autoscaling.minReplicas or maxReplicas, or remove autoscaling first"
))]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// The server image. Defaults to the `stowage` image of the operator's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::IMAGE))]
    pub image: Option<String>,

    /// When to pull the image: Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Secrets for pulling the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), transform = bounds::kubernetes)]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// How many server pods run; `kubectl scale` sets it. While `autoscaling` is set the
    /// autoscaler owns the count, and changing this is refused.
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Scale the server with a HorizontalPodAutoscaler instead of a fixed replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// Where images are stored: exactly one of `filesystem`, `s3`, `azure` or `gcs`.
    pub storage: Storage,

    /// The key that signs upload state, so that any replica can continue any upload.
    #[serde(default)]
    pub upload_key: SigningKey,

    /// Who may pull, push and delete. Unset: anyone who can reach the Service may push,
    /// overwrite tags and delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,

    /// HTTPS: a certificate from a Secret, or from cert-manager. Unset: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,

    /// How Prometheus finds the pods' metrics.
    #[serde(default)]
    pub monitoring: Monitoring,

    /// A pull-through cache: repositories below each upstream's prefix mirror that upstream
    /// (read-only here); all others are this registry's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,

    /// Webhooks for registry events (push, pull, delete, mount), in CNCF Distribution's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,

    /// Copy what is pushed here (and, if asked, deleted) to other registries, with referrers,
    /// as it happens and by a scheduled reconciliation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,

    /// The blob-descriptor cache of the pods, optionally shared in Redis. Unset: each pod keeps
    /// the server's default (100000 facts in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_cache: Option<BlobCache>,

    /// How the registry is exposed inside the cluster.
    #[serde(default)]
    pub service: ServiceSettings,

    /// CPU and memory for each server pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::kubernetes)]
    pub resources: Option<ResourceRequirements>,

    /// Where the server pods may run.
    #[serde(default)]
    pub scheduling: Scheduling,

    /// Annotations for the ServiceAccount, such as an IAM role for S3 access. The workload
    /// identity settings of `storage.azure` and `storage.gcs` add their own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::string_map::<{ bounds::ANNOTATIONS }, { bounds::ANNOTATION_VALUE }>)]
    pub service_account_annotations: BTreeMap<String, String>,

    /// Online garbage collection, run by a CronJob.
    #[serde(default)]
    pub garbage_collection: GarbageCollection,

    /// Removal of upload sessions that were never finished, run by a CronJob.
    #[serde(default)]
    pub upload_purging: UploadPurging,

    /// What each server pod takes before it refuses or sheds: connections, requests in flight,
    /// slow clients, and optionally a request rate per client.
    #[serde(default)]
    pub limits: Limits,

    /// Serve pulls only: every push and delete is refused.
    #[serde(default)]
    pub read_only: bool,

    /// Whether clients may delete manifests and blobs through the API.
    #[serde(default = "yes")]
    pub deletes_enabled: bool,

    /// The server's log level.
    #[serde(default)]
    pub log_level: LogLevel,

    /// The web interface under `/ui/`, off unless enabled.
    #[serde(default)]
    pub ui: Ui,

    /// What the registry keeps no matter who asks: immutable tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Policies>,
}

fn one() -> i32 {
    1
}
pub(crate) fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests;
