//! `spec.auth` and `spec.tls`: who may use the registry, and HTTPS.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SigningKey, bounds};

/// Access control: accounts, rules, tokens. The htpasswd Secret and the rules reach every pod
/// without a restart (the server reads them again when the mounted files change).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// A Secret holding an htpasswd file of bcrypt entries (`htpasswd -B`); `key` defaults to
    /// `htpasswd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htpasswd: Option<SecretFile>,

    /// Groups of users, for the `group:<name>` subjects of rules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::groups)]
    pub groups: BTreeMap<String, Vec<String>>,

    /// Rules, read top to bottom: the first whose repositories match and whose subjects include
    /// the caller grants exactly its actions. Unset: authenticated callers may do everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::ACCESS_RULES))]
    pub rules: Vec<AccessRule>,

    /// Let anyone pull, with or without credentials, where no rule decides otherwise.
    #[serde(default)]
    pub anonymous_pull: bool,

    /// What a 401 asks clients for: `bearer` (the Docker token flow) or `basic`.
    #[serde(default)]
    pub challenge: Challenge,

    /// The service name of challenges and tokens (default `stowage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NAME))]
    pub service: Option<String>,

    /// The token endpoint's public URL, when an ingress changes the host or scheme clients
    /// use. Unset: derived from each request's Host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::URL))]
    pub realm: Option<String>,

    /// The key that signs tokens, shared by every replica.
    #[serde(default)]
    pub token_key: SigningKey,

    /// An existing token server (docker_auth, Harbor, GitLab) whose tokens are accepted, and to
    /// which clients are sent for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_issuer: Option<TokenIssuer>,

    /// Accept pods' projected service account tokens as passwords, so in-cluster jobs push
    /// without a stored secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentity>,
}

/// A file in a Secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretFile {
    /// The Secret's name, in the Registry's namespace.
    #[schemars(length(min = 1, max = bounds::NAME))]
    pub name: String,
    /// The key within the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NAME))]
    pub key: Option<String>,
}

/// One access rule.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "self.subjects.all(s, s == 'anonymous' || s == 'authenticated' || (s.startsWith('user:') && size(s) > 5) || (s.startsWith('group:') && size(s) > 6))"
).message("subjects are anonymous, authenticated, user:<name> or group:<name>"))]
pub struct AccessRule {
    /// Repository patterns: `*` matches within one path segment, `**` across segments
    /// (`team-a/**`, `*/cache`, `**`).
    #[schemars(
        length(min = 1, max = bounds::RULE_ENTRIES),
        inner(length(max = bounds::REPOSITORY))
    )]
    pub repositories: Vec<String>,
    /// Who the rule is for: `anonymous`, `authenticated`, `user:<name>`, `group:<name>`. Service
    /// accounts are users `system:serviceaccount:<namespace>:<name>`, in the groups
    /// `system:serviceaccounts` and `system:serviceaccounts:<namespace>`.
    #[schemars(
        length(min = 1, max = bounds::RULE_ENTRIES),
        inner(length(max = bounds::SUBJECT))
    )]
    pub subjects: Vec<String>,
    /// What they may do.
    #[schemars(length(min = 1, max = 4))]
    pub actions: Vec<RuleAction>,
}

/// An action a rule grants.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    #[serde(rename = "pull")]
    Pull,
    #[serde(rename = "push")]
    Push,
    #[serde(rename = "delete")]
    Delete,
    #[serde(rename = "*")]
    All,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::Delete => "delete",
            Self::All => "*",
        }
    }
}

/// The challenge of a 401.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Challenge {
    #[default]
    Bearer,
    Basic,
}

impl Challenge {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Basic => "basic",
        }
    }
}

/// An external token server (Distribution's `auth.token`).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.rootCertBundle) || has(self.jwksUrl)")
    .message("set rootCertBundle or jwksUrl: the keys that sign the tokens"))]
pub struct TokenIssuer {
    /// The token server's URL, where clients are sent.
    #[schemars(length(min = 1, max = bounds::URL))]
    pub realm: String,
    /// The service its tokens are for (their audience).
    #[schemars(length(min = 1, max = bounds::NAME))]
    pub service: String,
    /// Its name in the tokens (`iss`).
    #[schemars(length(min = 1, max = bounds::URL))]
    pub issuer: String,
    /// A Secret with PEM certificates whose keys sign the tokens; `key` defaults to `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cert_bundle: Option<SecretFile>,
    /// An https:// URL of its JWKS, fetched and kept fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::URL))]
    pub jwks_url: Option<String>,
    /// Signature algorithms accepted (default: RS*, PS*, ES256, ES384, EdDSA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 16)))]
    pub algorithms: Vec<String>,
}

/// Kubernetes workload identity.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentity {
    /// The audience tokens must be issued for: pods project a token with this audience.
    #[serde(default = "stowage")]
    #[schemars(length(min = 1, max = bounds::URL))]
    pub audience: String,
    /// The cluster's service account issuer. Unset: the one that issued the operator's own
    /// token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::URL))]
    pub issuer: Option<String>,
}

fn stowage() -> String {
    "stowage".to_owned()
}

/// HTTPS for the server pods.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.secretName) != has(self.issuerRef)")
    .message("set exactly one of secretName or issuerRef"))]
pub struct Tls {
    /// A kubernetes.io/tls Secret (`tls.crt`, `tls.key`). Rotating it in place reaches the pods
    /// without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NAME))]
    pub secret_name: Option<String>,
    /// A cert-manager Issuer or ClusterIssuer: the operator creates a Certificate, stored in the
    /// Secret `<name>-tls`, for the Service's names and `dnsNames`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<CertIssuerRef>,
    /// More names for the certificate, such as an ingress host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::SHORT_LIST), inner(length(max = bounds::NAME)))]
    pub dns_names: Vec<String>,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertIssuerRef {
    #[schemars(length(min = 1, max = bounds::NAME))]
    pub name: String,
    #[serde(default)]
    pub kind: IssuerKind,
    #[serde(default = "cert_manager_group")]
    #[schemars(length(max = bounds::NAME))]
    pub group: String,
}

fn cert_manager_group() -> String {
    "cert-manager.io".to_owned()
}

/// The kind of a cert-manager issuer.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}
