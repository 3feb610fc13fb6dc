//! Who may pull, push and delete. Every replica decides alone, from signed tokens and shared,
//! file-based configuration: there is no session store.
//!
//! Callers prove who they are with Basic credentials (htpasswd accounts, or a Kubernetes
//! service account token as the password) or a bearer token (ours, from `/auth/token`, or an
//! external token server's). The [`policy`] decides what a principal may do; a token grants at
//! most what it was issued for. The HTTP layer calls this module through one middleware
//! (`api::access`) and the token endpoint (`api::token`).

pub mod access;
pub mod htpasswd;
pub mod issuers;
pub mod keys;
pub mod lockout;
pub mod policy;
pub mod tokens;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

pub use access::{Action, Actions, Grants, Resource, Scope};
pub use policy::{Policy, Principal};

use crate::reload::{LoadError, Watched};
use htpasswd::{Htpasswd, Remembered};
use issuers::{ExternalIssuer, KubernetesIdentity, looks_like_jwt};
use lockout::Lockout;
use tokens::TokenSigner;

/// What a `401` challenges clients to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChallengeScheme {
    /// Get a token from the realm (Docker's token flow), with Basic credentials or none.
    #[default]
    Bearer,
    /// Send Basic credentials with every request, as Distribution's htpasswd auth asks.
    Basic,
}

/// Access control settings, resolved.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub htpasswd: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub anonymous_pull: bool,
    pub challenge: ChallengeScheme,
    /// Our tokens' audience and the challenge's `service`.
    pub service: String,
    /// The token endpoint's public URL; by default, derived from each request's Host.
    pub realm: Option<String>,
    pub signer: TokenSigner,
    pub external: Option<ExternalSettings>,
    pub kubernetes: Option<KubernetesSettings>,
    pub max_failed_logins: u32,
    pub failed_login_window: Duration,
    pub reload_interval: Duration,
}

/// An external token server (Distribution's `auth.token`).
#[derive(Debug, Clone)]
pub struct ExternalSettings {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub root_cert_bundle: Option<PathBuf>,
    /// A JWKS file, or an `https://` URL to fetch it from.
    pub jwks: Option<String>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
}

/// Kubernetes workload identity.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    pub issuer: String,
    pub audience: String,
    /// Where the issuer's keys are; by default, found through the issuer's discovery document.
    pub jwks_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

/// What the HTTP layer answers when access is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or wrong ones: `401` with a challenge.
    #[error("authentication required")]
    Unauthorized,
    /// A token that does not grant this, for a caller who could get one that does: `401`
    /// with a challenge naming the scope, so the client fetches a better token.
    #[error("the token does not grant this")]
    InsufficientScope,
    /// Valid credentials, not enough rights: `403 DENIED`.
    #[error("access denied")]
    Denied,
    /// Too many failed logins from this client or for this user: `429` with `Retry-After`.
    #[error("too many failed logins; retry later")]
    TooManyAttempts(Duration),
}

/// A problem in the access control configuration, reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
}

/// Credentials as a request carries them.
pub enum Credentials {
    None,
    Basic {
        user: String,
        password: Zeroizing<String>,
    },
    Bearer(String),
    /// An `Authorization` header we cannot read.
    Malformed,
}

impl Credentials {
    /// Reads an `Authorization` header.
    pub fn parse(header: Option<&[u8]>) -> Self {
        let Some(value) = header.and_then(|v| std::str::from_utf8(v).ok()) else {
            return if header.is_some() {
                Self::Malformed
            } else {
                Self::None
            };
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let Some(decoded) = STANDARD
                .decode(rest)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .map(Zeroizing::new)
            else {
                return Self::Malformed;
            };
            let Some((user, password)) = decoded.split_once(':') else {
                return Self::Malformed;
            };
            // `:` (what some clients send when they have nothing) means no credentials.
            if user.is_empty() && password.is_empty() {
                return Self::None;
            }
            Self::Basic {
                user: user.to_owned(),
                password: Zeroizing::new(password.to_owned()),
            }
        } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Self::Bearer(rest.to_owned())
        } else {
            Self::Malformed
        }
    }
}

/// Who is calling, and on what authority.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Checked directly: no credentials, a password or a service account token.
    Direct(Principal),
    /// A bearer token: the principal it was issued to and what it grants; `ours` when we
    /// issued it (the policy in force still applies), not when an external server did (its
    /// grants are all there is).
    Token {
        principal: Principal,
        grants: Grants,
        ours: bool,
    },
}

