//! Every setting of `serve` as it is written: a flag, a `STOWAGE_*` environment variable, or a
//! kebab-case key of the TOML file, each optional so that the three can be layered.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::humantime_serde_opt;
use super::{
    AuthSettings, AzureSettings, CacheSettings, GcsSettings, NotificationSettings, PolicySettings,
    ProxySettings, ReplicationTable, TlsSettings,
};
use crate::telemetry::LogFormat;

/// Where storage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageKind {
    /// A local directory (or a mounted volume).
    Filesystem,
    /// An S3 bucket (AWS, Garage, MinIO, …), shared by every replica.
    S3,
    /// An Azure Blob Storage container, shared by every replica.
    Azure,
    /// A Google Cloud Storage bucket, shared by every replica.
    Gcs,
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

    /// Serve the web interface under /ui/ [default: false].
    #[arg(long, env = "STOWAGE_UI")]
    pub ui: Option<bool>,

    /// How long a web interface sign-in lasts [default: 8h].
    #[arg(long, env = "STOWAGE_UI_SESSION_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub ui_session_ttl: Option<Duration>,

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

    /// Azure Blob Storage (the `[azure]` table of the config file).
    #[command(flatten)]
    #[serde(default)]
    pub azure: AzureSettings,

    /// Google Cloud Storage (the `[gcs]` table of the config file).
    #[command(flatten)]
    #[serde(default)]
    pub gcs: GcsSettings,

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

    /// Immutable tags (the `[policies]` table of the config file only).
    #[arg(skip)]
    #[serde(default)]
    pub policies: PolicySettings,

    /// Replication to other registries (the `[[replication]]` tables of the config file only).
    #[arg(skip)]
    #[serde(default)]
    pub replication: Vec<ReplicationTable>,
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
            ui: self.ui.or(file.ui),
            ui_session_ttl: self.ui_session_ttl.or(file.ui_session_ttl),
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
            azure: self.azure.or(file.azure),
            gcs: self.gcs.or(file.gcs),
            blob_cache: self.blob_cache.or(file.blob_cache),
            // Upstreams are only ever set in the file.
            proxy: file.proxy,
            notifications: file.notifications,
            policies: file.policies,
            replication: file.replication,
        }
    }
}
