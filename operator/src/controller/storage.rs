//! What the cluster shows of a Registry's storage: its credentials Secret or claim, checked
//! before anything is applied, and whether the server pods reach it.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::Client;
use kube::api::{Api, ListParams};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{Error, keys, kube_error};
use crate::crd::Registry;
use crate::resources;
use crate::storage::{self, StorageCheck};

/// What the pods' storage settings refer to, as found in the cluster.
pub(super) struct StorageSettings {
    /// What is wrong with them, if anything is.
    pub(super) problem: Option<StorageCheck>,
    /// The storage credentials Secret, for the checksum that rolls the pods when it changes.
    pub(super) credentials: Option<Secret>,
    /// The existing claim a filesystem Registry mounts.
    pub(super) existing_claim: Option<PersistentVolumeClaim>,
}

/// Checks that what the pods will mount and read exists: the storage credentials Secret with
/// the keys the pods read, or the existing claim to mount.
pub(super) async fn check_storage_settings(
    client: &Client,
    registry: &Registry,
    namespace: &str,
) -> Result<StorageSettings, Error> {
    let fine = StorageSettings {
        problem: None,
        credentials: None,
        existing_claim: None,
    };
    let problem = |reason, message: String| StorageSettings {
        problem: Some(StorageCheck::unavailable(reason, message)),
        credentials: None,
        existing_claim: None,
    };
    if let Some(fs) = &registry.spec.storage.filesystem {
        if fs.existing_claim.is_none() {
            return Ok(fine);
        }
        let claim = resources::data_claim_name(registry);
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        let found = api
            .get_opt(&claim)
            .await
            .map_err(kube_error(format!("reading PersistentVolumeClaim {claim}")))?;
        return Ok(match found {
            Some(found) => StorageSettings {
                existing_claim: Some(found),
                ..fine
            },
            None => problem(
                "ClaimMissing",
                format!("PersistentVolumeClaim {claim} does not exist"),
            ),
        });
    }
    let Some(credentials) = resources::credentials_secret(registry) else {
        return Ok(fine);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(credentials.name)
        .await
        .map_err(kube_error(format!("reading Secret {}", credentials.name)))?;
    let Some(secret) = secret else {
        return Ok(problem(
            "CredentialsMissing",
            format!(
                "{} Secret {} does not exist",
                credentials.what, credentials.name
            ),
        ));
    };
    if let Some(key) = credentials
        .keys
        .iter()
        .find(|key| keys::secret_value_len(&secret, key).is_none())
    {
        return Ok(StorageSettings {
            credentials: Some(secret),
            ..problem(
                "CredentialsMissing",
                format!(
                    "{} Secret {} has no key {key}",
                    credentials.what, credentials.name
                ),
            )
        });
    }
    Ok(StorageSettings {
        credentials: Some(secret),
        ..fine
    })
}

/// Whether storage works for the pods: the claim must be bound, and then the server pods'
/// readiness (their probe reads and writes storage) tells.
pub(super) async fn observe_storage(
    client: &Client,
    registry: &Registry,
    namespace: &str,
    claim: Option<&PersistentVolumeClaim>,
) -> Result<StorageCheck, Error> {
    if let Some(problem) = claim.and_then(storage::claim_problem) {
        return Ok(problem);
    }
    let described = resources::storage_description(registry);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&resources::selector_string(registry)))
        .await
        .map_err(kube_error("listing server pods"))?;
    Ok(storage::from_pods(
        &pods.items,
        &described,
        &Time(Timestamp::now()),
    ))
}
