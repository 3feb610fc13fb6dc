//! Tokens other servers issue: an existing token server's bearer tokens (Distribution's
//! `auth.token`), and Kubernetes projected service account tokens offered as passwords.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::access::{Grants, Scope};
use super::keys::{KeySet, RemoteKeys, VerifyError};
use super::policy::Principal;

/// Clock skew tolerated against other issuers.
const LEEWAY_SECONDS: u64 = 30;

/// Asymmetric algorithms, the default allowed set for tokens signed elsewhere.
pub const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn validation(issuer: &str, audience: &str, algorithms: &[Algorithm]) -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.algorithms = algorithms.to_vec();
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECONDS;
    validation
}

/// An existing token server whose tokens the registry accepts. Its challenge sends clients
/// there; what its tokens grant is what the caller may do.
#[derive(Debug)]
pub struct ExternalIssuer {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// Keys from a certificate bundle or a JWKS file.
    pub fixed: Vec<KeySet>,
    /// Keys from a JWKS URL.
    pub remote: Option<Arc<RemoteKeys>>,
    pub algorithms: Vec<Algorithm>,
}

#[derive(Deserialize)]
struct ExternalClaims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    access: Vec<Scope>,
}

impl ExternalIssuer {
    pub async fn verify(&self, token: &str) -> Result<(Principal, Grants), VerifyError> {
        let validation = validation(&self.issuer, &self.service, &self.algorithms);
        let mut result = Err(VerifyError::NoKey);
        for keys in &self.fixed {
            result = keys.verify::<ExternalClaims>(token, &validation);
            if result.is_ok() {
                break;
            }
        }
        if result.is_err()
            && let Some(remote) = &self.remote
        {
            result = remote.verify::<ExternalClaims>(token, &validation).await;
        }
        let claims = result?;
        let principal = if claims.sub.is_empty() {
            Principal::Anonymous
        } else {
            Principal::External(claims.sub)
        };
        Ok((principal, Grants(claims.access)))
    }
}

/// Kubernetes workload identity: a pod's projected service account token, checked against the
/// cluster's service account issuer keys.
#[derive(Debug)]
pub struct KubernetesIdentity {
    pub issuer: String,
    pub audience: String,
    pub keys: Arc<RemoteKeys>,
}

#[derive(Deserialize)]
struct ServiceAccountClaims {
    sub: String,
}

impl KubernetesIdentity {
    pub async fn verify(&self, token: &str) -> Result<Principal, VerifyError> {
        // The API server signs with RS256 (or ES256 with an EC key); never anything symmetric.
        let validation = validation(&self.issuer, &self.audience, &ASYMMETRIC);
        let claims: ServiceAccountClaims = self.keys.verify(token, &validation).await?;
        match Principal::from_subject(&claims.sub) {
            principal @ Principal::ServiceAccount { .. } => Ok(principal),
            _ => Err(VerifyError::NoKey),
        }
    }
}

/// Whether a password looks like a JWT, and so could be a service account token.
pub fn looks_like_jwt(password: &str) -> bool {
    password.starts_with("eyJ") && password.bytes().filter(|b| *b == b'.').count() == 2
}
