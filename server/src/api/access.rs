//! The one middleware through which the HTTP layer asks [`crate::auth`] whether a request may
//! proceed: it names what the request needs (an action on a repository, the catalog, or just
//! valid credentials for `/v2/`), identifies the caller, and answers `401` with the challenge
//! clients expect, `403 DENIED` or `429`. Handlers that need more (a mount's source, the
//! catalog's filter) find the caller in the request's extensions.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use super::ApiError;
use crate::auth::{
    Action, Auth, AuthError, ChallengeScheme, Credentials, Identity, Resource, Scope,
};
use crate::limits::{client_of, is_trusted, peer_of};
use crate::oci::path::OciPath;

/// What the middleware needs.
#[derive(Debug)]
pub struct Gate {
    pub auth: Arc<Auth>,
    /// `https` when the listener speaks TLS: the scheme of the realm derived from `Host`.
    pub scheme: &'static str,
    pub trusted_proxies: Vec<IpNet>,
    /// Where refusals are counted.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// The caller of a request that passed the gate.
#[derive(Debug, Clone)]
pub struct Caller {
    auth: Arc<Auth>,
    identity: Arc<Identity>,
}

impl Caller {
    /// The caller's name, as rules and events know it; empty for anonymous callers.
    pub fn name(&self) -> String {
        self.identity.principal().name()
    }

    /// Whether the caller may pull from `repository` (a mount's source).
    pub fn may_pull(&self, repository: &str) -> bool {
        self.auth
            .authorize(
                &self.identity,
                Some(&Resource::Repository(repository.to_owned())),
                Action::Pull,
            )
            .is_ok()
    }

