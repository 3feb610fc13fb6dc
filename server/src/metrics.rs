//! Prometheus metrics of a replica, served on their own listener (`--metrics-listen`), never
//! behind the registry's access control.
//!
//! Requests are labelled by route template (`manifest`, `blob`, `upload`, …), never by path:
//! repository names would make the series unbounded. Bytes are counted as the bodies flow, so
//! chunked uploads and streamed blobs count exactly.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::Frame;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::limits::{Event, Pressure};
use crate::routes::route_of;
use crate::storage::{Health, StorageObserver};

/// Latency buckets, in seconds, from a cached manifest to a slow storage call.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `upstream` is a configured prefix: as bounded as the config file.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    upstream: String,
    kind: &'static str,
    outcome: &'static str,
}

/// `rule` is a configured replication rule's name: as bounded as the config file.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicationLabels {
    rule: String,
    outcome: &'static str,
}

/// `endpoint` is a configured endpoint name: as bounded as the config file.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    tier: &'static str,
    outcome: &'static str,
}

/// Names clients chose: bounded by [`STORED_SERIES`] per family, the largest kept.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepositoryLabels {
    repository: String,
}

/// A quota rule and the repository or namespace it counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    quota: String,
    /// `repository` or `namespace`.
    scope: String,
    name: String,
}

/// A quota rule, as refusals name it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaNameLabels {
    quota: String,
}

/// One repository or namespace under a quota: what it stores and what it may.
#[derive(Debug, Clone, Copy)]
pub struct QuotaFigure<'a> {
    pub quota: &'a str,
    pub scope: &'a str,
    pub name: &'a str,
    pub used: u64,
    pub limit: u64,
}

