//! Access control and TLS settings: the `[auth]` and `[tls]` tables of the config file, and
//! their flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::ConfigError;
use super::humantime_serde_opt;
use super::secret::secret;
use crate::auth::issuers::ASYMMETRIC;
use crate::auth::tokens::TokenSigner;
use crate::auth::{AuthConfig, ChallengeScheme, ExternalSettings, KubernetesSettings};
use crate::upload::SecretKey;

const DEFAULT_SERVICE: &str = "stowage";
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_MAX_FAILED_LOGINS: u32 = 10;
const DEFAULT_FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_KUBERNETES_AUDIENCE: &str = "stowage";

/// Who may pull, push and delete. Access control is on as soon as accounts, a policy, an
/// external token issuer or Kubernetes workload identity is configured.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthSettings {
    /// htpasswd file of accounts (bcrypt hashes: `htpasswd -B`), read again when it changes.
    #[arg(long, env = "STOWAGE_HTPASSWD")]
    pub htpasswd: Option<PathBuf>,

    /// Access policy file (groups and rules, TOML), read again when it changes [default:
    /// authenticated callers may do everything].
    #[arg(long = "auth-policy", env = "STOWAGE_AUTH_POLICY")]
    pub policy: Option<PathBuf>,

    /// Let anyone pull, with or without credentials, where no rule decides otherwise
    /// [default: false].
    #[arg(long, env = "STOWAGE_ANONYMOUS_PULL")]
    pub anonymous_pull: Option<bool>,

    /// What `401` asks clients for: `bearer` (the token flow) or `basic` [default: bearer].
    #[arg(long = "auth-challenge", env = "STOWAGE_AUTH_CHALLENGE")]
    pub challenge: Option<ChallengeScheme>,

    /// The service name of challenges and tokens [default: stowage].
    #[arg(long = "auth-service", env = "STOWAGE_AUTH_SERVICE")]
    pub service: Option<String>,

    /// The token endpoint's public URL [default: `<scheme>://<Host>/auth/token` per request].
    #[arg(long = "auth-realm", env = "STOWAGE_AUTH_REALM")]
    pub realm: Option<String>,

    /// Key that signs tokens (at least 32 bytes). Every replica needs the same key.
    #[arg(
        long = "auth-token-secret",
        env = "STOWAGE_AUTH_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub token_secret: Option<String>,

    /// File holding the token key.
    #[arg(
        long = "auth-token-secret-file",
        env = "STOWAGE_AUTH_TOKEN_SECRET_FILE",
        conflicts_with = "token_secret"
    )]
    pub token_secret_file: Option<PathBuf>,

    /// The previous token key, still accepted after a rotation.
    #[arg(
        long = "auth-token-secret-previous",
        env = "STOWAGE_AUTH_TOKEN_SECRET_PREVIOUS",
        hide_env_values = true
    )]
    pub token_secret_previous: Option<String>,

    /// File holding the previous token key.
    #[arg(
        long = "auth-token-secret-previous-file",
        env = "STOWAGE_AUTH_TOKEN_SECRET_PREVIOUS_FILE",
        conflicts_with = "token_secret_previous"
    )]
    pub token_secret_previous_file: Option<PathBuf>,

    /// How long an access token is valid [default: 5m].
    #[arg(long = "auth-token-ttl", env = "STOWAGE_AUTH_TOKEN_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub token_ttl: Option<Duration>,

    /// How long a refresh token (`offline_token`) is valid [default: 168h].
    #[arg(long = "auth-refresh-token-ttl", env = "STOWAGE_AUTH_REFRESH_TOKEN_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub refresh_token_ttl: Option<Duration>,

    /// Failed logins per client address, and per user, before further attempts get 429
    /// [default: 10].
    #[arg(
        long = "auth-max-failed-logins",
        env = "STOWAGE_AUTH_MAX_FAILED_LOGINS"
    )]
    pub max_failed_logins: Option<u32>,

    /// The window failed logins are counted over [default: 1m].
    #[arg(long = "auth-failed-login-window", env = "STOWAGE_AUTH_FAILED_LOGIN_WINDOW", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub failed_login_window: Option<Duration>,

    /// An external token server's realm (its token URL); setting it sends clients there.
    #[arg(long = "auth-issuer-realm", env = "STOWAGE_AUTH_ISSUER_REALM")]
    pub issuer_realm: Option<String>,

    /// The external token server's service name (its tokens' audience).
    #[arg(long = "auth-issuer-service", env = "STOWAGE_AUTH_ISSUER_SERVICE")]
    pub issuer_service: Option<String>,

    /// The external token server's issuer (its tokens' `iss`).
    #[arg(long = "auth-issuer-name", env = "STOWAGE_AUTH_ISSUER_NAME")]
    pub issuer_name: Option<String>,

    /// PEM certificates whose keys sign the external server's tokens (`rootcertbundle`).
    #[arg(
        long = "auth-issuer-root-cert-bundle",
        env = "STOWAGE_AUTH_ISSUER_ROOT_CERT_BUNDLE"
    )]
    pub issuer_root_cert_bundle: Option<PathBuf>,

    /// The external server's JWKS: a file, or an https:// URL fetched and refreshed.
    #[arg(long = "auth-issuer-jwks", env = "STOWAGE_AUTH_ISSUER_JWKS")]
    pub issuer_jwks: Option<String>,

    /// Signature algorithms accepted from the external server, comma-separated [default: RS*,
    /// PS*, ES256, ES384, EdDSA].
    #[arg(
        long = "auth-issuer-algorithms",
        env = "STOWAGE_AUTH_ISSUER_ALGORITHMS",
        value_delimiter = ','
    )]
    pub issuer_algorithms: Option<Vec<String>>,

    /// Accept Kubernetes service account tokens (as passwords) from this issuer (the API
    /// server's `--service-account-issuer`).
    #[arg(
        long = "auth-kubernetes-issuer",
        env = "STOWAGE_AUTH_KUBERNETES_ISSUER"
    )]
    pub kubernetes_issuer: Option<String>,

    /// The audience service account tokens must name [default: stowage].
    #[arg(
        long = "auth-kubernetes-audience",
        env = "STOWAGE_AUTH_KUBERNETES_AUDIENCE"
    )]
    pub kubernetes_audience: Option<String>,

    /// Where the issuer's keys are [default: found through the issuer's discovery document].
    #[arg(
        long = "auth-kubernetes-jwks-url",
        env = "STOWAGE_AUTH_KUBERNETES_JWKS_URL"
    )]
    pub kubernetes_jwks_url: Option<String>,

    /// CA certificates for fetching the issuer's keys (the cluster's CA, in a pod).
    #[arg(
        long = "auth-kubernetes-ca-file",
        env = "STOWAGE_AUTH_KUBERNETES_CA_FILE"
    )]
    pub kubernetes_ca_file: Option<PathBuf>,

    /// A bearer token to fetch the keys with (the pod's own service account token).
    #[arg(
        long = "auth-kubernetes-token-file",
        env = "STOWAGE_AUTH_KUBERNETES_TOKEN_FILE"
    )]
    pub kubernetes_token_file: Option<PathBuf>,
}

