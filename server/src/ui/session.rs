//! Who is looking at a page: a session cookie signed with the token key (a JWT of its own
//! audience, so it is never an access token), `HttpOnly`, `SameSite=Strict`, `Secure` on HTTPS,
//! for a lifetime. Every visitor has one, anonymous ones too, because its `jti` is the CSRF token
//! every form carries: a form from another site cannot know it. Sign-in checks passwords, service
//! account tokens and external issuers' tokens through [`Auth::sign_in`], so failures count
//! towards the registry's lockout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Error, Ui, views};
use crate::auth::tokens::TokenSigner;
use crate::auth::{Auth, AuthError, Identity, Principal};

/// The session cookie's name.
pub const COOKIE: &str = "stowage_session";
/// Where the sign-in form is.
pub const LOGIN_PATH: &str = "/ui/login";
pub const LOGOUT_PATH: &str = "/ui/logout";

/// Issues and reads session cookies.
#[derive(Debug)]
pub struct Sessions {
    signer: TokenSigner,
    ttl: Duration,
    /// Whether cookies are marked `Secure` (the listener speaks HTTPS).
    secure: bool,
}

/// The visitor of a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    identity: Identity,
    /// This session's CSRF token.
    pub csrf: String,
    /// A cookie to set: this visitor came without a valid session, so one was started.
    fresh: Option<HeaderValue>,
}

impl Viewer {
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The visitor's name; empty for anonymous visitors.
    pub fn name(&self) -> String {
        self.identity.principal().name()
    }

    pub fn signed_in(&self) -> bool {
        !self.identity.principal().is_anonymous()
    }
}

impl Sessions {
    pub fn new(signer: TokenSigner, ttl: Duration, secure: bool) -> Self {
        Self {
            signer,
            ttl,
            secure,
        }
    }

    /// The viewer a request's cookie names, or a new anonymous one. A session whose account
    /// has since been removed from the htpasswd file is over.
    fn viewer(&self, headers: &HeaderMap, auth: Option<&Auth>) -> Viewer {
        let session = cookie(headers, COOKIE).and_then(|token| {
            let session = self.signer.validate_session(token).ok()?;
            let gone = matches!(session.principal, Principal::User(_))
                && auth.is_some_and(|auth| !auth.account_exists(&session.principal));
            (!gone).then_some(session)
        });
        match session {
            Some(session) => Viewer {
                identity: match session.external_grants {
                    Some(grants) => Identity::Token {
                        principal: session.principal,
                        grants,
                        ours: false,
                    },
                    None => Identity::Direct(session.principal),
                },
                csrf: session.csrf,
                fresh: None,
            },
            None => self.start(Identity::Direct(Principal::Anonymous), None),
        }
    }

    /// A new session for `identity`, with the cookie that carries it, ending after the
    /// session lifetime or at `until`, whichever comes first.
    fn start(&self, identity: Identity, until: Option<SystemTime>) -> Viewer {
        let external = match &identity {
            Identity::Token { grants, .. } => Some(grants),
            Identity::Direct(_) => None,
        };
        let ttl = until.map_or(self.ttl, |until| {
            let left = until
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            left.min(self.ttl)
        });
        let (issued, csrf) = self
            .signer
            .issue_session(identity.principal(), external, ttl);
        let cookie = self.cookie(&issued.token, ttl);
        Viewer {
            identity,
            csrf,
            fresh: Some(cookie),
        }
    }