/// Bytes as a gauge holds them: saturating at `i64::MAX`.
fn gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The most namespaces, and repositories, whose usage is exported: the largest, so a registry
/// of many small repositories cannot swell the scrape.
pub const STORED_SERIES: usize = 500;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// Every metric of the replica.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    received_bytes: Counter,
    sent_bytes: Counter,
    uploads_started: Counter,
    uploads_finished: Counter,
    uploads_in_flight: Gauge,
    storage_operations: Family<StorageLabels, Counter>,
    storage_seconds: Family<OperationLabels, Histogram>,
    storage_available: Gauge,
    auth_failures: Family<ReasonLabels, Counter>,
    overload: Family<ReasonLabels, Counter>,
    purged_uploads: Counter,
    purged_bytes: Counter,
    proxy: Family<ProxyLabels, Counter>,
    events_pending: Family<EndpointLabels, Gauge>,
    events_oldest: Family<EndpointLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    events_delivered: Family<EndpointLabels, Counter>,
    events_failed: Family<EndpointLabels, Counter>,
    event_retries: Family<EndpointLabels, Counter>,
    blob_cache: Family<CacheLabels, Counter>,
    replication: Family<ReplicationLabels, Counter>,
    stored_bytes: Gauge,
    namespace_bytes: Family<NamespaceLabels, Gauge>,
    repository_bytes: Family<RepositoryLabels, Gauge>,
    quota_used: Family<QuotaLabels, Gauge>,
    quota_limit: Family<QuotaLabels, Gauge>,
    quota_refusals: Family<QuotaNameLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("stowage");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route template, method and status class",
            requests.clone(),
        );
        let request_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request (to its response headers), by route template and method",
            request_seconds.clone(),
        );
        let received_bytes = Counter::default();
        registry.register(
            "http_received_bytes",
            "Request body bytes received",
            received_bytes.clone(),
        );
        let sent_bytes = Counter::default();
        registry.register(
            "http_sent_bytes",
            "Response body bytes sent",
            sent_bytes.clone(),
        );
        let uploads_started = Counter::default();
        registry.register(
            "uploads_started",
            "Blob upload sessions started here (monolithic pushes included)",
            uploads_started.clone(),
        );
        let uploads_finished = Counter::default();
        registry.register(
            "uploads_finished",
            "Blob uploads finished here into a blob",
            uploads_finished.clone(),
        );
        let uploads_in_flight = Gauge::default();
        registry.register(
            "uploads_in_flight",
            "Upload requests (POST, PATCH, PUT) being handled here now",
            uploads_in_flight.clone(),
        );
        let storage_operations = Family::<StorageLabels, Counter>::default();
        registry.register(
            "storage_operations",
            "Storage calls, by operation and outcome (ok, not_found, unavailable, error)",
            storage_operations.clone(),
        );
        let storage_seconds = Family::<OperationLabels, Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        registry.register(
            "storage_operation_duration_seconds",
            "Time storage calls took, by operation",
            storage_seconds.clone(),
        );
        let stored_bytes = Gauge::default();
        registry.register(
            "stored_bytes",
            "Bytes the repositories store, each blob counted once, as last counted here",
            stored_bytes.clone(),
        );
        let namespace_bytes = Family::<NamespaceLabels, Gauge>::default();
        registry.register(
            "namespace_stored_bytes",
            "Bytes a namespace (a repository name's first part) stores, each blob once; the \
             largest 500",
            namespace_bytes.clone(),
        );
        let repository_bytes = Family::<RepositoryLabels, Gauge>::default();
        registry.register(
            "repository_stored_bytes",
            "Bytes a repository stores, each blob once; the largest 500",
            repository_bytes.clone(),
        );
        let quota_used = Family::<QuotaLabels, Gauge>::default();
        registry.register(
            "quota_used_bytes",
            "Bytes a repository or namespace under a quota stores, as last counted here; the \
             fullest 500",
            quota_used.clone(),
        );
        let quota_limit = Family::<QuotaLabels, Gauge>::default();
        registry.register(
            "quota_limit_bytes",
            "Bytes a repository or namespace under a quota may store",
            quota_limit.clone(),
        );
        let quota_refusals = Family::<QuotaNameLabels, Counter>::default();
        registry.register(
            "quota_refusals",
            "Blob uploads, mounts and manifest pushes refused for going over a quota",
            quota_refusals.clone(),
        );
        let storage_available = Gauge::default();
        registry.register(
            "storage_available",
            "1 while the storage probe finds storage answering, 0 otherwise",
            storage_available.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by access control: unauthorized (401), denied (403), \
             insufficient_scope (401), locked_out (429)",
            auth_failures.clone(),
        );
        let overload = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "overload_events",
            "What the overload limits refused or cut off, by kind",
            overload.clone(),
        );
        let purged_uploads = Counter::default();
        registry.register(
            "purged_uploads",
            "Stale upload sessions removed by the in-process purge",
            purged_uploads.clone(),
        );
        let purged_bytes = Counter::default();
        registry.register(
            "purged_bytes",
            "Bytes freed by the in-process purge",
            purged_bytes.clone(),
        );
        let proxy = Family::<ProxyLabels, Counter>::default();
        registry.register(
            "proxy_requests",
            "Pulls through the cache, by upstream prefix, kind (manifest, blob) and outcome \
             (hit, revalidated, miss, stale, upstream_error)",
            proxy.clone(),
        );
        let replication = Family::<ReplicationLabels, Counter>::default();
        registry.register(
            "replication_work",
            "Replication work done per rule, by outcome (copied, deleted, skipped: nothing to \
             do; retried: the destination was unreachable or busy; refused: for good). A \
             rule's lag is events_oldest_pending_seconds of its outbox, endpoint=\"<rule>\"",
            replication.clone(),
        );
        let events_pending = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "events_pending",
            "Events waiting in an endpoint's outbox, as this replica last saw it",
            events_pending.clone(),
        );
        let events_oldest =
            Family::<EndpointLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "events_oldest_pending_seconds",
            "Age of the oldest event waiting in an endpoint's outbox",
            events_oldest.clone(),
        );
        let events_delivered = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "events_delivered",
            "Events this replica delivered to an endpoint",
            events_delivered.clone(),
        );
        let events_failed = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "event_deliveries_failed",
            "Deliveries to an endpoint that failed (the events stay, and are retried)",
            events_failed.clone(),
        );
        let event_retries = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "event_delivery_retries",
            "Deliveries to an endpoint that failed again on a retry",
            event_retries.clone(),
        );
        let blob_cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "blob_cache_lookups",
            "Blob-descriptor cache lookups, by tier (memory, redis) and outcome (hit, miss, \
             error, bypassed: a sweep announced or storage not heard from)",
            blob_cache.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version", build);
        Self {
            registry,
            requests,
            request_seconds,
            received_bytes,
            sent_bytes,
            uploads_started,
            uploads_finished,
            uploads_in_flight,
            storage_operations,
            storage_seconds,
            storage_available,
            auth_failures,
            overload,
            purged_uploads,
            purged_bytes,
            proxy,
            events_pending,
            events_oldest,
            events_delivered,
            events_failed,
            event_retries,
            blob_cache,
            replication,
            stored_bytes,
            namespace_bytes,
            repository_bytes,
            quota_used,
            quota_limit,
            quota_refusals,
        }
    }
}

