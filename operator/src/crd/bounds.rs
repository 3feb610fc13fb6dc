//! The bounds of every list, map and string of the spec.
//!
//! The API server sizes each CEL rule's cost by the bounds of what the rule can reach, and
//! refuses the CRD when an unbounded list or string makes a rule too expensive ([`super::cost`]
//! checks that). The bounds are also what a manifest may hold, so they are set well above what
//! a registry needs, close to the limits Kubernetes itself puts on the same kinds of values.

use serde_json::Value;

/// A Kubernetes object name (a DNS subdomain), or a key in a Secret.
pub const NAME: u32 = 253;
/// A URL: an endpoint, a realm, an issuer.
pub const URL: u32 = 2048;
/// A duration such as `1h30m`.
pub const DURATION: u32 = 32;
/// A cron schedule.
pub const SCHEDULE: u32 = 128;
/// A label value.
pub const LABEL_VALUE: u32 = 63;
/// An annotation or header value.
pub const ANNOTATION_VALUE: u32 = 4096;
/// Labels, annotations or headers on one object.
pub const ANNOTATIONS: u32 = 64;
/// An image reference: registry, repository, tag and digest.
pub const IMAGE: u32 = 1024;
/// A repository name or pattern (Distribution allows names of 255 characters).
pub const REPOSITORY: u32 = 512;
/// A rule subject: `group:system:serviceaccounts:<namespace>` or `user:<name>`.
pub const SUBJECT: u32 = 512;
/// Access rules in a Registry; each is checked against its subjects by a CEL rule.
pub const ACCESS_RULES: u32 = 256;
/// Repository patterns or subjects in one access rule.
pub const RULE_ENTRIES: u32 = 64;
/// Rules of one kind in `spec.policies`.
pub const POLICY_RULES: u32 = 64;
/// Replication rules in a Registry.
pub const REPLICATION_RULES: u32 = 16;
/// A tag pattern (tags take at most 128 characters).
pub const TAG_PATTERN: u32 = 256;
/// Named groups of users.
pub const GROUPS: u32 = 128;
/// Members of one group.
pub const GROUP_MEMBERS: u32 = 1024;
/// Short lists: DNS names, trusted proxies, media types.
pub const SHORT_LIST: u32 = 64;
/// An address or CIDR range (an IPv6 range takes at most 43 characters).
pub const ADDRESS: u32 = 64;
/// A media type (RFC 6838: 127 characters each side of the slash).
pub const MEDIA_TYPE: u32 = 255;
/// A prefix for every key of a bucket (S3 keys take at most 1024 bytes).
pub const KEY_PREFIX: u32 = 512;
/// An Entra ID tenant or client id (a GUID, or a tenant's domain name).
pub const AZURE_ID: u32 = 253;
/// An email address, such as a Google service account's.
pub const EMAIL: u32 = 254;

/// A schemars transform for a map: at most `ENTRIES` entries, whose values bound themselves.
pub fn map<const ENTRIES: u32>(schema: &mut schemars::Schema) {
    schema.insert("maxProperties".to_owned(), ENTRIES.into());
}

/// A schemars transform for a map of strings: at most `ENTRIES` entries of at most `LENGTH`
/// characters.
pub fn string_map<const ENTRIES: u32, const LENGTH: u32>(schema: &mut schemars::Schema) {
    map::<ENTRIES>(schema);
    if let Some(Value::Object(values)) = schema.get_mut("additionalProperties") {
        values.insert("maxLength".to_owned(), LENGTH.into());
    }
}

/// A schemars transform for groups of users: [`GROUPS`] groups of [`GROUP_MEMBERS`] names.
pub fn groups(schema: &mut schemars::Schema) {
    map::<GROUPS>(schema);
    if let Some(Value::Object(members)) = schema.get_mut("additionalProperties") {
        members.insert("maxItems".to_owned(), GROUP_MEMBERS.into());
        if let Some(Value::Object(name)) = members.get_mut("items") {
            name.insert("maxLength".to_owned(), NAME.into());
        }
    }
}

/// Bounds for the lists, maps and strings inside an embedded Kubernetes type (affinity,
/// tolerations, resources, quantities), whose schemas come without any.
const KUBERNETES_ITEMS: u64 = 64;
const KUBERNETES_STRING: u64 = 1024;
const QUANTITY: u64 = 64;

/// A schemars transform giving an embedded Kubernetes type's lists and maps at most 64 entries
/// and its strings at most 1024 characters (64 for quantities): label keys are at most 317
/// characters and values 63, so no valid affinity, toleration or resource list is refused.
pub fn kubernetes(schema: &mut schemars::Schema) {
    if let Some(object) = schema.as_object_mut() {
        bound(object);
    }
}

fn bound(schema: &mut serde_json::Map<String, Value>) {
    let is = |schema: &serde_json::Map<String, Value>, kind: &str| match schema.get("type") {
        Some(Value::String(t)) => t == kind,
        Some(Value::Array(types)) => types.iter().any(|t| t == kind),
        _ => false,
    };
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let limit = if int_or_string {
        Some(("maxLength", QUANTITY))
    } else if is(schema, "string") && !schema.contains_key("enum") {
        Some(("maxLength", KUBERNETES_STRING))
    } else if is(schema, "array") {
        Some(("maxItems", KUBERNETES_ITEMS))
    } else if is(schema, "object") && schema.contains_key("additionalProperties") {
        Some(("maxProperties", KUBERNETES_ITEMS))
    } else {
        None
    };
    if let Some((key, limit)) = limit {
        schema.entry(key).or_insert(limit.into());
    }
    for key in ["items", "additionalProperties"] {
        if let Some(Value::Object(child)) = schema.get_mut(key) {
            bound(child);
        }
    }
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        for property in properties.values_mut() {
            if let Value::Object(property) = property {
                bound(property);
            }
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(alternatives)) = schema.get_mut(key) {
            for alternative in alternatives {
                if let Value::Object(alternative) = alternative {
                    bound(alternative);
                }
            }
        }
    }
}
