//! `status`: what the operator last saw of the registry.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator last saw of the registry.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Progressing, Degraded, StorageReady and GarbageCollected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Server pods that exist.
    #[serde(default)]
    pub replicas: i32,

    /// Server pods ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,

    /// The server pods' label selector, for the scale subresource.
    #[serde(default)]
    pub selector: String,

    /// The registry's address inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The most recent finished garbage collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_garbage_collection: Option<GarbageCollectionRun>,

    /// The most recent finished full garbage collection: the index's drift, and what the
    /// largest namespaces store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_garbage_collection: Option<GarbageCollectionRun>,

    /// The most recent finished replication reconciliation, rule by rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_replication: Option<Reconciled>,

    /// The most recent finished retention run: what it deleted, or would have, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retention: Option<RetentionOutcome>,
}

/// One finished `stowage retention` run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionOutcome {
    /// The Job that ran it.
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Succeeded or Failed.
    pub result: JobResult,
    /// A hash of the rules it applied: rules that changed since run dry first.
    #[serde(default)]
    pub rules: String,
    /// It only reported what would go.
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub repositories_checked: i64,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub tags_deleted: i64,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub manifests_deleted: i64,
    /// Deletions left undone because a push changed the repository after the decision.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub skipped_changed: i64,
    /// The first deletions (or, dry, those that would be made), each with the rule or reason
    /// behind it; `stowage retention --dry-run --output json` lists them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub deletions: Vec<String>,
}

/// One finished `stowage gc` run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollectionRun {
    /// The Job that ran it.
    pub job: String,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Succeeded or Failed.
    pub result: JobResult,
    // Signed, as Kubernetes knows `int64` and not schemars' `uint64` format.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub bytes_freed: i64,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub blobs_deleted: i64,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub manifests_deleted: i64,
    /// Incremental (from the journal) or Full (from every link, auditing the index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CollectionMode>,
    /// Journal pages left for a later run, too young to review.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub journal_pending: i64,
    /// Entries a full run found missing from the index, and recorded (drift).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub index_entries_added: i64,
    /// Entries that stood for nothing any more, pruned.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub index_entries_pruned: i64,
    /// What the repositories store, each blob once; counted by full runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub stored_bytes: Option<i64>,
    /// The namespaces storing most, largest first; counted by full runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub largest_namespaces: Vec<NamespaceUsage>,
    /// Repositories and namespaces under a quota, the fullest first; counted by full runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub quotas: Vec<QuotaUsage>,
}

/// How a garbage collection decided.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollectionMode {
    Incremental,
    Full,
}

/// What one namespace (a repository name's first part) stores.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct NamespaceUsage {
    #[schemars(length(max = 255))]
    pub name: String,
    #[schemars(range(min = 0))]
    pub bytes: i64,
}

/// What one repository or namespace under a quota stores, and may.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    /// The quota's name in `spec.policies.quotas`.
    #[schemars(length(max = 63))]
    pub quota: String,
    /// `repository` or `namespace`.
    #[schemars(length(max = 16))]
    pub scope: String,
    /// The repository or namespace.
    #[schemars(length(max = 255))]
    pub name: String,
    #[schemars(range(min = 0))]
    pub used_bytes: i64,
    #[schemars(range(min = 0))]
    pub limit_bytes: i64,
}

/// What the status records of a maintenance Job's run: which Job, and how it ended.
pub trait JobRun {
    fn job(&self) -> &str;
    fn result(&self) -> JobResult;
}

macro_rules! job_run {
    ($($run:ty),*) => {$(
        impl JobRun for $run {
            fn job(&self) -> &str {
                &self.job
            }
            fn result(&self) -> JobResult {
                self.result
            }
        }
    )*};
}

job_run!(GarbageCollectionRun, Reconciled, RetentionOutcome);

/// How a maintenance Job (gc, a replication reconciliation, retention) ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobResult {
    Succeeded,
    Failed,
}

/// One finished `stowage replicate --once` run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reconciled {
    /// The Job that ran it.
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Succeeded or Failed.
    pub result: JobResult,
    /// What each rule found and did; empty when the run left no report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ReconciledRule>,
}

/// What one rule's reconciliation found and did.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReconciledRule {
    pub rule: String,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub tags_checked: i64,
    /// Images sent because the destination lacked them or held something else.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub copied: i64,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub deleted: i64,
    /// Images the destination refused (a 403, a repository it does not have): not retried.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub refused: i64,
    /// Why the first refused image was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_refusal: Option<String>,
    /// Events not yet replicated when the run ended.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub pending_events: i64,
    /// The lag: how long the oldest of them had waited, in seconds.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub oldest_pending_seconds: i64,
}
