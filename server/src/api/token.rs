//! The token endpoint, `/auth/token`, as Docker clients (`GET`, the token spec) and OAuth2
//! clients (`POST`, `grant_type=password|refresh_token`) call it. It answers for the caller's
//! credentials (or none: an anonymous token) with a token granting what was asked for, as far
//! as the policy allows.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use zeroize::Zeroizing;

use super::access::Gate;
use crate::auth::tokens::Issued;
use crate::auth::{AuthError, Credentials, Principal, Scope};
use crate::limits::client_of;

/// Forms larger than this are refused: a password grant is a few hundred bytes.
const MAX_FORM: usize = 64 * 1024;

/// Answers `GET` and `POST /auth/token`.
pub(super) async fn serve(State(gate): State<Arc<Gate>>, request: Request) -> Response {
    let client = client_of(&request, &gate.trusted_proxies);
    let result = match *request.method() {
        Method::GET => token_spec(&gate, request, client).await,
        Method::POST => oauth2(&gate, request, client).await,
        _ => Err(Refusal::BadRequest(
            "unsupported_method",
            "use GET or POST".into(),
        )),
    };
    result.unwrap_or_else(|refusal| refusal.into_response(&gate))
}

/// A refused token request.
enum Refusal {
    Auth(AuthError),
    BadRequest(&'static str, String),
}

impl From<AuthError> for Refusal {
    fn from(err: AuthError) -> Self {
        Self::Auth(err)
    }
}

impl Refusal {
    fn into_response(self, gate: &Gate) -> Response {
        match self {
            Self::Auth(AuthError::TooManyAttempts(wait)) => {
                let mut response = oauth_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "too many failed logins; retry later",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, crate::limits::retry_after(wait));
                response
            }
            Self::Auth(_) => {
                let mut response = oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "the credentials are not valid",
                );
                let challenge = format!("Basic realm=\"{}\"", gate.auth.signer().service);
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, value);
                }
                response
            }
            Self::BadRequest(error, description) => {
                oauth_error(StatusCode::BAD_REQUEST, error, &description)
            }
        }
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    (status, axum::Json(body)).into_response()
}

/// The query or form pairs of a request.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(bytes: &[u8]) -> Self {
        Self(form_urlencoded::parse(bytes).into_owned().collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn check_service(gate: &Gate, form: &Form) -> Result<(), Refusal> {
    match form.get("service") {
        Some(service) if service != gate.auth.signer().service => Err(Refusal::BadRequest(
            "invalid_request",
            format!("this registry is service {:?}", gate.auth.signer().service),
        )),
        _ => Ok(()),
    }
}

/// `GET /auth/token?service=…&scope=…&scope=…[&offline_token=true]`, with Basic credentials
/// or none.
async fn token_spec(
    gate: &Gate,
    request: Request,
    client: Option<std::net::IpAddr>,
) -> Result<Response, Refusal> {
    let form = Form::parse(request.uri().query().unwrap_or_default().as_bytes());
    check_service(gate, &form)?;
    let credentials = Credentials::parse(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    );
    let principal = match credentials {
        Credentials::None => Principal::Anonymous,
        Credentials::Basic { user, password } => gate.auth.login(user, password, client).await?,
        Credentials::Bearer(_) | Credentials::Malformed => {
            return Err(AuthError::Unauthorized.into());
        }
    };
    let offline = form.get("offline_token") == Some("true");
    Ok(answer(
        gate,
        &principal,
        &Scope::parse_all(form.all("scope")),
        offline,
    ))
}

/// `POST /auth/token` with `grant_type=password` or `grant_type=refresh_token`.
async fn oauth2(
    gate: &Gate,
    request: Request,
    client: Option<std::net::IpAddr>,
) -> Result<Response, Refusal> {
    let body = http_body_util::Limited::new(request.into_body(), MAX_FORM)
        .collect()
        .await
        .map_err(|_| Refusal::BadRequest("invalid_request", "the form is too large".into()))?
        .to_bytes();
    let form = Form::parse(&body);
    check_service(gate, &form)?;
    let scopes = Scope::parse_all(form.all("scope"));
    let (principal, offline) = match form.get("grant_type") {
        Some("password") => {
            let user = form.get("username").unwrap_or_default().to_owned();
            let password = Zeroizing::new(form.get("password").unwrap_or_default().to_owned());
            let principal = gate.auth.login(user, password, client).await?;
            (principal, form.get("access_type") == Some("offline"))
        }
        Some("refresh_token") => {
            let token = form.get("refresh_token").unwrap_or_default();
            let principal = gate
                .auth
                .signer()
                .validate_refresh(token)
                .map_err(|_| AuthError::Unauthorized)?;
            // A refresh token outlives a login: the account must still be there.
            if !gate.auth.account_exists(&principal) {
                return Err(AuthError::Unauthorized.into());
            }
            (principal, true)
        }
        _ => {
            return Err(Refusal::BadRequest(
                "unsupported_grant_type",
                "grant_type must be password or refresh_token".into(),
            ));
        }
    };
    Ok(answer(gate, &principal, &scopes, offline))
}

fn answer(gate: &Gate, principal: &Principal, asked: &[Scope], offline: bool) -> Response {
    let granted = gate.auth.grant(principal, asked);
    let scope = granted
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let Issued {
        token,
        expires_in,
        issued_at,
    } = gate.auth.signer().issue(principal, granted);
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in.as_secs(),
        "issued_at": humantime::format_rfc3339_seconds(issued_at).to_string(),
        "scope": scope,
    });
    // Refresh tokens only for accounts whose existence can be checked at each refresh.
    if offline && matches!(principal, Principal::User(_)) && gate.auth.account_exists(principal) {
        body["refresh_token"] = gate.auth.signer().issue_refresh(principal).token.into();
    }
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