impl Identity {
    pub fn principal(&self) -> &Principal {
        match self {
            Self::Direct(principal) | Self::Token { principal, .. } => principal,
        }
    }
}

/// Who signed in to the web interface, and when that must end at the latest.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub identity: Identity,
    /// The expiry of the token that signed them in, when it has one.
    pub until: Option<std::time::SystemTime>,
}

/// Access control in force.
pub struct Auth {
    accounts: Option<Arc<Watched<Htpasswd>>>,
    remembered: Remembered,
    policy: Arc<Watched<Policy>>,
    signer: TokenSigner,
    external: Option<ExternalIssuer>,
    kubernetes: Option<KubernetesIdentity>,
    lockout: Lockout,
    challenge: ChallengeScheme,
    realm: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("challenge", &self.challenge)
            .field("service", &self.signer.service)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads the accounts and policy (failing on mistakes in them), and starts fetching
    /// issuers' keys.
    pub async fn start(config: AuthConfig) -> Result<Self, AuthSetupError> {
        let interval = config.reload_interval;
        let accounts = config
            .htpasswd
            .map(|path| {
                Watched::start("htpasswd file", vec![path], interval, |files| {
                    let text = String::from_utf8_lossy(&files[0]);
                    Htpasswd::parse(&text).map_err(|err| err.to_string())
                })
            })
            .transpose()?;
        let anonymous_pull = config.anonymous_pull;
        let with_anonymous = move |policy: Policy| {
            if anonymous_pull {
                policy.with_anonymous_pull()
            } else {
                policy
            }
        };
        let policy = match config.policy {
            Some(path) => Watched::start("access policy", vec![path], interval, move |files| {
                let text = String::from_utf8_lossy(&files[0]);
                Policy::parse(&text)
                    .map(with_anonymous)
                    .map_err(|err| err.to_string())
            })?,
            None => Watched::fixed(
                "access policy",
                with_anonymous(Policy::authenticated_may_do_everything()),
            ),
        };
        let external = match config.external {
            Some(settings) => Some(external_issuer(settings).await?),
            None => None,
        };
        let kubernetes = match config.kubernetes {
            Some(settings) => {
                let source = match settings.jwks_url {
                    Some(url) => keys::KeySource::Jwks(url),
                    None => keys::KeySource::Discovery(settings.issuer.clone()),
                };
                let keys = keys::RemoteKeys::start(keys::RemoteSettings {
                    source,
                    ca_file: settings.ca_file,
                    token_file: settings.token_file,
                })
                .await?;
                Some(KubernetesIdentity {
                    issuer: settings.issuer,
                    audience: settings.audience,
                    keys,
                })
            }
            None => None,
        };
        Ok(Self {
            accounts,
            remembered: Remembered::default(),
            policy,
            signer: config.signer,
            external,
            kubernetes,
            lockout: Lockout::new(config.max_failed_logins, config.failed_login_window),
            challenge: config.challenge,
            realm: config.realm,
        })
    }

    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    pub fn challenge_scheme(&self) -> ChallengeScheme {
        self.challenge
    }

    /// The token endpoint clients are sent to: an external server's, the configured one, or
    /// ours at the address the client used.
    pub fn realm(&self, origin: &str) -> (String, String) {
        if let Some(external) = &self.external {
            return (external.realm.clone(), external.service.clone());
        }
        let realm = self
            .realm
            .clone()
            .unwrap_or_else(|| format!("{origin}/auth/token"));
        (realm, self.signer.service.clone())
    }

    /// Who the credentials name, checking passwords and tokens.
    pub async fn identify(
        &self,
        credentials: Credentials,
        client: Option<IpAddr>,
    ) -> Result<Identity, AuthError> {
        match credentials {
            Credentials::None => Ok(Identity::Direct(Principal::Anonymous)),
            Credentials::Malformed => Err(AuthError::Unauthorized),
            Credentials::Basic { user, password } => self
                .login(user, password, client)
                .await
                .map(Identity::Direct),
            Credentials::Bearer(token) => self.bearer(&token).await,
        }
    }

