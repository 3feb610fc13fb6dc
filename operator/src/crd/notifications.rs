//! `spec.notifications`: registry events delivered to webhooks.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// Where registry events (push, pull, delete, mount) are sent, in CNCF Distribution's format.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// The webhooks, each with its own name: a list keyed by `name`, so the API server refuses
    /// two of one name and server-side apply merges them by name.
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
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

    #[schemars(length(min = 8, max = bounds::URL))]
    pub url: String,

    /// Headers sent with every delivery.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::string_map::<{ bounds::ANNOTATIONS }, { bounds::ANNOTATION_VALUE }>)]
    pub headers: BTreeMap<String, String>,

    /// Headers whose values are secret, each from a key of a Secret in the Registry's namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::map::<{ bounds::ANNOTATIONS }>)]
    pub secret_headers: BTreeMap<String, SecretKey>,

    /// A key to sign each delivery with: `X-Stowage-Signature: sha256=<HMAC-SHA256 of the body>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SecretKey>,

    /// How long a delivery may take.
    #[serde(default = "timeout")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m))+$"))]
    pub timeout: String,

    /// The first wait after a failed delivery; it doubles up to a minute.
    #[serde(default = "backoff")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m))+$"))]
    pub backoff: String,

    /// Events whose target has one of these media types are not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::SHORT_LIST), inner(length(max = bounds::MEDIA_TYPE)))]
    pub ignored_media_types: Vec<String>,

    /// Actions not sent: push, pull, delete, mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub ignored_actions: Vec<EventAction>,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct SecretKey {
    #[schemars(length(min = 1, max = bounds::NAME))]
    pub name: String,
    #[schemars(length(min = 1, max = bounds::NAME))]
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
