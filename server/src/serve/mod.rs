//! Start-up and shutdown of `stowage serve`.

mod connections;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use connections::ConnectionLimits;

use crate::api::{self, ApiSettings, AppState, Gate};
use crate::auth::AuthConfig;
use crate::auth::{Auth, AuthSetupError};
use crate::events::EndpointSettings;
use crate::gc;
use crate::limits::{Pressure, RequestLimits};
use crate::metrics::Metrics;
use crate::registry::{Limits, Registry};
use crate::storage;
use crate::storage::{StorageConfig, Timeouts};
use crate::telemetry::LogFormat;
use crate::tls::ServerTls;
use crate::upload::{SecretKey, TokenKeys, Uploads};

/// How the storage guard bounds storage calls ([`crate::storage::Guarded`]).
#[derive(Debug, Clone, Copy)]
pub struct GuardSettings {
    pub timeouts: Timeouts,
    pub failures_to_open: u32,
    pub probe_interval: Duration,
}

/// `serve`'s settings: each feature's own, as `config` resolves them from flags, environment
/// and file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub storage: StorageConfig,
    /// How storage calls are bounded, and when the breaker opens.
    pub guard: GuardSettings,
    pub connections: ConnectionLimits,
    pub requests: RequestLimits,
    /// `None` when no key was configured: a random one will be made.
    pub keys: Option<TokenKeys>,
    pub upload_token_ttl: Duration,
    pub limits: Limits,
    pub api: ApiSettings,
    /// The web interface.
    pub ui: crate::ui::Settings,
    pub log_format: LogFormat,
    pub log_level: String,
    pub shutdown_grace: Duration,
    /// In-process upload purging: how often, and the age limit.
    pub purge_uploads: Option<(Duration, Duration)>,
    /// Access control; `None` when anyone may do anything.
    pub auth: Option<AuthConfig>,
    /// The certificate and key files of HTTPS; `None` for plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How often files read at run time are checked for changes.
    pub reload_interval: Duration,
    /// Where `/metrics` is served, when it is.
    pub metrics_listen: Option<SocketAddr>,
    /// Proxies whose `X-Forwarded-For` names the client (rate limits, failed logins).
    pub trusted_proxies: Vec<IpNet>,
    /// The blob-descriptor cache.
    pub blob_cache: crate::registry::descriptors::CacheConfig,
    /// The pull-through cache's upstreams; empty when there is none.
    pub proxy: crate::proxy::Settings,
    /// Where registry events are delivered; empty for nowhere.
    pub notifications: Vec<EndpointSettings>,
    /// Immutable tags.
    pub policies: Arc<crate::policies::Policies>,
    /// Registries images are replicated to.
    pub replication: Vec<crate::replication::RuleSettings>,
}

/// How often what overload refused is logged.
const PRESSURE_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// File descriptors kept for storage, logs and the like, beyond client connections.
const RESERVED_FILES: u64 = 256;

/// Builds the application for `config` on an opened store, guarded by time limits and a
/// circuit breaker whose probe runs for as long as the application lives.
pub async fn app(
    config: &Settings,
    store: Arc<dyn storage::BlobStore>,
    keys: TokenKeys,
) -> Result<axum::Router, SetupError> {
    let built = build(config, store, keys, &Arc::new(Pressure::default()), None).await?;
    Ok(built.app)
}

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error("pull-through cache: {0}")]
    Proxy(String),
    #[error("notifications: {0}")]
    Events(String),
    #[error(transparent)]
    Replication(#[from] crate::replication::Error),
}

/// The application, and what the metrics endpoint reads.
struct Built {
    app: axum::Router,
    health: Arc<storage::Health>,
    events: Option<Arc<crate::events::Notifier>>,
}

