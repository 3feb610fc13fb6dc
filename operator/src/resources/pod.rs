//! What every Stowage pod shares, whether it serves or runs `gc` and `purge-uploads`: the image,
//! the config and key volumes, the storage credentials and a locked-down security context.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use kube::ResourceExt;

use super::Inputs;
use super::config::{CONFIG_FILE, config_map_name};
use super::keys::upload_key_secret_name;
use super::storage::{credentials_env, credentials_volume, data_claim_name, identity_labels};
use crate::crd::Registry;

/// The port the server listens on inside the pod.
pub const SERVER_PORT: i32 = 5000;
/// The port of the server's Prometheus `/metrics`.
pub const METRICS_PORT: i32 = 9090;
/// Where the config file is mounted.
pub const CONFIG_PATH: &str = "/etc/stowage";
/// Where the upload key files are mounted.
pub const UPLOAD_KEY_PATH: &str = "/etc/stowage/upload-key";
/// Where filesystem storage is mounted.
pub const DATA_PATH: &str = "/var/lib/stowage";
/// The non-root user the images run as.
const USER_ID: i64 = 65532;

/// `--config` pointing at the mounted config file.
pub(super) fn config_args() -> [String; 2] {
    [
        "--config".to_owned(),
        format!("{CONFIG_PATH}/{CONFIG_FILE}"),
    ]
}

/// A container running `stowage` with `args`, with the config, key and data mounted.
pub(super) fn stowage_container(
    registry: &Registry,
    inputs: &Inputs,
    name: &str,
    args: Vec<String>,
) -> Container {
    let mut mounts = vec![
        VolumeMount {
            name: "config".to_owned(),
            mount_path: CONFIG_PATH.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "upload-key".to_owned(),
            mount_path: UPLOAD_KEY_PATH.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        },
    ];
    if registry.spec.storage.filesystem.is_some() {
        mounts.push(VolumeMount {
            name: "data".to_owned(),
            mount_path: DATA_PATH.to_owned(),
            ..VolumeMount::default()
        });
    }
    mounts.extend(credentials_volume(registry).map(|(_, mount)| mount));
    // Every command that reads the config may replicate: the server delivers, the
    // reconciliation and retention send.
    mounts.extend(super::replication::replication_volumes(registry).1);
    Container {
        name: name.to_owned(),
        image: Some(inputs.image.clone()),
        image_pull_policy: registry
            .spec
            .image_pull_policy
            .map(|p| p.as_str().to_owned()),
        args: Some(args),
        env: Some(credentials_env(registry)),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The labels of a Stowage pod of `component`: the objects' own, and what workload identity
/// asks of pods.
pub(super) fn pod_labels(registry: &Registry, component: &str) -> BTreeMap<String, String> {
    let mut labels = super::labels(registry, component);
    labels.extend(identity_labels(registry));
    labels
}

/// The volumes [`stowage_container`] mounts.
fn volumes(registry: &Registry) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(registry),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "upload-key".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(upload_key_secret_name(registry)),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    if registry.spec.storage.filesystem.is_some() {
        volumes.push(Volume {
            name: "data".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: data_claim_name(registry),
                read_only: Some(false),
            }),
            ..Volume::default()
        });
    }
    volumes.extend(credentials_volume(registry).map(|(volume, _)| volume));
    volumes.extend(super::replication::replication_volumes(registry).0);
    volumes
}

/// A pod running `container`, with what every Stowage pod shares: its identity (without an API
/// token), volumes, security context, pull secrets and node placement.
pub(super) fn pod_spec(registry: &Registry, container: Container) -> PodSpec {
    let spec = &registry.spec;
    PodSpec {
        service_account_name: Some(registry.name_any()),
        automount_service_account_token: Some(false),
        containers: vec![container],
        volumes: Some(volumes(registry)),
        security_context: Some(pod_security_context()),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.clone()),
        node_selector: (!spec.scheduling.node_selector.is_empty())
            .then(|| spec.scheduling.node_selector.clone()),
        tolerations: (!spec.scheduling.tolerations.is_empty())
            .then(|| spec.scheduling.tolerations.clone()),
        priority_class_name: spec.scheduling.priority_class_name.clone(),
        ..PodSpec::default()
    }
}

/// Non-root, with the data volume writable by the image's user.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(USER_ID),
        run_as_group: Some(USER_ID),
        fs_group: Some(USER_ID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}
