//! An event in CNCF Distribution's notification format
//! (`application/vnd.docker.distribution.events.v1+json`), so its receivers work unchanged.

use serde::{Deserialize, Serialize};

/// The envelope's media type.
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Push,
    Pull,
    Delete,
    Mount,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Pull => "pull",
            Self::Delete => "delete",
            Self::Mount => "mount",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    /// RFC 3339, to the nanosecond.
    pub timestamp: String,
    pub action: Action,
    pub target: Target,
    pub request: RequestInfo,
    pub actor: Actor,
    pub source: Source,
}

impl Event {
    /// An event happening now, with a fresh id.
    pub fn now(
        action: Action,
        target: Target,
        request: RequestInfo,
        actor: Actor,
        source: Source,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            action,
            target,
            request,
            actor,
            source,
        }
    }
}

/// What the event is about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// The request that caused the event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestInfo {
    pub id: String,
    pub addr: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

/// Who made the request; no name for anonymous callers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The replica that recorded the event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub addr: String,
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

/// A batch of events as receivers get it.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub events: &'a [Event],
}
