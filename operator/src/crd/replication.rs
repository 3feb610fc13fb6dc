//! `spec.replication`: images pushed here copied to other registries.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;
use super::notifications::SecretKey;

/// Rules that copy what is pushed here to other registries, and the reconciliation that
/// repairs what the events missed.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    /// The rules, each with its own name: a list keyed by `name`, so the API server refuses two
    /// of one name and server-side apply merges them by name.
    #[schemars(length(max = bounds::REPLICATION_RULES))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub rules: Vec<ReplicationRule>,

    /// The CronJob that compares every tag the rules cover with their destinations and sends
    /// what is missing or different (`stowage replicate --once`).
    #[serde(default)]
    pub reconciliation: Reconciliation,
}

/// One destination and what goes there.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "self.url.matches('^https?://[^/]+/?$')"
).message("url names a registry, https://host[:port] or http://host[:port], without a path: repositories go in prefix"))]
#[serde(rename_all = "camelCase")]
pub struct ReplicationRule {
    /// Names the rule in metrics, status and its state in storage.
    #[schemars(length(min = 1, max = 63), pattern(r"^[A-Za-z0-9_-]+$"))]
    pub name: String,

    /// The destination registry, such as `https://registry.dr.example`.
    #[schemars(length(min = 8, max = bounds::URL))]
    pub url: String,

    /// Repository patterns: `*` matches within one path segment, `**` across segments. Every
    /// repository when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = bounds::RULE_ENTRIES),
        inner(length(max = bounds::REPOSITORY))
    )]
    pub repositories: Vec<String>,

    /// Tag patterns (`v*`, `release-*`). Every tag when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = bounds::RULE_ENTRIES),
        inner(length(max = bounds::TAG_PATTERN))
    )]
    pub tags: Vec<String>,

    /// Put before each repository's name at the destination: with `mirror/`, `team/app` goes
    /// to `mirror/team/app`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(
        length(max = bounds::REPOSITORY),
        pattern(r"^([a-z0-9]+([._-]+[a-z0-9]+)*/)*$")
    )]
    pub prefix: String,

    /// Also delete there what is deleted here.
    #[serde(default)]
    pub deletes: bool,

    /// A Secret in the Registry's namespace with `username` and `password` keys (a password or
    /// an access token), or a `token` key sent as a bearer token. Read again when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = bounds::NAME))]
    pub credentials_secret: Option<String>,

    /// How the destination's certificate is checked.
    #[serde(default)]
    pub tls: DestinationTls,

    /// Bytes per second for this rule's copies together, such as `50MiB`. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 24), pattern(r"^[0-9]+ ?([KMG]i?B?|[kmg]|B)?$"))]
    pub bandwidth: Option<String>,

    /// Blobs sent at once.
    #[serde(default = "jobs")]
    #[schemars(range(min = 1, max = 64))]
    pub jobs: i32,
}

/// How a destination's certificate is checked.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DestinationTls {
    /// Verify the certificate.
    #[serde(default = "super::yes")]
    pub verify: bool,

    /// Certificates (PEM) to trust besides the system's, for a destination with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretKey>,
}

impl Default for DestinationTls {
    fn default() -> Self {
        Self {
            verify: true,
            ca: None,
        }
    }
}

/// The reconciliation CronJob.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reconciliation {
    /// When to run, in cron syntax.
    #[serde(default = "reconcile_schedule")]
    #[schemars(length(min = 9, max = bounds::SCHEDULE))]
    pub schedule: String,

    /// Stop scheduling runs; pushes are still replicated as they happen.
    #[serde(default)]
    pub suspend: bool,
}

impl Default for Reconciliation {
    fn default() -> Self {
        Self {
            schedule: reconcile_schedule(),
            suspend: false,
        }
    }
}

fn jobs() -> i32 {
    4
}

fn reconcile_schedule() -> String {
    "17 * * * *".to_owned()
}
