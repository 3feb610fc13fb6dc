//! Where the pods keep images: the claim for filesystem storage, the storage settings of the
//! server's config, and how the pods sign in to a bucket or container.

mod claim;
mod credentials;

use toml::{Table, Value};

use self::credentials::{ACCESS_KEY, CLIENT_SECRET, GCS_KEY, SAS_TOKEN, credentials_file};
use super::pod::DATA_PATH;
use crate::crd::{AzureStorage, GcsStorage, Registry, S3Storage};

pub use claim::{data_claim_name, persistent_volume_claim};
pub use credentials::{
    CredentialsSecret, credentials_env, credentials_secret, credentials_volume,
    identity_annotations, identity_labels,
};

/// The storage settings of the server's config: `storage` and its kind's keys (S3's at the top,
/// as the server reads them; the clouds' in their `[azure]` and `[gcs]` tables).
pub(super) fn storage_settings(registry: &Registry) -> Table {
    let storage = &registry.spec.storage;
    let mut table = Table::new();
    let (kind, settings) = if let Some(s3) = &storage.s3 {
        table.extend(s3_settings(s3));
        ("s3", None)
    } else if let Some(azure) = &storage.azure {
        ("azure", Some(azure_table(azure)))
    } else if let Some(gcs) = &storage.gcs {
        ("gcs", Some(gcs_table(gcs)))
    } else {
        table.insert("fs-root".to_owned(), DATA_PATH.into());
        ("filesystem", None)
    };
    table.insert("storage".to_owned(), kind.into());
    if let Some(settings) = settings {
        table.insert(kind.to_owned(), Value::Table(settings));
    }
    table
}

fn s3_settings(s3: &S3Storage) -> Table {
    let mut table = Table::new();
    table.insert("s3-bucket".to_owned(), s3.bucket.clone().into());
    table.insert("s3-region".to_owned(), s3.region.clone().into());
    if let Some(endpoint) = &s3.endpoint {
        table.insert("s3-endpoint".to_owned(), endpoint.clone().into());
    }
    table.insert("s3-path-style".to_owned(), s3.path_style.into());
    if !s3.root_prefix.is_empty() {
        table.insert("s3-root-prefix".to_owned(), s3.root_prefix.clone().into());
    }
    table.insert("s3-redirect".to_owned(), s3.redirect.into());
    table
}

/// The `[azure]` table. Workload identity needs nothing here: AKS puts the client id, tenant
/// and token file in the pods' environment, where the server looks when no key is set.
fn azure_table(azure: &AzureStorage) -> Table {
    let mut table = Table::new();
    let mut set = |key: &str, value: Value| {
        table.insert(key.to_owned(), value);
    };
    set("account", azure.account.clone().into());
    set("container", azure.container.clone().into());
    if let Some(endpoint) = &azure.endpoint {
        set("endpoint", endpoint.clone().into());
    }
    if !azure.root_prefix.is_empty() {
        set("root-prefix", azure.root_prefix.clone().into());
    }
    set("redirect", azure.redirect.into());
    if let Some(file) = &azure.access_key_secret {
        set("access-key-file", credentials_file(file, ACCESS_KEY).into());
    }
    if let Some(file) = &azure.sas_token_secret {
        set("sas-token-file", credentials_file(file, SAS_TOKEN).into());
    }
    if let Some(client) = &azure.client_secret {
        set("tenant-id", client.tenant_id.clone().into());
        set("client-id", client.client_id.clone().into());
        set(
            "client-secret-file",
            credentials_file(&client.secret, CLIENT_SECRET).into(),
        );
    }
    table
}

/// The `[gcs]` table. Without a key file or `anonymous` the server takes application default
/// credentials: on GKE, the metadata server's workload identity.
fn gcs_table(gcs: &GcsStorage) -> Table {
    let mut table = Table::new();
    let mut set = |key: &str, value: Value| {
        table.insert(key.to_owned(), value);
    };
    set("bucket", gcs.bucket.clone().into());
    if let Some(endpoint) = &gcs.endpoint {
        set("endpoint", endpoint.clone().into());
    }
    if !gcs.root_prefix.is_empty() {
        set("root-prefix", gcs.root_prefix.clone().into());
    }
    set("redirect", gcs.redirect.into());
    if let Some(file) = &gcs.credentials_secret {
        set("credentials-file", credentials_file(file, GCS_KEY).into());
    }
    if gcs.anonymous {
        set("anonymous", true.into());
    }
    table
}

