//! How the pods sign in to their storage: the credentials Secret (S3's access key pair in the
//! environment, the clouds' keys mounted as files), and the workload identities, which annotate
//! the ServiceAccount and label the pods the way AKS and GKE expect.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector, Volume, VolumeMount};

use crate::crd::{Registry, SecretFile};

/// Where a cloud's credentials Secret is mounted, whole, so rotations reach the files.
const CREDENTIALS_DIR: &str = "/etc/stowage/storage-credentials";

/// The Secret keys read when a `SecretFile` names none.
pub(super) const ACCESS_KEY: &str = "accessKey";
pub(super) const SAS_TOKEN: &str = "sasToken";
pub(super) const CLIENT_SECRET: &str = "clientSecret";
pub(super) const GCS_KEY: &str = "key.json";

/// AKS's webhook projects a token into pods with this label, for the ServiceAccount's client id.
const AZURE_USE_LABEL: &str = "azure.workload.identity/use";
const AZURE_CLIENT_ID: &str = "azure.workload.identity/client-id";
const AZURE_TENANT_ID: &str = "azure.workload.identity/tenant-id";
/// The Google service account a GKE ServiceAccount acts as.
const GKE_SERVICE_ACCOUNT: &str = "iam.gke.io/gcp-service-account";

/// A Secret the storage settings read, with the keys in it they need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialsSecret<'a> {
    pub name: &'a str,
    /// What it holds, for messages: "Azure access key".
    pub what: &'static str,
    pub keys: Vec<&'a str>,
    /// Read from the environment (S3's access key pair) rather than mounted as files.
    in_environment: bool,
}

/// The Secret `registry`'s storage signs in with, if it names one.
pub fn credentials_secret(registry: &Registry) -> Option<CredentialsSecret<'_>> {
    let storage = &registry.spec.storage;
    if let Some(s3) = &storage.s3 {
        let credentials = s3.credentials_secret.as_ref()?;
        return Some(CredentialsSecret {
            name: &credentials.name,
            what: "S3 credentials",
            keys: vec![
                &credentials.access_key_id_key,
                &credentials.secret_access_key_key,
            ],
            in_environment: true,
        });
    }
    if let Some(azure) = &storage.azure {
        return azure
            .access_key_secret
            .as_ref()
            .map(|file| mounted("Azure access key", file, ACCESS_KEY))
            .or_else(|| {
                let file = azure.sas_token_secret.as_ref()?;
                Some(mounted("Azure shared access signature", file, SAS_TOKEN))
            })
            .or_else(|| {
                let client = azure.client_secret.as_ref()?;
                Some(mounted(
                    "Azure client secret",
                    &client.secret,
                    CLIENT_SECRET,
                ))
            });
    }
    let file = storage.gcs.as_ref()?.credentials_secret.as_ref()?;
    Some(mounted("GCS service account key", file, GCS_KEY))
}

/// A Secret mounted as files, of which the settings read `file`'s key.
fn mounted<'a>(
    what: &'static str,
    file: &'a SecretFile,
    default: &'static str,
) -> CredentialsSecret<'a> {
    CredentialsSecret {
        name: &file.name,
        what,
        keys: vec![key_of(file, default)],
        in_environment: false,
    }
}

/// The key of `file`, or `default` when it names none.
pub(super) fn key_of<'a>(file: &'a SecretFile, default: &'static str) -> &'a str {
    file.key.as_deref().unwrap_or(default)
}

/// Where the pods find the credentials Secret's `key`.
pub(super) fn credentials_file(file: &SecretFile, default: &'static str) -> String {
    format!("{CREDENTIALS_DIR}/{}", key_of(file, default))
}

/// S3's access key pair from the credentials Secret; nothing else travels in the environment.
pub fn credentials_env(registry: &Registry) -> Vec<EnvVar> {
    let Some(secret) = credentials_secret(registry).filter(|s| s.in_environment) else {
        return Vec::new();
    };
    let from_secret = |name: &str, key: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    ["STOWAGE_S3_ACCESS_KEY_ID", "STOWAGE_S3_SECRET_ACCESS_KEY"]
        .into_iter()
        .zip(&secret.keys)
        .map(|(name, key)| from_secret(name, key))
        .collect()
}

/// The clouds' credentials Secret, mounted where the config's `*-file` settings point.
pub fn credentials_volume(registry: &Registry) -> Option<(Volume, VolumeMount)> {
    let secret = credentials_secret(registry).filter(|s| !s.in_environment)?;
    Some(crate::resources::whole_secret(
        "storage-credentials".to_owned(),
        secret.name,
        CREDENTIALS_DIR.to_owned(),
    ))
}

/// What the workload identity settings add to the ServiceAccount's annotations.
pub fn identity_annotations(registry: &Registry) -> BTreeMap<String, String> {
    let storage = &registry.spec.storage;
    let mut annotations = BTreeMap::new();
    if let Some(identity) = storage
        .azure
        .as_ref()
        .and_then(|a| a.workload_identity.as_ref())
    {
        annotations.insert(AZURE_CLIENT_ID.to_owned(), identity.client_id.clone());
        if let Some(tenant) = &identity.tenant_id {
            annotations.insert(AZURE_TENANT_ID.to_owned(), tenant.clone());
        }
    }
    if let Some(identity) = storage
        .gcs
        .as_ref()
        .and_then(|g| g.workload_identity.as_ref())
    {
        annotations.insert(
            GKE_SERVICE_ACCOUNT.to_owned(),
            identity.service_account.clone(),
        );
    }
    annotations
}

