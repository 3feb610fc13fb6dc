//! What `spec.auth` and `spec.tls` add to the server: the `[auth]` and `[tls]` tables of its
//! config, the policy Secret, the volumes it reads them from, and the cert-manager Certificate.
//!
//! The htpasswd Secret, the policy and the certificate are mounted as whole directories (never
//! `subPath`), so the kubelet's updates reach the files and the server applies them without a
//! restart.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, KeyToPath, ProjectedVolumeSource, Secret, SecretVolumeSource,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use toml::{Table, Value};

use super::keys::{CURRENT_KEY, KeyKind, PREVIOUS_KEY};
use super::{SERVER_COMPONENT, owned_meta};
use crate::crd::{IssuerKind, Registry};

/// The policy file's name in its Secret and in the pods.
pub const POLICY_FILE: &str = "policy.toml";
const HTPASSWD_DIR: &str = "/etc/stowage/auth/htpasswd";
const HTPASSWD_FILE: &str = "htpasswd";
const POLICY_DIR: &str = "/etc/stowage/auth/policy";
const TOKEN_KEY_DIR: &str = "/etc/stowage/auth/token-key";
const ISSUER_DIR: &str = "/etc/stowage/auth/issuer";
const ISSUER_FILE: &str = "ca.crt";
/// The pod's own service account token and the cluster CA, to fetch the issuer's keys.
const KUBERNETES_DIR: &str = "/var/run/secrets/stowage/kubernetes";
/// Where the API server serves the service account issuer's keys, inside the cluster.
pub const CLUSTER_JWKS_URL: &str = "https://kubernetes.default.svc/openid/v1/jwks";
const TLS_DIR: &str = "/etc/stowage/tls";

/// What the config depends on beyond the spec, as found in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// The upload key Secret carries a previous key.
    pub previous_upload_key: bool,
    /// The token key Secret carries a previous key.
    pub previous_token_key: bool,
    /// The cluster's service account issuer, as the operator's own token names it.
    pub service_account_issuer: Option<String>,
}

/// The policy Secret: rules and groups, as the server reads them.
pub fn policy_secret_name(registry: &Registry) -> String {
    format!("{}-auth-policy", registry.name_any())
}

/// The server's policy file for `spec.auth`; without rules, authenticated callers may do
/// everything (the server's own default, written out so the file is never empty).
pub fn policy(registry: &Registry) -> Option<String> {
    let auth = registry.spec.auth.as_ref()?;
    let mut file = Table::new();
    if !auth.groups.is_empty() {
        let groups = auth
            .groups
            .iter()
            .map(|(group, members)| (group.clone(), strings(members)))
            .collect();
        file.insert("groups".to_owned(), Value::Table(groups));
    }
    let rules: Vec<Value> = if auth.rules.is_empty() {
        vec![rule(
            &["**".to_owned()],
            &["authenticated".to_owned()],
            &["*"],
        )]
    } else {
        auth.rules
            .iter()
            .map(|r| {
                let actions: Vec<&str> = r.actions.iter().map(|a| a.as_str()).collect();
                rule(&r.repositories, &r.subjects, &actions)
            })
            .collect()
    };
    file.insert("rules".to_owned(), Value::Array(rules));
    Some(format!(
        "# Written by stowage-operator from spec.auth of Registry {}/{}.\n{file}",
        registry.namespace().unwrap_or_default(),
        registry.name_any()
    ))
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::from).collect())
}

fn rule(repositories: &[String], subjects: &[String], actions: &[&str]) -> Value {
    let mut table = Table::new();
    table.insert("repositories".to_owned(), strings(repositories));
    table.insert("subjects".to_owned(), strings(subjects));
    table.insert(
        "actions".to_owned(),
        Value::Array(actions.iter().map(|a| Value::from(*a)).collect()),
    );
    Value::Table(table)
}