/// What the status says the pods store in.
pub fn storage_description(registry: &Registry) -> String {
    let storage = &registry.spec.storage;
    if let Some(s3) = &storage.s3 {
        format!("bucket {}", s3.bucket)
    } else if let Some(azure) = &storage.azure {
        format!("container {} of account {}", azure.container, azure.account)
    } else if let Some(gcs) = &storage.gcs {
        format!("bucket {}", gcs.bucket)
    } else {
        format!("volume claim {}", data_claim_name(registry))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::fixtures::{fs_registry, registry, s3_registry};

    #[test]
    fn each_kind_sets_its_own_settings_only() {
        let s3 = storage_settings(&s3_registry());
        assert_eq!(s3["storage"].as_str(), Some("s3"));
        assert_eq!(s3["s3-bucket"].as_str(), Some("images"));
        assert!(!s3.contains_key("fs-root") && !s3.contains_key("azure"));

        let fs = storage_settings(&fs_registry());
        assert_eq!(fs["storage"].as_str(), Some("filesystem"));
        assert_eq!(fs["fs-root"].as_str(), Some(DATA_PATH));
        assert_eq!(fs.len(), 2);
    }

    #[test]
    fn azure_settings_name_the_mounted_files() {
        let settings = |azure: serde_json::Value| {
            storage_settings(&registry(json!({"storage": {"azure": azure}})))
        };
        let with_key = settings(json!({
            "account": "registrydata", "container": "images", "rootPrefix": "team-a",
            "endpoint": "http://azurite.storage:10000/registrydata",
            "accessKeySecret": {"name": "azure-storage"}
        }));
        assert_eq!(with_key["storage"].as_str(), Some("azure"));
        let azure = with_key["azure"].as_table().expect("[azure]");
        assert_eq!(azure["account"].as_str(), Some("registrydata"));
        assert_eq!(azure["container"].as_str(), Some("images"));
        assert_eq!(azure["root-prefix"].as_str(), Some("team-a"));
        assert_eq!(
            azure["endpoint"].as_str(),
            Some("http://azurite.storage:10000/registrydata")
        );
        assert_eq!(azure["redirect"].as_bool(), Some(false));
        assert_eq!(
            azure["access-key-file"].as_str(),
            Some("/etc/stowage/storage-credentials/accessKey")
        );

        let client = settings(json!({
            "account": "registrydata", "container": "images",
            "clientSecret": {"tenantId": "t-1", "clientId": "c-1", "secret": {"name": "app", "key": "pw"}}
        }));
        let azure = client["azure"].as_table().expect("[azure]");
        assert_eq!(azure["tenant-id"].as_str(), Some("t-1"));
        assert_eq!(azure["client-id"].as_str(), Some("c-1"));
        assert_eq!(
            azure["client-secret-file"].as_str(),
            Some("/etc/stowage/storage-credentials/pw")
        );
        assert!(!azure.contains_key("access-key-file") && !azure.contains_key("root-prefix"));

        let identity = settings(json!({
            "account": "registrydata", "container": "images",
            "workloadIdentity": {"clientId": "c-1"}
        }));
        let azure = identity["azure"].as_table().expect("[azure]");
        assert_eq!(
            azure.keys().map(String::as_str).collect::<Vec<_>>(),
            ["account", "container", "redirect"],
            "workload identity comes from the environment AKS sets"
        );
    }

    #[test]
    fn gcs_settings_name_the_key_file_or_go_anonymous() {
        let settings =
            |gcs: serde_json::Value| storage_settings(&registry(json!({"storage": {"gcs": gcs}})));
        let keyed = settings(json!({
            "bucket": "images", "redirect": true, "credentialsSecret": {"name": "gcs-key"}
        }));
        assert_eq!(keyed["storage"].as_str(), Some("gcs"));
        let gcs = keyed["gcs"].as_table().expect("[gcs]");
        assert_eq!(gcs["bucket"].as_str(), Some("images"));
        assert_eq!(gcs["redirect"].as_bool(), Some(true));
        assert_eq!(
            gcs["credentials-file"].as_str(),
            Some("/etc/stowage/storage-credentials/key.json")
        );
        assert!(!gcs.contains_key("anonymous"));

        let emulator = settings(json!({
            "bucket": "images", "endpoint": "http://fake-gcs:4443", "anonymous": true
        }));
        let gcs = emulator["gcs"].as_table().expect("[gcs]");
        assert_eq!(gcs["endpoint"].as_str(), Some("http://fake-gcs:4443"));
        assert_eq!(gcs["anonymous"].as_bool(), Some(true));
        assert!(!gcs.contains_key("credentials-file"));
    }

    #[test]
    fn the_status_names_what_the_pods_store_in() {
        assert_eq!(storage_description(&s3_registry()), "bucket images");
        assert_eq!(
            storage_description(&fs_registry()),
            "volume claim images-data"
        );
        assert_eq!(
            storage_description(&registry(
                json!({"storage": {"azure": {"account": "registrydata", "container": "images"}}})
            )),
            "container images of account registrydata"
        );
    }
}