impl Metrics {
    /// The text exposition, with the gauges read from `health` and the counters from
    /// `pressure` brought up to date.
    pub fn encode(&self, health: &Health, pressure: &Pressure) -> String {
        self.storage_available.set(i64::from(health.report().ready));
        for (event, reason) in [
            (Event::ConnectionRefused, "connection_refused"),
            (Event::RequestShed, "request_shed"),
            (Event::RateLimited, "rate_limited"),
            (Event::HeaderTimeout, "header_timeout"),
            (Event::BodyIdleTimeout, "body_idle_timeout"),
        ] {
            let counter = self.overload.get_or_create(&ReasonLabels { reason });
            let total = pressure.total(event);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts a request refused by access control.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one piece of a replication rule's work.
    pub fn replication_outcome(&self, rule: &str, outcome: &'static str) {
        self.replication
            .get_or_create(&ReplicationLabels {
                rule: rule.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts what the in-process purge removed.
    pub fn proxy_outcome(&self, upstream: &str, kind: &'static str, outcome: &'static str) {
        self.proxy
            .get_or_create(&ProxyLabels {
                upstream: upstream.to_owned(),
                kind,
                outcome,
            })
            .inc();
    }

    /// Counts a lookup in one tier of the blob-descriptor cache.
    pub fn blob_cache(&self, tier: &'static str, outcome: &'static str) {
        self.blob_cache
            .get_or_create(&CacheLabels { tier, outcome })
            .inc();
    }

    pub fn events_pending(&self, endpoint: &str, pending: usize, oldest: Duration) {
        let labels = EndpointLabels {
            endpoint: endpoint.to_owned(),
        };
        self.events_pending
            .get_or_create(&labels)
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.events_oldest
            .get_or_create(&labels)
            .set(oldest.as_secs_f64());
    }

    pub fn events_delivered(&self, endpoint: &str, count: usize) {
        self.events_delivered
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_owned(),
            })
            .inc_by(count as u64);
    }

    /// A failed delivery; `retry` when it was itself a retry.
    pub fn events_failed(&self, endpoint: &str, retry: bool) {
        let labels = EndpointLabels {
            endpoint: endpoint.to_owned(),
        };
        self.events_failed.get_or_create(&labels).inc();
        if retry {
            self.event_retries.get_or_create(&labels).inc();
        }
    }

    pub fn purged(&self, uploads: u64, bytes: u64) {
        self.purged_uploads.inc_by(uploads);
        self.purged_bytes.inc_by(bytes);
    }

    /// Replaces the usage figures with a new count: `total` bytes, and (name, bytes) of
    /// `namespaces` and `repositories`, at most [`STORED_SERIES`] of each.
    pub fn stored(&self, total: u64, namespaces: &[(&str, u64)], repositories: &[(&str, u64)]) {
        self.stored_bytes.set(gauge(total));
        self.namespace_bytes.clear();
        for &(namespace, bytes) in namespaces.iter().take(STORED_SERIES) {
            self.namespace_bytes
                .get_or_create(&NamespaceLabels {
                    namespace: namespace.to_owned(),
                })
                .set(gauge(bytes));
        }
        self.repository_bytes.clear();
        for &(repository, bytes) in repositories.iter().take(STORED_SERIES) {
            self.repository_bytes
                .get_or_create(&RepositoryLabels {
                    repository: repository.to_owned(),
                })
                .set(gauge(bytes));
        }
    }

    /// A push refused for going over `quota`.
    pub fn quota_refused(&self, quota: &str) {
        self.quota_refusals
            .get_or_create(&QuotaNameLabels {
                quota: quota.to_owned(),
            })
            .inc();
    }

    /// Replaces the quota figures with a new count, at most [`STORED_SERIES`] of them (the
    /// fullest, when `figures` come fullest first).
    pub fn quotas(&self, figures: &[QuotaFigure<'_>]) {
        self.quota_used.clear();
        self.quota_limit.clear();
        for figure in figures.iter().take(STORED_SERIES) {
            let labels = QuotaLabels {
                quota: figure.quota.to_owned(),
                scope: figure.scope.to_owned(),
                name: figure.name.to_owned(),
            };
            self.quota_used
                .get_or_create(&labels)
                .set(gauge(figure.used));
            self.quota_limit
                .get_or_create(&labels)
                .set(gauge(figure.limit));
        }
    }
}

impl StorageObserver for Metrics {
    fn observe(&self, operation: &'static str, outcome: &'static str, elapsed: Duration) {
        self.storage_operations
            .get_or_create(&StorageLabels { operation, outcome })
            .inc();
        self.storage_seconds
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }
}

/// Counts every request and its bytes.
pub async fn measure(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = route_of(request.uri().path());
    let method = method_label(request.method());
    let upload = matches!(route, "uploads" | "upload") && method != "GET";
    let in_flight = upload.then(|| InFlight::new(&metrics.uploads_in_flight));
    let request = request.map(|body| {
        Body::new(Counted {
            inner: body,
            counter: metrics.received_bytes.clone(),
        })
    });
    let response = next.run(request).await;
    drop(in_flight);
    let status = response.status();
    let class = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: class,
        })
        .inc();
    metrics
        .request_seconds
        .get_or_create(&RouteLabels { route, method })
        .observe(started.elapsed().as_secs_f64());
    // A POST that answers 202 opened a session, one that answers 201 pushed a blob whole (or
    // mounted it); a 201 on a session finished it.
    if route == "uploads" && method == "POST" && status.is_success() {
        metrics.uploads_started.inc();
    }
    if status == http::StatusCode::CREATED && matches!(route, "uploads" | "upload") {
        metrics.uploads_finished.inc();
    }
    response.map(|body| {
        Body::new(Counted {
            inner: body,
            counter: metrics.sent_bytes.clone(),
        })
    })
}

/// The method label: the methods the API serves, and `other` for anything a client makes up,
/// so that no client can multiply the series.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Holds the in-flight gauge up while an upload request runs.
struct InFlight(Gauge);

impl InFlight {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A body that adds the size of each data frame to a counter as it passes.
struct Counted {
    inner: Body,
    counter: Counter,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
