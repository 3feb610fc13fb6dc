//! The shared signing keys: read, generated once (never again), rotated when the spec asks.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};

use super::{Error, apply, kube_error};
use crate::crd::Registry;
use crate::resources::{self, KeyKind};

/// A key Secret as the pods will read it.
pub(super) struct KeyState {
    pub(super) secret: Secret,
    pub(super) has_previous: bool,
}

/// Event reasons for a key being generated and rotated.
fn reasons(kind: KeyKind) -> (&'static str, &'static str) {
    match kind {
        KeyKind::Upload => ("UploadKeyGenerated", "UploadKeyRotated"),
        KeyKind::Token => ("TokenKeyGenerated", "TokenKeyRotated"),
    }
}

/// Reads `kind`'s Secret; generates it on first sight (never again), and carries out a
/// rotation the spec asks for.
pub(super) async fn signing_key(
    client: &Client,
    registry: &Registry,
    namespace: &str,
    kind: KeyKind,
    events: &mut Vec<(&'static str, String)>,
) -> Result<KeyState, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = kind.secret_name(registry);
    let generated = kind.generated(registry);
    let (generated_reason, rotated_reason) = reasons(kind);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(kube_error(format!("reading Secret {name}")))?;
    let secret = match existing {
        Some(secret) if generated => {
            match resources::rotated_key_secret(registry, kind, &secret, resources::generate_key())
            {
                Some(rotated) => {
                    let secret = apply(client, namespace, &rotated).await?;
                    events.push((
                        rotated_reason,
                        format!(
                            "Secret {name}: new current key; the old one stays accepted as previous"
                        ),
                    ));
                    secret
                }
                None => secret,
            }
        }
        Some(secret) => secret,
        None if generated => {
            let new = resources::new_key_secret(registry, kind, resources::generate_key());
            let secret = match api.create(&PostParams::default(), &new).await {
                Ok(secret) => secret,
                // Another operator instance made it first: use theirs.
                Err(kube::Error::Api(status)) if status.code == 409 => api
                    .get(&name)
                    .await
                    .map_err(kube_error(format!("reading Secret {name}")))?,
                Err(error) => return Err(kube_error(format!("creating Secret {name}"))(error)),
            };
            events.push((
                generated_reason,
                format!("generated the {} in Secret {name}", kind.what()),
            ));
            secret
        }
        None => return Err(Error::KeyMissing(kind, name)),
    };
    if secret_value_len(&secret, resources::CURRENT_KEY).is_none_or(|len| len < 32) {
        return Err(Error::KeyInvalid(kind, name));
    }
    let has_previous =
        secret_value_len(&secret, resources::PREVIOUS_KEY).is_some_and(|len| len >= 32);
    Ok(KeyState {
        secret,
        has_previous,
    })
}

/// The length of `key`'s value in `secret`, in `data` or (not yet encoded) in `stringData`.
pub(super) fn secret_value_len(secret: &Secret, key: &str) -> Option<usize> {
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.len());
    data.or_else(|| secret.string_data.as_ref()?.get(key).map(String::len))
}
