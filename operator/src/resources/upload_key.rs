//! The upload key Secret. The operator generates it once and never regenerates it: replicas
//! validate each other's upload tokens with it, so a new key would break every upload under way.
//! Rotation keeps the old key as `previous` until the next rotation.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use rand::RngCore;

use super::{SERVER_COMPONENT, owned_meta};
use crate::crd::Registry;

/// The Secret key of the key that signs new tokens.
pub const CURRENT_KEY: &str = "current";
/// The Secret key of the key still accepted after a rotation.
pub const PREVIOUS_KEY: &str = "previous";
/// The Secret annotation recording the `spec.uploadKey.rotation` last carried out.
pub const ROTATION_ANNOTATION: &str = "stowage.dev/rotation";

/// The Secret the pods mount: the user's, or the one the operator generates.
pub fn upload_key_secret_name(registry: &Registry) -> String {
    registry
        .spec
        .upload_key
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-upload-key", registry.name_any()))
}

/// 48 random bytes, hex encoded: well above the server's 32-byte minimum.
pub fn generate_key() -> String {
    let mut bytes = [0_u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A generated key Secret, made once with a create (never applied, so never overwritten).
pub fn new_upload_key_secret(registry: &Registry, key: String) -> Secret {
    let mut metadata = owned_meta(registry, upload_key_secret_name(registry), SERVER_COMPONENT);
    if let Some(rotation) = &registry.spec.upload_key.rotation {
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

/// The generated Secret after the rotation `spec.uploadKey.rotation` asks for, or `None` when
/// that rotation was already carried out (or none is asked for).
pub fn rotated_upload_key_secret(
    registry: &Registry,
    existing: &Secret,
    new_key: String,
) -> Option<Secret> {
    let wanted = registry.spec.upload_key.rotation.as_ref()?;
    let done = existing.annotations().get(ROTATION_ANNOTATION);
    if done == Some(wanted) {
        return None;
    }
    let mut data = BTreeMap::from([(CURRENT_KEY.to_owned(), ByteString(new_key.into_bytes()))]);
    if let Some(current) = existing.data.as_ref().and_then(|d| d.get(CURRENT_KEY)) {
        data.insert(PREVIOUS_KEY.to_owned(), current.clone());
    }
    let mut secret = new_upload_key_secret(registry, String::new());
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
        let secret = new_upload_key_secret(&s3_registry(), "k".repeat(40));
        assert_eq!(secret.metadata.name.as_deref(), Some("images-upload-key"));
        let data = secret.data.expect("data");
        assert_eq!(data[CURRENT_KEY].0, "k".repeat(40).into_bytes());
        assert!(!data.contains_key(PREVIOUS_KEY));
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
        let existing = new_upload_key_secret(&registry, "old".repeat(20));
        assert_eq!(
            rotated_upload_key_secret(&registry, &existing, "new".repeat(20)),
            None,
            "no rotation asked for"
        );

        registry.spec.upload_key.rotation = Some("2026-11".to_owned());
        let rotated =
            rotated_upload_key_secret(&registry, &existing, "new".repeat(20)).expect("rotates");
        let data = rotated.data.as_ref().expect("data");
        assert_eq!(data[CURRENT_KEY].0, "new".repeat(20).into_bytes());
        assert_eq!(data[PREVIOUS_KEY].0, "old".repeat(20).into_bytes());
        assert_eq!(rotated.annotations()[ROTATION_ANNOTATION], "2026-11");

        assert_eq!(
            rotated_upload_key_secret(&registry, &rotated, "newer".repeat(20)),
            None,
            "the same rotation is carried out once"
        );
    }
}