    /// Which repositories the caller sees in the catalog.
    pub fn catalog_filter(&self) -> Box<dyn Fn(&str) -> bool + Send + Sync> {
        self.auth.catalog_filter(&self.identity)
    }
}

/// Lets a request through, or answers for it.
pub(super) async fn check(
    State(gate): State<Arc<Gate>>,
    mut request: Request,
    next: Next,
) -> Response {
    let rest = request
        .uri()
        .path()
        .strip_prefix("/v2/")
        .unwrap_or_default();
    let (resource, action) = needs(request.method(), rest);
    let client = client_of(&request, &gate.trusted_proxies);
    let via_proxy = peer_of(&request).is_some_and(|peer| is_trusted(&peer, &gate.trusted_proxies));
    let credentials = Credentials::parse(
        request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    );
    let decided = match gate.auth.identify(credentials, client).await {
        Ok(identity) => gate
            .auth
            .authorize(&identity, resource.as_ref(), action)
            .map(|()| identity),
        Err(err) => Err(err),
    };
    match decided {
        Ok(identity) => {
            request.extensions_mut().insert(Caller {
                auth: Arc::clone(&gate.auth),
                identity: Arc::new(identity),
            });
            next.run(request).await
        }
        Err(err) => {
            if let Some(metrics) = &gate.metrics {
                metrics.auth_failure(match err {
                    AuthError::Unauthorized => "unauthorized",
                    AuthError::InsufficientScope => "insufficient_scope",
                    AuthError::Denied => "denied",
                    AuthError::TooManyAttempts(_) => "locked_out",
                });
            }
            let origin = origin(gate.scheme, request.headers(), request.uri(), via_proxy);
            let pre_push = *request.method() == Method::HEAD
                && matches!(OciPath::parse(rest), Some(OciPath::Blob { .. }));
            refusal(
                &gate.auth,
                &err,
                &origin,
                resource.as_ref(),
                action,
                pre_push,
            )
            .into_response()
        }
    }
}

/// What a request to `/v2/<rest>` needs; no resource means valid credentials of any kind.
fn needs(method: &Method, rest: &str) -> (Option<Resource>, Action) {
    let repository = |name: &str| Some(Resource::Repository(name.to_owned()));
    let reading = matches!(*method, Method::GET | Method::HEAD);
    match OciPath::parse(rest) {
        None => (None, Action::Pull),
        Some(OciPath::Catalog) => (Some(Resource::Catalog), Action::Pull),
        Some(OciPath::Tags { name } | OciPath::Referrers { name, .. }) => {
            (repository(name), Action::Pull)
        }
        Some(OciPath::Blob { name, .. }) => {
            let action = if *method == Method::DELETE {
                Action::Delete
            } else {
                Action::Pull
            };
            (repository(name), action)
        }
        Some(OciPath::Manifest { name, .. }) => {
            let action = match *method {
                Method::DELETE => Action::Delete,
                _ if reading => Action::Pull,
                _ => Action::Push,
            };
            (repository(name), action)
        }
        Some(OciPath::Uploads { name } | OciPath::Upload { name, .. }) => {
            (repository(name), Action::Push)
        }
    }
}

/// `scheme://host` as the client addressed us, for the realm of our own token endpoint: from
/// `X-Forwarded-Proto` and `X-Forwarded-Host` when a trusted proxy sent the request, otherwise
/// the listener's scheme and `Host`. A host that is not a plain host name or address is not
/// echoed into the challenge.
pub fn origin(scheme: &str, headers: &HeaderMap, uri: &axum::http::Uri, via_proxy: bool) -> String {
    let header = |name: &str| headers.get(name).and_then(|h| h.to_str().ok());
    let forwarded = |name: &str| {
        via_proxy
            .then(|| header(name))
            .flatten()
            .and_then(|value| value.split(',').next())
            .map(str::trim)
    };
    let scheme = match forwarded("x-forwarded-proto") {
        Some("https") => "https",
        Some("http") => "http",
        _ => scheme,
    };
    let plain = |host: &&str| {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    };
    let host = forwarded("x-forwarded-host")
        .filter(plain)
        .or_else(|| header("host").filter(plain))
        .or_else(|| {
            uri.authority()
                .map(axum::http::uri::Authority::as_str)
                .filter(plain)
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

fn refusal(
    auth: &Auth,
    err: &AuthError,
    origin: &str,
    resource: Option<&Resource>,
    action: Action,
    pre_push: bool,
) -> ApiError {
    let scope = match resource {
        Some(Resource::Repository(name)) => {
            // Writers need to read too (existence checks, mounts): ask for both at once. A
            // blob HEAD is the check clients make before pushing it, so it asks for push as
            // well: clients that keep their first token (the oras SDK) can then push with it.
            // The token still grants only what the policy allows.
            let actions = match action {
                Action::Pull if pre_push => "pull,push".to_owned(),
                Action::Pull => "pull".to_owned(),
                other => format!("pull,{other}"),
            };
            Some(format!("repository:{name}:{actions}"))
        }
        Some(Resource::Catalog) => Some(Scope::catalog().to_string()),
        None => None,
    };
    let challenge = match auth.challenge_scheme() {
        ChallengeScheme::Basic => format!("Basic realm=\"{}\"", auth.signer().service),
        ChallengeScheme::Bearer => {
            let (realm, service) = auth.realm(origin);
            let mut challenge = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
            if let Some(scope) = &scope {
                challenge.push_str(&format!(",scope=\"{scope}\""));
            }
            if *err == AuthError::InsufficientScope {
                challenge.push_str(",error=\"insufficient_scope\"");
            }
            challenge
        }
    };
    let detail = match resource {
        Some(Resource::Repository(name)) => serde_json::json!([{
            "Type": "repository", "Class": "", "Name": name, "Action": action.as_str()
        }]),
        Some(Resource::Catalog) => serde_json::json!([{
            "Type": "registry", "Class": "", "Name": "catalog", "Action": "*"
        }]),
        None => serde_json::Value::Null,
    };
    let challenge =
        HeaderValue::from_str(&challenge).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    ApiError::refused(err, challenge, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_names_what_it_needs() {
        let repo = |n: &str| Some(Resource::Repository(n.into()));
        let cases = [
            (Method::GET, "", None, Action::Pull),
            (
                Method::GET,
                "_catalog",
                Some(Resource::Catalog),
                Action::Pull,
            ),
            (Method::GET, "a/b/tags/list", repo("a/b"), Action::Pull),
            (Method::HEAD, "a/manifests/v1", repo("a"), Action::Pull),
            (Method::PUT, "a/manifests/v1", repo("a"), Action::Push),
            (Method::DELETE, "a/manifests/v1", repo("a"), Action::Delete),
            (Method::GET, "a/blobs/sha256:00", repo("a"), Action::Pull),
            (
                Method::DELETE,
                "a/blobs/sha256:00",
                repo("a"),
                Action::Delete,
            ),
            (Method::POST, "a/blobs/uploads/", repo("a"), Action::Push),
            (Method::GET, "a/blobs/uploads/id", repo("a"), Action::Push),
            (
                Method::GET,
                "a/referrers/sha256:00",
                repo("a"),
                Action::Pull,
            ),
        ];
        for (method, rest, resource, action) in cases {
            assert_eq!(needs(&method, rest), (resource, action), "{method} {rest}");
        }
    }

    #[test]
    fn only_plain_hosts_reach_the_realm() {
        let uri: axum::http::Uri = "/v2/".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", "registry.example:5000".parse().unwrap());
        assert_eq!(
            origin("https", &headers, &uri, false),
            "https://registry.example:5000"
        );
        headers.insert("host", "evil\",realm=\"x".parse().unwrap());
        assert_eq!(origin("http", &headers, &uri, false), "http://localhost");
    }

    #[test]
    fn a_trusted_proxy_names_the_scheme_and_host_clients_used() {
        let uri: axum::http::Uri = "/v2/".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", "stowage.team-a.svc:5000".parse().unwrap());
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        headers.insert("x-forwarded-host", "registry.example.com".parse().unwrap());
        assert_eq!(
            origin("http", &headers, &uri, true),
            "https://registry.example.com"
        );
        // From anyone else the headers are ignored.
        assert_eq!(
            origin("http", &headers, &uri, false),
            "http://stowage.team-a.svc:5000"
        );
    }
}
