//! The `Registry` custom resource: the Rust types are the source of truth for `crds/`.
//!
//! Defaults live in the schema (from the serde defaults) so `kubectl get -o yaml` shows what runs,
//! and the rules that can be checked without looking at the cluster are CEL validations, so a
//! wrong `Registry` is refused by `kubectl apply` rather than reported later in its status.

mod access;
pub mod bounds;
mod cache;
pub mod cost;
mod monitoring;
mod notifications;
mod proxy;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use access::{
    AccessRule, Auth, CertIssuerRef, Challenge, IssuerKind, RuleAction, SecretFile, Tls,
    TokenIssuer, WorkloadIdentity,
};
pub use cache::BlobCache;
pub use monitoring::{Monitoring, ServiceMonitor};
pub use notifications::{Endpoint, EventAction, Notifications, SecretKey};
pub use proxy::{Proxy, Upstream};

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
    "has(self.storage.s3) || (self.replicas <= 1 && (!has(self.autoscaling) || self.autoscaling.maxReplicas <= 1))"
).message("more than one replica needs shared storage: use storage.s3"))]
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

    /// Where images are stored: exactly one of `filesystem` or `s3`.
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

    /// Annotations for the ServiceAccount, such as an IAM role for S3 access.
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
}

/// Image pull policy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// HorizontalPodAutoscaler settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("self.minReplicas <= self.maxReplicas")
    .message("minReplicas must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// The fewest pods the autoscaler keeps.
    #[serde(default = "two")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,

    /// The most pods the autoscaler starts.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// Average CPU use, in percent of the request, that the autoscaler aims for.
    #[serde(default = "cpu_target", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: Option<i32>,

    /// Average memory use, in percent of the request, that the autoscaler aims for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_memory_utilization: Option<i32>,
}

/// Where the registry keeps blobs and manifests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("has(self.filesystem) != has(self.s3)")
    .message("set exactly one storage kind: filesystem or s3"))]
pub struct Storage {
    /// A PersistentVolumeClaim: simple, but only for a single replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemStorage>,

    /// An S3 bucket shared by every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
}

/// A volume claimed for the registry's data.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemStorage {
    /// Size of the claim the operator makes.
    #[serde(default = "volume_size")]
    #[schemars(transform = bounds::kubernetes)]
    pub size: Quantity,

    /// Storage class of the claim; the cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NAME))]
    pub storage_class_name: Option<String>,

    /// Use this existing claim instead of making one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NAME))]
    pub existing_claim: Option<String>,

    /// Keep the claim the operator made when the Registry is deleted.
    #[serde(default = "yes")]
    pub retain_on_delete: bool,
}

/// An S3 (or S3-compatible) bucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// The bucket. Immutable: moving a registry to another bucket means copying it.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("bucket is immutable"))]
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,

    /// The bucket's region.
    #[serde(default = "region")]
    #[schemars(length(max = 64))]
    pub region: String,

    /// The S3 endpoint for servers other than AWS, such as `http://garage.storage:3900`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::URL))]
    pub endpoint: Option<String>,

    /// Address the bucket in the path rather than the host name (most self-hosted servers).
    #[serde(default)]
    pub path_style: bool,

    /// A prefix for every key, to share a bucket. Immutable, like the bucket.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("rootPrefix is immutable"))]
    #[schemars(length(max = bounds::KEY_PREFIX))]
    pub root_prefix: String,

    /// Send pulls straight to S3 with presigned URLs.
    #[serde(default)]
    pub redirect: bool,

    /// A Secret with the access key; without one the server uses the pod's identity (IRSA and
    /// the like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<S3Credentials>,
}

/// Where the S3 access key is.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    /// Name of the Secret, in the Registry's namespace.
    #[schemars(length(max = bounds::NAME))]
    pub name: String,

    /// The Secret's key holding the access key ID.
    #[serde(default = "access_key_id_key")]
    #[schemars(length(max = bounds::NAME))]
    pub access_key_id_key: String,

    /// The Secret's key holding the secret access key.
    #[serde(default = "secret_access_key_key")]
    #[schemars(length(max = bounds::NAME))]
    pub secret_access_key_key: String,
}

