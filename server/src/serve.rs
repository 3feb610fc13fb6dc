//! Start-up and shutdown of `stowage serve`.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, AppState};
use crate::config::ServeConfig;
use crate::gc;
use crate::registry::Registry;
use crate::storage;
use crate::upload::{SecretKey, TokenKeys, Uploads};

/// Builds the application for `config` on an opened store, guarded by time limits and a
/// circuit breaker whose probe runs for as long as the application lives.
pub fn app(
    config: &ServeConfig,
    store: Arc<dyn storage::BlobStore>,
    keys: TokenKeys,
) -> axum::Router {
    let guard = &config.guard;
    let guarded = storage::Guarded::start(
        store,
        guard.timeouts,
        guard.failures_to_open,
        guard.probe_interval,
    );
    let health = guarded.health();
    let store: Arc<dyn storage::BlobStore> = guarded;
    let registry = Registry::new(Arc::clone(&store), config.limits.clone());
    let uploads = Uploads::new(store, keys, config.upload_token_ttl);
    api::router(AppState {
        registry,
        uploads,
        settings: Arc::new(config.api.clone()),
        health,
    })
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish (up to the grace period).
pub async fn serve(config: ServeConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let store = storage::open(&config.storage).await?;
    let keys = config.keys.clone().unwrap_or_else(|| {
        tracing::warn!(
            "no upload key configured: using a random one; uploads will fail across replicas or \
             restarts (set --upload-secret or --upload-secret-file)"
        );
        TokenKeys::new(SecretKey::random(), None)
    });
    if let Some((interval, older_than)) = config.purge_uploads {
        tokio::spawn(purge_periodically(Arc::clone(&store), interval, older_than));
    }
    let app = app(&config, store, keys);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, storage = ?config.storage, "serving");
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stopping_tx.send(true);
    });
    let grace = config.shutdown_grace;
    let deadline = async move {
        let mut stopping = stopping_rx;
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result?,
        () = deadline => tracing::warn!("grace period over: dropping remaining requests"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// `serve`'s in-process upload purging, for installs without a scheduler.
async fn purge_periodically(
    store: Arc<dyn storage::BlobStore>,
    interval: Duration,
    older_than: Duration,
) {
    let options = gc::PurgeOptions {
        dry_run: false,
        older_than,
    };
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        match gc::purge_uploads(Arc::clone(&store), &options).await {
            Ok(report) => tracing::info!(
                uploads = report.uploads_deleted,
                bytes = report.bytes_freed,
                "purged stale uploads"
            ),
            Err(err) => tracing::warn!(error = %err, "purging stale uploads failed"),
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