/// The Secret holding [`policy`], applied by the operator.
pub fn policy_secret(registry: &Registry) -> Option<Secret> {
    let text = policy(registry)?;
    Some(Secret {
        metadata: owned_meta(registry, policy_secret_name(registry), SERVER_COMPONENT),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            POLICY_FILE.to_owned(),
            ByteString(text.into_bytes()),
        )])),
        ..Secret::default()
    })
}

/// The `[auth]` table of the server config.
pub fn auth_table(registry: &Registry, facts: &ClusterFacts) -> Option<Table> {
    let auth = registry.spec.auth.as_ref()?;
    let mut table = Table::new();
    let mut set = |key: &str, value: Value| {
        table.insert(key.to_owned(), value);
    };
    if auth.htpasswd.is_some() {
        set("htpasswd", format!("{HTPASSWD_DIR}/{HTPASSWD_FILE}").into());
    }
    set("policy", format!("{POLICY_DIR}/{POLICY_FILE}").into());
    set("anonymous-pull", auth.anonymous_pull.into());
    set("challenge", auth.challenge.as_str().into());
    if let Some(service) = &auth.service {
        set("service", service.clone().into());
    }
    if let Some(realm) = &auth.realm {
        set("realm", realm.clone().into());
    }
    set(
        "token-secret-file",
        format!("{TOKEN_KEY_DIR}/{CURRENT_KEY}").into(),
    );
    if facts.previous_token_key {
        set(
            "token-secret-previous-file",
            format!("{TOKEN_KEY_DIR}/{PREVIOUS_KEY}").into(),
        );
    }
    if let Some(issuer) = &auth.token_issuer {
        set("issuer-realm", issuer.realm.clone().into());
        set("issuer-service", issuer.service.clone().into());
        set("issuer-name", issuer.issuer.clone().into());
        if issuer.root_cert_bundle.is_some() {
            set(
                "issuer-root-cert-bundle",
                format!("{ISSUER_DIR}/{ISSUER_FILE}").into(),
            );
        }
        if let Some(url) = &issuer.jwks_url {
            set("issuer-jwks", url.clone().into());
        }
        if !issuer.algorithms.is_empty() {
            set("issuer-algorithms", strings(&issuer.algorithms));
        }
    }
    if let Some(identity) = &auth.workload_identity
        && let Some(issuer) = identity
            .issuer
            .clone()
            .or_else(|| facts.service_account_issuer.clone())
    {
        set("kubernetes-issuer", issuer.into());
        set("kubernetes-audience", identity.audience.clone().into());
        set("kubernetes-jwks-url", CLUSTER_JWKS_URL.into());
        set(
            "kubernetes-ca-file",
            format!("{KUBERNETES_DIR}/ca.crt").into(),
        );
        set(
            "kubernetes-token-file",
            format!("{KUBERNETES_DIR}/token").into(),
        );
    }
    Some(table)
}

/// Whether workload identity is asked for but no issuer is known: not configured then.
pub fn workload_identity_without_issuer(registry: &Registry, facts: &ClusterFacts) -> bool {
    registry
        .spec
        .auth
        .as_ref()
        .and_then(|auth| auth.workload_identity.as_ref())
        .is_some_and(|identity| identity.issuer.is_none() && facts.service_account_issuer.is_none())
}

/// The Secret the server's certificate is in: the one named, or the one cert-manager fills.
pub fn tls_secret_name(registry: &Registry) -> Option<String> {
    let tls = registry.spec.tls.as_ref()?;
    Some(
        tls.secret_name
            .clone()
            .unwrap_or_else(|| format!("{}-tls", registry.name_any())),
    )
}

/// The `[tls]` table of the server config.
pub fn tls_table(registry: &Registry) -> Option<Table> {
    registry.spec.tls.as_ref()?;
    let mut table = Table::new();
    table.insert("cert-file".to_owned(), format!("{TLS_DIR}/tls.crt").into());
    table.insert("key-file".to_owned(), format!("{TLS_DIR}/tls.key").into());
    Some(table)
}

