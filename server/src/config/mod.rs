//! `serve`'s settings, and the storage settings `gc` and `purge-uploads` share: every flag has a
//! `STOWAGE_*` environment variable, and the same settings (kebab-case keys) can come from an
//! optional TOML file; flags and environment win over the file. [`ServeArgs::resolve`] layers
//! them, applies defaults and validates them into a [`ServeConfig`].

mod auth;
mod cache;
mod notifications;
mod proxy;
mod secret;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use std::num::NonZeroU32;

use ipnet::IpNet;

pub use crate::serve::{GuardSettings, Settings as ServeConfig};
pub use auth::{AuthSettings, TlsSettings};
pub use cache::CacheSettings;
pub use notifications::NotificationSettings;
pub use proxy::ProxySettings;

use crate::api::ApiSettings;
use crate::limits::{RateLimit, RequestLimits};
use crate::registry::Limits;
use crate::serve::ConnectionLimits;
use crate::storage::{
    DEFAULT_MIN_THROUGHPUT, DEFAULT_REQUEST_TIMEOUT, MIN_PART_SIZE, S3Config, StorageConfig,
    Timeouts,
};
use crate::telemetry::LogFormat;
use crate::upload::TokenKeys;
use secret::secret;

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

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (kebab-case keys); flags and env override it.
    #[arg(long, env = "STOWAGE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: Settings,
}

/// Where storage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageKind {
    /// A local directory (or a mounted volume).
    Filesystem,
    /// An S3 bucket (AWS, Garage, MinIO, …), shared by every replica.
    S3,
    /// Process memory; everything is lost on exit. For tests.
    Memory,
}

