//! `spec.notifications`: registry events delivered to webhooks.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where registry events (push, pull, delete, mount) are sent, in CNCF Distribution's format.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "self.endpoints.all(e, self.endpoints.exists_one(f, f.name == e.name))"
).message("each endpoint needs its own name"))]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    #[schemars(length(max = 16))]
    pub endpoints: Vec<Endpoint>,
}

/// One webhook.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "self.url.startsWith('https://') || self.url.startsWith('http://')"
).message("url needs its scheme: https:// or http://"))]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Names the endpoint in metrics and logs.
    #[schemars(length(min = 1, max = 63), pattern(r"^[A-Za-z0-9_-]+$"))]
    pub name: String,

    #[schemars(length(min = 8, max = 2048))]
    pub url: String,

    /// Headers sent with every delivery.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,

    /// Headers whose values are secret, each from a key of a Secret in the Registry's namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_headers: BTreeMap<String, SecretKey>,

    /// A key to sign each delivery with: `X-Stowage-Signature: sha256=<HMAC-SHA256 of the body>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SecretKey>,

    /// How long a delivery may take.
    #[serde(default = "timeout")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m))+$"))]
    pub timeout: String,

    /// The first wait after a failed delivery; it doubles up to a minute.
    #[serde(default = "backoff")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m))+$"))]
    pub backoff: String,

    /// Events whose target has one of these media types are not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_media_types: Vec<String>,

    /// Actions not sent: push, pull, delete, mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_actions: Vec<EventAction>,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct SecretKey {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A kind of registry event.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    Push,
    Pull,
    Delete,
    Mount,
}

impl EventAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Pull => "pull",
            Self::Delete => "delete",
            Self::Mount => "mount",
        }
    }
}

fn timeout() -> String {
    "5s".to_owned()
}

fn backoff() -> String {
    "1s".to_owned()
}
