//! Limits per request that keep slow, stalled or too many clients from taking a replica down:
//! a body that sends nothing for a while is cut off ([`body`]), requests beyond a number in
//! flight are shed at once with `503` instead of queueing without bound, and (optionally) each
//! client is held to a request rate. Connection-level limits live in `serve::connections`.
//! Everything that happens is counted in [`Pressure`] and logged once per interval.

mod body;
mod pressure;
mod rate;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;

pub use pressure::{Event, Pressure};
pub use rate::{RateLimit, client_address, client_of, is_trusted, peer_of};

use crate::oci::{Code, DistributionCode, ErrorBody};

/// The request limits of the registry API.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Requests handled at once; more are shed with `503` and `Retry-After`.
    pub max_concurrent_requests: usize,
    /// How long a request body may send nothing before the request fails.
    pub body_idle_timeout: Duration,
    /// Requests per second per client, when set.
    pub rate_limit: Option<RateLimit>,
}

/// Applies `limits` to the registry API's routes (not to the health probes, which must answer
/// however loaded the replica is). Counts what it refuses in `pressure`.
pub fn protect<S>(routes: Router<S>, limits: &RequestLimits, pressure: &Arc<Pressure>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let shed = {
        let pressure = Arc::clone(pressure);
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |_: tower::BoxError| {
                let pressure = Arc::clone(&pressure);
                async move {
                    pressure.count(Event::RequestShed);
                    overloaded("the registry is busy; retry shortly")
                }
            }))
            .load_shed()
            .concurrency_limit(limits.max_concurrent_requests.max(1))
    };
    let body = Arc::new((limits.body_idle_timeout, Arc::clone(pressure)));
    let routes = routes
        .layer(shed)
        .layer(middleware::from_fn_with_state(body, idle_bodies));
    match &limits.rate_limit {
        Some(rate) => routes.layer(middleware::from_fn_with_state(
            rate.start(Arc::clone(pressure)),
            rate::limit,
        )),
        None => routes,
    }
}

/// Gives every request body the idle timeout.
async fn idle_bodies(
    State(settings): State<Arc<(Duration, Arc<Pressure>)>>,
    request: Request,
    next: Next,
) -> Response {
    let (limit, pressure) = &*settings;
    // Most requests (GET, HEAD) have no body to wait on.
    if http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let request = request.map(|b| body::with_idle_timeout(b, *limit, Arc::clone(pressure)));
    next.run(request).await
}

/// `503 UNAVAILABLE` with `Retry-After`, for a request turned away because of load.
fn overloaded(message: &str) -> Response {
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        DistributionCode::Unavailable,
        message,
        HeaderValue::from_static("1"),
    )
}

/// A request turned away, with the spec's error body and when to come back.
fn refused(
    status: StatusCode,
    code: impl Into<Code>,
    message: &str,
    retry_after: HeaderValue,
) -> Response {
    if !status.is_server_error() {
        tracing::debug!(%status, message, "request refused");
    }
    let body = axum::Json(ErrorBody::new(code, message, None));
    (status, [(http::header::RETRY_AFTER, retry_after)], body).into_response()
}

/// A `Retry-After` value for `wait`: whole seconds, rounded up, at least one.
pub fn retry_after(wait: Duration) -> HeaderValue {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}