/// What the workload identity settings add to every Stowage pod's labels: AKS injects its token
/// only into pods that ask for it.
pub fn identity_labels(registry: &Registry) -> BTreeMap<String, String> {
    let azure_identity = registry
        .spec
        .storage
        .azure
        .as_ref()
        .is_some_and(|a| a.workload_identity.is_some());
    if azure_identity {
        BTreeMap::from([(AZURE_USE_LABEL.to_owned(), "true".to_owned())])
    } else {
        BTreeMap::new()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::fixtures::{fs_registry, registry, s3_registry};

    fn azure(extra: serde_json::Value) -> Registry {
        let mut azure = json!({"account": "registrydata", "container": "images"});
        let serde_json::Value::Object(extra) = extra else {
            panic!("not an object: {extra}")
        };
        azure.as_object_mut().unwrap().extend(extra);
        registry(json!({"replicas": 3, "storage": {"azure": azure}}))
    }

    #[test]
    fn s3_keys_travel_in_the_environment_and_cloud_keys_in_files() {
        let s3 = s3_registry();
        let secret = credentials_secret(&s3).expect("a secret");
        assert_eq!(
            (secret.name, secret.keys.as_slice()),
            ("s3-creds", ["accessKeyId", "secretAccessKey"].as_slice())
        );
        assert_eq!(credentials_env(&s3).len(), 2);
        assert!(credentials_volume(&s3).is_none());

        let azure = azure(json!({"accessKeySecret": {"name": "azure-storage"}}));
        let secret = credentials_secret(&azure).expect("a secret");
        assert_eq!(
            (secret.name, secret.keys.as_slice()),
            ("azure-storage", ["accessKey"].as_slice())
        );
        assert!(credentials_env(&azure).is_empty());
        let (volume, mount) = credentials_volume(&azure).expect("a volume");
        assert_eq!(
            volume.secret.and_then(|s| s.secret_name).as_deref(),
            Some("azure-storage")
        );
        assert_eq!(mount.mount_path, CREDENTIALS_DIR);
        assert!(
            mount.sub_path.is_none(),
            "mounted whole, so rotations reach it"
        );
    }

    #[test]
    fn each_way_to_sign_in_names_its_key() {
        let cases = [
            (
                azure(json!({"sasTokenSecret": {"name": "sas"}})),
                "sas",
                "sasToken",
            ),
            (
                azure(json!({"clientSecret": {"tenantId": "t", "clientId": "c",
                    "secret": {"name": "app", "key": "password"}}})),
                "app",
                "password",
            ),
            (
                registry(json!({"storage": {"gcs": {"bucket": "images",
                    "credentialsSecret": {"name": "gcs-key"}}}})),
                "gcs-key",
                "key.json",
            ),
        ];
        for (registry, name, key) in cases {
            let secret = credentials_secret(&registry).expect("a secret");
            assert_eq!(
                (secret.name, secret.keys.as_slice()),
                (name, [key].as_slice())
            );
        }
        for without in [
            fs_registry(),
            azure(json!({})),
            azure(json!({"workloadIdentity": {"clientId": "c"}})),
            registry(json!({"storage": {"gcs": {"bucket": "images"}}})),
            registry(json!({"storage": {"s3": {"bucket": "images"}}})),
        ] {
            assert_eq!(
                credentials_secret(&without),
                None,
                "{:?}",
                without.spec.storage
            );
            assert!(credentials_volume(&without).is_none());
        }
    }

    #[test]
    fn workload_identities_annotate_and_label_as_each_cloud_expects() {
        let aks = azure(
            json!({"workloadIdentity": {"clientId": "0000-client", "tenantId": "0000-tenant"}}),
        );
        assert_eq!(
            identity_annotations(&aks),
            BTreeMap::from([
                (AZURE_CLIENT_ID.to_owned(), "0000-client".to_owned()),
                (AZURE_TENANT_ID.to_owned(), "0000-tenant".to_owned()),
            ])
        );
        assert_eq!(identity_labels(&aks)[AZURE_USE_LABEL], "true");

        let gke = registry(json!({"storage": {"gcs": {"bucket": "images",
            "workloadIdentity": {"serviceAccount": "registry@p.iam.gserviceaccount.com"}}}}));
        assert_eq!(
            identity_annotations(&gke)[GKE_SERVICE_ACCOUNT],
            "registry@p.iam.gserviceaccount.com"
        );
        assert!(identity_labels(&gke).is_empty(), "GKE needs no pod label");

        for plain in [s3_registry(), azure(json!({}))] {
            assert!(identity_annotations(&plain).is_empty());
            assert!(identity_labels(&plain).is_empty());
        }
    }
}