/// The volumes and mounts the server container needs for `spec.auth` and `spec.tls`.
pub fn server_volumes(registry: &Registry) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut add = |name: &str, path: &str, volume: Volume| {
        volumes.push(Volume {
            name: name.to_owned(),
            ..volume
        });
        mounts.push(VolumeMount {
            name: name.to_owned(),
            mount_path: path.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    };
    let secret = |name: String, item: Option<(String, &str)>| Volume {
        secret: Some(SecretVolumeSource {
            secret_name: Some(name),
            default_mode: Some(0o440),
            items: item.map(|(key, path)| {
                vec![KeyToPath {
                    key,
                    path: path.to_owned(),
                    ..KeyToPath::default()
                }]
            }),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    if let Some(auth) = &registry.spec.auth {
        if let Some(htpasswd) = &auth.htpasswd {
            let key = htpasswd
                .key
                .clone()
                .unwrap_or_else(|| HTPASSWD_FILE.to_owned());
            add(
                "htpasswd",
                HTPASSWD_DIR,
                secret(htpasswd.name.clone(), Some((key, HTPASSWD_FILE))),
            );
        }
        add(
            "auth-policy",
            POLICY_DIR,
            secret(policy_secret_name(registry), None),
        );
        add(
            "token-key",
            TOKEN_KEY_DIR,
            secret(KeyKind::Token.secret_name(registry), None),
        );
        if let Some(bundle) = auth
            .token_issuer
            .as_ref()
            .and_then(|issuer| issuer.root_cert_bundle.as_ref())
        {
            let key = bundle.key.clone().unwrap_or_else(|| ISSUER_FILE.to_owned());
            add(
                "token-issuer",
                ISSUER_DIR,
                secret(bundle.name.clone(), Some((key, ISSUER_FILE))),
            );
        }
        if auth.workload_identity.is_some() {
            add("kubernetes", KUBERNETES_DIR, cluster_access());
        }
    }
    if let Some(name) = tls_secret_name(registry) {
        add("tls", TLS_DIR, secret(name, None));
    }
    (volumes, mounts)
}

/// The pod's own short-lived service account token (for the API server's audience) and the
/// cluster CA: what fetching the issuer's keys from the API server takes. The pods mount no
/// API token otherwise.
fn cluster_access() -> Volume {
    Volume {
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".to_owned(),
                        expiration_seconds: Some(3600),
                        audience: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_owned(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".to_owned(),
                            path: "ca.crt".to_owned(),
                            ..KeyToPath::default()
                        }]),
                        optional: Some(false),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
        }),
        ..Volume::default()
    }
}

/// cert-manager's Certificate resource.
pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cert-manager.io",
        "v1",
        "Certificate",
    ))
}