async fn build(
    config: &Settings,
    store: Arc<dyn storage::BlobStore>,
    keys: TokenKeys,
    pressure: &Arc<Pressure>,
    metrics: Option<Arc<Metrics>>,
) -> Result<Built, SetupError> {
    // A registry that starts empty has a whole index from its first push on.
    match crate::gc::adopt_if_empty(Arc::clone(&store)).await {
        Ok(true) => tracing::info!("empty storage: its reference index is whole from here on"),
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "could not look whether the storage is empty"),
    }
    let gate = match &config.auth {
        Some(auth) => Some(Arc::new(Gate {
            auth: Arc::new(Auth::start(auth.clone()).await?),
            scheme: if config.tls.is_some() {
                "https"
            } else {
                "http"
            },
            trusted_proxies: config.trusted_proxies.clone(),
            metrics: metrics.clone(),
        })),
        None => None,
    };
    let guard = &config.guard;
    let guarded = storage::Guarded::start(
        store,
        guard.timeouts,
        guard.failures_to_open,
        guard.probe_interval,
        metrics
            .clone()
            .map(|m| m as Arc<dyn storage::StorageObserver>),
    );
    let health = guarded.health();
    let store: Arc<dyn storage::BlobStore> = guarded;
    let descriptors = crate::registry::descriptors::BlobDescriptors::start(
        &config.blob_cache,
        Arc::clone(&store),
        metrics.clone(),
    );
    let registry = Registry::new(Arc::clone(&store), config.limits.clone())
        .with_descriptors(descriptors)
        .with_quotas(config.policies.quotas().to_vec(), metrics.clone());
    let upload_key = keys.current().clone();
    let uploads = Uploads::new(Arc::clone(&store), keys, config.upload_token_ttl);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
    let mut outlets = crate::events::webhooks(&config.notifications, metrics.as_ref())
        .map_err(SetupError::Events)?;
    let rules = crate::replication::rules(&config.replication)?;
    outlets.extend(crate::replication::outlets(
        &rules,
        &registry,
        metrics.as_ref(),
    ));
    if rules
        .iter()
        .any(|rule| rule.settings.reconcile_every.is_some())
    {
        tokio::spawn(crate::replication::reconcile_on_schedule(
            rules,
            registry.clone(),
        ));
    }
    let events = crate::events::Notifier::start(
        outlets,
        Arc::clone(&store),
        format!("{host}:{}", config.listen.port()),
        if config.tls.is_some() {
            "https"
        } else {
            "http"
        },
    );
    let proxy = crate::proxy::Proxy::new(&config.proxy, config.reload_interval, metrics.clone())
        .map_err(SetupError::Proxy)?;
    let state = AppState {
        registry,
        uploads,
        settings: Arc::new(config.api.clone()),
        health: Arc::clone(&health),
        proxy,
        events: events.clone(),
        policies: Arc::clone(&config.policies),
    };
    let pages = config.ui.enabled.then(|| {
        crate::ui::router(
            state.clone(),
            gate.clone(),
            &upload_key,
            &config.ui,
            config.tls.is_some(),
            config.trusted_proxies.clone(),
        )
    });
    let app = api::router(state, gate, &config.requests, pressure, metrics, pages);
    Ok(Built {
        app,
        health,
        events,
    })
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish (up to the grace period).
pub async fn serve(config: Settings) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let store = storage::open(&config.storage).await?;
    let keys = config.keys.clone().unwrap_or_else(|| {
        tracing::warn!(
            "no upload key configured: using a random one; uploads will fail across replicas or \
             restarts (set --upload-secret or --upload-secret-file)"
        );
        TokenKeys::new(SecretKey::random(), None)
    });
    let metrics = config.metrics_listen.map(|_| Arc::new(Metrics::default()));
    if let Some(metrics) = &metrics {
        tokio::spawn(count_usage_periodically(
            Arc::clone(&store),
            Arc::clone(metrics),
            config.policies.quotas().to_vec(),
        ));
    }
    if let Some((interval, older_than)) = config.purge_uploads {
        tokio::spawn(purge_periodically(
            Arc::clone(&store),
            interval,
            older_than,
            metrics.clone(),
        ));
    }
    let pressure = Arc::new(Pressure::default());
    Pressure::log_periodically(&pressure, PRESSURE_LOG_INTERVAL);
    let limits = ConnectionLimits {
        max_connections: connections_within_file_limit(config.connections.max_connections),
        ..config.connections
    };
    let Built {
        app,
        health,
        events,
    } = build(&config, store, keys, &pressure, metrics.clone()).await?;
    if let (Some(address), Some(metrics)) = (config.metrics_listen, metrics) {
        serve_metrics(address, metrics, health, Arc::clone(&pressure)).await?;
    }
    let tls = config
        .tls
        .clone()
        .map(|(cert, key)| ServerTls::start(cert, key, config.reload_interval))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        storage = ?config.storage,
        tls = tls.is_some(),
        access_control = config.auth.is_some(),
        max_connections = limits.max_connections,
        "serving"
    );
    let signalled = Arc::new(std::sync::OnceLock::new());
    let stopping = {
        let signalled = Arc::clone(&signalled);
        async move {
            shutdown_signal().await;
            let _ = signalled.set(tokio::time::Instant::now());
            tracing::info!("shutting down: finishing in-flight requests");
        }
    };
    connections::serve(
        listener,
        tls.as_ref().map(ServerTls::acceptor),
        app,
        limits,
        pressure,
        stopping,
        config.shutdown_grace,
    )
    .await;
    // What is left of the grace period goes to delivering this replica's events; whatever is
    // still pending after it, another replica (or this one, restarted) delivers.
    if let Some(events) = events {
        let since = signalled
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now);
        events.drain(since + config.shutdown_grace).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Raises the open-file limit to its hard limit, and keeps `wanted` connections below it.