/// Every setting of `serve`, each optional so that the file, flags and env can be layered.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on [default: 0.0.0.0:5000].
    #[arg(long, env = "STOWAGE_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Storage backend [default: filesystem].
    #[arg(long, env = "STOWAGE_STORAGE")]
    pub storage: Option<StorageKind>,

    /// Root directory of filesystem storage [default: ./stowage-data].
    #[arg(long, env = "STOWAGE_FS_ROOT")]
    pub fs_root: Option<PathBuf>,

    /// fsync files and directories before a write counts as done [default: true].
    #[arg(long, env = "STOWAGE_FS_FSYNC")]
    pub fs_fsync: Option<bool>,

    /// S3 bucket (required with --storage s3).
    #[arg(long, env = "STOWAGE_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// S3 region [default: us-east-1].
    #[arg(long, env = "STOWAGE_S3_REGION")]
    pub s3_region: Option<String>,

    /// S3 endpoint URL, for S3-compatible servers (Garage, MinIO, …) [default: AWS].
    #[arg(long, env = "STOWAGE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Address buckets by path (`endpoint/bucket/key`), as most S3-compatible servers need
    /// [default: false].
    #[arg(long, env = "STOWAGE_S3_PATH_STYLE")]
    pub s3_path_style: Option<bool>,

    /// Prefix of every key in the bucket; Distribution's `rootdirectory` [default: none].
    #[arg(long, env = "STOWAGE_S3_ROOT_PREFIX")]
    pub s3_root_prefix: Option<String>,

    /// Access key id; without one, the AWS SDK's default chain is used (AWS_* env, profile
    /// files, web identity for Kubernetes service accounts, instance metadata).
    #[arg(long, env = "STOWAGE_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,

    /// Secret access key that goes with --s3-access-key-id.
    #[arg(long, env = "STOWAGE_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// File holding the secret access key.
    #[arg(
        long,
        env = "STOWAGE_S3_SECRET_ACCESS_KEY_FILE",
        conflicts_with = "s3_secret_access_key"
    )]
    pub s3_secret_access_key_file: Option<PathBuf>,

    /// Bytes an upload buffers before sending a multipart part; bounds memory per upload
    /// (minimum 5 MiB) [default: 8388608].
    #[arg(long, env = "STOWAGE_S3_PART_SIZE")]
    pub s3_part_size: Option<u64>,

    /// Parts one upload sends to S3 at once; beyond each upload's first, all uploads share
    /// 256 MiB of parts in flight [default: 4].
    #[arg(long, env = "STOWAGE_S3_UPLOAD_CONCURRENCY")]
    pub s3_upload_concurrency: Option<usize>,

    /// The most a storage call that moves no bulk data (a HEAD, a small GET or PUT, a listing,
    /// a delete) may take, retries included; a request that needs storage answers within it
    /// [default: 6s].
    #[arg(long, env = "STOWAGE_STORAGE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub storage_timeout: Option<Duration>,

    /// Bytes per second below which a bulk storage transfer (a part upload, a copy) counts as
    /// hung; its time limit grows with its size at this rate [default: 1048576].
    #[arg(long, env = "STOWAGE_STORAGE_MIN_THROUGHPUT")]
    pub storage_min_throughput: Option<u64>,

    /// Consecutive storage failures after which requests that need storage fail at once, until
    /// a probe finds storage answering again [default: 3].
    #[arg(long, env = "STOWAGE_STORAGE_BREAKER_FAILURES")]
    pub storage_breaker_failures: Option<u32>,

    /// How often a background probe checks storage; `/readyz` reports its last result
    /// [default: 2s].
    #[arg(long, env = "STOWAGE_STORAGE_PROBE_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub storage_probe_interval: Option<Duration>,

    /// Answer blob downloads with a redirect to a presigned S3 URL, so bytes flow from the bucket
    /// straight to clients. Off by default: it only works where every client can reach the
    /// bucket's endpoint [default: false].
    #[arg(long, env = "STOWAGE_S3_REDIRECT")]
    pub s3_redirect: Option<bool>,

    /// Key that signs upload state (at least 32 bytes). Every replica needs the same key.
    /// Without one, a random key is made, which only works for a single process.
    #[arg(long, env = "STOWAGE_UPLOAD_SECRET", hide_env_values = true)]
    pub upload_secret: Option<String>,

    /// File holding the upload key (trailing newline ignored).
    #[arg(
        long,
        env = "STOWAGE_UPLOAD_SECRET_FILE",
        conflicts_with = "upload_secret"
    )]
    pub upload_secret_file: Option<PathBuf>,

    /// The previous upload key, still accepted so uploads in flight survive a key rotation.
    #[arg(long, env = "STOWAGE_UPLOAD_SECRET_PREVIOUS", hide_env_values = true)]
    pub upload_secret_previous: Option<String>,

    /// File holding the previous upload key.
    #[arg(
        long,
        env = "STOWAGE_UPLOAD_SECRET_PREVIOUS_FILE",
        conflicts_with = "upload_secret_previous"
    )]
    pub upload_secret_previous_file: Option<PathBuf>,

    /// How long an upload may sit idle between requests before its state expires [default: 24h].
    #[arg(long, env = "STOWAGE_UPLOAD_TOKEN_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub upload_token_ttl: Option<Duration>,

    /// Largest manifest accepted, in bytes [default: 4194304].
    #[arg(long, env = "STOWAGE_MAX_MANIFEST_SIZE")]
    pub max_manifest_size: Option<u64>,

    /// Bytes of manifest bodies each replica keeps in memory, by digest (content never
    /// changes; tags and repository links are still read from storage); 0 turns it off
    /// [default: 67108864].
    #[arg(long, env = "STOWAGE_MANIFEST_CACHE_SIZE")]
    pub manifest_cache_size: Option<u64>,

    /// Allow deleting manifests, tags and blobs [default: true].
    #[arg(long, env = "STOWAGE_DELETES_ENABLED")]
    pub deletes_enabled: Option<bool>,

    /// Refuse every write [default: false].
    #[arg(long, env = "STOWAGE_READ_ONLY")]
    pub read_only: Option<bool>,

    /// Connections served at once; more are answered 503 and closed. Kept below the open-file
    /// limit, which is raised to its maximum at start-up [default: 4096].
    #[arg(long, env = "STOWAGE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Requests handled at once; more are shed at once with 503 and Retry-After rather than
    /// queued [default: 512].
    #[arg(long, env = "STOWAGE_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,

    /// How long a connection may take to send a request's headers, counted from when it is
    /// ready for the next request, so also how long a kept-alive connection may idle
    /// [default: 20s].
    #[arg(long, env = "STOWAGE_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub header_read_timeout: Option<Duration>,

    /// How long a request body may send nothing before the request fails; a body that keeps
    /// flowing, however slowly, is never cut off [default: 60s].
    #[arg(long, env = "STOWAGE_BODY_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub body_idle_timeout: Option<Duration>,

    /// Requests at once on one HTTP/2 connection [default: 128].
    #[arg(long, env = "STOWAGE_HTTP2_MAX_CONCURRENT_STREAMS")]
    pub http2_max_concurrent_streams: Option<u32>,

    /// Requests per second allowed to each client; more get 429 with Retry-After
    /// [default: no limit].
    #[arg(long, env = "STOWAGE_RATE_LIMIT")]
    pub rate_limit: Option<u32>,

    /// Requests a client may send at once above its rate [default: twice the rate].
    #[arg(long, env = "STOWAGE_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,

    /// Proxies (addresses or CIDR ranges, comma-separated) whose X-Forwarded-For names the
    /// client (rate limits, failed logins) and whose X-Forwarded-Proto and X-Forwarded-Host name
    /// the token realm; from anyone else these headers are ignored [default: none].
    #[arg(long, env = "STOWAGE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,

    /// Log format [default: text].
    #[arg(long, env = "STOWAGE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter, in tracing's `EnvFilter` syntax [default: info].
    #[arg(long, env = "STOWAGE_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// How long in-flight requests may take to finish after SIGTERM [default: 30s].
    #[arg(long, env = "STOWAGE_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub shutdown_grace: Option<Duration>,

    /// Purge stale upload sessions from within `serve` this often, for single-process installs
    /// (clusters run `stowage purge-uploads` as a CronJob instead) [default: off].
    #[arg(long, env = "STOWAGE_PURGE_UPLOADS_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub purge_uploads_interval: Option<Duration>,

    /// Age beyond which the in-process purge removes an upload session [default: 168h].
    #[arg(long, env = "STOWAGE_PURGE_UPLOADS_OLDER_THAN", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub purge_uploads_older_than: Option<Duration>,

    /// Address of the Prometheus `/metrics` listener, apart from the registry's port and
    /// outside its access control [default: off].
    #[arg(long, env = "STOWAGE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// How often the files read at run time (htpasswd, access policy, TLS certificate) are
    /// checked for changes [default: 10s].
    #[arg(long, env = "STOWAGE_RELOAD_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub reload_interval: Option<Duration>,

    /// Access control (the `[auth]` table of the config file).
    #[command(flatten)]
    #[serde(default)]
    pub auth: AuthSettings,

    /// HTTPS (the `[tls]` table of the config file).
    #[command(flatten)]
    #[serde(default)]
    pub tls: TlsSettings,

    /// The blob-descriptor cache (the `[blob-cache]` table of the config file).
    #[command(flatten)]
    #[serde(default)]
    pub blob_cache: CacheSettings,

    /// The pull-through cache (the `[proxy]` table of the config file only).
    #[arg(skip)]
    #[serde(default)]
    pub proxy: ProxySettings,

    /// Webhooks for registry events (the `[notifications]` table of the config file only).
    #[arg(skip)]
    #[serde(default)]
    pub notifications: NotificationSettings,
}

