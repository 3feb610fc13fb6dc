//! The signed upload token: the whole state of an upload session, carried by the client in the
//! `_state` query parameter of the `Location` URL, so that any replica can take the next request.
//!
//! Format: `base64url(json(UploadState)) "." base64url(HMAC-SHA256(key, DOMAIN || json))`.
//! The MAC is checked (in constant time) against the current key and then the previous one, so
//! the key can be rotated while uploads are in flight.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::oci::{Algorithm, RepositoryName};
use crate::storage::WriteState;

/// Separates our MACs from any other use of the same key.
const DOMAIN: &[u8] = b"stowage upload token v1\0";
/// Shorter keys are refused: the key is all that stops a client from forging upload state.
pub const MIN_KEY_LEN: usize = 32;
/// Tokens longer than this are refused before any decoding work.
const MAX_TOKEN_LEN: usize = 4096;

/// A secret HMAC key. Never printed, wiped from memory when dropped.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<Vec<u8>>);

impl SecretKey {
    /// A key from configured bytes; `None` when too short to be safe.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() >= MIN_KEY_LEN).then(|| Self(Zeroizing::new(bytes)))
    }

    /// A fresh random key, for a single process that was given none.
    pub fn random() -> Self {
        Self(Zeroizing::new(rand::random::<[u8; 32]>().to_vec()))
    }

    /// The key's bytes, for other signers that share the same kind of key (auth tokens).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key for another purpose, derived from this one (HMAC over `purpose`), so that one
    /// configured secret can sign two kinds of thing without either standing for the other.
    pub fn derive(&self, purpose: &str) -> Self {
        let mut mac = self.mac();
        mac.update(b"stowage derived key\0");
        mac.update(purpose.as_bytes());
        Self(Zeroizing::new(mac.finalize().into_bytes().to_vec()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Everything a replica needs to continue an upload. Trusted only after its MAC checks out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    #[serde(rename = "r")]
    pub repository: String,
    #[serde(rename = "u")]
    pub id: String,
    /// Unix seconds when the session started.
    #[serde(rename = "s")]
    pub started_at: u64,
    /// Unix seconds after which the token is refused.
    #[serde(rename = "e")]
    pub expires_at: u64,
    #[serde(rename = "a")]
    pub algorithm: Algorithm,
    /// The running digest state over every byte accepted so far.
    #[serde(rename = "h", with = "base64_vec")]
    pub hash_state: Vec<u8>,
    /// The storage backend's resumable-write state; `write.size` is the upload's offset.
    #[serde(rename = "w")]
    pub write: WriteState,
}

impl UploadState {
    pub fn offset(&self) -> u64 {
        self.write.size
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("upload state is malformed")]
    Malformed,
    #[error("upload state signature is invalid")]
    BadSignature,
    #[error("upload state has expired")]
    Expired,
    #[error("upload state belongs to another upload")]
    WrongUpload,
}

/// The keys tokens are signed with (current) and still accepted with (previous).
#[derive(Debug, Clone)]
pub struct TokenKeys {
    current: SecretKey,
    previous: Option<SecretKey>,
}

impl TokenKeys {
    pub fn new(current: SecretKey, previous: Option<SecretKey>) -> Self {
        Self { current, previous }
    }

    /// The key uploads are signed with now.
    pub fn current(&self) -> &SecretKey {
        &self.current
    }

    /// Signs `state` with the current key.
    pub fn seal(&self, state: &UploadState) -> String {
        // Serializing plain data with string keys cannot fail.
        let payload = serde_json::to_vec(state).unwrap_or_default();
        let mut mac = self.current.mac();
        mac.update(DOMAIN);
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Verifies `token` and checks it is meant for `repository`'s upload `id` and not expired.
    pub fn open(
        &self,
        token: &str,
        repository: &RepositoryName,
        id: &str,
        now: SystemTime,
    ) -> Result<UploadState, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let verified = std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| {
                let mut mac = key.mac();
                mac.update(DOMAIN);
                mac.update(&payload);
                mac.verify_slice(&tag).is_ok()
            });
        if !verified {
            return Err(TokenError::BadSignature);
        }
        let state: UploadState =
            serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if state.repository != repository.as_str() || state.id != id {
            return Err(TokenError::WrongUpload);
        }
        if unix_seconds(now) > state.expires_at {
            return Err(TokenError::Expired);
        }
        Ok(state)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

mod base64_vec {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        URL_SAFE_NO_PAD
            .decode(String::deserialize(deserializer)?)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::new(vec![byte; 32]).unwrap()
    }

    fn state() -> UploadState {
        UploadState {
            repository: "team/app".into(),
            id: "0d6b5b36-3f0c-4bd4-9ad1-5c2a4f8d0e11".into(),
            started_at: 1_000,
            expires_at: 2_000,
            algorithm: Algorithm::Sha256,
            hash_state: vec![1, 2, 3],
            write: WriteState {
                size: 42,
                backend: vec![9; 16],
            },
        }
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn repo() -> RepositoryName {
        "team/app".parse().unwrap()
    }

    #[test]
    fn round_trips_and_accepts_the_previous_key() {
        let old = TokenKeys::new(key(1), None);
        let rotated = TokenKeys::new(key(2), Some(key(1)));
        let token = old.seal(&state());
        let id = state().id;
        assert_eq!(old.open(&token, &repo(), &id, at(1_500)), Ok(state()));
        assert_eq!(rotated.open(&token, &repo(), &id, at(1_500)), Ok(state()));
        let unrelated = TokenKeys::new(key(3), Some(key(4)));
        assert_eq!(
            unrelated.open(&token, &repo(), &id, at(1_500)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn refuses_tampered_foreign_and_expired_tokens() {
        let keys = TokenKeys::new(key(1), None);
        let token = keys.seal(&state());
        let id = state().id;
        let (payload, tag) = token.split_once('.').unwrap();
        let mut forged_state = state();
        forged_state.write.size = 0;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_state).unwrap());
        let mut flipped_tag = URL_SAFE_NO_PAD.decode(tag).unwrap();
        flipped_tag[0] ^= 1;
        let cases: Vec<(String, TokenError)> = vec![
            (String::new(), TokenError::Malformed),
            ("no-dot".into(), TokenError::Malformed),
            (format!("{payload}."), TokenError::BadSignature),
            (format!("{payload}.!!"), TokenError::Malformed),
            (format!("{forged_payload}.{tag}"), TokenError::BadSignature),
            (
                format!("{payload}.{}", URL_SAFE_NO_PAD.encode(flipped_tag)),
                TokenError::BadSignature,
            ),
            ("a".repeat(MAX_TOKEN_LEN + 1), TokenError::Malformed),
        ];
        for (token, expected) in cases {
            assert_eq!(
                keys.open(&token, &repo(), &id, at(1_500)),
                Err(expected),
                "{token:?}"
            );
        }
        let other_repo: RepositoryName = "team/other".parse().unwrap();
        assert_eq!(
            keys.open(&token, &other_repo, &id, at(1_500)),
            Err(TokenError::WrongUpload)
        );
        assert_eq!(
            keys.open(&token, &repo(), "other-id", at(1_500)),
            Err(TokenError::WrongUpload)
        );
        assert_eq!(
            keys.open(&token, &repo(), &id, at(2_001)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn short_keys_are_refused_and_never_printed() {
        assert!(SecretKey::new(vec![0; MIN_KEY_LEN - 1]).is_none());
        let printed = format!("{:?}", TokenKeys::new(key(b'k'), None));
        assert!(
            !printed.contains("107") && printed.contains("redacted"),
            "{printed}"
        );
    }
}
