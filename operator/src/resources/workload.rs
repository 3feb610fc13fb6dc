//! The server Deployment.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::access::server_volumes;
use super::pod::{config_args, pod_labels, pod_spec, stowage_container};
use super::{Inputs, SERVER_COMPONENT, owned_meta, server_selector};
use crate::crd::Registry;

/// The pod template annotation carrying [`Inputs::checksum`].
pub const CHECKSUM_ANNOTATION: &str = "stowage.dev/config-checksum";

/// The field manager that holds `spec.replicas` between the operator and the autoscaler.
///
/// Server-side apply resets a field to its default when its only owner stops applying it, so
/// an operator that simply dropped `replicas` when autoscaling is switched on would scale the
/// Deployment down to one pod until the autoscaler acts. As the Kubernetes documentation on
/// transferring ownership (migrating to a HorizontalPodAutoscaler) prescribes, the current count
/// is first applied under this separate manager, which then never applies again: the field
/// stays, and the autoscaler's updates take it over.
pub const REPLICAS_HANDOVER_MANAGER: &str = "stowage-operator-replicas-handover";

/// The Deployment running `stowage serve`. With autoscaling on, `replicas` is left out so that
/// the HorizontalPodAutoscaler alone owns it.
pub fn deployment(registry: &Registry, inputs: &Inputs) -> Deployment {
    let spec = &registry.spec;
    let mut container = stowage_container(
        registry,
        inputs,
        "stowage",
        [vec!["serve".to_owned()], config_args().to_vec()].concat(),
    );
    container.ports = Some(vec![
        ContainerPort {
            name: Some("http".to_owned()),
            container_port: super::SERVER_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some("metrics".to_owned()),
            container_port: super::METRICS_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        },
    ]);
    // `/readyz` answers at once from the health the server's storage probe keeps (every 2s),
    // so a short timeout is safe: a replica that loses storage leaves the Service within about
    // 6s. `/healthz` never depends on storage, so a storage outage never restarts pods.
    let scheme = if spec.tls.is_some() { "HTTPS" } else { "HTTP" };
    container.readiness_probe = Some(probe("/readyz", scheme, 3, 2, 1));
    container.liveness_probe = Some(probe("/healthz", scheme, 10, 6, 2));
    let (mut volumes, mut mounts) = server_volumes(registry);
    let (proxy_volumes, proxy_mounts) = super::proxy::proxy_volumes(registry);
    volumes.extend(proxy_volumes);
    mounts.extend(proxy_mounts);
    let (event_volumes, event_mounts) = super::notifications::notification_volumes(registry);
    volumes.extend(event_volumes);
    mounts.extend(event_mounts);
    let (cache_volumes, cache_mounts) = super::cache::blob_cache_volumes(registry);
    volumes.extend(cache_volumes);
    mounts.extend(cache_mounts);
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .extend(mounts);
    container.resources.clone_from(&spec.resources);

    let mut annotations = spec.scheduling.pod_annotations.clone();
    annotations.insert(CHECKSUM_ANNOTATION.to_owned(), inputs.checksum.clone());

    let topology_spread_constraints = (!spec.scheduling.topology_spread_constraints.is_empty())
        .then(|| {
            spec.scheduling
                .topology_spread_constraints
                .iter()
                .cloned()
                .map(|mut constraint| {
                    constraint
                        .label_selector
                        .get_or_insert_with(|| server_selector(registry));
                    constraint
                })
                .collect()
        });

    Deployment {
        metadata: owned_meta(registry, registry.name_any(), SERVER_COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: spec.autoscaling.is_none().then_some(spec.replicas),
            selector: server_selector(registry),
            strategy: Some(strategy(registry)),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(registry, SERVER_COMPONENT)),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some({
                    let mut pod = PodSpec {
                        affinity: spec.scheduling.affinity.clone(),
                        topology_spread_constraints,
                        // The server drains for up to 30s after SIGTERM.
                        termination_grace_period_seconds: Some(40),
                        ..pod_spec(registry, container)
                    };
                    pod.volumes.get_or_insert_with(Vec::new).extend(volumes);
                    pod
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Whether a field manager other than the operator's own owns the Deployment's `spec.replicas`:
/// the autoscaler, the hand-over manager, or someone who scaled it by hand.
pub fn replicas_owned_by_others(deployment: &Deployment) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() != Some(super::FIELD_MANAGER))
        .filter_map(|entry| entry.fields_v1.as_ref())
        .any(|fields| {
            fields
                .0
                .get("f:spec")
                .and_then(|spec| spec.get("f:replicas"))
                .is_some()
        })
}

/// The apply configuration, for [`REPLICAS_HANDOVER_MANAGER`], that owns only the Deployment's
/// `spec.replicas`.
pub fn replicas_handover(registry: &Registry, replicas: i32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": registry.name_any(), "namespace": registry.namespace()},
        "spec": {"replicas": replicas}
    })
}

