//! The registry's own bearer tokens: JWTs (HS256) signed with a key every replica shares, so
//! any replica validates a token any other issued. Rotation keeps the previous key valid.
//!
//! Access tokens carry the Docker token spec's claims (`iss`, `sub`, `aud` = the service,
//! `exp`, `nbf`, `iat`, `jti`, `access`). Refresh tokens (`offline_token`, OAuth2
//! `refresh_token`) have their own audience, so one can never be used as the other, and so do
//! the web interface's sessions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::access::{Grants, Scope};
use super::policy::Principal;
use crate::upload::SecretKey;
use crate::upload::token::unix_seconds;

/// Tokens longer than this are refused before any decoding work.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock skew tolerated between replicas.
const LEEWAY_SECONDS: u64 = 30;

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Scope>,
    /// A session of a visitor who signed in with an external issuer's token: `access` is then
    /// what that token granted, and all the session may do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

/// A web interface session, as its cookie carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub principal: Principal,
    /// What an external issuer's token granted, when the visitor signed in with one.
    pub external_grants: Option<Grants>,
    /// The session's CSRF token (its `jti`).
    pub csrf: String,
}

/// A token just made.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub expires_in: Duration,
    pub issued_at: SystemTime,
}

/// Why a token was refused. Deliberately vague towards clients: any of these is a 401.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token too long")]
    TooLong,
    #[error("{0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Issues and checks the registry's tokens.
#[derive(Debug, Clone)]
pub struct TokenSigner {
    current: SecretKey,
    previous: Option<SecretKey>,
    /// `iss` of our tokens.
    pub issuer: String,
    /// `aud` of our access tokens, and the `service` of challenges.
    pub service: String,
    pub ttl: Duration,
    pub refresh_ttl: Duration,
}

impl TokenSigner {
    pub fn new(
        current: SecretKey,
        previous: Option<SecretKey>,
        service: String,
        ttl: Duration,
        refresh_ttl: Duration,
    ) -> Self {
        Self {
            current,
            previous,
            issuer: format!("stowage:{service}"),
            service,
            ttl,
            refresh_ttl,
        }
    }

    fn refresh_audience(&self) -> String {
        format!("{}#refresh", self.service)
    }

    fn session_audience(&self) -> String {
        format!("{}#ui", self.service)
    }

    /// An access token for `principal` granting exactly `access`.
    pub fn issue(&self, principal: &Principal, access: Vec<Scope>) -> Issued {
        self.sign(principal, self.service.clone(), self.ttl, access)
    }

    /// A long-lived token that can only be exchanged for access tokens.
    pub fn issue_refresh(&self, principal: &Principal) -> Issued {
        self.sign(
            principal,
            self.refresh_audience(),
            self.refresh_ttl,
            Vec::new(),
        )
    }