/// The names clients in the cluster reach the Service by.
pub fn service_names(registry: &Registry) -> Vec<String> {
    let (name, namespace) = (
        registry.name_any(),
        registry.namespace().unwrap_or_default(),
    );
    vec![
        name.clone(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ]
}

/// The Certificate cert-manager issues into [`tls_secret_name`], when `spec.tls.issuerRef` is
/// set.
pub fn certificate(registry: &Registry) -> Option<DynamicObject> {
    let tls = registry.spec.tls.as_ref()?;
    let issuer = tls.issuer_ref.as_ref()?;
    let mut names = service_names(registry);
    names.extend(tls.dns_names.iter().cloned());
    let mut object = DynamicObject::new(&registry.name_any(), &certificate_resource());
    object.metadata = owned_meta(registry, registry.name_any(), SERVER_COMPONENT);
    object.data = serde_json::json!({
        "spec": {
            "secretName": tls_secret_name(registry),
            "dnsNames": names,
            "issuerRef": {
                "name": issuer.name,
                "kind": match issuer.kind {
                    IssuerKind::Issuer => "Issuer",
                    IssuerKind::ClusterIssuer => "ClusterIssuer",
                },
                "group": issuer.group,
            },
            "privateKey": {"rotationPolicy": "Always"},
        }
    });
    Some(object)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::registry;
    use super::*;

    fn with_auth() -> Registry {
        registry(serde_json::json!({
            "storage": {"s3": {"bucket": "bkt"}},
            "auth": {
                "htpasswd": {"name": "accounts"},
                "groups": {"team-a": ["alice"]},
                "rules": [{"repositories": ["team-a/**"], "subjects": ["group:team-a"], "actions": ["pull", "push"]}],
                "anonymousPull": true,
                "challenge": "basic",
                "workloadIdentity": {},
                "tokenIssuer": {"realm": "https://auth.example/token", "service": "reg", "issuer": "auth",
                                "rootCertBundle": {"name": "issuer-ca", "key": "bundle.pem"}}
            },
            "tls": {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}, "dnsNames": ["registry.example.com"]}
        }))
    }

    #[test]
    fn the_policy_is_the_spec_s_rules_or_the_default() {
        let text = policy(&with_auth()).expect("a policy");
        let parsed: Table = text.parse().expect("TOML");
        assert_eq!(parsed["groups"]["team-a"][0].as_str(), Some("alice"));
        assert_eq!(
            parsed["rules"][0]["subjects"][0].as_str(),
            Some("group:team-a")
        );
        assert_eq!(parsed["rules"][0]["actions"][1].as_str(), Some("push"));
        let bare = registry(serde_json::json!({"storage": {"s3": {"bucket": "b"}}, "auth": {}}));
        let parsed: Table = policy(&bare).expect("a policy").parse().expect("TOML");
        assert_eq!(
            parsed["rules"][0]["subjects"][0].as_str(),
            Some("authenticated")
        );
        let none = registry(serde_json::json!({"storage": {"s3": {"bucket": "b"}}}));
        assert_eq!(policy(&none), None);
        assert!(policy_secret(&none).is_none());
    }

    #[test]
    fn workload_identity_takes_the_cluster_s_issuer() {
        let registry = with_auth();
        let facts = ClusterFacts {
            service_account_issuer: Some("https://kubernetes.default.svc.cluster.local".into()),
            ..ClusterFacts::default()
        };
        let table = auth_table(&registry, &facts).expect("auth");
        assert_eq!(
            table["kubernetes-issuer"].as_str(),
            Some("https://kubernetes.default.svc.cluster.local")
        );
        assert_eq!(table["kubernetes-audience"].as_str(), Some("stowage"));
        assert_eq!(table["challenge"].as_str(), Some("basic"));
        assert!(!workload_identity_without_issuer(&registry, &facts));
        let unknown = auth_table(&registry, &ClusterFacts::default()).expect("auth");
        assert!(!unknown.contains_key("kubernetes-issuer"));
        assert!(workload_identity_without_issuer(
            &registry,
            &ClusterFacts::default()
        ));
    }

    #[test]
    fn volumes_are_whole_directories_so_updates_reach_the_pods() {
        let (volumes, mounts) = server_volumes(&with_auth());
        let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "htpasswd",
                "auth-policy",
                "token-key",
                "token-issuer",
                "kubernetes",
                "tls"
            ]
        );
        assert!(
            mounts
                .iter()
                .all(|m| m.sub_path.is_none() && m.read_only == Some(true))
        );
        let bundle = volumes[3].secret.as_ref().expect("secret");
        assert_eq!(bundle.items.as_ref().expect("items")[0].key, "bundle.pem");
        assert_eq!(
            volumes[5]
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("images-tls")
        );
    }

    #[test]
    fn cert_manager_certificate_covers_the_service_names() {
        let issued = certificate(&with_auth()).expect("a Certificate");
        let spec = &issued.data["spec"];
        assert_eq!(spec["secretName"], "images-tls");
        assert_eq!(spec["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(spec["issuerRef"]["group"], "cert-manager.io");
        let names = spec["dnsNames"].as_array().expect("names");
        assert!(names.iter().any(|n| n == "images.team-a.svc"));
        assert!(names.iter().any(|n| n == "registry.example.com"));
        let secret_only = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "b"}}, "tls": {"secretName": "mine"}
        }));
        assert!(certificate(&secret_only).is_none());
        assert_eq!(tls_secret_name(&secret_only).as_deref(), Some("mine"));
    }
}
