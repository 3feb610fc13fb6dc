//! How the server pods run: their image, keys, Service, placement, load limits and logs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration, TopologySpreadConstraint};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

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

fn service_port() -> i32 {
    5000
}