/// A signing key every replica shares (upload state, tokens).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SigningKey {
    /// An existing Secret with the key under `current` (and, while rotating, the old one under
    /// `previous`). Unset: the operator generates `<name>-upload-key` (or `<name>-token-key`)
    /// once and keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NAME))]
    pub secret_name: Option<String>,

    /// Set to a new value to rotate the generated key: a new key becomes current and the old one
    /// stays accepted as previous, so uploads under way finish and tokens stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NAME))]
    pub rotation: Option<String>,
}

/// The Service in front of the server pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSettings {
    /// ClusterIP, NodePort or LoadBalancer.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// The port the Service listens on.
    #[serde(default = "service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Annotations for the Service, such as a load balancer's settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::string_map::<{ bounds::ANNOTATIONS }, { bounds::ANNOTATION_VALUE }>)]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: service_port(),
            annotations: BTreeMap::new(),
        }
    }
}

/// Kubernetes Service type.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Pod placement.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::string_map::<{ bounds::ANNOTATIONS }, { bounds::LABEL_VALUE }>)]
    pub node_selector: BTreeMap<String, String>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = bounds::kubernetes)]
    pub tolerations: Vec<Toleration>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::kubernetes)]
    pub affinity: Option<Affinity>,

    /// Spread constraints; their label selector may be left out, the server pods' is filled in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = bounds::kubernetes)]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NAME))]
    pub priority_class_name: Option<String>,

    /// Extra annotations on the server pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::string_map::<{ bounds::ANNOTATIONS }, { bounds::ANNOTATION_VALUE }>)]
    pub pod_annotations: BTreeMap<String, String>,
}

/// The garbage-collection CronJob (`stowage gc`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollection {
    /// When to run, in cron syntax.
    #[serde(default = "gc_schedule")]
    #[schemars(length(min = 9, max = bounds::SCHEDULE))]
    pub schedule: String,

    /// Nothing younger than this is deleted, such as `1h` or `30m`.
    #[serde(default = "gc_grace_period")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub grace_period: String,

    /// Also delete manifests that no tag refers to.
    #[serde(default)]
    pub delete_untagged: bool,

    /// Stop scheduling runs.
    #[serde(default)]
    pub suspend: bool,
}

impl Default for GarbageCollection {
    fn default() -> Self {
        Self {
            schedule: gc_schedule(),
            grace_period: gc_grace_period(),
            delete_untagged: false,
            suspend: false,
        }
    }
}

/// Load limits of each server pod. With autoscaling, keep the HPA's CPU target low enough that
/// it adds pods before `maxConcurrentRequests` is reached: shedding is the last resort, for
/// bursts faster than pods start.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Connections served at once per pod; more are answered 503 and closed.
    #[serde(default = "max_connections")]
    #[schemars(range(min = 1))]
    pub max_connections: i32,

    /// Requests handled at once per pod; more are shed at once with 503 and Retry-After.
    #[serde(default = "max_concurrent_requests")]
    #[schemars(range(min = 1))]
    pub max_concurrent_requests: i32,

    /// How long a connection may take to send a request's headers (and idle between requests).
    #[serde(default = "header_read_timeout")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub header_read_timeout: String,

    /// How long a request body may send nothing before the request fails.
    #[serde(default = "body_idle_timeout")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub body_idle_timeout: String,

    /// Requests per second per client (429 beyond), off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate_limit: Option<i32>,

    /// Requests a client may send at once above its rate; twice the rate when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate_limit_burst: Option<i32>,

    /// Proxies (addresses or CIDR ranges) whose X-Forwarded-For names the client, such as the
    /// ingress controller's pod range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::SHORT_LIST), inner(length(max = bounds::ADDRESS)))]
    pub trusted_proxies: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: max_connections(),
            max_concurrent_requests: max_concurrent_requests(),
            header_read_timeout: header_read_timeout(),
            body_idle_timeout: body_idle_timeout(),
            rate_limit: None,
            rate_limit_burst: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The upload-purging CronJob (`stowage purge-uploads`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UploadPurging {
    /// When to run, in cron syntax.
    #[serde(default = "purge_schedule")]
    #[schemars(length(min = 9, max = bounds::SCHEDULE))]
    pub schedule: String,

    /// Upload sessions started longer ago than this are deleted, such as `168h`.
    #[serde(default = "purge_max_age")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub max_age: String,

    /// Stop scheduling runs.
    #[serde(default)]
    pub suspend: bool,
}

impl Default for UploadPurging {
    fn default() -> Self {
        Self {
            schedule: purge_schedule(),
            max_age: purge_max_age(),
            suspend: false,
        }
    }
}

/// Server log level.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// What the operator last saw of the registry.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Progressing, Degraded, StorageReady and GarbageCollected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Server pods that exist.
    #[serde(default)]
    pub replicas: i32,

    /// Server pods ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,

    /// The server pods' label selector, for the scale subresource.
    #[serde(default)]
    pub selector: String,

    /// The registry's address inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The most recent finished garbage collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_garbage_collection: Option<GarbageCollectionRun>,
}

