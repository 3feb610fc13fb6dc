//! `spec.garbageCollection` and `spec.uploadPurging`: the CronJobs that clean up.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// The garbage-collection CronJob (`stowage gc`). A run reviews only what changed since the
/// last one, so it can run often; once `fullEvery` has passed since the last full run, the run
/// is a full one, which audits the index and counts what each namespace stores.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollection {
    /// When to run, in cron syntax.
    #[serde(default = "gc_schedule")]
    #[schemars(length(min = 9, max = bounds::SCHEDULE))]
    pub schedule: String,

    /// How long after a full run the next run is full again, such as `168h`.
    #[serde(default = "gc_full_every")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub full_every: String,

    /// Nothing younger than this is deleted, such as `1h` or `30m`.
    #[serde(default = "gc_grace_period")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub grace_period: String,

    /// Also delete manifests that no tag refers to.
    #[serde(default)]
    pub delete_untagged: bool,

    /// Stop scheduling runs.
    #[serde(default)]
    pub suspend: bool,
}

impl Default for GarbageCollection {
    fn default() -> Self {
        Self {
            schedule: gc_schedule(),
            full_every: gc_full_every(),
            grace_period: gc_grace_period(),
            delete_untagged: false,
            suspend: false,
        }
    }
}

/// The upload-purging CronJob (`stowage purge-uploads`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UploadPurging {
    /// When to run, in cron syntax.
    #[serde(default = "purge_schedule")]
    #[schemars(length(min = 9, max = bounds::SCHEDULE))]
    pub schedule: String,

    /// Upload sessions started longer ago than this are deleted, such as `168h`.
    #[serde(default = "purge_max_age")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub max_age: String,

    /// Stop scheduling runs.
    #[serde(default)]
    pub suspend: bool,
}

impl Default for UploadPurging {
    fn default() -> Self {
        Self {
            schedule: purge_schedule(),
            max_age: purge_max_age(),
            suspend: false,
        }
    }
}

fn gc_schedule() -> String {
    "*/15 * * * *".to_owned()
}

fn gc_full_every() -> String {
    "168h".to_owned()
}

fn gc_grace_period() -> String {
    "1h".to_owned()
}

fn purge_schedule() -> String {
    "30 * * * *".to_owned()
}

fn purge_max_age() -> String {
    "168h".to_owned()
}
