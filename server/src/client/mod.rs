//! A client of other registries. `stowage copy` talks to its source and destination with it; it
//! knows nothing of the server's internals.
//!
//! It finds out once per registry whether it speaks HTTPS (or, when TLS verification is off,
//! plain HTTP), and how it wants to be authenticated (the `/v2/` ping), then attaches Basic
//! credentials or a Bearer token from the Distribution token flow to every request. Tokens are
//! cached per set of scopes until shortly before they expire.

pub mod challenge;
mod content;
pub mod credentials;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url, header};
use serde::Deserialize;
use tokio::sync::{Mutex, OnceCell};
use zeroize::Zeroizing;

use crate::reload::Watched;

pub use challenge::Challenge;
pub use content::{BlobHead, FetchedManifest, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, read_capped};
pub use credentials::{CredentialSource, Credentials, secret_line};

/// Why talking to a registry failed. Each kind maps to its own exit code in `stowage copy`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Config(String),
    /// No answer; `unreachable` when no connection could be made at all.
    #[error("cannot reach {host}: {reason}")]
    Network {
        host: String,
        reason: String,
        unreachable: bool,
    },
    #[error("{host}: {reason}")]
    Unauthorized { host: String, reason: String },
    #[error("{what}: not found")]
    NotFound { what: String },
    #[error("{host} answered {status}: {message}")]
    Status {
        host: String,
        status: u16,
        message: String,
    },
    #[error("{host}: {reason}")]
    Protocol { host: String, reason: String },
    /// Content that does not match its digest.
    #[error("{0}")]
    Verification(String),
}

/// How to reach one registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Verify certificates; when off, plain HTTP is also tried, as skopeo does.
    pub tls_verify: bool,
    /// Certificates (PEM) trusted besides the system's, for a registry with a private CA.
    pub ca_file: Option<std::path::PathBuf>,
    /// What to present; a file-backed value takes effect as the file changes.
    pub credentials: Arc<Watched<Option<Credentials>>>,
    /// The longest wait for the next bytes of a response before giving up on it.
    pub read_timeout: Duration,
    /// The longest one request may take to answer, retries and backoff included, for a caller
    /// that answers a client of its own in that time (the pull-through cache). Within it, a
    /// connection that cannot be made and an upstream's own `502`/`504` are not retried: they
    /// say the registry, or the one behind it, is down. `None`: the request is retried with
    /// backoff for as long as that takes.
    pub deadline: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            tls_verify: true,
            ca_file: None,
            credentials: Watched::fixed("registry credentials", None),
            read_timeout: Duration::from_secs(60),
            deadline: None,
        }
    }
}

/// The scopes a request needs, as the token flow names them (`repository:<name>:pull,push`).
pub fn repository_scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

/// A registry, reached over one connection pool.
pub struct RegistryClient {
    http: reqwest::Client,
    host: String,
    /// `https` or `http` when the URL named it; else found by the ping.
    scheme: Option<String>,
    tls_verify: bool,
    credentials: Arc<Watched<Option<Credentials>>>,
    deadline: Option<Duration>,
    base: OnceCell<Url>,
    auth: Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: HashMap<String, Token>,
}

struct Token {
    value: Zeroizing<String>,
    expires: Instant,
    /// The credentials' version it was issued for: a changed file makes it stale.
    credentials: u64,
}

/// Retries for requests that can be sent again unchanged.
const ATTEMPTS: u32 = 4;

impl RegistryClient {
    /// A client of the registry at `host` (`name[:port]`).
    pub fn new(host: &str, options: ClientOptions) -> Result<Self, ClientError> {
        Self::build(host, None, options)
    }