    /// A web interface session for `principal` (limited to `external_grants` when an external
    /// issuer's token signed it in), good for `ttl`. Its `jti` is the session's CSRF token.
    pub fn issue_session(
        &self,
        principal: &Principal,
        external_grants: Option<&Grants>,
        ttl: Duration,
    ) -> (Issued, String) {
        let jti = uuid::Uuid::new_v4().to_string();
        let now = unix_seconds(SystemTime::now());
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: principal.name(),
            aud: self.session_audience(),
            exp: now + ttl.as_secs(),
            nbf: now.saturating_sub(1),
            iat: now,
            jti: jti.clone(),
            access: external_grants.map(|g| g.0.clone()).unwrap_or_default(),
            external: external_grants.is_some(),
        };
        (self.encode(&claims, ttl), jti)
    }

    /// One of our web interface sessions.
    pub fn validate_session(&self, token: &str) -> Result<Session, TokenError> {
        let claims = self.decode(token, &self.session_audience())?;
        let principal = if claims.external {
            Principal::External(claims.sub)
        } else {
            Principal::from_subject(&claims.sub)
        };
        Ok(Session {
            principal,
            external_grants: claims.external.then_some(Grants(claims.access)),
            csrf: claims.jti,
        })
    }

    fn sign(
        &self,
        principal: &Principal,
        aud: String,
        ttl: Duration,
        access: Vec<Scope>,
    ) -> Issued {
        let now = unix_seconds(SystemTime::now());
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: principal.name(),
            aud,
            exp: now + ttl.as_secs(),
            nbf: now.saturating_sub(1),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
            external: false,
        };
        self.encode(&claims, ttl)
    }

    fn encode(&self, claims: &Claims, ttl: Duration) -> Issued {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(self.current.bytes()),
        )
        .unwrap_or_else(|err| unreachable!("HS256 signing cannot fail: {err}"));
        Issued {
            token,
            expires_in: ttl,
            issued_at: UNIX_EPOCH + Duration::from_secs(claims.iat),
        }
    }

    /// The principal and grants of one of our access tokens.
    pub fn validate(&self, token: &str) -> Result<(Principal, Grants), TokenError> {
        let claims = self.decode(token, &self.service)?;
        Ok((Principal::from_subject(&claims.sub), Grants(claims.access)))
    }

    /// The principal of one of our refresh tokens.
    pub fn validate_refresh(&self, token: &str) -> Result<Principal, TokenError> {
        let claims = self.decode(token, &self.refresh_audience())?;
        Ok(Principal::from_subject(&claims.sub))
    }

    fn decode(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        // Only HS256: `alg: none` and a public-key algorithm over our secret are both refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        let keys = std::iter::once(&self.current).chain(self.previous.as_ref());
        let mut last = None;
        for key in keys {
            match jsonwebtoken::decode::<Claims>(
                token,
                &DecodingKey::from_secret(key.bytes()),
                &validation,
            ) {
                Ok(data) => return Ok(data.claims),
                Err(err) => last = Some(err),
            }
        }
        Err(last.map_or(TokenError::TooLong, TokenError::Invalid))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::auth::access::{Action, Actions};

    fn key(byte: u8) -> SecretKey {
        SecretKey::new(vec![byte; 32]).unwrap()
    }

    fn signer(current: u8, previous: Option<u8>) -> TokenSigner {
        TokenSigner::new(
            key(current),
            previous.map(key),
            "registry.test".into(),
            Duration::from_secs(300),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn any_signer_with_the_key_accepts_the_token() {
        let alice = Principal::User("alice".into());
        let issued = signer(1, None).issue(&alice, vec![Scope::repository("a", Actions::ALL)]);
        let (principal, grants) = signer(1, None).validate(&issued.token).unwrap();
        assert_eq!(principal, alice);
        assert!(grants.on_repository("a").contains(Action::Delete));
        // After a rotation the old key still validates; another key never does.
        assert!(signer(2, Some(1)).validate(&issued.token).is_ok());
        assert!(signer(2, None).validate(&issued.token).is_err());
    }

    #[test]
    fn refuses_forgeries_and_the_wrong_kind_of_token() {
        let signer = signer(1, None);
        let alice = Principal::User("alice".into());
        let access = signer.issue(&alice, vec![]).token;
        let refresh = signer.issue_refresh(&alice).token;
        assert!(
            signer.validate(&refresh).is_err(),
            "a refresh token is no access token"
        );
        assert!(signer.validate_refresh(&access).is_err());
        assert_eq!(signer.validate_refresh(&refresh).unwrap(), alice);
        let (session, csrf) = signer.issue_session(&alice, None, Duration::from_secs(60));
        assert_eq!(
            signer.validate_session(&session.token).unwrap(),
            Session {
                principal: alice.clone(),
                external_grants: None,
                csrf
            }
        );
        let granted = Grants(vec![Scope::repository("a", Actions::ALL)]);
        let (external, _) = signer.issue_session(&alice, Some(&granted), Duration::from_secs(60));
        let external = signer.validate_session(&external.token).unwrap();
        assert_eq!(external.principal, Principal::External("alice".into()));
        assert_eq!(external.external_grants, Some(granted));
        for other in [&access, &refresh] {
            assert!(signer.validate_session(other).is_err());
        }
        assert!(signer.validate(&session.token).is_err());
        assert!(signer.validate_refresh(&session.token).is_err());

        let parts: Vec<&str> = access.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(
            signer
                .validate(&format!("{none_header}.{}.", parts[1]))
                .is_err()
        );
        let mut claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims.sub = "admin".into();
        let tampered = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert!(
            signer
                .validate(&format!("{}.{tampered}.{}", parts[0], parts[2]))
                .is_err()
        );

        let other_service = TokenSigner::new(
            key(1),
            None,
            "elsewhere".into(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        assert!(
            signer
                .validate(&other_service.issue(&alice, vec![]).token)
                .is_err()
        );
        assert!(signer.validate(&"x".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let mut short = signer(1, None);
        short.ttl = Duration::ZERO;
        let token = short.issue(&Principal::Anonymous, vec![]).token;
        let mut claims: Claims = jsonwebtoken::dangerous::insecure_decode(&token)
            .unwrap()
            .claims;
        claims.exp -= 2 * LEEWAY_SECONDS;
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&[1; 32]),
        )
        .unwrap();
        assert!(short.validate(&expired).is_err());
    }
}
