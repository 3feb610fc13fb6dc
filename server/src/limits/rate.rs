//! Per-client request rates (off unless configured), with governor's GCRA limiter. A client is
//! its address as the connection shows it, or, when the connection comes from a trusted proxy,
//! the address that proxy reports in `X-Forwarded-For`: never a header anyone else could set.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use oci_spec::distribution::ErrorCode;

use super::pressure::{Event, Pressure};
use super::{refused, retry_after};

/// How often idle clients are forgotten, so the limiter's memory stays bounded.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// A request rate per client.
#[derive(Debug, Clone)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// The running limiter.
pub(super) struct Limiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    trusted_proxies: Vec<IpNet>,
    pressure: Arc<Pressure>,
}

impl RateLimit {
    /// Starts the limiter, and the task that forgets idle clients while it is in use.
    pub(super) fn start(&self, pressure: Arc<Pressure>) -> Arc<Limiter> {
        let quota = Quota::per_second(self.per_second).allow_burst(self.burst);
        let limiter = Arc::new(Limiter {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            trusted_proxies: self.trusted_proxies.clone(),
            pressure,
        });
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FORGET_EVERY).await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.limiter.retain_recent();
                limiter.limiter.shrink_to_fit();
            }
        });
        limiter
    }
}

/// Answers `429 TOOMANYREQUESTS` with `Retry-After` to a client over its rate.
pub(super) async fn limit(
    State(limiter): State<Arc<Limiter>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(client) = client_of(&request, &limiter.trusted_proxies) else {
        return next.run(request).await;
    };
    match limiter.limiter.check_key(&client) {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            limiter.pressure.count(Event::RateLimited);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            refused(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                "too many requests from this client; slow down",
                retry_after(wait),
            )
        }
    }
}

/// The address the connection of `request` comes from; `None` when served without one (the
/// in-process test harness).
pub fn peer_of(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// Whether `ip` is one of the `trusted` proxies.
pub fn is_trusted(ip: &IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// The client of `request`: see [`client_address`].
pub fn client_of(request: &Request, trusted: &[IpNet]) -> Option<IpAddr> {
    peer_of(request).map(|peer| client_address(peer, request.headers(), trusted))
}

/// The client behind a connection from `peer`: `peer` itself, unless it is a trusted proxy, in
/// which case the nearest address in `X-Forwarded-For` that is not a trusted proxy (each proxy
/// appends the address it saw, so the right end is the one to trust).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| is_trusted(ip, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|hop| hop.trim().parse::<IpAddr>())
        .collect::<Result<_, _>>()
        // A malformed chain tells nothing reliable: the proxy itself is the client.
        .unwrap_or_default();
    forwarded
        .into_iter()
        .rev()
        .find(|hop| !is_trusted(hop))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            // Straight from a client: its own address, whatever it claims.
            ("203.0.113.9", vec!["198.51.100.1"], "203.0.113.9"),
            // Through our proxy: the address it saw.
            ("10.1.2.3", vec!["198.51.100.1"], "198.51.100.1"),
            // A client forging an earlier hop gets its own address, appended by the proxy.
            ("10.1.2.3", vec!["1.2.3.4, 198.51.100.1"], "198.51.100.1"),
            // Two trusted proxies in a row.
            ("10.1.2.3", vec!["198.51.100.1, 10.9.9.9"], "198.51.100.1"),
            ("10.1.2.3", vec!["198.51.100.1", "10.9.9.9"], "198.51.100.1"),
            // Nothing or nonsense forwarded: the proxy is the client.
            ("10.1.2.3", vec![], "10.1.2.3"),
            ("10.1.2.3", vec!["not-an-address"], "10.1.2.3"),
        ];
        for (peer, forwarded, client) in cases {
            assert_eq!(
                client_address(ip(peer), &headers(&forwarded), &trusted),
                ip(client),
                "{peer} {forwarded:?}"
            );
        }
    }
}