    async fn bearer(&self, token: &str) -> Result<Identity, AuthError> {
        let ours = self.signer.validate(token);
        let ours_error = match ours {
            Ok((principal, grants)) => {
                return Ok(Identity::Token {
                    principal,
                    grants,
                    ours: true,
                });
            }
            Err(err) => err,
        };
        if let Some(external) = &self.external {
            match external.verify(token).await {
                Ok((principal, grants)) => {
                    return Ok(Identity::Token {
                        principal,
                        grants,
                        ours: false,
                    });
                }
                Err(err) => tracing::debug!(error = %err, "external token refused"),
            }
        }
        tracing::debug!(error = %ours_error, "bearer token refused");
        Err(AuthError::Unauthorized)
    }

    /// Checks a user name and password (or service account token), within the failed-login
    /// limits.
    pub async fn login(
        &self,
        user: String,
        password: Zeroizing<String>,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        if let Some(wait) = self.lockout.retry_after(client, &user) {
            return Err(AuthError::TooManyAttempts(wait));
        }
        if let Some(kubernetes) = &self.kubernetes
            && looks_like_jwt(&password)
        {
            return match kubernetes.verify(&password).await {
                Ok(principal) => Ok(principal),
                Err(err) => {
                    tracing::debug!(error = %err, "service account token refused");
                    self.lockout.failed(client, "");
                    Err(AuthError::Unauthorized)
                }
            };
        }
        let Some(accounts) = &self.accounts else {
            self.lockout.failed(client, &user);
            return Err(AuthError::Unauthorized);
        };
        let (version, file) = accounts.current();
        if self.remembered.knows(version, &user, &password) {
            return Ok(Principal::User(user));
        }
        let checked = {
            let (user, password) = (user.clone(), password.clone());
            tokio::task::spawn_blocking(move || file.verify(&user, &password))
                .await
                .unwrap_or(false)
        };
        if checked {
            self.remembered.remember(version, &user, &password);
            Ok(Principal::User(user))
        } else {
            tracing::info!(user, client = ?client, "failed login");
            self.lockout.failed(client, &user);
            Err(AuthError::Unauthorized)
        }
    }

    /// Who signs in to the web interface with `user` and `password`: an account, a service
    /// account token, or a token of the external issuer, whose grants are then all the visitor
    /// may do, until the token expires. Failures count towards the same lockout as failed logins.
    pub async fn sign_in(
        &self,
        user: String,
        password: Zeroizing<String>,
        client: Option<IpAddr>,
    ) -> Result<SignedIn, AuthError> {
        if let Some(external) = &self.external
            && looks_like_jwt(&password)
        {
            if let Some(wait) = self.lockout.retry_after(client, &user) {
                return Err(AuthError::TooManyAttempts(wait));
            }
            match external.verify(&password).await {
                Ok((principal, grants)) => {
                    #[derive(serde::Deserialize)]
                    struct Expiry {
                        exp: u64,
                    }
                    // Verified just now: reading its expiry again needs no second check.
                    let until = jsonwebtoken::dangerous::insecure_decode::<Expiry>(&*password)
                        .ok()
                        .map(|data| std::time::UNIX_EPOCH + Duration::from_secs(data.claims.exp));
                    let identity = Identity::Token {
                        principal,
                        grants,
                        ours: false,
                    };
                    return Ok(SignedIn { identity, until });
                }
                Err(err) => tracing::debug!(error = %err, "external token refused at sign-in"),
            }
        }
        self.login(user, password, client)
            .await
            .map(|principal| SignedIn {
                identity: Identity::Direct(principal),
                until: None,
            })
    }

    /// Whether an htpasswd account still exists (refresh tokens outlive logins).
    pub fn account_exists(&self, principal: &Principal) -> bool {
        match (principal, &self.accounts) {
            (Principal::User(user), Some(accounts)) => accounts.load().contains(user),
            _ => false,
        }
    }

    /// What the policy in force lets `principal` do to `repository`.
    pub fn allowed(&self, principal: &Principal, repository: &str) -> Actions {
        self.policy.load().allowed(principal, repository)
    }

