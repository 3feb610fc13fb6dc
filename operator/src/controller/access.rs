//! `spec.auth` and `spec.tls` in the cluster: the Secrets they name must exist, and the
//! certificate comes from the named Secret or from a cert-manager Certificate.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};

use super::{Error, is_not_found, keys, kube_error};
use crate::crd::Registry;
use crate::resources::{self, FIELD_MANAGER};
use crate::status::TlsCheck;

/// The Secrets `spec.auth` and `spec.tls` name, whose changes should be seen.
pub(super) fn secrets(registry: &Registry) -> Vec<String> {
    let auth = registry.spec.auth.as_ref();
    auth.and_then(|a| a.htpasswd.as_ref())
        .map(|s| s.name.clone())
        .into_iter()
        .chain(
            auth.and_then(|a| a.token_issuer.as_ref())
                .and_then(|i| i.root_cert_bundle.as_ref())
                .map(|s| s.name.clone()),
        )
        .chain(resources::tls_secret_name(registry))
        .collect()
}

/// Fails when a Secret `spec.auth` names is missing: the pods could not start without it.
pub(super) async fn check_auth_secrets(
    client: &Client,
    registry: &Registry,
    namespace: &str,
) -> Result<(), Error> {
    let Some(auth) = &registry.spec.auth else {
        return Ok(());
    };
    let named = [
        ("htpasswd", auth.htpasswd.as_ref()),
        (
            "token issuer certificate",
            auth.token_issuer
                .as_ref()
                .and_then(|i| i.root_cert_bundle.as_ref()),
        ),
    ];
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for (what, file) in named {
        let Some(file) = file else { continue };
        let found = api
            .get_opt(&file.name)
            .await
            .map_err(kube_error(format!("reading Secret {}", file.name)))?;
        if found.is_none() {
            return Err(Error::AuthSecretMissing(what, file.name.clone()));
        }
    }
    Ok(())
}

/// Applies the cert-manager Certificate `spec.tls.issuerRef` asks for, and reports whether the
/// certificate Secret is there; `None` without `spec.tls`.
pub(super) async fn apply_tls(
    client: &Client,
    registry: &Registry,
    namespace: &str,
) -> Result<Option<TlsCheck>, Error> {
    let Some(secret_name) = resources::tls_secret_name(registry) else {
        return Ok(None);
    };
    let from_cert_manager = resources::certificate(registry);
    if let Some(certificate) = &from_cert_manager {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            namespace,
            &resources::certificate_resource(),
        );
        let name = certificate.metadata.name.clone().unwrap_or_default();
        let applied = api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(certificate),
            )
            .await;
        match applied {
            Ok(_) => {}
            // No such resource: cert-manager is not installed.
            Err(error) if is_not_found(&error) => {
                return Ok(Some(TlsCheck::not_ready(
                    "CertManagerMissing",
                    "spec.tls.issuerRef needs cert-manager, and this cluster has no \
                     Certificate resource: install cert-manager, or name a Secret in \
                     spec.tls.secretName"
                        .to_owned(),
                )));
            }
            Err(error) => {
                return Err(kube_error(format!("applying Certificate {name}"))(error));
            }
        }
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(&secret_name)
        .await
        .map_err(kube_error(format!("reading Secret {secret_name}")))?;
    Ok(Some(match secret {
        Some(secret)
            if ["tls.crt", "tls.key"]
                .iter()
                .all(|key| keys::secret_value_len(&secret, key).is_some_and(|len| len > 0)) =>
        {
            TlsCheck::ready(format!("serving the certificate in Secret {secret_name}"))
        }
        Some(_) => TlsCheck::not_ready(
            "CertificateIncomplete",
            format!("Secret {secret_name} needs tls.crt and tls.key"),
        ),
        None if from_cert_manager.is_some() => TlsCheck::not_ready(
            "CertificatePending",
            format!("waiting for cert-manager to issue the certificate into Secret {secret_name}"),
        ),
        None => TlsCheck::not_ready(
            "SecretMissing",
            format!("TLS Secret {secret_name} does not exist"),
        ),
    }))
}