    fn cookie(&self, value: &str, max_age: Duration) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let cookie = format!(
            "{COOKIE}={value}; Path=/ui; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            max_age.as_secs()
        );
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// Finds every request's viewer before its handler runs, and sets the cookie of a session it
/// started, whatever the page answered. Never on a request from another site: the browser
/// withholds a `SameSite=Strict` cookie from those, so a new cookie would replace the session the
/// visitor has (another site could sign them out).
pub async fn attach(State(ui): State<Ui>, mut request: Request, next: Next) -> Response {
    let viewer = ui
        .sessions
        .viewer(request.headers(), ui.auth().map(Arc::as_ref));
    let fresh = viewer
        .fresh
        .clone()
        .filter(|_| !from_another_site(request.headers()));
    let over_https = ui.origin_of(&request).starts_with("https://");
    request.extensions_mut().insert(viewer);
    let mut response = next.run(request).await;
    if let Some(cookie) = fresh
        && !response.headers().contains_key(header::SET_COOKIE)
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    // Behind a proxy that ends HTTPS, the browser still speaks HTTPS: the cookie is `Secure`.
    if over_https
        && let Some(cookie) = response.headers().get(header::SET_COOKIE)
        && let Ok(text) = cookie.to_str()
        && !text.contains("; Secure")
        && let Ok(secure) = HeaderValue::from_str(&format!("{text}; Secure"))
    {
        response.headers_mut().insert(header::SET_COOKIE, secure);
    }
    response
}

/// Refuses a form that did not come from this session's pages: it must carry the session's
/// CSRF token, and the browser must not say it was sent from another site.
pub fn check_form(
    headers: &HeaderMap,
    viewer: &Viewer,
    form: &HashMap<String, String>,
) -> Result<(), Error> {
    let cross_site = from_another_site(headers);
    let sent = form.get("csrf").map(String::as_bytes).unwrap_or_default();
    let matches = viewer.fresh.is_none() && bool::from(sent.ct_eq(viewer.csrf.as_bytes()));
    if cross_site || !matches {
        return Err(Error::Forged);
    }
    Ok(())
}

/// Whether the browser says the request comes from a page of another origin (`Sec-Fetch-Site`);
/// a typed address or bookmark (`none`) is ours.
fn from_another_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site != "same-origin" && site != "none")
}

/// `GET /ui/login`: the sign-in form.
pub async fn login_form(
    State(ui): State<Ui>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    if ui.auth().is_none() {
        return Redirect::to("/ui/").into_response();
    }
    let next = safe_next(query.get("next").map(String::as_str));
    views::login(&ui.page(&viewer), &next, None).into_response()
}

/// `POST /ui/login`: checks the credentials and starts a signed-in session.
pub async fn login(State(ui): State<Ui>, request: Request) -> Result<Response, Error> {
    let Some(auth) = ui.auth() else {
        return Ok(Redirect::to("/ui/").into_response());
    };
    let viewer = super::viewer_of(&request)?;
    let client = crate::limits::client_of(&request, ui.trusted_proxies());
    let headers = request.headers().clone();
    let form = super::form(request.into_body()).await?;
    check_form(&headers, &viewer, &form)?;
    let next = safe_next(form.get("next").map(String::as_str));
    let user = form.get("user").cloned().unwrap_or_default();
    let password = Zeroizing::new(form.get("password").cloned().unwrap_or_default());
    let refused = |status, message: &str| {
        (
            status,
            views::login(&ui.page(&viewer), &next, Some(message)),
        )
            .into_response()
    };
    if user.is_empty() && password.is_empty() {
        return Ok(refused(
            axum::http::StatusCode::UNAUTHORIZED,
            "enter a user name and password",
        ));
    }
    match auth.sign_in(user, password, client).await {
        Ok(signed_in) => {
            let session = ui.sessions.start(signed_in.identity, signed_in.until);
            let mut response = Redirect::to(&next).into_response();
            if let Some(cookie) = session.fresh {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            Ok(response)
        }
        Err(AuthError::TooManyAttempts(wait)) => {
            let mut response = refused(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "too many failed sign-ins; try again in {} s",
                    wait.as_secs().max(1)
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, crate::limits::retry_after(wait));
            Ok(response)
        }
        Err(_) => Ok(refused(
            axum::http::StatusCode::UNAUTHORIZED,
            "wrong user name or password",
        )),
    }
}

/// `POST /ui/logout`: ends the session.
pub async fn logout(State(ui): State<Ui>, request: Request) -> Result<Response, Error> {
    let viewer = super::viewer_of(&request)?;
    let headers = request.headers().clone();
    let form = super::form(request.into_body()).await?;
    check_form(&headers, &viewer, &form)?;
    let mut response = Redirect::to("/ui/").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, ui.sessions.cookie("", Duration::ZERO));
    Ok(response)
}

