//! Resolution: the layered settings, with defaults applied and checked, built into each
//! feature's own settings type.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::secret::secret;
use super::{ConfigError, ServeArgs, ServeConfig, Settings, StorageKind};
use crate::api::ApiSettings;
use crate::limits::{RateLimit, RequestLimits};
use crate::registry::Limits;
use crate::serve::{ConnectionLimits, GuardSettings};
use crate::storage::{
    DEFAULT_MIN_THROUGHPUT, DEFAULT_REQUEST_TIMEOUT, MIN_PART_SIZE, S3Config, StorageConfig,
    Timeouts,
};
use crate::telemetry::LogFormat;
use crate::upload::TokenKeys;

const DEFAULT_LISTEN: &str = "0.0.0.0:5000";
const DEFAULT_FS_ROOT: &str = "./stowage-data";
const DEFAULT_MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;
const DEFAULT_MANIFEST_CACHE_SIZE: u64 = 64 * 1024 * 1024;
const DEFAULT_UPLOAD_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_PURGE_AGE: Duration = Duration::from_secs(168 * 3600);
const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Below this, ordinary storage latency would read as an outage.
const MIN_STORAGE_TIMEOUT: Duration = Duration::from_millis(500);

impl ServeArgs {
    /// Layers flags and env over the config file and applies defaults.
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        self.resolve_with(true)
    }

    /// As [`ServeArgs::resolve`], for `gc` and `purge-uploads`: they share `serve`'s config
    /// file for its storage settings, but serve no clients, so access control and TLS (and the
    /// files they name, which their pods do not mount) are left out.
    pub fn resolve_for_maintenance(self) -> Result<ServeConfig, ConfigError> {
        self.resolve_with(false)
    }

    fn resolve_with(self, serving: bool) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => Settings::default(),
        };
        let s = self.settings.or(file);
        let timeouts = Timeouts {
            request: s.storage_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            min_throughput: s.storage_min_throughput.unwrap_or(DEFAULT_MIN_THROUGHPUT),
        };
        if timeouts.request < MIN_STORAGE_TIMEOUT || timeouts.min_throughput == 0 {
            return Err(ConfigError::Invalid(format!(
                "--storage-timeout must be at least {MIN_STORAGE_TIMEOUT:?}, and \
                 --storage-min-throughput above 0"
            )));
        }
        let guard = GuardSettings {
            timeouts,
            failures_to_open: s.storage_breaker_failures.unwrap_or(3).max(1),
            probe_interval: s
                .storage_probe_interval
                .unwrap_or(DEFAULT_PROBE_INTERVAL)
                .max(Duration::from_millis(100)),
        };
        let storage = match s.storage.unwrap_or(StorageKind::Filesystem) {
            StorageKind::Filesystem => StorageConfig::Filesystem {
                root: s.fs_root.unwrap_or_else(|| PathBuf::from(DEFAULT_FS_ROOT)),
                fsync: s.fs_fsync.unwrap_or(true),
            },
            StorageKind::S3 => StorageConfig::S3(s3_config(&s, timeouts)?),
            StorageKind::Azure => StorageConfig::Azure(s.azure.clone().resolve(timeouts)?),
            StorageKind::Gcs => StorageConfig::Gcs(s.gcs.clone().resolve(timeouts)?),
            StorageKind::Memory => StorageConfig::Memory,
        };
        let current = secret(
            "upload key",
            s.upload_secret,
            s.upload_secret_file.as_deref(),
        )?;
        let previous = secret(
            "previous upload key",
            s.upload_secret_previous,
            s.upload_secret_previous_file.as_deref(),
        )?;
        let keys = match (current, previous) {
            (Some(current), previous) => Some(TokenKeys::new(current, previous)),
            (None, Some(_)) => {
                return Err(ConfigError::PreviousWithoutCurrent("previous upload key"));
            }
            (None, None) => None,
        };
        let default_listen: SocketAddr = DEFAULT_LISTEN.parse().unwrap_or_else(|_| unreachable!());
        let connections = ConnectionLimits {
            max_connections: s.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS).max(1),
            header_read_timeout: s.header_read_timeout.unwrap_or(DEFAULT_HEADER_READ_TIMEOUT),
            http2_max_concurrent_streams: s.http2_max_concurrent_streams.unwrap_or(128).max(1),
        };
        let trusted_proxies: Vec<IpNet> = s
            .trusted_proxies
            .iter()
            .flatten()
            .map(|proxy| trusted_proxy(proxy))
            .collect::<Result<_, _>>()?;
        let rate_limit = match s.rate_limit.map(NonZeroU32::new) {
            None => None,
            Some(None) => return Err(ConfigError::Invalid("--rate-limit must be above 0".into())),
            Some(Some(per_second)) => Some(RateLimit {
                per_second,
                burst: s
                    .rate_limit_burst
                    .and_then(NonZeroU32::new)
                    .unwrap_or(per_second.saturating_add(per_second.get())),
                trusted_proxies: trusted_proxies.clone(),
            }),
        };
        let requests = RequestLimits {
            max_concurrent_requests: s
                .max_concurrent_requests
                .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS)
                .max(1),
            body_idle_timeout: s.body_idle_timeout.unwrap_or(DEFAULT_BODY_IDLE_TIMEOUT),
            rate_limit,
        };
        let reload_interval = s
            .reload_interval
            .unwrap_or(DEFAULT_RELOAD_INTERVAL)
            .max(Duration::from_millis(100));
        let (auth, tls) = if serving {
            (s.auth.resolve(reload_interval)?, s.tls.resolve()?)
        } else {
            (None, None)
        };
        // gc and purge-uploads read the blob cache's settings but use none of them.
        let blob_cache = if serving {
            s.blob_cache.clone().resolve(&storage)?
        } else {
            crate::registry::descriptors::CacheConfig::default()
        };
        Ok(ServeConfig {
            // gc needs the prefixes too, for the cache's retention.
            proxy: s.proxy.resolve()?,
            notifications: s.notifications.resolve()?,
            replication: super::replication::resolve(s.replication)?,
            policies: std::sync::Arc::new(s.policies.resolve()?),
            blob_cache,
            auth,
            tls,
            reload_interval,
            metrics_listen: s.metrics_listen,
            trusted_proxies,
            listen: s.listen.unwrap_or(default_listen),
            storage,
            guard,
            connections,
            requests,
            keys,
            upload_token_ttl: s.upload_token_ttl.unwrap_or(DEFAULT_UPLOAD_TOKEN_TTL),
            limits: Limits {
                max_manifest_size: s.max_manifest_size.unwrap_or(DEFAULT_MAX_MANIFEST_SIZE),
                manifest_cache_bytes: s.manifest_cache_size.unwrap_or(DEFAULT_MANIFEST_CACHE_SIZE),
            },
            api: ApiSettings {
                deletes_enabled: s.deletes_enabled.unwrap_or(true),
                read_only: s.read_only.unwrap_or(false),
            },
            ui: crate::ui::Settings {
                enabled: s.ui.unwrap_or(false),
                session_ttl: s.ui_session_ttl.unwrap_or(crate::ui::DEFAULT_SESSION_TTL),
            },
            log_format: s.log_format.unwrap_or(LogFormat::Text),
            log_level: s.log_level.unwrap_or_else(|| "info".to_owned()),
            shutdown_grace: s.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            purge_uploads: s.purge_uploads_interval.map(|interval| {
                (
                    interval,
                    s.purge_uploads_older_than.unwrap_or(DEFAULT_PURGE_AGE),
                )
            }),
        })
    }
}

