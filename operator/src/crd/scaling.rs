//! `spec.autoscaling`: a HorizontalPodAutoscaler instead of a fixed replica count.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

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

fn two() -> i32 {
    2
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "serde default of an optional field"
)]
fn cpu_target() -> Option<i32> {
    Some(80)
}
