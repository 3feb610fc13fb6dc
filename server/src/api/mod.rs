//! HTTP only: parse the request, call the registry, shape the response. The spec's endpoints
//! live under one catch-all route (repository names contain slashes); [`OciPath`] picks
//! the endpoint and each handler module serves one group of them.

pub mod access;
mod blobs;
mod error;
pub mod events;
mod headers;
mod immutable;
mod listing;
mod manifests;
mod referrers;
mod state;
mod token;
mod uploads;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Deserialize;

pub use crate::routes::{LIVENESS_PATH, READINESS_PATH, TOKEN_PATH, route_of};
pub use access::{Caller, Gate};
pub use error::{ApiError, Code, DistributionCode};
pub use state::{ApiSettings, AppState};

use crate::limits::{self, Pressure, RequestLimits};
use crate::metrics::Metrics;
use crate::oci::RepositoryName;
use crate::oci::path::OciPath;

/// The registry's HTTP application: the distribution API behind `gate` (when access control
/// is on) and within `limits`, the token endpoint, `pages` (the web interface, which checks
/// access itself) within the same limits, and the health probes, which answer whatever the load.
pub fn router(
    state: AppState,
    gate: Option<Arc<Gate>>,
    limits: &RequestLimits,
    pressure: &Arc<Pressure>,
    metrics: Option<Arc<Metrics>>,
    pages: Option<Router<AppState>>,
) -> Router {
    let mut registry = Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/{*rest}", any(dispatch));
    if let Some(gate) = gate {
        registry = registry
            .layer(middleware::from_fn_with_state(
                Arc::clone(&gate),
                access::check,
            ))
            .route(TOKEN_PATH, any(token::serve).with_state(gate));
    }
    if let Some(pages) = pages {
        registry = registry.merge(pages);
    }
    let app = Router::new()
        .merge(limits::protect(registry, limits, pressure))
        .route(LIVENESS_PATH, get(|| async { "ok" }))
        .route(READINESS_PATH, get(ready))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(access_log));
    let app = match metrics {
        Some(metrics) => app.layer(middleware::from_fn_with_state(
            metrics,
            crate::metrics::measure,
        )),
        None => app,
    };
    app.with_state(state)
}

/// The API version check every client makes first.
async fn base() -> Response {
    axum::Json(serde_json::json!({})).into_response()
}

/// Ready when storage answers; a replica that cannot reach storage should get no traffic. The
/// body says how long ago storage was checked.
async fn ready(State(state): State<AppState>) -> Response {
    let report = state.health.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, report.to_string()).into_response()
}

/// One line per request, without the query string (it carries upload tokens).
async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let sent_body = sends_body(&request);
    let route = route_of(&path);
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    let mut response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response.headers_mut().insert(
        headers::DOCKER_DISTRIBUTION_API_VERSION,
        HeaderValue::from_static("registry/2.0"),
    );
    // An error may come before the body was read (a push refused at once): the connection then
    // cannot carry another request, so tell the client not to reuse it.
    if sent_body && !response.status().is_success() {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    tracing::info!(
        target: "stowage::access",
        %method,
        path,
        status = response.status().as_u16(),
        latency_ms = rounded_millis(started.elapsed()),
        trace_id = crate::telemetry::trace_id(&span),
        "request"
    );
    response
}

/// Whether an HTTP/1 request carries a body (HTTP/2 streams end on their own).
fn sends_body(request: &Request) -> bool {
    let headers = request.headers();
    request.version() <= http::Version::HTTP_11
        && (headers.contains_key(http::header::TRANSFER_ENCODING)
            || headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|length| length.as_bytes() != b"0"))
}

