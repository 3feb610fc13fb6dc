//! `spec.monitoring`: how Prometheus finds the server pods' metrics.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// Monitoring of the server pods, which always serve `/metrics` on their `metrics` port.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// A Prometheus Operator ServiceMonitor for the registry's Service, made when that CRD is
    /// installed (the `ServiceMonitorReady` condition says when it is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor: Option<ServiceMonitor>,
}

/// The ServiceMonitor's settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitor {
    /// How often Prometheus scrapes.
    #[serde(default = "interval")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: String,
    /// Labels on the ServiceMonitor, such as the one your Prometheus selects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::string_map::<{ bounds::ANNOTATIONS }, { bounds::LABEL_VALUE }>)]
    pub labels: BTreeMap<String, String>,
}

fn interval() -> String {
    "30s".to_owned()
}
