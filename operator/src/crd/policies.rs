//! `spec.policies`: what the registry keeps no matter who asks.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// Policies the server enforces on every push and delete, and the retention rules that let
/// tags go.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    /// Tags that, once pushed, cannot be moved to another manifest or deleted: a push that would
    /// move one, or a delete, gets `403 DENIED` naming the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::POLICY_RULES))]
    pub immutable_tags: Vec<ImmutableTags>,

    /// Retention rules, each with its own name (a list keyed by `name`). Digests that pods run
    /// are kept whatever the rules say, when the operator collects them (see the chart's
    /// `inUseDigests`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::POLICY_RULES))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub retention: Vec<RetentionRule>,

    /// The CronJob applying the retention rules.
    #[serde(default)]
    pub retention_run: RetentionRun,

    /// Quotas, each with its own name (a list keyed by `name`): a blob upload or manifest push
    /// that would take a repository or namespace over one gets `403 DENIED` naming the quota and
    /// the usage, and leaves nothing behind. Replicas pushing at once may overshoot by at most
    /// one blob each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::POLICY_RULES))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub quotas: Vec<Quota>,
}

/// One quota: each repository matching `repositories`, or each namespace (a repository name's
/// first part) matching `namespaces`, stores at most `bytes`; a namespace counts each blob
/// once across its repositories.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.repositories) != has(self.namespaces)"
).message("name repositories or namespaces, not both"))]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// How refusals, metrics and the status name the quota.
    #[schemars(length(min = 1, max = bounds::LABEL_VALUE))]
    pub name: String,
    /// Repository patterns, each matching repository counted on its own: `*` matches within
    /// one path segment, `**` across segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(min = 1, max = bounds::RULE_ENTRIES),
        inner(length(max = bounds::REPOSITORY))
    )]
    pub repositories: Vec<String>,
    /// Namespace patterns (`team-*`), each matching namespace counted as a whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(min = 1, max = bounds::RULE_ENTRIES),
        inner(length(max = bounds::REPOSITORY))
    )]
    pub namespaces: Vec<String>,
    /// The most each may store, such as `500Gi` or `20GiB` (binary units).
    #[schemars(length(max = 24), pattern(r"^[0-9]+ ?([KMGTkmgt]i?B?|B)?$"))]
    pub bytes: String,
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

/// One retention rule: in repositories matching `repositories`, the tags matching `tags` (every
/// tag when empty) that meet every condition set are kept. Across rules, a tag stays when any
/// rule covering its repository keeps it; a repository no rule covers is left alone.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.tags) || has(self.mostRecentlyPushed) || has(self.mostRecentlyPulled) || \
     has(self.pushedWithin) || has(self.pulledWithin) || has(self.semver)"
).message("keep something: name tag patterns or a condition (a rule keeping nothing would delete every tag)"))]
#[serde(rename_all = "camelCase")]
pub struct RetentionRule {
    /// How reports and the status name the rule.
    #[schemars(length(min = 1, max = bounds::LABEL_VALUE))]
    pub name: String,

    /// Repository patterns: `*` matches within one path segment, `**` across segments.
    #[schemars(
        length(min = 1, max = bounds::RULE_ENTRIES),
        inner(length(max = bounds::REPOSITORY))
    )]
    pub repositories: Vec<String>,

    /// The tags the rule looks at (`build-*`); every tag when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = bounds::RULE_ENTRIES),
        inner(length(max = bounds::TAG_PATTERN))
    )]
    pub tags: Vec<String>,

    /// Keep the N most recently pushed of the tags the rule looks at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub most_recently_pushed: Option<i32>,

    /// Keep the N most recently pulled (a tag never pulled ranks last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub most_recently_pulled: Option<i32>,

    /// Keep tags pushed within this long, such as `30d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub pushed_within: Option<String>,

    /// Keep tags pulled within this long (pulls are recorded by the day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub pulled_within: Option<String>,

    /// Keep the newest semantic versions of each line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<SemverKeep>,

    /// Manifests untagged for longer than this go, such as `7d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub untagged_older_than: Option<String>,

    /// Keep signatures, SBOMs and other referrers when their subject goes.
    #[serde(default)]
    pub keep_referrers: bool,
}

/// Tags that parse as semantic versions (with or without a `v`) in `range`: the newest `count`
/// of each major or minor line.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SemverKeep {
    /// A version range such as `>=1.0.0`; every version when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub range: Option<String>,
    /// The line counted within.
    pub newest_per: SemverLine,
    #[schemars(range(min = 1, max = 10_000))]
    pub count: i32,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SemverLine {
    Major,
    Minor,
}

/// The retention CronJob (`stowage retention`), which runs only with retention rules set.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionRun {
    /// When to run, in cron syntax: by default an hour before gc, which reclaims the bytes.
    #[serde(default = "retention_schedule")]
    #[schemars(length(min = 9, max = bounds::SCHEDULE))]
    pub schedule: String,

    /// Only report what would go. Rules that changed always run dry once first, whatever this
    /// says: status and an event list what they would delete, and the next run deletes it.
    #[serde(default)]
    pub dry_run: bool,

    /// Stop scheduling runs.
    #[serde(default)]
    pub suspend: bool,
}

impl Default for RetentionRun {
    fn default() -> Self {
        Self {
            schedule: retention_schedule(),
            dry_run: false,
            suspend: false,
        }
    }
}

fn retention_schedule() -> String {
    "0 2 * * *".to_owned()
}
