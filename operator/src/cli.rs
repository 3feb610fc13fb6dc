//! The operator's command line, and the process around the controller: metrics and health
//! endpoints, and leader election so that only one of several replicas reconciles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::{Parser, ValueEnum};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;

use crate::controller::{self, Context, InUseScope};
use crate::crd::Registry;
use crate::metrics::Metrics;

/// The default server image: the `stowage` build of this operator's version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/stowage/stowage:", env!("CARGO_PKG_VERSION"));

/// Runs Stowage registries from `Registry` resources.
#[derive(Debug, Parser)]
#[command(name = "stowage-operator", version, about)]
pub struct Cli {
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(
        long,
        env = "STOWAGE_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,

    /// Watch only this namespace (the operator then needs only a Role there).
    #[arg(long, env = "STOWAGE_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,

    /// Server image for Registries that name none.
    #[arg(long, env = "STOWAGE_OPERATOR_DEFAULT_IMAGE", default_value = DEFAULT_IMAGE)]
    pub default_image: String,

    /// Hold a Lease before reconciling, so that several replicas can run.
    #[arg(long, env = "STOWAGE_OPERATOR_LEADER_ELECTION")]
    pub leader_election: bool,

    /// Name of the Lease.
    #[arg(
        long,
        env = "STOWAGE_OPERATOR_LEASE_NAME",
        default_value = "stowage-operator"
    )]
    pub lease_name: String,

    /// Namespace of the Lease; the operator's own (POD_NAMESPACE) by default.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Log format.
    #[arg(long, env = "STOWAGE_OPERATOR_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,

    /// Log filter, such as `info` or `stowage_operator=debug,info`.
    #[arg(long, env = "STOWAGE_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Collect the image digests that pods run in these namespaces (`*`: every namespace), so
    /// retention never deletes what a workload uses. The operator needs `list` on pods there
    /// (the chart's `inUseDigests` grants it). Off when empty.
    #[arg(
        long,
        env = "STOWAGE_OPERATOR_IN_USE_NAMESPACES",
        value_delimiter = ','
    )]
    pub in_use_namespaces: Vec<String>,

    /// How long a digest stays in use after the last pod running it was seen.
    #[arg(long, env = "STOWAGE_OPERATOR_IN_USE_KEEP_FOR", default_value = "24h", value_parser = humantime::parse_duration)]
    pub in_use_keep_for: std::time::Duration,

    /// Check the flags and exit, without connecting to the cluster.
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What the health endpoints report.
#[derive(Default)]
struct Health {
    /// Connected to the API server and reconciling (or standing by as a follower).
    ready: AtomicBool,
}

struct HttpState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The metrics and health endpoints.
fn http_router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<Arc<HttpState>>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    state.metrics.encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(state): State<Arc<HttpState>>| async move {
                if state.health.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .with_state(Arc::new(HttpState { metrics, health }))
}

impl Cli {
    /// Where digests in use are collected, if anywhere.
    fn in_use_scope(&self) -> Option<InUseScope> {
        let namespaces: Vec<String> = self
            .in_use_namespaces
            .iter()
            .map(|ns| ns.trim().to_owned())
            .filter(|ns| !ns.is_empty())
            .collect();
        if namespaces.is_empty() {
            return None;
        }
        let every = namespaces.iter().any(|ns| ns == "*");
        Some(InUseScope {
            namespaces: if every { Vec::new() } else { namespaces },
            keep_for: self.in_use_keep_for,
        })
    }

