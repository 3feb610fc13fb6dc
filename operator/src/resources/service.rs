//! The Service in front of the server pods, and their ServiceAccount.

use k8s_openapi::api::core::v1::{Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{SERVER_COMPONENT, owned_meta, selector_labels};
use crate::crd::Registry;

/// The Service, named like the Registry, so the registry is `<name>.<namespace>.svc`.
pub fn service(registry: &Registry) -> Service {
    let settings = &registry.spec.service;
    let mut metadata = owned_meta(registry, registry.name_any(), SERVER_COMPONENT);
    if !settings.annotations.is_empty() {
        metadata.annotations = Some(settings.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(settings.type_.as_str().to_owned()),
            selector: Some(selector_labels(registry, SERVER_COMPONENT)),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".to_owned()),
                    port: settings.port,
                    target_port: Some(IntOrString::String("http".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    app_protocol: Some("http".to_owned()),
                    ..ServicePort::default()
                },
                // Prometheus scrapes each pod through the Service's endpoints.
                ServicePort {
                    name: Some("metrics".to_owned()),
                    port: super::METRICS_PORT,
                    target_port: Some(IntOrString::String("metrics".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    app_protocol: Some("http".to_owned()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Where clients inside the cluster reach the registry (with `https://` when it serves HTTPS).
pub fn endpoint(registry: &Registry) -> String {
    let scheme = if registry.spec.tls.is_some() {
        "https://"
    } else {
        ""
    };
    format!(
        "{scheme}{}.{}.svc:{}",
        registry.name_any(),
        registry.namespace().unwrap_or_default(),
        registry.spec.service.port
    )
}

/// The pods' identity; annotations let a cloud grant it storage access (IRSA, workload
/// identity), and the storage's workload identity settings add their own over the user's.
pub fn service_account(registry: &Registry) -> ServiceAccount {
    let mut metadata = owned_meta(registry, registry.name_any(), SERVER_COMPONENT);
    let mut annotations = registry.spec.service_account_annotations.clone();
    annotations.extend(super::storage::identity_annotations(registry));
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
    }
    ServiceAccount {
        metadata,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{registry, s3_registry};
    use super::*;

    #[test]
    fn the_service_selects_the_server_pods() {
        let service = service(&s3_registry());
        let spec = service.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(
            spec.selector.expect("selector")["app.kubernetes.io/component"],
            "registry"
        );
        let port = &spec.ports.expect("ports")[0];
        assert_eq!(port.port, 5000);
        assert_eq!(
            port.target_port,
            Some(IntOrString::String("http".to_owned()))
        );
        assert_eq!(endpoint(&s3_registry()), "images.team-a.svc:5000");
    }

    #[test]
    fn service_settings_apply() {
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "bkt"}},
            "service": {"type": "LoadBalancer", "port": 443, "annotations": {"lb.example/internal": "true"}},
            "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/registry"}
        }));
        let service = service(&registry);
        assert_eq!(
            service.metadata.annotations.expect("annotations")["lb.example/internal"],
            "true"
        );
        let spec = service.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.expect("ports")[0].port, 443);
        assert_eq!(endpoint(&registry), "images.team-a.svc:443");
        let account = service_account(&registry);
        assert_eq!(account.metadata.name.as_deref(), Some("images"));
        assert_eq!(
            account.metadata.annotations.expect("annotations")["eks.amazonaws.com/role-arn"],
            "arn:aws:iam::1:role/registry"
        );
    }
}
