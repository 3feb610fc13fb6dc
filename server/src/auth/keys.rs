//! Public keys that verify tokens other servers sign: a JWKS (a file, a URL, or an OIDC
//! issuer's discovery document), or a bundle of certificates whose keys sign (Distribution's
//! `rootcertbundle`). Remote key sets are fetched at start, refreshed periodically, and fetched
//! again (at most every few seconds) when a token names a key we do not have: issuers rotate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::de::DeserializeOwned;
use x509_parser::oid_registry::{
    OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};

/// Remote key sets are fetched again at least this often.
const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// An unknown key id triggers a fetch at most this often.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(10);
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A problem loading keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: not a JWKS: {1}")]
    Jwks(String, serde_json::Error),
    #[error("{0}: no usable public key (symmetric and unsupported keys are ignored)")]
    Empty(String),
    #[error("certificate bundle {0}: {1}")]
    Certificate(String, String),
    #[error("fetching {0}: {1}")]
    Fetch(String, String),
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("algorithm {0:?} is not allowed")]
    Algorithm(Algorithm),
    #[error("no key matches the token")]
    NoKey,
    #[error("{0}")]
    Token(#[from] jsonwebtoken::errors::Error),
}

struct PublicKey {
    kid: Option<String>,
    key: DecodingKey,
}

/// A set of public keys.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl KeySet {
    /// The public keys of a JWKS document; symmetric (`oct`) keys are ignored, since anyone
    /// who can read the set could sign with them.
    pub fn from_jwks(source: &str, json: &[u8]) -> Result<Self, KeyError> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|err| KeyError::Jwks(source.to_owned(), err))?;
        let keys: Vec<PublicKey> = set
            .keys
            .iter()
            .filter(|jwk| !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)))
            .filter_map(|jwk| {
                Some(PublicKey {
                    kid: jwk.common.key_id.clone(),
                    key: DecodingKey::from_jwk(jwk).ok()?,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(KeyError::Empty(source.to_owned()));
        }
        Ok(Self { keys })
    }

    /// The public keys of PEM certificates (RSA, EC or Ed25519).
    pub fn from_certificates(source: &str, pem: &[u8]) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::Certificate(source.to_owned(), reason);
        let mut keys = Vec::new();
        for der in CertificateDer::pem_slice_iter(pem) {
            let der = der.map_err(|err| bad(err.to_string()))?;
            let (_, cert) =
                x509_parser::parse_x509_certificate(&der).map_err(|err| bad(err.to_string()))?;
            let spki = cert.public_key();
            let bits = spki.subject_public_key.data.as_ref();
            let key = if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
                DecodingKey::from_rsa_der(bits)
            } else if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
                DecodingKey::from_ec_der(bits)
            } else if spki.algorithm.algorithm == OID_SIG_ED25519 {
                DecodingKey::from_ed_der(bits)
            } else {
                return Err(bad(format!(
                    "unsupported key algorithm {}",
                    spki.algorithm.algorithm
                )));
            };
            keys.push(PublicKey { kid: None, key });
        }
        if keys.is_empty() {
            return Err(KeyError::Empty(source.to_owned()));
        }
        Ok(Self { keys })
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Verifies `token` with the key its header names (or, without a `kid`, any key of the
    /// right kind) and checks its claims with `validation`, whose algorithms list is the
    /// allowed set.
    pub fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<C, VerifyError> {
        let header = jsonwebtoken::decode_header(token)?;
        if !validation.algorithms.contains(&header.alg) {
            return Err(VerifyError::Algorithm(header.alg));
        }
        let mut validation = validation.clone();
        validation.algorithms = vec![header.alg];
        let candidates = self.keys.iter().filter(|k| {
            k.key.family() == header.alg.family()
                && match (&header.kid, &k.kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    _ => true,
                }
        });
        let mut last = VerifyError::NoKey;
        for candidate in candidates {
            match jsonwebtoken::decode::<C>(token, &candidate.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(err) => last = VerifyError::Token(err),
            }
        }
        Err(last)
    }
}