/// The sign-in page's address, coming back to `next`.
pub fn login_url(next: &str) -> String {
    let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    format!("{LOGIN_PATH}?next={next}")
}

/// Where to go after signing in: a page of ours, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with("/ui/")
                && !next.contains("//")
                && !next.contains('\\')
                && !next.chars().any(char::is_control) =>
        {
            next.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::SecretKey;

    fn sessions() -> Sessions {
        let signer = TokenSigner::new(
            SecretKey::new(vec![7; 32]).unwrap(),
            None,
            "registry.test".into(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        Sessions::new(signer, Duration::from_secs(3600), true)
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_session_comes_back_with_its_cookie() {
        let sessions = sessions();
        let alice = sessions.start(Identity::Direct(Principal::User("alice".into())), None);
        let cookie = alice.fresh.clone().unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.contains("; Secure"), "{cookie}");
        let pair = cookie.split(';').next().unwrap();
        let back = sessions.viewer(&with_cookie(&format!("theme=dark; {pair}")), None);
        assert_eq!(back.name(), "alice");
        assert_eq!(back.csrf, alice.csrf);
        assert!(back.fresh.is_none());
        // A tampered or foreign cookie starts an anonymous session instead.
        let stranger = sessions.viewer(&with_cookie(&format!("{pair}x")), None);
        assert!(!stranger.signed_in() && stranger.fresh.is_some());
    }

    #[test]
    fn a_session_ends_when_the_token_that_opened_it_does() {
        let sessions = sessions();
        let soon = SystemTime::now() + Duration::from_secs(90);
        let viewer = sessions.start(
            Identity::Direct(Principal::External("ci".into())),
            Some(soon),
        );
        let cookie = viewer.fresh.unwrap();
        let max_age: u64 = cookie
            .to_str()
            .unwrap()
            .split("Max-Age=")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!((85..=90).contains(&max_age), "{max_age}");
    }

    #[test]
    fn forms_need_the_sessions_token_from_the_same_site() {
        let sessions = sessions();
        let started = sessions.start(Identity::Direct(Principal::Anonymous), None);
        let returning = Viewer {
            fresh: None,
            ..started.clone()
        };
        let form = |csrf: &str| HashMap::from([("csrf".to_owned(), csrf.to_owned())]);
        let mut headers = HeaderMap::new();
        assert!(check_form(&headers, &returning, &form(&returning.csrf)).is_ok());
        assert!(check_form(&headers, &returning, &form("guess")).is_err());
        assert!(check_form(&headers, &returning, &HashMap::new()).is_err());
        // A visitor without a session cookie cannot have a valid form.
        assert!(check_form(&headers, &started, &form(&started.csrf)).is_err());
        headers.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(check_form(&headers, &returning, &form(&returning.csrf)).is_err());
    }

    #[test]
    fn sign_in_only_returns_to_our_own_pages() {
        assert_eq!(safe_next(Some("/ui/r/a/b")), "/ui/r/a/b");
        for hostile in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui/\\\\evil",
            "/ui//evil.example",
            "/v2/_catalog",
            "/ui/\nSet-Cookie",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/ui/", "{hostile:?}");
        }
        assert_eq!(safe_next(None), "/ui/");
        assert_eq!(
            login_url("/ui/r/a?page=2"),
            "/ui/login?next=%2Fui%2Fr%2Fa%3Fpage%3D2"
        );
    }
}
