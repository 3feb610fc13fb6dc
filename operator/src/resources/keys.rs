//! The Secrets of the keys every replica shares: the upload key (upload state) and the token key
//! (access tokens). The operator generates each once and never regenerates it: replicas
//! validate each other's tokens with it, so a new key would break every upload under way and
//! log every client out. Rotation keeps the old key as `previous` until the next rotation.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use rand::RngCore;

use super::{SERVER_COMPONENT, owned_meta};
use crate::crd::{Registry, SigningKey};

/// The Secret key of the key that signs new tokens.
pub const CURRENT_KEY: &str = "current";
/// The Secret key of the key still accepted after a rotation.
pub const PREVIOUS_KEY: &str = "previous";
/// The Secret annotation recording the `spec.uploadKey.rotation` last carried out.
pub const ROTATION_ANNOTATION: &str = "stowage.dev/rotation";

/// Which shared key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// Signs upload state.
    Upload,
    /// Signs access tokens; only with `spec.auth`.
    Token,
}

impl KeyKind {
    pub const ALL: [Self; 2] = [Self::Upload, Self::Token];

    /// The spec of this key, when the Registry has one.
    pub fn spec(self, registry: &Registry) -> Option<&SigningKey> {
        match self {
            Self::Upload => Some(&registry.spec.upload_key),
            Self::Token => registry.spec.auth.as_ref().map(|auth| &auth.token_key),
        }
    }

    /// The Secret the pods mount: the user's, or the one the operator generates.
    pub fn secret_name(self, registry: &Registry) -> String {
        let suffix = match self {
            Self::Upload => "upload-key",
            Self::Token => "token-key",
        };
        self.spec(registry)
            .and_then(|key| key.secret_name.clone())
            .unwrap_or_else(|| format!("{}-{suffix}", registry.name_any()))
    }

    /// Whether the operator makes the Secret (no `secretName` given).
    pub fn generated(self, registry: &Registry) -> bool {
        self.spec(registry)
            .is_some_and(|key| key.secret_name.is_none())
    }

    /// What it is called in events and errors.
    pub fn what(self) -> &'static str {
        match self {
            Self::Upload => "upload key",
            Self::Token => "token key",
        }
    }

    fn rotation(self, registry: &Registry) -> Option<&String> {
        self.spec(registry)?.rotation.as_ref()
    }
}

/// The upload key's Secret.
pub fn upload_key_secret_name(registry: &Registry) -> String {
    KeyKind::Upload.secret_name(registry)
}

/// 48 random bytes, hex encoded: well above the server's 32-byte minimum.
pub fn generate_key() -> String {
    let mut bytes = [0_u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A generated key Secret, made once with a create (never applied, so never overwritten).
pub fn new_key_secret(registry: &Registry, kind: KeyKind, key: String) -> Secret {
    let mut metadata = owned_meta(registry, kind.secret_name(registry), SERVER_COMPONENT);
    if let Some(rotation) = kind.rotation(registry) {
        metadata.annotations = Some([(ROTATION_ANNOTATION.to_owned(), rotation.clone())].into());
    }
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            CURRENT_KEY.to_owned(),
            ByteString(key.into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// The generated Secret after the rotation the key's spec asks for, or `None` when that
/// rotation was already carried out (or none is asked for).
pub fn rotated_key_secret(
    registry: &Registry,
    kind: KeyKind,
    existing: &Secret,
    new_key: String,
) -> Option<Secret> {
    let wanted = kind.rotation(registry)?;
    let done = existing.annotations().get(ROTATION_ANNOTATION);
    if done == Some(wanted) {
        return None;
    }
    let mut data = BTreeMap::from([(CURRENT_KEY.to_owned(), ByteString(new_key.into_bytes()))]);
    if let Some(current) = existing.data.as_ref().and_then(|d| d.get(CURRENT_KEY)) {
        data.insert(PREVIOUS_KEY.to_owned(), current.clone());
    }
    let mut secret = new_key_secret(registry, kind, String::new());
    secret.data = Some(data);
    Some(secret)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{registry, s3_registry};
    use super::*;

    #[test]
    fn generated_keys_are_long_and_fresh() {
        let (a, b) = (generate_key(), generate_key());
        assert_eq!(a.len(), 96);
        assert_ne!(a, b);
    }

    #[test]
    fn a_generated_secret_is_named_after_the_registry() {
        let secret = new_key_secret(&s3_registry(), KeyKind::Upload, "k".repeat(40));
        assert_eq!(secret.metadata.name.as_deref(), Some("images-upload-key"));
        let data = secret.data.expect("data");
        assert_eq!(data[CURRENT_KEY].0, "k".repeat(40).into_bytes());
        assert!(!data.contains_key(PREVIOUS_KEY));
    }

    #[test]
    fn the_token_key_exists_only_with_auth_and_has_its_own_secret() {
        assert_eq!(KeyKind::Token.spec(&s3_registry()), None);
        assert!(!KeyKind::Token.generated(&s3_registry()));
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "bkt"}},
            "auth": {"tokenKey": {"rotation": "r1"}}
        }));
        assert!(KeyKind::Token.generated(&registry));
        let secret = new_key_secret(&registry, KeyKind::Token, "t".repeat(40));
        assert_eq!(secret.metadata.name.as_deref(), Some("images-token-key"));
        assert_eq!(secret.annotations()[ROTATION_ANNOTATION], "r1");
    }

    #[test]
    fn an_existing_secret_is_used_as_named() {
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "bkt"}},
            "uploadKey": {"secretName": "my-key"}
        }));
        assert_eq!(upload_key_secret_name(&registry), "my-key");
    }

    #[test]
    fn rotation_keeps_the_old_key_as_previous_once() {
        let mut registry = s3_registry();
        let existing = new_key_secret(&registry, KeyKind::Upload, "old".repeat(20));
        assert_eq!(
            rotated_key_secret(&registry, KeyKind::Upload, &existing, "new".repeat(20)),
            None,
            "no rotation asked for"
        );

        registry.spec.upload_key.rotation = Some("2026-11".to_owned());
        let rotated = rotated_key_secret(&registry, KeyKind::Upload, &existing, "new".repeat(20))
            .expect("rotates");
        let data = rotated.data.as_ref().expect("data");
        assert_eq!(data[CURRENT_KEY].0, "new".repeat(20).into_bytes());
        assert_eq!(data[PREVIOUS_KEY].0, "old".repeat(20).into_bytes());
        assert_eq!(rotated.annotations()[ROTATION_ANNOTATION], "2026-11");

        assert_eq!(
            rotated_key_secret(&registry, KeyKind::Upload, &rotated, "newer".repeat(20)),
            None,
            "the same rotation is carried out once"
        );
    }
}