/// Serving HTTPS.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain to serve HTTPS with, read again when it changes.
    #[arg(
        long = "tls-cert-file",
        env = "STOWAGE_TLS_CERT_FILE",
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,

    /// PEM private key of the certificate.
    #[arg(
        long = "tls-key-file",
        env = "STOWAGE_TLS_KEY_FILE",
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,
}

/// Fills `$field` of `self` from `file` wherever it is unset.
macro_rules! layered {
    ($self:ident, $file:ident, $($field:ident),+ $(,)?) => {
        Self { $($field: $self.$field.or($file.$field)),+ }
    };
}

impl AuthSettings {
    pub fn or(self, file: Self) -> Self {
        layered!(
            self,
            file,
            htpasswd,
            policy,
            anonymous_pull,
            challenge,
            service,
            realm,
            token_secret,
            token_secret_file,
            token_secret_previous,
            token_secret_previous_file,
            token_ttl,
            refresh_token_ttl,
            max_failed_logins,
            failed_login_window,
            issuer_realm,
            issuer_service,
            issuer_name,
            issuer_root_cert_bundle,
            issuer_jwks,
            issuer_algorithms,
            kubernetes_issuer,
            kubernetes_audience,
            kubernetes_jwks_url,
            kubernetes_ca_file,
            kubernetes_token_file,
        )
    }

