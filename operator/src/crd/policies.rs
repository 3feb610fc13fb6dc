//! `spec.policies`: what the registry keeps no matter who asks.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// Policies the server enforces on every push and delete.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    /// Tags that, once pushed, cannot be moved to another manifest or deleted: a push that would
    /// move one, or a delete, gets `403 DENIED` naming the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::POLICY_RULES))]
    pub immutable_tags: Vec<ImmutableTags>,
}

/// One immutable-tags rule.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImmutableTags {
    /// How refusals name the rule.
    #[schemars(length(min = 1, max = bounds::LABEL_VALUE))]
    pub name: String,
    /// Repository patterns: `*` matches within one path segment, `**` across segments.
    #[schemars(
        length(min = 1, max = bounds::RULE_ENTRIES),
        inner(length(max = bounds::REPOSITORY))
    )]
    pub repositories: Vec<String>,
    /// Tag patterns (`v*`, `release-*`, `*`).
    #[schemars(
        length(min = 1, max = bounds::RULE_ENTRIES),
        inner(length(max = bounds::TAG_PATTERN))
    )]
    pub tags: Vec<String>,
}