const DEFAULT_S3_PART_SIZE: u64 = 8 * 1024 * 1024;

/// A proxy's address (`192.0.2.1`) or range (`10.0.0.0/8`).
fn trusted_proxy(text: &str) -> Result<IpNet, ConfigError> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            ConfigError::Invalid(format!(
                "--trusted-proxies: {text:?} is neither an address nor a CIDR range"
            ))
        })
}

fn s3_config(s: &Settings, timeouts: Timeouts) -> Result<S3Config, ConfigError> {
    let bucket = s
        .s3_bucket
        .clone()
        .ok_or(ConfigError::Missing("--s3-bucket"))?;
    let secret = match (&s.s3_secret_access_key, &s.s3_secret_access_key_file) {
        (Some(secret), _) => Some(secret.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?
                .trim_end()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let credentials = match (s.s3_access_key_id.clone(), secret) {
        (Some(id), Some(secret)) => Some((id, secret)),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Invalid(
                "--s3-access-key-id and a secret access key go together".into(),
            ));
        }
    };
    let part_size = s.s3_part_size.unwrap_or(DEFAULT_S3_PART_SIZE);
    if part_size < MIN_PART_SIZE {
        return Err(ConfigError::Invalid(format!(
            "--s3-part-size must be at least {MIN_PART_SIZE}"
        )));
    }
    Ok(S3Config {
        bucket,
        region: s
            .s3_region
            .clone()
            .unwrap_or_else(|| "us-east-1".to_owned()),
        endpoint: s.s3_endpoint.clone(),
        path_style: s.s3_path_style.unwrap_or(false),
        root_prefix: s.s3_root_prefix.clone().unwrap_or_default(),
        credentials,
        part_size,
        upload_concurrency: s
            .s3_upload_concurrency
            .unwrap_or(crate::storage::DEFAULT_UPLOAD_CONCURRENCY)
            .max(1),
        redirect: s.s3_redirect.unwrap_or(false),
        timeouts,
    })
}
