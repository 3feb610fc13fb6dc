//! Pure builders: each turns a `Registry` (and what the operator read from the cluster) into one
//! object to server-side apply. Nothing here talks to the API server, so every object the
//! operator writes can be unit tested field by field.

mod access;
mod cache;
mod config;
mod jobs;
mod keys;
mod monitoring;
mod notifications;
mod pod;
mod proxy;
mod replication;
mod retention;
mod scaling;
mod service;
mod storage;
mod workload;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::Registry;

pub use access::{
    CLUSTER_JWKS_URL, ClusterFacts, POLICY_FILE, certificate, certificate_resource, policy,
    policy_secret, policy_secret_name, service_names, tls_secret_name,
    workload_identity_without_issuer,
};
pub use cache::{blob_cache_secret, blob_cache_table, blob_cache_volumes};
pub use config::{CONFIG_FILE, config_map, server_config};
pub use jobs::{Task, cron_job};
pub use keys::{
    CURRENT_KEY, KeyKind, PREVIOUS_KEY, ROTATION_ANNOTATION, generate_key, new_key_secret,
    rotated_key_secret, upload_key_secret_name,
};
pub use monitoring::{service_monitor, service_monitor_resource};
pub use notifications::{notification_secrets, notification_volumes, notifications_table};
pub use pod::{DATA_PATH, METRICS_PORT, SERVER_PORT, UPLOAD_KEY_PATH};
pub use proxy::{proxy_secrets, proxy_table, proxy_volumes};
pub use replication::{replication_secrets, replication_tables, replication_volumes};
pub use retention::{
    IN_USE_KEY, IN_USE_PATH, InUseDigests, RULES_LABEL, digest_of_image_id, in_use,
    in_use_config_map, in_use_config_map_name, last_seen, rules_hash, rules_previewed,
};
pub use scaling::{horizontal_pod_autoscaler, pod_disruption_budget};
pub use service::{endpoint, service, service_account};
pub use storage::{
    CredentialsSecret, credentials_secret, data_claim_name, persistent_volume_claim,
    storage_description,
};
pub use workload::{
    CHECKSUM_ANNOTATION, REPLICAS_HANDOVER_MANAGER, deployment, replicas_handover,
    replicas_owned_by_others,
};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "stowage-operator";

/// Label naming the Registry an object belongs to; on Jobs, so their results find their way back.
pub const REGISTRY_LABEL: &str = "stowage.dev/registry";

/// What the operator read from the cluster that the objects depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// The server image, with the operator's default filled in.
    pub image: String,
    /// The upload key Secret carries a previous key to accept during rotation.
    pub has_previous_key: bool,
    /// SHA-256 of the config and of every Secret the pods read, so a change rolls the pods.
    pub checksum: String,
    /// Whether the operator collects the digests pods run into [`in_use_config_map`], which
    /// the retention job then keeps.
    pub in_use_digests: InUseDigests,
    /// The retention rules as they are have run once (dry or not), so the next run deletes.
    pub retention_previewed: bool,
}

/// Labels on everything the operator makes for `registry`; `component` tells its parts apart.
pub fn labels(registry: &Registry, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(registry, component);
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        FIELD_MANAGER.to_owned(),
    );
    labels.insert(
        "app.kubernetes.io/version".to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    );
    labels
}

/// The labels that select `component`'s pods; they never change, as a Deployment's selector can't.
pub fn selector_labels(registry: &Registry, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "stowage".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), registry.name_any()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
        (REGISTRY_LABEL.to_owned(), registry.name_any()),
    ])
}

/// The server pods' selector, as the scale subresource and `kubectl get -l` want it.
pub fn selector_string(registry: &Registry) -> String {
    selector_labels(registry, SERVER_COMPONENT)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Component label of the server pods.
pub const SERVER_COMPONENT: &str = "registry";

fn server_selector(registry: &Registry) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(registry, SERVER_COMPONENT)),
        ..LabelSelector::default()
    }
}

/// Metadata for a child object named `name`, owned (and garbage collected) by `registry`.
fn owned_meta(registry: &Registry, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: registry.namespace(),
        labels: Some(labels(registry, component)),
        owner_references: Some(vec![owner_reference(registry)]),
        ..ObjectMeta::default()
    }
}

/// The controller reference that makes Kubernetes delete a child with its Registry; a
/// foreground deletion of the Registry waits for the child to go (`blockOwnerDeletion`, which
/// the API server lets the operator set through its `registries/finalizers` permission).
pub fn owner_reference(registry: &Registry) -> OwnerReference {
    OwnerReference {
        api_version: Registry::api_version(&()).into_owned(),
        kind: Registry::kind(&()).into_owned(),
        name: registry.name_any(),
        uid: registry.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use kube::api::ObjectMeta;

    use crate::crd::{Registry, RegistrySpec};

    /// A Registry as the API server would hand it over: defaults applied, uid set.
    pub fn registry(spec: serde_json::Value) -> Registry {
        let spec: RegistrySpec = serde_json::from_value(spec).expect("valid spec");
        let mut registry = Registry::new("images", spec);
        registry.metadata = ObjectMeta {
            name: Some("images".to_owned()),
            namespace: Some("team-a".to_owned()),
            uid: Some("4b1d4a2e-0000-4000-8000-000000000001".to_owned()),
            generation: Some(3),
            ..ObjectMeta::default()
        };
        registry
    }

    pub fn s3_registry() -> Registry {
        registry(serde_json::json!({
            "replicas": 3,
            "storage": {"s3": {
                "bucket": "images",
                "endpoint": "http://garage.storage:3900",
                "pathStyle": true,
                "credentialsSecret": {"name": "s3-creds"}
            }}
        }))
    }

    pub fn fs_registry() -> Registry {
        registry(serde_json::json!({"storage": {"filesystem": {"size": "50Gi"}}}))
    }

    pub fn inputs() -> super::Inputs {
        super::Inputs {
            image: "registry.example/stowage:1.2.3".to_owned(),
            has_previous_key: false,
            checksum: "abc123".to_owned(),
            in_use_digests: super::InUseDigests::NotCollected,
            retention_previewed: false,
        }
    }
}

/// A Secret mounted whole (never `subPath`, so the kubelet's updates reach the files), read-only
/// and readable by the server's group only.
pub(crate) fn whole_secret(
    volume: String,
    secret: &str,
    mount_path: String,
) -> (
    k8s_openapi::api::core::v1::Volume,
    k8s_openapi::api::core::v1::VolumeMount,
) {
    use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};
    let mount = VolumeMount {
        name: volume.clone(),
        mount_path,
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let volume = Volume {
        name: volume,
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    (volume, mount)
}

#[cfg(test)]
mod tests {
    use super::fixtures::s3_registry;
    use super::*;

    #[test]
    fn children_are_owned_by_their_registry() {
        let registry = s3_registry();
        let owner = owner_reference(&registry);
        assert_eq!(owner.kind, "Registry");
        assert_eq!(owner.api_version, "stowage.dev/v1alpha1");
        assert_eq!(owner.uid, "4b1d4a2e-0000-4000-8000-000000000001");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn the_selector_names_the_registry_and_component() {
        assert_eq!(
            selector_string(&s3_registry()),
            "app.kubernetes.io/component=registry,app.kubernetes.io/instance=images,\
             app.kubernetes.io/name=stowage,stowage.dev/registry=images"
        );
    }
}
