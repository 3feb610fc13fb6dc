//! `spec.auth` and `spec.tls` in the cluster: the Secrets they name must exist, and the
//! certificate comes from the named Secret or from a cert-manager Certificate.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::optional::{Optional, apply_or_delete};
use super::{Error, keys, kube_error};
use crate::crd::{Registry, SecretFile};
use crate::resources;
use crate::status::Check;

/// The Secrets `spec.auth` names, with what each holds.
fn auth_secret_files(registry: &Registry) -> Vec<(&'static str, &SecretFile)> {
    let Some(auth) = &registry.spec.auth else {
        return Vec::new();
    };
    let bundle = auth
        .token_issuer
        .as_ref()
        .and_then(|i| i.root_cert_bundle.as_ref());
    [
        ("htpasswd", auth.htpasswd.as_ref()),
        ("token issuer certificate", bundle),
    ]
    .into_iter()
    .filter_map(|(what, file)| Some((what, file?)))
    .collect()
}

/// The Secrets the spec names (auth, TLS, upstreams, notifications, the blob cache's Redis URL),
/// whose changes should be seen.
pub(super) fn secrets(registry: &Registry) -> Vec<String> {
    auth_secret_files(registry)
        .into_iter()
        .map(|(_, file)| file.name.clone())
        .chain(resources::tls_secret_name(registry))
        .chain(resources::proxy_secrets(registry))
        .chain(resources::notification_secrets(registry))
        .chain(resources::replication_secrets(registry))
        .chain(resources::blob_cache_secret(registry))
        .collect()
}

/// Fails when a Secret `spec.auth` names is missing: the pods could not start without it.
pub(super) async fn check_auth_secrets(
    client: &Client,
    registry: &Registry,
    namespace: &str,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for (what, file) in auth_secret_files(registry) {
        let found = api
            .get_opt(&file.name)
            .await
            .map_err(kube_error(format!("reading Secret {}", file.name)))?;
        if found.is_none() {
            return Err(Error::AuthSecretMissing(what, file.name.clone()));
        }
    }
    let needed = resources::proxy_secrets(registry)
        .into_iter()
        .map(|name| ("upstream credentials", name))
        .chain(
            resources::notification_secrets(registry)
                .into_iter()
                .map(|name| ("notification secret", name)),
        )
        .chain(
            resources::replication_secrets(registry)
                .into_iter()
                .map(|name| ("replication secret", name)),
        )
        .chain(
            resources::blob_cache_secret(registry)
                .into_iter()
                .map(|name| ("blob cache Redis URL", name)),
        );
    for (what, name) in needed {
        let found = api
            .get_opt(&name)
            .await
            .map_err(kube_error(format!("reading Secret {name}")))?;
        if found.is_none() {
            return Err(Error::AuthSecretMissing(what, name));
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
) -> Result<Option<Check>, Error> {
    let Some(secret_name) = resources::tls_secret_name(registry) else {
        // A Certificate made for an earlier spec goes.
        apply_or_delete(
            client,
            namespace,
            &resources::certificate_resource(),
            &registry.name_any(),
            None,
        )
        .await?;
        return Ok(None);
    };
    let from_cert_manager = resources::certificate(registry);
    let applied = apply_or_delete(
        client,
        namespace,
        &resources::certificate_resource(),
        &registry.name_any(),
        from_cert_manager.as_ref(),
    )
    .await?;
    if applied == Optional::NoSuchResource {
        return Ok(Some(Check::not_ready(
            "CertManagerMissing",
            "spec.tls.issuerRef needs cert-manager, and this cluster has no Certificate \
             resource: install cert-manager, or name a Secret in spec.tls.secretName"
                .to_owned(),
        )));
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
            Check::ready(
                "CertificateReady",
                format!("serving the certificate in Secret {secret_name}"),
            )
        }
        Some(_) => Check::not_ready(
            "CertificateIncomplete",
            format!("Secret {secret_name} needs tls.crt and tls.key"),
        ),
        None if from_cert_manager.is_some() => Check::not_ready(
            "CertificatePending",
            format!("waiting for cert-manager to issue the certificate into Secret {secret_name}"),
        ),
        None => Check::not_ready(
            "SecretMissing",
            format!("TLS Secret {secret_name} does not exist"),
        ),
    }))
}

/// Applies the ServiceMonitor `spec.monitoring.serviceMonitor` asks for (or deletes one made
/// earlier), and reports whether it could; `None` when none is asked for.
pub(super) async fn apply_service_monitor(
    client: &Client,
    registry: &Registry,
    namespace: &str,
) -> Result<Option<Check>, Error> {
    let wanted = resources::service_monitor(registry);
    let applied = apply_or_delete(
        client,
        namespace,
        &resources::service_monitor_resource(),
        &registry.name_any(),
        wanted.as_ref(),
    )
    .await?;
    Ok(wanted.map(|_| match applied {
        Optional::Done => Check::ready(
            "Applied",
            "Prometheus scrapes the pods through ServiceMonitor ".to_owned() + &registry.name_any(),
        ),
        Optional::NoSuchResource => Check::not_ready(
            "ServiceMonitorCrdMissing",
            "skipped: this cluster has no ServiceMonitor resource (install the Prometheus \
             Operator, or scrape the pods' metrics port another way)"
                .to_owned(),
        ),
    }))
}
