//! The HorizontalPodAutoscaler and the PodDisruptionBudget.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{SERVER_COMPONENT, owned_meta, server_selector};
use crate::crd::Registry;

/// An autoscaler for the server Deployment, when `spec.autoscaling` is set.
pub fn horizontal_pod_autoscaler(registry: &Registry) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = registry.spec.autoscaling.as_ref()?;
    let utilization = |resource: &str, percent: i32| MetricSpec {
        type_: "Resource".to_owned(),
        resource: Some(ResourceMetricSource {
            name: resource.to_owned(),
            target: MetricTarget {
                type_: "Utilization".to_owned(),
                average_utilization: Some(percent),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    let mut metrics: Vec<MetricSpec> = [
        autoscaling
            .target_cpu_utilization
            .map(|p| utilization("cpu", p)),
        autoscaling
            .target_memory_utilization
            .map(|p| utilization("memory", p)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if metrics.is_empty() {
        metrics.push(utilization("cpu", 80));
    }
    Some(HorizontalPodAutoscaler {
        metadata: owned_meta(registry, registry.name_any(), SERVER_COMPONENT),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: registry.name_any(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

/// A budget of one pod down at a time, when there is more than one pod to keep serving.
pub fn pod_disruption_budget(registry: &Registry) -> Option<PodDisruptionBudget> {
    let fewest = registry
        .spec
        .autoscaling
        .as_ref()
        .map_or(registry.spec.replicas, |a| a.min_replicas);
    if fewest <= 1 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: owned_meta(registry, registry.name_any(), SERVER_COMPONENT),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(server_selector(registry)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{fs_registry, registry, s3_registry};
    use super::*;

    #[test]
    fn no_autoscaler_without_autoscaling() {
        assert!(horizontal_pod_autoscaler(&s3_registry()).is_none());
    }

    #[test]
    fn the_autoscaler_targets_the_deployment() {
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "bkt"}},
            "autoscaling": {"minReplicas": 3, "maxReplicas": 12, "targetMemoryUtilization": 70}
        }));
        let spec = horizontal_pod_autoscaler(&registry)
            .expect("hpa")
            .spec
            .expect("spec");
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "images");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(3), 12));
        let targets: Vec<_> = spec
            .metrics
            .expect("metrics")
            .into_iter()
            .map(|m| {
                let r = m.resource.expect("resource");
                (r.name, r.target.average_utilization)
            })
            .collect();
        assert_eq!(
            targets,
            [
                ("cpu".to_owned(), Some(80)),
                ("memory".to_owned(), Some(70))
            ]
        );
    }

    #[test]
    fn a_budget_only_for_more_than_one_pod() {
        assert!(pod_disruption_budget(&fs_registry()).is_none());
        let pdb = pod_disruption_budget(&s3_registry()).expect("pdb");
        assert_eq!(
            pdb.spec.expect("spec").max_unavailable,
            Some(IntOrString::Int(1))
        );
        let autoscaled_from_one = registry(serde_json::json!({
            "replicas": 5,
            "storage": {"s3": {"bucket": "bkt"}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 4}
        }));
        assert!(pod_disruption_budget(&autoscaled_from_one).is_none());
    }
}
