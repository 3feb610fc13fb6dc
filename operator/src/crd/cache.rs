//! `spec.blobCache`: the blob-descriptor cache of the server pods.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKey;

/// What each pod remembers of blobs (sizes, which repositories hold them), so a blob `HEAD`
/// needs no storage round trip; optionally shared in Redis, so a pod the autoscaler adds starts
/// warm. A Redis that fails only means answering from storage.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlobCache {
    /// Facts kept in each pod's memory; 0 turns the cache off, Redis included.
    #[serde(default = "default_entries")]
    #[schemars(range(min = 0))]
    pub entries: i64,
    /// The Secret key holding a Redis URL (`redis://[user:password@]host:port[/db]`, or
    /// `rediss://` for TLS) that every pod shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<SecretKey>,
}

fn default_entries() -> i64 {
    100_000
}