    /// A client of the registry at exactly `url` (`https://registry-1.docker.io`): no other
    /// scheme is tried.
    pub fn for_url(url: &Url, options: ClientOptions) -> Result<Self, ClientError> {
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(ClientError::Config(format!("{url} names no host"))),
        };
        if !matches!(url.scheme(), "https" | "http") {
            return Err(ClientError::Config(format!(
                "{url}: the scheme is http or https"
            )));
        }
        Self::build(&host, Some(url.scheme().to_owned()), options)
    }

    fn build(
        host: &str,
        scheme: Option<String>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        crate::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("stowage/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(options.read_timeout)
            .danger_accept_invalid_certs(!options.tls_verify)
            .redirect(reqwest::redirect::Policy::limited(5));
        if let Some(path) = &options.ca_file {
            let pem = std::fs::read(path)
                .map_err(|err| ClientError::Config(format!("{}: {err}", path.display())))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|err| ClientError::Config(format!("{}: {err}", path.display())))?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|err| ClientError::Config(format!("HTTP client: {err}")))?;
        Ok(Self {
            http,
            host: host.to_owned(),
            scheme,
            tls_verify: options.tls_verify,
            credentials: options.credentials,
            deadline: options.deadline,
            base: OnceCell::new(),
            auth: Mutex::new(AuthState::default()),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// `path` (with its query) on this registry, such as `/v2/<name>/blobs/<digest>`.
    pub async fn url(&self, path: &str) -> Result<Url, ClientError> {
        let base = self.base().await?;
        base.join(path)
            .map_err(|err| self.protocol(format!("bad path {path:?}: {err}")))
    }

    /// A `Location` a registry sent, resolved against its base (it may be relative).
    pub async fn resolve(&self, location: &str) -> Result<Url, ClientError> {
        let base = self.base().await?;
        base.join(location)
            .map_err(|err| self.protocol(format!("bad Location {location:?}: {err}")))
    }

    /// Sends a request built by `build` with the credentials `scopes` need. A `401` is answered
    /// once by fetching a fresh token; network errors, `429` and `502`–`504` are retried with
    /// backoff when `idempotent`, within the deadline if there is one (see
    /// [`ClientOptions::deadline`]). `401` and `403` become [`ClientError::Unauthorized`].
    pub async fn send(
        &self,
        scopes: &[String],
        method: Method,
        url: &Url,
        idempotent: bool,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let Some(limit) = self.deadline else {
            return self
                .send_retrying(scopes, &method, url, idempotent, &build, None)
                .await;
        };
        let deadline = tokio::time::Instant::now() + limit;
        let attempts = self.send_retrying(scopes, &method, url, idempotent, &build, Some(deadline));
        tokio::time::timeout_at(deadline, attempts)
            .await
            .unwrap_or_else(|_| Err(self.no_answer_within(limit)))
    }

    /// The error of a registry that did not answer within `limit`.
    pub fn no_answer_within(&self, limit: Duration) -> ClientError {
        ClientError::Network {
            host: self.host.clone(),
            reason: format!("no answer within {}", humantime::format_duration(limit)),
            unreachable: false,
        }
    }

    async fn send_retrying(
        &self,
        scopes: &[String],
        method: &Method,
        url: &Url,
        idempotent: bool,
        build: &impl Fn(RequestBuilder) -> RequestBuilder,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Response, ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.send_once(scopes, method, url, build).await;
            let transient = match &outcome {
                Err(ClientError::Network { unreachable, .. }) => {
                    !(deadline.is_some() && *unreachable)
                }
                Ok(response) => match response.status() {
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => true,
                    // A gateway's error: the registry behind it failed, and it already waited.
                    StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => deadline.is_none(),
                    _ => false,
                },
                Err(_) => false,
            };
            let backoff = Duration::from_millis(250 << attempt);
            let in_time = deadline.is_none_or(|d| tokio::time::Instant::now() + backoff < d);
            if !(transient && idempotent && attempt < ATTEMPTS && in_time) {
                return outcome;
            }
            tokio::time::sleep(backoff).await;
        }
    }

    async fn send_once(
        &self,
        scopes: &[String],
        method: &Method,
        url: &Url,
        build: &impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let mut renewed = false;
        loop {
            let mut request = build(self.http.request(method.clone(), url.clone()));
            if let Some(value) = self.authorization(scopes).await? {
                request = request.header(header::AUTHORIZATION, value.as_str());
            }
            let response = request.send().await.map_err(|err| self.network(&err))?;
            match response.status() {
                StatusCode::UNAUTHORIZED if !renewed => {
                    renewed = true;
                    let challenge = challenge_of(&response);
                    let mut auth = self.auth.lock().await;
                    if challenge.is_some() {
                        auth.challenge = challenge;
                    }
                    auth.tokens.remove(&scopes.join(" "));
                    if auth.challenge.is_none() {
                        drop(auth);
                        return Err(self.refused(response).await);
                    }
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(self.refused(response).await);
                }
                _ => return Ok(response),
            }
        }
    }

    /// The `Authorization` value for `scopes`, fetching a token when the registry wants one.
    async fn authorization(&self, scopes: &[String]) -> Result<Option<String>, ClientError> {
        self.base().await?;
        let (version, credentials) = self.credentials.current();
        if let Some(Credentials::Bearer { token }) = credentials.as_ref() {
            return Ok(Some(format!("Bearer {}", token.as_str())));
        }
        let mut auth = self.auth.lock().await;
        match auth.challenge.clone() {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(basic(credentials.as_ref().as_ref())),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = scopes.join(" ");
                let fresh =
                    |token: &Token| token.expires > Instant::now() && token.credentials == version;
                if let Some(token) = auth.tokens.get(&key).filter(|t| fresh(t)) {
                    return Ok(Some(format!("Bearer {}", token.value.as_str())));
                }
                let mut token = self
                    .fetch_token(
                        credentials.as_ref().as_ref(),
                        &realm,
                        service.as_deref(),
                        scopes,
                    )
                    .await?;
                token.credentials = version;
                let value = format!("Bearer {}", token.value.as_str());
                auth.tokens.insert(key, token);
                Ok(Some(value))
            }
        }
    }

    /// A token from `realm`: `GET` with Basic credentials, or an OAuth2 `POST` exchanging an
    /// identity (refresh) token, as docker does.
    async fn fetch_token(
        &self,
        credentials: Option<&Credentials>,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Token, ClientError> {
        let mut url = Url::parse(realm)
            .map_err(|err| self.protocol(format!("bad token realm {realm:?}: {err}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.protocol(format!("bad token realm {realm:?}")));
        }
        let request = match credentials {
            Some(Credentials::IdentityToken { token, .. }) => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", token)
                    .append_pair("client_id", "stowage");
                if let Some(service) = service {
                    form.append_pair("service", service);
                }
                if !scopes.is_empty() {
                    form.append_pair("scope", &scopes.join(" "));
                }
                self.http
                    .post(url)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.finish())
            }
            _ => {
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = service {
                        query.append_pair("service", service);
                    }
                    for scope in scopes {
                        query.append_pair("scope", scope);
                    }
                }
                let request = self.http.get(url);
                match basic(credentials) {
                    Some(basic) => request.header(header::AUTHORIZATION, basic),
                    None => request,
                }
            }
        };
        let response = request.send().await.map_err(|err| self.network(&err))?;
        if matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(self.refused(response).await);
        }
        if !response.status().is_success() {
            return Err(self.status_error(response).await);
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|err| self.protocol(format!("token response: {err}")))?;
        let value = body
            .token
            .or(body.access_token)
            .ok_or_else(|| self.protocol("token response without a token".into()))?;
        // Distribution's default lifetime is 60 s; renew a little before the end.
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(10));
        Ok(Token {
            value: Zeroizing::new(value),
            expires: Instant::now() + lifetime - Duration::from_secs(5),
            credentials: 0,
        })
    }

    /// The registry's base URL, found by pinging `/v2/` over HTTPS (then plain HTTP when TLS
    /// verification is off); the ping's challenge says how to authenticate.
    async fn base(&self) -> Result<&Url, ClientError> {
        self.base
            .get_or_try_init(|| async {
                if let Some(scheme) = &self.scheme {
                    let (base, challenge) = self.ping(scheme).await?;
                    self.auth.lock().await.challenge = challenge;
                    return Ok(base);
                }
                let https = self.ping("https").await;
                let (base, challenge) = match https {
                    Err(ClientError::Network { .. }) if !self.tls_verify => {
                        self.ping("http").await?
                    }
                    Err(ClientError::Network {
                        reason,
                        unreachable,
                        ..
                    }) => {
                        return Err(ClientError::Network {
                            host: self.host.clone(),
                            reason: format!(
                                "{reason} (for a registry on plain HTTP, turn TLS verification off)"
                            ),
                            unreachable,
                        });
                    }
                    other => other?,
                };
                self.auth.lock().await.challenge = challenge;
                Ok(base)
            })
            .await
    }

    async fn ping(&self, scheme: &str) -> Result<(Url, Option<Challenge>), ClientError> {
        let base = Url::parse(&format!("{scheme}://{}/", self.host)).map_err(|err| {
            ClientError::Config(format!("bad registry host {:?}: {err}", self.host))
        })?;
        let url = base
            .join("/v2/")
            .map_err(|err| self.protocol(err.to_string()))?;
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            match self.http.get(url.clone()).send().await {
                Ok(response) => break response,
                // A refused connection will not change; timeouts and resets might.
                Err(err) if attempt < ATTEMPTS && !err.is_connect() => {
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                }
                Err(err) => return Err(self.network(&err)),
            }
        };
        match response.status() {
            status if status.is_success() => Ok((base, None)),
            StatusCode::UNAUTHORIZED => match challenge_of(&response) {
                Some(challenge) => Ok((base, Some(challenge))),
                None => {
                    Err(self.protocol("401 on /v2/ without a challenge this client answers".into()))
                }
            },
            _ => Err(self.status_error(response).await),
        }
    }

    /// A registry's error answer, with the message of its first OCI error when it sent one.
    pub async fn status_error(&self, response: Response) -> ClientError {
        let status = response.status().as_u16();
        ClientError::Status {
            host: self.host.clone(),
            status,
            message: error_message(response).await,
        }
    }

    async fn refused(&self, response: Response) -> ClientError {
        let status = response.status();
        let message = error_message(response).await;
        let reason = match status {
            StatusCode::FORBIDDEN => format!("access denied: {message}"),
            _ if self.credentials.load().is_some() => {
                format!("authentication failed: {message}")
            }
            _ => format!("authentication required (no credentials given or stored): {message}"),
        };
        ClientError::Unauthorized {
            host: self.host.clone(),
            reason,
        }
    }

    pub fn network(&self, err: &reqwest::Error) -> ClientError {
        let mut reason = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            reason = format!("{reason}: {cause}");
            source = cause.source();
        }
        ClientError::Network {
            host: self.host.clone(),
            reason,
            unreachable: err.is_connect(),
        }
    }

    pub fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            host: self.host.clone(),
            reason,
        }
    }
}

/// `Basic …` for user-and-password credentials.
fn basic(credentials: Option<&Credentials>) -> Option<String> {
    use base64::Engine as _;
    match credentials {
        Some(Credentials::Basic { username, password }) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{}", password.as_str()))
        )),
        _ => None,
    }
}

fn challenge_of(response: &Response) -> Option<Challenge> {
    response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(Challenge::parse)
}

/// `CODE: message` of the first error in an OCI error body, or the status's reason.
async fn error_message(response: Response) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        code: String,
        #[serde(default)]
        message: String,
    }
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<Errors>(&body) {
        Ok(errors) if !errors.errors.is_empty() => {
            let first = &errors.errors[0];
            format!("{}: {}", first.code, first.message)
        }
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    }
}