/// Where a remote key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS document's URL.
    Jwks(String),
    /// An OIDC issuer: its `/.well-known/openid-configuration` names the JWKS.
    Discovery(String),
}

/// How to reach a remote key set.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub source: KeySource,
    /// PEM certificates to trust beyond the system's (the cluster's CA, in Kubernetes).
    pub ca_file: Option<PathBuf>,
    /// A bearer token to present, read afresh at each fetch (a pod's own service account
    /// token, which the API server needs to hand out its keys).
    pub token_file: Option<PathBuf>,
}

/// A key set fetched over HTTP and kept fresh.
pub struct RemoteKeys {
    settings: RemoteSettings,
    client: reqwest::Client,
    keys: ArcSwap<KeySet>,
    last_fetch: std::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("source", &self.settings.source)
            .finish_non_exhaustive()
    }
}

impl RemoteKeys {
    /// Starts fetching: a first fetch now (a failure is logged, not fatal: the issuer may come
    /// up later), then every few minutes for as long as the keys are in use.
    pub async fn start(settings: RemoteSettings) -> Result<Arc<Self>, KeyError> {
        crate::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .use_rustls_tls();
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).map_err(|err| KeyError::Read(ca.clone(), err))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|err| KeyError::Certificate(ca.display().to_string(), err.to_string()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|err| KeyError::Fetch("client".into(), err.to_string()))?;
        let remote = Arc::new(Self {
            settings,
            client,
            keys: ArcSwap::from_pointee(KeySet::default()),
            last_fetch: std::sync::Mutex::new(None),
        });
        remote.refresh().await;
        let weak = Arc::downgrade(&remote);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let Some(remote) = weak.upgrade() else {
                    return;
                };
                remote.refresh().await;
            }
        });
        Ok(remote)
    }

    /// Fetches the key set; on failure keeps the keys it had.
    async fn refresh(&self) {
        *self
            .last_fetch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => self.keys.store(Arc::new(keys)),
            Err(error) => tracing::warn!(%error, "fetching token signing keys failed"),
        }
    }

    async fn fetch(&self) -> Result<KeySet, KeyError> {
        let jwks_url = match &self.settings.source {
            KeySource::Jwks(url) => url.clone(),
            KeySource::Discovery(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let document: serde_json::Value = self.get_json(&url).await?;
                document["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| KeyError::Fetch(url.clone(), "no jwks_uri".into()))?
                    .to_owned()
            }
        };
        let body = self.get(&jwks_url).await?;
        KeySet::from_jwks(&jwks_url, &body)
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, KeyError> {
        let body = self.get(url).await?;
        serde_json::from_slice(&body)
            .map_err(|err| KeyError::Fetch(url.to_owned(), err.to_string()))
    }

    async fn get(&self, url: &str) -> Result<bytes::Bytes, KeyError> {
        let failed = |err: String| KeyError::Fetch(url.to_owned(), err);
        let mut request = self.client.get(url);
        if let Some(file) = &self.settings.token_file {
            let token =
                std::fs::read_to_string(file).map_err(|err| KeyError::Read(file.clone(), err))?;
            request = request.bearer_auth(token.trim());
        }
        let response = request
            .send()
            .await
            .map_err(|err| failed(err.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("status {}", response.status())));
        }
        response
            .bytes()
            .await
            .map_err(|err| failed(err.to_string()))
    }

    /// Verifies `token`, fetching the keys again first when it names one we lack.
    pub async fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<C, VerifyError> {
        let unknown_kid = jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|header| header.kid)
            .is_some_and(|kid| !self.keys.load().has_kid(&kid));
        if unknown_kid || self.keys.load().keys.is_empty() {
            let due = self
                .last_fetch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_none_or(|at| at.elapsed() >= REFETCH_AT_MOST_EVERY);
            if due {
                self.refresh().await;
            }
        }
        self.keys.load().verify(token, validation)
    }
}
