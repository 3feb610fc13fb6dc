//! The Prometheus Operator ServiceMonitor for the registry's Service.

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use super::{SERVER_COMPONENT, owned_meta, selector_labels};
use crate::crd::Registry;

/// The Prometheus Operator's ServiceMonitor resource.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
    ))
}

/// The ServiceMonitor `spec.monitoring.serviceMonitor` asks for: the Service's `metrics` port.
pub fn service_monitor(registry: &Registry) -> Option<DynamicObject> {
    let settings = registry.spec.monitoring.service_monitor.as_ref()?;
    let mut object = DynamicObject::new(&registry.name_any(), &service_monitor_resource());
    object.metadata = owned_meta(registry, registry.name_any(), SERVER_COMPONENT);
    object
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .extend(settings.labels.clone());
    object.data = serde_json::json!({
        "spec": {
            "selector": {"matchLabels": selector_labels(registry, SERVER_COMPONENT)},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": settings.interval}],
        }
    });
    Some(object)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{registry, s3_registry};
    use super::*;

    #[test]
    fn scrapes_the_metrics_port_of_the_server_service() {
        assert!(service_monitor(&s3_registry()).is_none());
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "b"}},
            "monitoring": {"serviceMonitor": {"labels": {"release": "prom"}}}
        }));
        let monitor = service_monitor(&registry).expect("a ServiceMonitor");
        assert_eq!(monitor.labels()["release"], "prom");
        let spec = &monitor.data["spec"];
        assert_eq!(spec["endpoints"][0]["port"], "metrics");
        assert_eq!(spec["endpoints"][0]["interval"], "30s");
        assert_eq!(
            spec["selector"]["matchLabels"]["app.kubernetes.io/component"],
            SERVER_COMPONENT
        );
    }
}
