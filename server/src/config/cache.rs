//! The blob-descriptor cache: the `--blob-cache-*` flags, or the `[blob-cache]` table.
//!
//! ```toml
//! [blob-cache]
//! entries = 100000
//! redis-file = "/etc/stowage/redis-url"   # or redis = "redis://redis:6379/0"
//! ```

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::ConfigError;
use crate::registry::descriptors::{CacheConfig, RedisUrl};
use crate::storage::StorageConfig;

const DEFAULT_ENTRIES: u64 = 100_000;

#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CacheSettings {
    /// Blob sizes and repository memberships each replica keeps in memory; 0 turns the cache
    /// off, Redis included [default: 100000].
    #[arg(long = "blob-cache-entries", env = "STOWAGE_BLOB_CACHE_ENTRIES")]
    pub entries: Option<u64>,

    /// A Redis shared by the replicas (`redis://[user:password@]host:port[/db]`, `rediss://`
    /// for TLS); a Redis that fails only means answering from storage.
    #[arg(
        long = "blob-cache-redis",
        env = "STOWAGE_BLOB_CACHE_REDIS",
        hide_env_values = true,
        conflicts_with = "redis_file"
    )]
    pub redis: Option<String>,

    /// A file holding that URL (a mounted Secret, as it may carry a password).
    #[arg(long = "blob-cache-redis-file", env = "STOWAGE_BLOB_CACHE_REDIS_FILE")]
    pub redis_file: Option<PathBuf>,
}

impl CacheSettings {
    pub fn or(self, file: Self) -> Self {
        Self {
            entries: self.entries.or(file.entries),
            redis: self.redis.or(file.redis),
            redis_file: self.redis_file.or(file.redis_file),
        }
    }

    pub fn resolve(self, storage: &StorageConfig) -> Result<CacheConfig, ConfigError> {
        let url = match (self.redis, self.redis_file) {
            (Some(url), _) => Some(url),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|source| ConfigError::Read { path, source })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let redis = url
            .map(|url| RedisUrl::parse(&url))
            .transpose()
            .map_err(ConfigError::Invalid)?;
        Ok(CacheConfig {
            entries: self.entries.unwrap_or(DEFAULT_ENTRIES),
            redis,
            namespace: storage.identity(),
        })
    }
}