/// Milliseconds to the microsecond, so logs read `1.674`, not `1.6743439999999998`.
fn rounded_millis(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Query parameters used by any endpoint.
#[derive(Debug, Default, Deserialize)]
struct Params {
    digest: Option<String>,
    mount: Option<String>,
    from: Option<String>,
    #[serde(rename = "_state")]
    state: Option<String>,
    n: Option<String>,
    last: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    #[serde(rename = "digest-algorithm")]
    digest_algorithm: Option<String>,
}

/// The request as handlers see it.
struct Call {
    state: AppState,
    /// Who is calling, when access control is on.
    caller: Option<Caller>,
    /// Who and what caused any event this request leads to.
    origin: events::Origin,
    method: Method,
    headers: HeaderMap,
    params: Params,
    body: Body,
}

async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    caller: Option<axum::Extension<Caller>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rest = uri.path().strip_prefix("/v2/").unwrap_or_default();
    // No valid name, tag, digest or upload id contains '%': refusing it closes off encoded
    // slashes and dots before anything is parsed.
    if rest.contains('%') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            oci_spec::distribution::ErrorCode::NameInvalid,
            "percent-encoded characters are not allowed in registry paths",
        ));
    }
    let route = OciPath::parse(rest).ok_or_else(|| {
        ApiError::unsupported(
            StatusCode::NOT_FOUND,
            "no such endpoint in the distribution API",
        )
    })?;
    let params: Params = axum::extract::Query::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|err| ApiError::unsupported(StatusCode::BAD_REQUEST, err.body_text()))?;
    let is_write = !matches!(method, Method::GET | Method::HEAD);
    if is_write {
        state.refuse_writes(route.repository())?;
    }
    let caller = caller.map(|c| c.0);
    // Only worth building (a request id, header copies) when there are events to send.
    let origin = match &state.events {
        Some(_) => events::Origin {
            request: events::request_info(&method, &headers, peer.map(|p| p.0.0)),
            actor: caller
                .as_ref()
                .map(Caller::name)
                .filter(|name| !name.is_empty()),
        },
        None => events::Origin::default(),
    };
    let call = Call {
        state,
        caller,
        origin,
        method,
        headers,
        params,
        body,
    };
    match route {
        OciPath::Catalog => listing::catalog(call).await,
        OciPath::Tags { name } => listing::tags(call, repository(name)?).await,
        OciPath::Blob { name, digest } => blobs::serve(call, repository(name)?, digest).await,
        OciPath::Uploads { name } => uploads::start(call, repository(name)?).await,
        OciPath::Upload { name, id } => uploads::serve(call, repository(name)?, id).await,
        OciPath::Manifest { name, reference } => {
            manifests::serve(call, repository(name)?, reference).await
        }
        OciPath::Referrers { name, digest } => {
            referrers::list(call, repository(name)?, digest).await
        }
    }
}

impl AppState {
    /// Refuses a write to `repository` (or to the registry) that nobody may make: in read-only
    /// mode, or to a mirrored repository, which is the upstream's: pushes and deletes go there.
    pub fn refuse_writes(&self, repository: Option<&str>) -> Result<(), ApiError> {
        if self.settings.read_only {
            return Err(ApiError::unsupported(
                StatusCode::METHOD_NOT_ALLOWED,
                "the registry is in read-only mode",
            ));
        }
        let (Some(proxy), Some(name)) = (&self.proxy, repository) else {
            return Ok(());
        };
        let Some(route) = self::repository(name).ok().and_then(|name| {
            proxy
                .route(&name)
                .map(|r| r.upstream.config.url.to_string())
        }) else {
            return Ok(());
        };
        Err(ApiError::unsupported(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{name} mirrors {route}: it is read-only here; push to the upstream"),
        ))
    }

    /// Refuses deletes when they are disabled.
    pub fn refuse_deletes(&self) -> Result<(), ApiError> {
        if self.settings.deletes_enabled {
            Ok(())
        } else {
            Err(ApiError::unsupported(
                StatusCode::METHOD_NOT_ALLOWED,
                "deletes are disabled",
            ))
        }
    }
}

fn repository(name: &str) -> Result<RepositoryName, ApiError> {
    name.parse().map_err(|_| ApiError::name_invalid())
}

impl Call {
    fn header(&self, name: &axum::http::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the caller may pull from `repository`; everyone may without access control.
    fn may_pull(&self, repository: &str) -> bool {
        self.caller
            .as_ref()
            .is_none_or(|caller| caller.may_pull(repository))
    }

    fn method_not_allowed(&self) -> ApiError {
        ApiError::unsupported(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not supported on this endpoint", self.method),
        )
    }
}

/// The request's `Content-Length`, if it sent one; `SIZE_INVALID` when it is not a number.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()))
        .map(|parsed| parsed.ok_or_else(|| ApiError::size_invalid("invalid Content-Length")))
        .transpose()
}

/// A header value from text we built ourselves (digests, URLs of validated parts, numbers).
fn header_value(value: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(value.as_ref()).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn latency_is_logged_to_the_microsecond() {
        let cases = [
            (Duration::from_nanos(1_674_344), "1.674"),
            (Duration::from_nanos(999), "0.001"),
            (Duration::from_millis(250), "250"),
            (Duration::ZERO, "0"),
        ];
        for (elapsed, printed) in cases {
            assert_eq!(super::rounded_millis(elapsed).to_string(), printed);
        }
    }
}