impl Settings {
    /// Fills every setting left unset here from `file`.
    pub fn or(self, file: Self) -> Self {
        Self {
            listen: self.listen.or(file.listen),
            storage: self.storage.or(file.storage),
            fs_root: self.fs_root.or(file.fs_root),
            fs_fsync: self.fs_fsync.or(file.fs_fsync),
            s3_bucket: self.s3_bucket.or(file.s3_bucket),
            s3_region: self.s3_region.or(file.s3_region),
            s3_endpoint: self.s3_endpoint.or(file.s3_endpoint),
            s3_path_style: self.s3_path_style.or(file.s3_path_style),
            s3_root_prefix: self.s3_root_prefix.or(file.s3_root_prefix),
            s3_access_key_id: self.s3_access_key_id.or(file.s3_access_key_id),
            s3_secret_access_key: self.s3_secret_access_key.or(file.s3_secret_access_key),
            s3_secret_access_key_file: self
                .s3_secret_access_key_file
                .or(file.s3_secret_access_key_file),
            s3_part_size: self.s3_part_size.or(file.s3_part_size),
            s3_upload_concurrency: self.s3_upload_concurrency.or(file.s3_upload_concurrency),
            s3_redirect: self.s3_redirect.or(file.s3_redirect),
            storage_timeout: self.storage_timeout.or(file.storage_timeout),
            storage_min_throughput: self.storage_min_throughput.or(file.storage_min_throughput),
            storage_breaker_failures: self
                .storage_breaker_failures
                .or(file.storage_breaker_failures),
            storage_probe_interval: self.storage_probe_interval.or(file.storage_probe_interval),
            upload_secret: self.upload_secret.or(file.upload_secret),
            upload_secret_file: self.upload_secret_file.or(file.upload_secret_file),
            upload_secret_previous: self.upload_secret_previous.or(file.upload_secret_previous),
            upload_secret_previous_file: self
                .upload_secret_previous_file
                .or(file.upload_secret_previous_file),
            upload_token_ttl: self.upload_token_ttl.or(file.upload_token_ttl),
            max_manifest_size: self.max_manifest_size.or(file.max_manifest_size),
            manifest_cache_size: self.manifest_cache_size.or(file.manifest_cache_size),
            deletes_enabled: self.deletes_enabled.or(file.deletes_enabled),
            read_only: self.read_only.or(file.read_only),
            max_connections: self.max_connections.or(file.max_connections),
            max_concurrent_requests: self
                .max_concurrent_requests
                .or(file.max_concurrent_requests),
            header_read_timeout: self.header_read_timeout.or(file.header_read_timeout),
            body_idle_timeout: self.body_idle_timeout.or(file.body_idle_timeout),
            http2_max_concurrent_streams: self
                .http2_max_concurrent_streams
                .or(file.http2_max_concurrent_streams),
            rate_limit: self.rate_limit.or(file.rate_limit),
            rate_limit_burst: self.rate_limit_burst.or(file.rate_limit_burst),
            trusted_proxies: self.trusted_proxies.or(file.trusted_proxies),
            log_format: self.log_format.or(file.log_format),
            log_level: self.log_level.or(file.log_level),
            shutdown_grace: self.shutdown_grace.or(file.shutdown_grace),
            purge_uploads_interval: self.purge_uploads_interval.or(file.purge_uploads_interval),
            purge_uploads_older_than: self
                .purge_uploads_older_than
                .or(file.purge_uploads_older_than),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            reload_interval: self.reload_interval.or(file.reload_interval),
            auth: self.auth.or(file.auth),
            tls: self.tls.or(file.tls),
            blob_cache: self.blob_cache.or(file.blob_cache),
            // Upstreams are only ever set in the file.
            proxy: file.proxy,
            notifications: file.notifications,
        }
    }
}

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{0} must be at least {min} bytes", min = crate::upload::token::MIN_KEY_LEN)]
    ShortKey(&'static str),
    #[error("{0} is set without an upload key")]
    PreviousWithoutCurrent(&'static str),
    #[error("--storage s3 needs {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
}

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

/// Optional durations in the config file, written as humantime strings ("30s", "24h").
pub(crate) mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `serve`'s flags on a command line of their own, as `stowage serve` takes them.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    impl Cli {
        fn try_parse_from<'a>(
            argv: impl IntoIterator<Item = &'a str>,
        ) -> Result<ServeArgs, clap::Error> {
            // `stowage serve …`: the subcommand's name is not one of its flags.
            let argv = argv.into_iter().filter(|arg| *arg != "serve");
            <Self as Parser>::try_parse_from(argv).map(|cli| cli.serve)
        }
    }

    fn parse(args: &[&str]) -> ServeArgs {
        let mut argv = vec!["stowage", "serve"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).resolve().unwrap();
        assert_eq!(config.listen.port(), 5000);
        assert!(config.keys.is_none());
        assert!(config.api.deletes_enabled);
        assert_eq!(config.limits.max_manifest_size, 4 * 1024 * 1024);
        assert!(matches!(
            config.storage,
            StorageConfig::Filesystem { fsync: true, .. }
        ));
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stowage.toml");
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, format!("{}\n", "k".repeat(40))).unwrap();
        std::fs::write(
            &file,
            format!(
                "listen = \"127.0.0.1:6000\"\nread-only = true\nupload-token-ttl = \"2h\"\n\
                 upload-secret-file = {:?}\nmax-manifest-size = 100\n",
                key_file.to_str().unwrap()
            ),
        )
        .unwrap();
        let config = parse(&[
            "--config",
            file.to_str().unwrap(),
            "--max-manifest-size",
            "200",
        ])
        .resolve()
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:6000".parse().unwrap());
        assert!(config.api.read_only);
        assert_eq!(config.upload_token_ttl, Duration::from_secs(7200));
        assert_eq!(config.limits.max_manifest_size, 200);
        assert!(config.keys.is_some());
    }

    #[test]
    fn s3_settings() {
        let config = parse(&[
            "--storage",
            "s3",
            "--s3-bucket",
            "registry",
            "--s3-endpoint",
            "http://127.0.0.1:3900",
            "--s3-path-style",
            "true",
            "--s3-root-prefix",
            "/team",
            "--s3-access-key-id",
            "id",
            "--s3-secret-access-key",
            "secret",
            "--s3-part-size",
            "6291456",
        ])
        .resolve()
        .unwrap();
        let StorageConfig::S3(s3) = config.storage else {
            panic!("not s3")
        };
        assert_eq!(
            (s3.bucket.as_str(), s3.region.as_str()),
            ("registry", "us-east-1")
        );
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(s3.path_style && !s3.redirect);
        assert_eq!(s3.credentials, Some(("id".into(), "secret".into())));
        assert_eq!(s3.part_size, 6 * 1024 * 1024);
        assert!(!format!("{s3:?}").contains("secret\""));
        assert!(matches!(
            parse(&["--storage", "s3"]).resolve(),
            Err(ConfigError::Missing(_))
        ));
        let small = [
            "--storage",
            "s3",
            "--s3-bucket",
            "b",
            "--s3-part-size",
            "1024",
        ];
        assert!(matches!(
            parse(&small).resolve(),
            Err(ConfigError::Invalid(_))
        ));
        let half = [
            "--storage",
            "s3",
            "--s3-bucket",
            "b",
            "--s3-access-key-id",
            "id",
        ];
        assert!(matches!(
            parse(&half).resolve(),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_bad_configuration() {
        assert!(matches!(
            parse(&["--upload-secret", "short"]).resolve(),
            Err(ConfigError::ShortKey(_))
        ));
        let long = "x".repeat(32);
        assert!(matches!(
            parse(&["--upload-secret-previous", &long]).resolve(),
            Err(ConfigError::PreviousWithoutCurrent(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "no-such-setting = 1\n").unwrap();
        assert!(matches!(
            parse(&["--config", file.to_str().unwrap()]).resolve(),
            Err(ConfigError::Parse { .. })
        ));
        assert!(
            Cli::try_parse_from([
                "stowage",
                "serve",
                "--upload-secret",
                "a",
                "--upload-secret-file",
                "b"
            ])
            .is_err()
        );
        for bad in [
            vec!["--rate-limit", "0"],
            vec![
                "--rate-limit",
                "5",
                "--trusted-proxies",
                "10.0.0.0/8,not-a-proxy",
            ],
            vec!["--storage-timeout", "10ms"],
        ] {
            assert!(
                matches!(parse(&bad).resolve(), Err(ConfigError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn load_limits_have_defaults_and_take_addresses_or_ranges() {
        let config = parse(&[]).resolve().unwrap();
        assert_eq!(config.connections.max_connections, 4096);
        assert_eq!(config.connections.header_read_timeout.as_secs(), 20);
        assert_eq!(config.requests.max_concurrent_requests, 512);
        assert_eq!(config.requests.body_idle_timeout.as_secs(), 60);
        assert!(config.requests.rate_limit.is_none());
        let config = parse(&[
            "--rate-limit",
            "10",
            "--trusted-proxies",
            "192.0.2.1, 10.0.0.0/8,2001:db8::/32",
        ])
        .resolve()
        .unwrap();
        let rate = config.requests.rate_limit.unwrap();
        assert_eq!((rate.per_second.get(), rate.burst.get()), (10, 20));
        let proxies: Vec<String> = rate
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, ["192.0.2.1/32", "10.0.0.0/8", "2001:db8::/32"]);
    }
}