fn connections_within_file_limit(wanted: usize) -> usize {
    let files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(files) => files,
        Err(error) => {
            tracing::warn!(%error, "could not raise the open-file limit");
            return wanted;
        }
    };
    let room = usize::try_from(files.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    if wanted > room {
        tracing::warn!(
            open_file_limit = files,
            wanted,
            serving = room,
            "the open-file limit leaves room for fewer connections than --max-connections"
        );
    } else {
        tracing::info!(open_file_limit = files, "raised the open-file limit");
    }
    wanted.min(room.max(1))
}

/// Serves `/metrics` on `address`, on its own listener: outside the registry's access control
/// and request limits, so monitoring works whatever the load.
async fn serve_metrics(
    address: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<storage::Health>,
    pressure: Arc<Pressure>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "serving metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = metrics.encode(&health, &pressure);
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics listener failed");
        }
    });
    Ok(())
}

/// `serve`'s in-process upload purging, for installs without a scheduler.
async fn purge_periodically(
    store: Arc<dyn storage::BlobStore>,
    interval: Duration,
    older_than: Duration,
    metrics: Option<Arc<Metrics>>,
) {
    let options = gc::PurgeOptions {
        dry_run: false,
        older_than,
    };
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        match gc::purge_uploads(Arc::clone(&store), &options).await {
            Ok(report) => {
                if let Some(metrics) = &metrics {
                    metrics.purged(report.uploads_deleted as u64, report.bytes_freed);
                }
                tracing::info!(
                    uploads = report.uploads_deleted,
                    bytes = report.bytes_freed,
                    "purged stale uploads"
                );
            }
            Err(err) => tracing::warn!(error = %err, "purging stale uploads failed"),
        }
    }
}

/// How often a replica counts what is stored for its metrics: one listing of the index's usage
/// entries (a request per thousand blobs on S3).
const USAGE_COUNT_INTERVAL: Duration = Duration::from_secs(10 * 60);

async fn count_usage_periodically(
    store: Arc<dyn storage::BlobStore>,
    metrics: Arc<Metrics>,
    quotas: Vec<crate::policies::Quota>,
) {
    let index = crate::index::StoredIndex::new(store);
    let mut ticks = tokio::time::interval(USAGE_COUNT_INTERVAL);
    loop {
        ticks.tick().await;
        match crate::index::usage::count(&index, None).await {
            Ok(counted) => {
                let usage = &counted.usage;
                metrics.stored(
                    usage.total_bytes,
                    &usage.largest_namespaces(crate::metrics::STORED_SERIES),
                    &usage.largest_repositories(crate::metrics::STORED_SERIES),
                );
                let against = usage.against(&quotas);
                let figures: Vec<crate::metrics::QuotaFigure<'_>> = against
                    .iter()
                    .map(|q| crate::metrics::QuotaFigure {
                        quota: &q.quota,
                        scope: q.scope,
                        name: &q.name,
                        used: q.used_bytes,
                        limit: q.limit_bytes,
                    })
                    .collect();
                metrics.quotas(&figures);
            }
            Err(err) => tracing::warn!(error = %err, "counting what is stored failed"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
