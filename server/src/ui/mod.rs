//! The web interface, under `/ui/` on every replica: browse repositories, tags, images and their
//! referrers, copy a pull command, and delete tags and manifests. Pages are rendered on the
//! server (maud escapes everything it interpolates), use no asset from elsewhere, and work
//! without JavaScript; a strict Content-Security-Policy allows only this module's own stylesheet
//! and script. It builds on the HTTP API's state and rules: a visitor sees only the repositories
//! they may pull, and a delete goes through the same checks and events as `DELETE` in the API.

mod assets;
mod catalog;
mod content;
mod error;
mod image;
mod pages;
mod session;
mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{Redirect, Response};
use axum::routing::get;
use ipnet::IpNet;

pub use error::Error;
pub use session::COOKIE;

use crate::api::{AppState, Gate};
use crate::auth::tokens::TokenSigner;
use crate::auth::{Action, Auth, Resource};
use crate::upload::SecretKey;
use catalog::Catalog;
use session::{Sessions, Viewer};

/// A session lasts this long unless configured otherwise.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);
/// Forms are small; anything larger is refused unread.
const MAX_FORM_SIZE: usize = 16 * 1024;
/// Entries on one page of repositories or tags.
const PAGE_SIZE: usize = 50;

/// The web interface's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub session_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: false,
            session_ttl: DEFAULT_SESSION_TTL,
        }
    }
}

/// What every page handler shares.
#[derive(Debug, Clone)]
pub struct Ui(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    app: AppState,
    /// Access control, when it is on.
    gate: Option<Arc<Gate>>,
    sessions: Sessions,
    catalog: Arc<Catalog>,
    /// `https` when the listener speaks TLS.
    scheme: &'static str,
    /// Proxies whose `X-Forwarded-*` headers say how the visitor reached the registry.
    trusted_proxies: Vec<IpNet>,
}

impl std::ops::Deref for Ui {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The pages, for the API router to serve beside the registry. Sessions are signed with the
/// token key when access control is on, and otherwise with a key derived from the upload key
/// (every replica has both), so a form rendered by one replica is accepted by any other.
pub fn router<S: Clone + Send + Sync + 'static>(
    app: AppState,
    gate: Option<Arc<Gate>>,
    upload_key: &SecretKey,
    settings: &Settings,
    https: bool,
    trusted_proxies: Vec<IpNet>,
) -> Router<S> {
    let signer = match &gate {
        Some(gate) => gate.auth.signer().clone(),
        None => TokenSigner::new(
            upload_key.derive("web interface sessions"),
            None,
            "stowage".to_owned(),
            settings.session_ttl,
            settings.session_ttl,
        ),
    };
    let ui = Ui(Arc::new(Inner {
        app,
        gate,
        sessions: Sessions::new(signer, settings.session_ttl, https),
        catalog: Arc::new(Catalog::default()),
        scheme: if https { "https" } else { "http" },
        trusted_proxies,
    }));
    let pages = Router::new()
        .route("/ui/", get(pages::repositories))
        .route("/ui/r/{*rest}", get(pages::show).post(pages::act))
        .route(
            session::LOGIN_PATH,
            get(session::login_form).post(session::login),
        )
        .route(session::LOGOUT_PATH, axum::routing::post(session::logout))
        .layer(middleware::from_fn_with_state(ui.clone(), session::attach))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/static/{file}", get(assets::serve))
        .layer(DefaultBodyLimit::max(MAX_FORM_SIZE))
        .layer(middleware::from_fn(protect));
    pages.with_state(ui)
}

impl Ui {
    fn auth(&self) -> Option<&Arc<Auth>> {
        self.gate.as_ref().map(|gate| &gate.auth)
    }

    fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted_proxies
    }

    /// `scheme://host` as the visitor reached the registry: what a proxy in `--trusted-proxies`
    /// says (`X-Forwarded-Proto`, `X-Forwarded-Host`), or the listener's scheme and `Host`.
    fn origin_of(&self, request: &Request) -> String {
        let via_proxy = crate::limits::peer_of(request)
            .is_some_and(|peer| crate::limits::is_trusted(&peer, self.trusted_proxies()));
        crate::api::access::origin(self.scheme, request.headers(), request.uri(), via_proxy)
    }

    /// Whether `viewer` may do `action` to `repository`; anyone may without access control.
    fn may(&self, viewer: &Viewer, repository: &str, action: Action) -> bool {
        self.auth().is_none_or(|auth| {
            auth.authorize(
                viewer.identity(),
                Some(&Resource::Repository(repository.to_owned())),
                action,
            )
            .is_ok()
        })
    }

    /// Whether `viewer` may delete in `repository` now: allowed to, and deletes are on there.
    fn may_delete(&self, viewer: &Viewer, repository: &str) -> bool {
        self.may(viewer, repository, Action::Delete)
            && self.app.refuse_deletes().is_ok()
            && self.app.refuse_writes(Some(repository)).is_ok()
    }

    /// What the page frame shows of the visitor.
    fn page(&self, viewer: &Viewer) -> views::Frame {
        views::Frame {
            user: viewer.signed_in().then(|| viewer.name()),
            csrf: viewer.csrf.clone(),
            can_sign_in: self.auth().is_some(),
        }
    }
}

/// The viewer [`session::attach`] found.
fn viewer_of(request: &Request) -> Result<Viewer, Error> {
    request
        .extensions()
        .get::<Viewer>()
        .cloned()
        .ok_or(Error::Forged)
}

/// A form's fields, at most [`MAX_FORM_SIZE`] bytes of them.
async fn form(body: Body) -> Result<HashMap<String, String>, Error> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_SIZE)
        .await
        .map_err(|_| Error::BadRequest("the form is too large".to_owned()))?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

/// Headers that keep pages from being framed, sniffed, cached or made to run anyone else's
/// script: only our own stylesheet and script load, forms post only here.
async fn protect(request: Request, next: Next) -> Response {
    const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                          img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                          base-uri 'none'";
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, POLICY);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::CACHE_CONTROL, "no-store");
    response
}