    pub async fn run(self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.check_config {
            tracing_subscriber::EnvFilter::try_new(&self.log_level)?;
            if self.leader_election && self.lease_namespace.is_none() && self.namespace.is_none() {
                return Err(
                    "--leader-election needs the Lease's namespace: set POD_NAMESPACE".into(),
                );
            }
            println!("configuration ok");
            return Ok(());
        }
        init_logging(self.log_format, &self.log_level)?;
        install_crypto_provider();
        let client = Client::try_default().await?;
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(Health::default());

        let listener = tokio::net::TcpListener::bind(self.metrics_addr).await?;
        let router = http_router(Arc::clone(&metrics), Arc::clone(&health));
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "metrics endpoint failed");
            }
        });

        let registries: Api<Registry> = match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let issuer = service_account_issuer(std::path::Path::new(SERVICE_ACCOUNT_TOKEN));
        match &issuer {
            Some(issuer) => tracing::info!(issuer, "the cluster's service account issuer"),
            None => tracing::info!(
                "no service account token to learn the cluster's issuer from: workload \
                 identity needs spec.auth.workloadIdentity.issuer"
            ),
        }
        let context = Arc::new(
            Context::new(client.clone(), metrics, self.default_image.clone())
                .with_service_account_issuer(issuer)
                .with_in_use_digests(self.in_use_scope()),
        );

        if !self.leader_election {
            health.ready.store(true, Ordering::Relaxed);
            controller::run(context, registries, self.namespace.as_deref()).await;
            return Ok(());
        }

        let lease_namespace = self
            .lease_namespace
            .clone()
            .or_else(|| self.namespace.clone())
            .ok_or("--leader-election needs the Lease's namespace: set POD_NAMESPACE")?;
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("stowage-operator-{}", std::process::id()));
        let manager = LeaseManagerBuilder::new(client, &self.lease_name)
            .with_namespace(&lease_namespace)
            .with_identity(&identity)
            .with_duration(15)
            .with_grace(5)
            .with_field_manager("stowage-operator-lease")
            .build()
            .await?;
        let (mut leader, lease_task) = manager.watch().await;
        // A follower is healthy and ready: it stands by.
        health.ready.store(true, Ordering::Relaxed);
        tracing::info!(%identity, lease = %self.lease_name, "waiting to lead");
        while !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return Err("leader election stopped".into());
            }
        }
        tracing::info!(%identity, "leading: reconciling");
        let namespace = self.namespace.clone();
        tokio::select! {
            () = controller::run(context, registries, namespace.as_deref()) => {}
            lost = async {
                loop {
                    if leader.changed().await.is_err() || !*leader.borrow() {
                        return;
                    }
                }
            } => {
                let () = lost;
                // Another replica may be reconciling now: stop at once and restart as follower.
                return Err("lost the leader lease".into());
            }
        }
        drop(leader);
        let _ = lease_task.await;
        Ok(())
    }
}

/// Installs aws-lc-rs as the process-wide rustls crypto provider before any TLS client exists:
/// rustls panics at the first client when feature unification compiled in more than one
/// provider and none was chosen. The workspace builds only aws-lc-rs (the AWS SDK's choice).
pub fn install_crypto_provider() {
    // Err only when a provider is already installed, which is what we want either way.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn init_logging(
    format: LogFormat,
    level: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    }
}

/// Where a pod's own service account token is mounted.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The cluster's service account issuer: the `iss` of the operator's own projected token. It
/// is read, not verified: the file is the kubelet's, and only its issuer is used, to tell the
/// registry pods which issuer's tokens to accept (whose signatures they then verify).
pub fn service_account_issuer(token_file: &std::path::Path) -> Option<String> {
    use base64::Engine;
    let token = std::fs::read_to_string(token_file).ok()?;
    let payload = token.trim().split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?,
    )
    .ok()?;
    claims["iss"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_issuer_comes_from_the_operator_s_own_token() {
        use base64::Engine;
        let encode = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let claims =
            r#"{"iss":"https://oidc.example/cluster","sub":"system:serviceaccount:ops:op"}"#;
        let token = format!("{}.{}.sig\n", encode(r#"{"alg":"RS256"}"#), encode(claims));
        std::fs::write(&file, token).unwrap();
        assert_eq!(
            super::service_account_issuer(&file).as_deref(),
            Some("https://oidc.example/cluster")
        );
        std::fs::write(&file, "not a token").unwrap();
        assert_eq!(super::service_account_issuer(&file), None);
        assert_eq!(
            super::service_account_issuer(&dir.path().join("none")),
            None
        );
    }

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["stowage-operator"]).expect("parses");
        assert_eq!(cli.metrics_addr.port(), 8080);
        assert!(!cli.leader_election);
        assert_eq!(cli.default_image, DEFAULT_IMAGE);
        assert!(DEFAULT_IMAGE.ends_with(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn refuses_unknown_flags() {
        assert!(Cli::try_parse_from(["stowage-operator", "--leader"]).is_err());
        assert!(Cli::try_parse_from(["stowage-operator", "--log-format", "xml"]).is_err());
    }

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_and_metrics_endpoints() {
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(Health::default());
        let router = http_router(Arc::clone(&metrics), Arc::clone(&health));
        assert_eq!(get(router.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(router.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(router.clone(), "/readyz").await.0, StatusCode::OK);
        drop(metrics.reconcile_started());
        let (status, text) = get(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("stowage_operator_reconciles_total 1"),
            "{text}"
        );
    }
}