/// One finished `stowage gc` run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollectionRun {
    /// The Job that ran it.
    pub job: String,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Succeeded or Failed.
    pub result: GcResult,
    // Signed, as Kubernetes knows `int64` and not schemars' `uint64` format.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub bytes_freed: i64,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub blobs_deleted: i64,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub manifests_deleted: i64,
}

/// How a garbage collection ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcResult {
    Succeeded,
    Failed,
}

fn max_connections() -> i32 {
    4096
}
fn max_concurrent_requests() -> i32 {
    512
}
fn header_read_timeout() -> String {
    "20s".to_owned()
}
fn body_idle_timeout() -> String {
    "60s".to_owned()
}
fn one() -> i32 {
    1
}
fn two() -> i32 {
    2
}
fn yes() -> bool {
    true
}
#[expect(
    clippy::unnecessary_wraps,
    reason = "serde default of an optional field"
)]
fn cpu_target() -> Option<i32> {
    Some(80)
}
fn volume_size() -> Quantity {
    Quantity("10Gi".to_owned())
}
fn region() -> String {
    "us-east-1".to_owned()
}
fn access_key_id_key() -> String {
    "accessKeyId".to_owned()
}
fn secret_access_key_key() -> String {
    "secretAccessKey".to_owned()
}
fn service_port() -> i32 {
    5000
}
fn gc_schedule() -> String {
    "0 3 * * *".to_owned()
}
fn gc_grace_period() -> String {
    "1h".to_owned()
}
fn purge_schedule() -> String {
    "30 * * * *".to_owned()
}
fn purge_max_age() -> String {
    "168h".to_owned()
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use kube::core::cel::Validator;
    use serde_json::{Value, json};

    use super::Registry;

    fn schema() -> Value {
        super::schema()
    }

    /// Every rule, estimated as the API server estimates it when the CRD is applied: within the
    /// limits, and with a bound on everything a rule can reach.
    #[test]
    fn the_api_server_accepts_the_rules_cost() {
        fn count_rules(value: &Value) -> usize {
            match value {
                Value::Object(map) => {
                    let here = map
                        .get("x-kubernetes-validations")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    here + map.values().map(count_rules).sum::<usize>()
                }
                Value::Array(items) => items.iter().map(count_rules).sum(),
                _ => 0,
            }
        }
        let report = super::cost::estimate(&schema());
        assert_eq!(report.problems(), Vec::<String>::new(), "\n{report}");
        assert_eq!(
            report.rules.len(),
            count_rules(&schema()),
            "every rule is estimated"
        );
        assert!(report.rules.len() >= 10, "\n{report}");
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "reads better at the call sites"
    )]
    fn object(spec: Value) -> Value {
        json!({
            "apiVersion": "stowage.dev/v1alpha1",
            "kind": "Registry",
            "metadata": {"name": "images", "namespace": "team-a"},
            "spec": spec
        })
    }

    /// The messages of the CEL rules `spec` breaks, on create or (with `old`) on update.
    fn broken(spec: Value, old: Option<Value>) -> Vec<String> {
        let old = old.map(object);
        match Validator::new().validate(&schema(), &object(spec), old.as_ref()) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
        }
    }

    #[test]
    fn notification_endpoints_need_their_own_name_and_a_scheme() {
        let spec = |endpoints: Value| json!({"storage": {"s3": {"bucket": "images"}}, "notifications": {"endpoints": endpoints}});
        let scanner =
            json!({"name": "scanner", "url": "https://scanner/events", "ignoredActions": ["pull"]});
        let audit = json!({"name": "audit", "url": "http://audit:8080/"});
        assert!(broken(spec(json!([scanner, audit])), None).is_empty());
        // Names are the keys of the list: the API server refuses a repeated one (see
        // `manifests`' tests, which check it as the API server does).
        let endpoints = &schema()["properties"]["spec"]["properties"]["notifications"]["properties"]
            ["endpoints"];
        assert_eq!(endpoints["x-kubernetes-list-type"], "map");
        assert_eq!(endpoints["x-kubernetes-list-map-keys"], json!(["name"]));
        assert_eq!(
            broken(spec(json!([{"name": "x", "url": "scanner/events"}])), None),
            ["url needs its scheme: https:// or http://"]
        );
    }

    #[test]
    fn proxy_upstreams_need_their_own_prefix_and_a_scheme() {
        let spec = |upstreams: Value| json!({"storage": {"s3": {"bucket": "images"}}, "proxy": {"upstreams": upstreams}});
        let hub = json!({"prefix": "docker.io", "url": "https://registry-1.docker.io"});
        let ghcr =
            json!({"prefix": "ghcr.io", "url": "https://ghcr.io", "credentialsSecret": "ghcr"});
        assert!(broken(spec(json!([hub, ghcr])), None).is_empty());
        let upstreams =
            &schema()["properties"]["spec"]["properties"]["proxy"]["properties"]["upstreams"];
        assert_eq!(upstreams["x-kubernetes-list-type"], "map");
        assert_eq!(upstreams["x-kubernetes-list-map-keys"], json!(["prefix"]));
        let bare = json!({"prefix": "quay.io", "url": "quay.io"});
        assert_eq!(
            broken(spec(json!([bare])), None),
            ["url needs its scheme: https:// or http://"]
        );
    }

    #[test]
    fn access_rules_and_tls_are_checked_on_apply() {
        let s3 = json!({"s3": {"bucket": "images"}});
        let with = |field: &str, value: Value| {
            let mut spec = json!({"storage": s3});
            spec[field] = value;
            spec
        };
        let good = json!({"rules": [{"repositories": ["team-a/**"], "subjects": ["anonymous", "user:alice", "group:system:serviceaccounts:ci"], "actions": ["pull", "*"]}]});
        assert!(broken(with("auth", good), None).is_empty());
        let bad_subject = json!({"rules": [{"repositories": ["**"], "subjects": ["alice"], "actions": ["pull"]}]});
        assert_eq!(
            broken(with("auth", bad_subject), None),
            ["subjects are anonymous, authenticated, user:<name> or group:<name>"]
        );
        let no_keys =
            json!({"tokenIssuer": {"realm": "https://a/token", "service": "s", "issuer": "i"}});
        assert_eq!(
            broken(with("auth", no_keys), None),
            ["set rootCertBundle or jwksUrl: the keys that sign the tokens"]
        );
        let tls_message = ["set exactly one of secretName or issuerRef"];
        assert_eq!(broken(with("tls", json!({})), None), tls_message);
        let both = json!({"secretName": "cert", "issuerRef": {"name": "ca"}});
        assert_eq!(broken(with("tls", both), None), tls_message);
        assert!(broken(with("tls", json!({"issuerRef": {"name": "ca"}})), None).is_empty());
    }

    #[test]
    fn exactly_one_storage_kind() {
        assert_eq!(
            broken(json!({"storage": {"s3": {"bucket": "images"}}}), None),
            Vec::<String>::new()
        );
        assert_eq!(
            broken(json!({"storage": {"filesystem": {}}}), None),
            Vec::<String>::new()
        );
        assert_eq!(
            broken(json!({"storage": {}}), None),
            ["set exactly one storage kind: filesystem or s3"]
        );
        assert_eq!(
            broken(
                json!({"storage": {"filesystem": {}, "s3": {"bucket": "images"}}}),
                None
            ),
            ["set exactly one storage kind: filesystem or s3"]
        );
    }

    #[test]
    fn more_than_one_replica_needs_shared_storage() {
        let message = ["more than one replica needs shared storage: use storage.s3"];
        assert_eq!(
            broken(json!({"replicas": 2, "storage": {"filesystem": {}}}), None),
            message
        );
        assert_eq!(
            broken(
                json!({"autoscaling": {"minReplicas": 1, "maxReplicas": 3}, "storage": {"filesystem": {}}}),
                None
            ),
            message
        );
        assert!(broken(json!({"replicas": 1, "storage": {"filesystem": {}}}), None).is_empty());
        assert!(broken(json!({"replicas": 0, "storage": {"filesystem": {}}}), None).is_empty());
        assert!(
            broken(
                json!({"replicas": 5, "storage": {"s3": {"bucket": "images"}}}),
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn autoscaling_bounds_are_ordered() {
        let s3 = json!({"s3": {"bucket": "images"}});
        assert_eq!(
            broken(
                json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 3}, "storage": s3}),
                None
            ),
            ["minReplicas must not exceed maxReplicas"]
        );
        assert!(
            broken(
                json!({"autoscaling": {"minReplicas": 3, "maxReplicas": 3}, "storage": s3}),
                None
            )
            .is_empty()
        );
        assert_eq!(
            broken(
                json!({"autoscaling": {"maxReplicas": 1}, "storage": s3}),
                None
            ),
            ["minReplicas must not exceed maxReplicas"],
            "the default minimum of 2 applies before the rule"
        );
    }

    #[test]
    fn the_bucket_and_prefix_are_immutable() {
        let old = json!({"storage": {"s3": {"bucket": "images", "rootPrefix": "a"}}});
        assert!(
            broken(
                json!({"replicas": 4, "storage": {"s3": {"bucket": "images", "rootPrefix": "a"}}}),
                Some(old.clone())
            )
            .is_empty()
        );
        assert_eq!(
            broken(
                json!({"storage": {"s3": {"bucket": "other", "rootPrefix": "a"}}}),
                Some(old.clone())
            ),
            ["bucket is immutable"]
        );
        assert_eq!(
            broken(
                json!({"storage": {"s3": {"bucket": "images", "rootPrefix": "b"}}}),
                Some(old)
            ),
            ["rootPrefix is immutable"]
        );
    }

    #[test]
    fn replicas_are_frozen_while_autoscaling() {
        let autoscaled = |replicas: i32| {
            json!({"replicas": replicas, "autoscaling": {"minReplicas": 2, "maxReplicas": 6},
                   "storage": {"s3": {"bucket": "images"}}})
        };
        let fixed =
            |replicas: i32| json!({"replicas": replicas, "storage": {"s3": {"bucket": "images"}}});
        let message = [
            "replicas cannot change while autoscaling is set: the autoscaler owns the replica \
             count; change autoscaling.minReplicas or maxReplicas, or remove autoscaling first",
        ];
        // `kubectl scale` on an autoscaled Registry.
        assert_eq!(broken(autoscaled(5), Some(autoscaled(1))), message);
        // Other changes to an autoscaled Registry, and scaling a fixed one, are fine.
        assert!(broken(autoscaled(1), Some(autoscaled(1))).is_empty());
        assert!(broken(fixed(5), Some(fixed(1))).is_empty());
        // Switching autoscaling on or off may come with a new count.
        assert!(broken(autoscaled(5), Some(fixed(1))).is_empty());
        assert!(broken(fixed(5), Some(autoscaled(1))).is_empty());
    }

    /// Every `format` in the schema is one the API server knows, so installing the CRD warns of
    /// nothing.
    #[test]
    fn only_formats_the_api_server_knows() {
        fn formats(value: &Value, found: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(format)) = map.get("format") {
                        found.push(format.clone());
                    }
                    map.values().for_each(|v| formats(v, found));
                }
                Value::Array(items) => items.iter().for_each(|v| formats(v, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        formats(&schema(), &mut found);
        assert!(!found.is_empty(), "the walk finds formats");
        let known = [
            "int32",
            "int64",
            "float",
            "double",
            "byte",
            "date",
            "date-time",
            "int-or-string",
        ];
        for format in found {
            assert!(
                known.contains(&format.as_str()),
                "unknown format {format:?}"
            );
        }
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: super::RegistrySpec =
            serde_json::from_value(json!({"storage": {"s3": {"bucket": "images"}}})).expect("spec");
        assert_eq!(spec.replicas, 1);
        assert!(spec.deletes_enabled);
        assert_eq!(spec.service.port, 5000);
        assert_eq!(spec.garbage_collection.grace_period, "1h");
        assert_eq!(spec.upload_purging.max_age, "168h");
        let s3 = spec.storage.s3.expect("s3");
        assert_eq!(s3.region, "us-east-1");
        assert!(!s3.path_style);
    }

    #[test]
    fn status_and_scale_subresources() {
        let crd = Registry::crd();
        let version = &crd.spec.versions[0];
        let subresources = version.subresources.as_ref().expect("subresources");
        assert!(subresources.status.is_some());
        let scale = subresources.scale.as_ref().expect("scale");
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Ready", "Replicas", "Endpoint", "Age"]);
        assert_eq!(crd.spec.names.short_names, Some(vec!["reg".to_owned()]));
    }
}