    /// The access control in force; `None` when nothing turns it on.
    pub fn resolve(self, reload_interval: Duration) -> Result<Option<AuthConfig>, ConfigError> {
        let external = self.external()?;
        let kubernetes = self
            .kubernetes_issuer
            .clone()
            .map(|issuer| KubernetesSettings {
                issuer,
                audience: self
                    .kubernetes_audience
                    .clone()
                    .unwrap_or_else(|| DEFAULT_KUBERNETES_AUDIENCE.to_owned()),
                jwks_url: self.kubernetes_jwks_url.clone(),
                ca_file: self.kubernetes_ca_file.clone(),
                token_file: self.kubernetes_token_file.clone(),
            });
        let on = self.htpasswd.is_some()
            || self.policy.is_some()
            || external.is_some()
            || kubernetes.is_some();
        if !on {
            if self.anonymous_pull.is_some()
                || self.token_secret.is_some()
                || self.token_secret_file.is_some()
            {
                return Err(ConfigError::Invalid(
                    "auth settings are set, but no accounts, policy, token issuer or Kubernetes \
                     issuer turns access control on"
                        .into(),
                ));
            }
            return Ok(None);
        }
        let current = secret(
            "token key",
            self.token_secret,
            self.token_secret_file.as_deref(),
        )?;
        let previous = secret(
            "previous token key",
            self.token_secret_previous,
            self.token_secret_previous_file.as_deref(),
        )?;
        let current = match (current, previous.is_some()) {
            (Some(current), _) => current,
            (None, true) => return Err(ConfigError::PreviousWithoutCurrent("previous token key")),
            (None, false) => {
                tracing::warn!(
                    "no token key configured: using a random one; tokens will not be accepted by \
                     other replicas or after a restart (set --auth-token-secret-file)"
                );
                SecretKey::random()
            }
        };
        let service = self.service.unwrap_or_else(|| DEFAULT_SERVICE.to_owned());
        let signer = TokenSigner::new(
            current,
            previous,
            service.clone(),
            self.token_ttl.unwrap_or(DEFAULT_TOKEN_TTL),
            self.refresh_token_ttl.unwrap_or(DEFAULT_REFRESH_TOKEN_TTL),
        );
        Ok(Some(AuthConfig {
            htpasswd: self.htpasswd,
            policy: self.policy,
            anonymous_pull: self.anonymous_pull.unwrap_or(false),
            challenge: self.challenge.unwrap_or_default(),
            service,
            realm: self.realm,
            signer,
            external,
            kubernetes,
            max_failed_logins: self.max_failed_logins.unwrap_or(DEFAULT_MAX_FAILED_LOGINS),
            failed_login_window: self
                .failed_login_window
                .unwrap_or(DEFAULT_FAILED_LOGIN_WINDOW),
            reload_interval,
        }))
    }

    fn external(&self) -> Result<Option<ExternalSettings>, ConfigError> {
        let Some(realm) = self.issuer_realm.clone() else {
            return Ok(None);
        };
        let (Some(service), Some(issuer)) = (self.issuer_service.clone(), self.issuer_name.clone())
        else {
            return Err(ConfigError::Invalid(
                "--auth-issuer-realm needs --auth-issuer-service and --auth-issuer-name".into(),
            ));
        };
        if self.issuer_root_cert_bundle.is_none() && self.issuer_jwks.is_none() {
            return Err(ConfigError::Invalid(
                "--auth-issuer-realm needs --auth-issuer-root-cert-bundle or --auth-issuer-jwks"
                    .into(),
            ));
        }
        let algorithms = match &self.issuer_algorithms {
            None => ASYMMETRIC.to_vec(),
            Some(names) => names
                .iter()
                .map(|name| {
                    name.trim()
                        .parse::<jsonwebtoken::Algorithm>()
                        .ok()
                        .filter(|alg| ASYMMETRIC.contains(alg))
                        .ok_or_else(|| {
                            ConfigError::Invalid(format!(
                                "--auth-issuer-algorithms: {name:?} is not an asymmetric JWT \
                                 algorithm"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Some(ExternalSettings {
            realm,
            service,
            issuer,
            root_cert_bundle: self.issuer_root_cert_bundle.clone(),
            jwks: self.issuer_jwks.clone(),
            algorithms,
        }))
    }
}

impl TlsSettings {
    pub fn or(self, file: Self) -> Self {
        layered!(self, file, cert_file, key_file)
    }

    /// The certificate and key files, when HTTPS is on.
    pub fn resolve(self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        match (self.cert_file, self.key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => Err(ConfigError::Invalid(
                "--tls-cert-file and --tls-key-file go together".into(),
            )),
        }
    }
}