    /// Whether `identity` may do `action` to `resource`; `None` for the base endpoint, which
    /// anyone with valid credentials may call.
    pub fn authorize(
        &self,
        identity: &Identity,
        resource: Option<&Resource>,
        action: Action,
    ) -> Result<(), AuthError> {
        let principal = identity.principal();
        let refuse = || {
            if principal.is_anonymous() {
                AuthError::Unauthorized
            } else {
                AuthError::Denied
            }
        };
        match (resource, identity) {
            (None, Identity::Direct(Principal::Anonymous)) => Err(AuthError::Unauthorized),
            (None, _) => Ok(()),
            (Some(Resource::Catalog), Identity::Direct(principal)) => {
                // Listing is filtered; anonymous callers list only if they may pull something.
                if principal.is_anonymous() && !self.policy.load().anonymous_may_pull_somewhere() {
                    Err(AuthError::Unauthorized)
                } else {
                    Ok(())
                }
            }
            (Some(Resource::Catalog), Identity::Token { grants, .. }) => grants
                .catalog()
                .then_some(())
                .ok_or(AuthError::InsufficientScope),
            (Some(Resource::Repository(name)), Identity::Direct(principal)) => self
                .allowed(principal, name)
                .contains(action)
                .then_some(())
                .ok_or_else(refuse),
            (Some(Resource::Repository(name)), Identity::Token { grants, ours, .. }) => {
                let granted = grants.on_repository(name);
                if !ours {
                    return granted
                        .contains(action)
                        .then_some(())
                        .ok_or(AuthError::InsufficientScope);
                }
                let allowed = self.allowed(principal, name);
                if granted.intersect(allowed).contains(action) {
                    Ok(())
                } else if allowed.contains(action) {
                    Err(AuthError::InsufficientScope)
                } else {
                    Err(refuse())
                }
            }
        }
    }

    /// Which repositories `identity` sees in the catalog.
    pub fn catalog_filter(&self, identity: &Identity) -> Box<dyn Fn(&str) -> bool + Send + Sync> {
        match identity {
            Identity::Token { ours: false, .. } => Box::new(|_| true),
            other => {
                let principal = other.principal().clone();
                let (_, policy) = self.policy.current();
                Box::new(move |name| policy.allowed(&principal, name).contains(Action::Pull))
            }
        }
    }

    /// The scopes a token for `principal` may carry, of those asked for: the intersection of
    /// what was asked and what the policy allows.
    pub fn grant(&self, principal: &Principal, asked: &[Scope]) -> Vec<Scope> {
        asked
            .iter()
            .filter_map(|scope| {
                if scope.is_catalog() {
                    return Some(Scope::catalog());
                }
                if scope.kind != access::REPOSITORY
                    || scope.name.parse::<crate::oci::RepositoryName>().is_err()
                {
                    return None;
                }
                let granted = scope
                    .actions()
                    .intersect(self.allowed(principal, &scope.name));
                (!granted.is_empty()).then(|| Scope::repository(&scope.name, granted))
            })
            .collect()
    }
}

async fn external_issuer(settings: ExternalSettings) -> Result<ExternalIssuer, AuthSetupError> {
    let read =
        |path: &PathBuf| std::fs::read(path).map_err(|err| keys::KeyError::Read(path.clone(), err));
    let mut fixed = Vec::new();
    if let Some(path) = &settings.root_cert_bundle {
        fixed.push(keys::KeySet::from_certificates(
            &path.display().to_string(),
            &read(path)?,
        )?);
    }
    let mut remote = None;
    match settings.jwks {
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            remote = Some(
                keys::RemoteKeys::start(keys::RemoteSettings {
                    source: keys::KeySource::Jwks(url),
                    ca_file: None,
                    token_file: None,
                })
                .await?,
            );
        }
        Some(file) => fixed.push(keys::KeySet::from_jwks(
            &file,
            &read(&PathBuf::from(&file))?,
        )?),
        None => {}
    }
    Ok(ExternalIssuer {
        realm: settings.realm,
        service: settings.service,
        issuer: settings.issuer,
        fixed,
        remote,
        algorithms: settings.algorithms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_as_sent() {
        let basic = |s: &str| format!("Basic {}", STANDARD.encode(s));
        assert!(matches!(
            Credentials::parse(Some(basic("alice:pw:with:colons").as_bytes())),
            Credentials::Basic { user, password } if user == "alice" && *password == "pw:with:colons"
        ));
        assert!(matches!(
            Credentials::parse(Some(basic(":").as_bytes())),
            Credentials::None
        ));
        assert!(matches!(Credentials::parse(None), Credentials::None));
        assert!(matches!(
            Credentials::parse(Some(b"bearer abc.def.ghi")),
            Credentials::Bearer(token) if token == "abc.def.ghi"
        ));
        for bad in [
            &b"Basic !!!"[..],
            b"Basic bm9jb2xvbg==",
            b"Digest x",
            b"Bearer ",
            b"\xff",
        ] {
            assert!(
                matches!(Credentials::parse(Some(bad)), Credentials::Malformed),
                "{bad:?}"
            );
        }
    }
}