/// Surge one pod at a time on shared storage; a single-writer volume must be released first.
fn strategy(registry: &Registry) -> DeploymentStrategy {
    if registry.spec.storage.filesystem.is_some() {
        return DeploymentStrategy {
            type_: Some("Recreate".to_owned()),
            rolling_update: None,
        };
    }
    DeploymentStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

fn probe(path: &str, scheme: &str, period: i32, failures: i32, timeout: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            scheme: Some(scheme.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(timeout),
        ..Probe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{fs_registry, inputs, registry, s3_registry};
    use super::super::selector_labels;
    use super::*;

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    #[test]
    fn serves_with_the_mounted_config_and_probes() {
        let deployment = deployment(&s3_registry(), &inputs());
        let spec = deployment.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let container = &pod(&deployment).containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("registry.example/stowage:1.2.3")
        );
        assert_eq!(
            container.args.as_deref(),
            Some(
                &[
                    "serve".to_owned(),
                    "--config".to_owned(),
                    "/etc/stowage/config.toml".to_owned()
                ][..]
            )
        );
        let readiness = container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref());
        assert_eq!(readiness.and_then(|g| g.path.as_deref()), Some("/readyz"));
        let readiness = container.readiness_probe.as_ref().expect("readiness");
        assert_eq!(
            (
                readiness.period_seconds,
                readiness.timeout_seconds,
                readiness.failure_threshold
            ),
            (Some(3), Some(1), Some(2)),
            "out of the Service within about 6s of losing storage"
        );
        let liveness = container
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref());
        assert_eq!(liveness.and_then(|g| g.path.as_deref()), Some("/healthz"));
        assert_eq!(
            container.ports.as_ref().expect("ports")[0].container_port,
            5000
        );
        assert_eq!(
            spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
            Some("RollingUpdate")
        );
    }

    #[test]
    fn the_checksum_rolls_the_pods() {
        let a = deployment(&s3_registry(), &inputs());
        let b = deployment(
            &s3_registry(),
            &Inputs {
                checksum: "def456".to_owned(),
                ..inputs()
            },
        );
        let annotation = |d: &Deployment| {
            d.spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .expect("annotations")[CHECKSUM_ANNOTATION]
                .clone()
        };
        assert_eq!(annotation(&a), "abc123");
        assert_eq!(annotation(&b), "def456");
    }

    #[test]
    fn autoscaling_leaves_replicas_to_the_autoscaler() {
        let registry = registry(serde_json::json!({
            "replicas": 4,
            "autoscaling": {"maxReplicas": 10},
            "storage": {"s3": {"bucket": "bkt"}}
        }));
        let deployment = deployment(&registry, &inputs());
        assert_eq!(deployment.spec.expect("spec").replicas, None);
    }

    #[test]
    fn replicas_held_by_anyone_but_the_operator() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
        let entry = |manager: &str, fields: serde_json::Value| ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        };
        let replicas = serde_json::json!({"f:spec": {"f:replicas": {}}});
        let owned_by = |entries: Vec<ManagedFieldsEntry>| {
            replicas_owned_by_others(&Deployment {
                metadata: ObjectMeta {
                    managed_fields: Some(entries),
                    ..ObjectMeta::default()
                },
                ..Deployment::default()
            })
        };
        assert!(!owned_by(vec![]));
        assert!(!owned_by(vec![entry(
            super::super::FIELD_MANAGER,
            replicas.clone()
        )]));
        assert!(!owned_by(vec![
            entry(super::super::FIELD_MANAGER, replicas.clone()),
            entry(
                "kubectl",
                serde_json::json!({"f:metadata": {"f:labels": {}}})
            )
        ]));
        assert!(owned_by(vec![
            entry(
                super::super::FIELD_MANAGER,
                serde_json::json!({"f:spec": {}})
            ),
            entry("kube-controller-manager", replicas.clone())
        ]));
        assert!(owned_by(vec![entry(REPLICAS_HANDOVER_MANAGER, replicas)]));
    }

    #[test]
    fn the_handover_owns_only_replicas() {
        let handover = replicas_handover(&s3_registry(), 4);
        assert_eq!(handover["spec"], serde_json::json!({"replicas": 4}));
        assert_eq!(handover["metadata"]["name"], "images");
        assert_eq!(handover["kind"], "Deployment");
    }

    #[test]
    fn s3_credentials_come_from_the_secret() {
        let deployment = deployment(&s3_registry(), &inputs());
        let env = pod(&deployment).containers[0].env.clone().expect("env");
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["STOWAGE_S3_ACCESS_KEY_ID", "STOWAGE_S3_SECRET_ACCESS_KEY"]
        );
        let reference = env[1]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("ref");
        assert_eq!(
            (reference.name.as_str(), reference.key.as_str()),
            ("s3-creds", "secretAccessKey")
        );
    }

    #[test]
    fn filesystem_storage_mounts_the_claim_and_recreates() {
        let deployment = deployment(&fs_registry(), &inputs());
        let pod = pod(&deployment);
        let claim = pod
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .find_map(|v| v.persistent_volume_claim.as_ref())
            .expect("claim");
        assert_eq!(claim.claim_name, "images-data");
        let mounts = pod.containers[0].volume_mounts.as_ref().expect("mounts");
        assert!(mounts.iter().any(|m| m.mount_path == "/var/lib/stowage"));
        assert_eq!(
            deployment
                .spec
                .as_ref()
                .and_then(|s| s.strategy.as_ref())
                .and_then(|s| s.type_.as_deref()),
            Some("Recreate")
        );
        assert!(pod.containers[0].env.as_ref().is_some_and(Vec::is_empty));
    }

    #[test]
    fn scheduling_and_resources_reach_the_pod() {
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "bkt"}},
            "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}},
            "imagePullPolicy": "IfNotPresent",
            "scheduling": {
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "registry", "effect": "NoSchedule"}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}],
                "priorityClassName": "platform",
                "podAnnotations": {"example.com/scrape": "true"}
            }
        }));
        let deployment = deployment(&registry, &inputs());
        let pod = pod(&deployment);
        assert_eq!(pod.node_selector.as_ref().expect("selector")["disk"], "ssd");
        assert_eq!(
            pod.tolerations.as_ref().expect("tolerations")[0]
                .key
                .as_deref(),
            Some("dedicated")
        );
        let spread = &pod.topology_spread_constraints.as_ref().expect("spread")[0];
        assert_eq!(
            spread
                .label_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(selector_labels(&registry, SERVER_COMPONENT)),
            "the spread selector is filled in"
        );
        assert_eq!(pod.priority_class_name.as_deref(), Some("platform"));
        let container = &pod.containers[0];
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .expect("requests")["cpu"]
                .0,
            "250m"
        );
        let annotations = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .expect("annotations");
        assert_eq!(annotations["example.com/scrape"], "true");
    }

    #[test]
    fn pods_run_as_non_root_with_a_read_only_root() {
        let deployment = deployment(&s3_registry(), &inputs());
        let pod = pod(&deployment);
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
            Some(true)
        );
        let container = pod.containers[0]
            .security_context
            .as_ref()
            .expect("context");
        assert_eq!(container.read_only_root_filesystem, Some(true));
        assert_eq!(container.allow_privilege_escalation, Some(false));
    }
}
