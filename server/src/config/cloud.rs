//! Azure Blob Storage and Google Cloud Storage: the `--azure-*` and `--gcs-*` flags, or the
//! `[azure]` and `[gcs]` tables.
//!
//! ```toml
//! storage = "azure"
//! [azure]
//! account = "registrydata"
//! container = "registry"
//! # Without a key, SAS or client secret: AKS workload identity, or a managed identity.
//! access-key-file = "/etc/stowage/azure-key"
//!
//! storage = "gcs"
//! [gcs]
//! bucket = "registry-data"
//! # Without a key file: GKE workload identity (the metadata server).
//! credentials-file = "/etc/stowage/gcs-key.json"
//! ```

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::ConfigError;
use crate::storage::{
    AzureConfig, AzureCredentials, CloudSettings, DEFAULT_UPLOAD_CONCURRENCY, GcsConfig,
    GcsCredentials, Timeouts,
};

const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Below this, an upload would be more requests than bytes.
const MIN_PART_SIZE: u64 = 1024 * 1024;

#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AzureSettings {
    /// Storage account (required with --storage azure).
    #[arg(
        id = "azure_account",
        long = "azure-account",
        env = "STOWAGE_AZURE_ACCOUNT"
    )]
    pub account: Option<String>,

    /// Blob container (required with --storage azure).
    #[arg(
        id = "azure_container",
        long = "azure-container",
        env = "STOWAGE_AZURE_CONTAINER"
    )]
    pub container: Option<String>,

    /// Blob service URL, for private endpoints and Azurite
    /// (`http://127.0.0.1:10000/devstoreaccount1`) [default: https://<account>.blob.core.windows.net].
    #[arg(
        id = "azure_endpoint",
        long = "azure-endpoint",
        env = "STOWAGE_AZURE_ENDPOINT"
    )]
    pub endpoint: Option<String>,

    /// Keys are stored below this prefix (Distribution's `rootdirectory`).
    #[arg(
        id = "azure_root_prefix",
        long = "azure-root-prefix",
        env = "STOWAGE_AZURE_ROOT_PREFIX"
    )]
    pub root_prefix: Option<String>,

    /// The account's shared key.
    #[arg(
        id = "azure_access_key",
        long = "azure-access-key",
        env = "STOWAGE_AZURE_ACCESS_KEY",
        hide_env_values = true,
        conflicts_with = "azure_access_key_file"
    )]
    pub access_key: Option<String>,

    /// A file holding the shared key (a mounted Secret).
    #[arg(
        id = "azure_access_key_file",
        long = "azure-access-key-file",
        env = "STOWAGE_AZURE_ACCESS_KEY_FILE"
    )]
    pub access_key_file: Option<PathBuf>,

    /// A file holding a shared access signature (its query string).
    #[arg(
        id = "azure_sas_token_file",
        long = "azure-sas-token-file",
        env = "STOWAGE_AZURE_SAS_TOKEN_FILE"
    )]
    pub sas_token_file: Option<PathBuf>,

    /// Entra ID tenant, with --azure-client-id and --azure-client-secret-file.
    #[arg(
        id = "azure_tenant_id",
        long = "azure-tenant-id",
        env = "STOWAGE_AZURE_TENANT_ID"
    )]
    pub tenant_id: Option<String>,

    /// Entra ID application (client) id.
    #[arg(
        id = "azure_client_id",
        long = "azure-client-id",
        env = "STOWAGE_AZURE_CLIENT_ID"
    )]
    pub client_id: Option<String>,

    /// A file holding the application's client secret.
    #[arg(
        id = "azure_client_secret_file",
        long = "azure-client-secret-file",
        env = "STOWAGE_AZURE_CLIENT_SECRET_FILE"
    )]
    pub client_secret_file: Option<PathBuf>,

    /// Bytes an upload buffers before staging a block; bounds memory per upload (minimum
    /// 1 MiB) [default: 8388608].
    #[arg(
        id = "azure_part_size",
        long = "azure-part-size",
        env = "STOWAGE_AZURE_PART_SIZE"
    )]
    pub part_size: Option<u64>,

    /// Blocks one upload stages at once [default: 4].
    #[arg(
        id = "azure_upload_concurrency",
        long = "azure-upload-concurrency",
        env = "STOWAGE_AZURE_UPLOAD_CONCURRENCY"
    )]
    pub upload_concurrency: Option<usize>,

    /// Answer blob downloads with a redirect to a SAS URL [default: false].
    #[arg(
        id = "azure_redirect",
        long = "azure-redirect",
        env = "STOWAGE_AZURE_REDIRECT"
    )]
    pub redirect: Option<bool>,
}

#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GcsSettings {
    /// Bucket (required with --storage gcs).
    #[arg(id = "gcs_bucket", long = "gcs-bucket", env = "STOWAGE_GCS_BUCKET")]
    pub bucket: Option<String>,

    /// Service URL, for private endpoints and emulators [default: https://storage.googleapis.com].
    #[arg(
        id = "gcs_endpoint",
        long = "gcs-endpoint",
        env = "STOWAGE_GCS_ENDPOINT"
    )]
    pub endpoint: Option<String>,

    /// Keys are stored below this prefix (Distribution's `rootdirectory`).
    #[arg(
        id = "gcs_root_prefix",
        long = "gcs-root-prefix",
        env = "STOWAGE_GCS_ROOT_PREFIX"
    )]
    pub root_prefix: Option<String>,

    /// A service account's JSON key file [default: application default credentials, which on
    /// GKE is workload identity].
    #[arg(
        id = "gcs_credentials_file",
        long = "gcs-credentials-file",
        env = "STOWAGE_GCS_CREDENTIALS_FILE"
    )]
    pub credentials_file: Option<PathBuf>,

    /// Send no credentials at all (emulators) [default: false].
    #[arg(
        id = "gcs_anonymous",
        long = "gcs-anonymous",
        env = "STOWAGE_GCS_ANONYMOUS"
    )]
    pub anonymous: Option<bool>,

    /// Bytes an upload buffers before storing a part; bounds memory per upload (minimum
    /// 1 MiB) [default: 8388608].
    #[arg(
        id = "gcs_part_size",
        long = "gcs-part-size",
        env = "STOWAGE_GCS_PART_SIZE"
    )]
    pub part_size: Option<u64>,

    /// Parts one upload stores at once [default: 4].
    #[arg(
        id = "gcs_upload_concurrency",
        long = "gcs-upload-concurrency",
        env = "STOWAGE_GCS_UPLOAD_CONCURRENCY"
    )]
    pub upload_concurrency: Option<usize>,

    /// Answer blob downloads with a redirect to a V4 signed URL [default: false].
    #[arg(
        id = "gcs_redirect",
        long = "gcs-redirect",
        env = "STOWAGE_GCS_REDIRECT"
    )]
    pub redirect: Option<bool>,
}

/// What both clouds take, checked.
fn cloud_settings(
    flag: &str,
    root_prefix: Option<String>,
    part_size: Option<u64>,
    upload_concurrency: Option<usize>,
    redirect: Option<bool>,
    timeouts: Timeouts,
) -> Result<CloudSettings, ConfigError> {
    let part_size = part_size.unwrap_or(DEFAULT_PART_SIZE);
    if part_size < MIN_PART_SIZE {
        return Err(ConfigError::Invalid(format!(
            "--{flag}-part-size must be at least {MIN_PART_SIZE}"
        )));
    }
    Ok(CloudSettings {
        root_prefix: root_prefix.unwrap_or_default(),
        part_size,
        upload_concurrency: upload_concurrency
            .unwrap_or(DEFAULT_UPLOAD_CONCURRENCY)
            .max(1),
        redirect: redirect.unwrap_or(false),
        timeouts,
    })
}

/// A secret from a file (a mounted Secret), without its trailing newline.
fn read_secret(path: PathBuf) -> Result<String, ConfigError> {
    let text =
        std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path, source })?;
    Ok(text.trim_end().to_owned())
}

impl AzureSettings {
    pub fn or(self, file: Self) -> Self {
        Self {
            account: self.account.or(file.account),
            container: self.container.or(file.container),
            endpoint: self.endpoint.or(file.endpoint),
            root_prefix: self.root_prefix.or(file.root_prefix),
            access_key: self.access_key.or(file.access_key),
            access_key_file: self.access_key_file.or(file.access_key_file),
            sas_token_file: self.sas_token_file.or(file.sas_token_file),
            tenant_id: self.tenant_id.or(file.tenant_id),
            client_id: self.client_id.or(file.client_id),
            client_secret_file: self.client_secret_file.or(file.client_secret_file),
            part_size: self.part_size.or(file.part_size),
            upload_concurrency: self.upload_concurrency.or(file.upload_concurrency),
            redirect: self.redirect.or(file.redirect),
        }
    }

    pub fn resolve(self, timeouts: Timeouts) -> Result<AzureConfig, ConfigError> {
        let account = self
            .account
            .ok_or(ConfigError::Missing("--azure-account"))?;
        let container = self
            .container
            .ok_or(ConfigError::Missing("--azure-container"))?;
        let access_key = match (self.access_key, self.access_key_file) {
            (Some(key), _) => Some(key),
            (None, Some(path)) => Some(read_secret(path)?),
            (None, None) => None,
        };
        let sas = self.sas_token_file.map(read_secret).transpose()?;
        let client = match (self.tenant_id, self.client_id, self.client_secret_file) {
            (Some(tenant_id), Some(client_id), Some(path)) => {
                Some(AzureCredentials::ClientSecret {
                    tenant_id,
                    client_id,
                    secret: read_secret(path)?,
                })
            }
            (_, _, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "--azure-client-secret-file needs --azure-tenant-id and --azure-client-id"
                        .into(),
                ));
            }
            // A tenant and client id alone are workload identity's, from the environment.
            _ => None,
        };
        let credentials = match (access_key, sas, client) {
            (None, None, None) => AzureCredentials::Environment,
            (Some(key), None, None) => AzureCredentials::AccessKey(key),
            (None, Some(sas), None) => AzureCredentials::Sas(sas),
            (None, None, Some(client)) => client,
            _ => {
                return Err(ConfigError::Invalid(
                    "give Azure one way to sign in: an access key, a SAS token or a client secret"
                        .into(),
                ));
            }
        };
        Ok(AzureConfig {
            account,
            container,
            endpoint: self.endpoint,
            credentials,
            settings: cloud_settings(
                "azure",
                self.root_prefix,
                self.part_size,
                self.upload_concurrency,
                self.redirect,
                timeouts,
            )?,
        })
    }
}

impl GcsSettings {
    pub fn or(self, file: Self) -> Self {
        Self {
            bucket: self.bucket.or(file.bucket),
            endpoint: self.endpoint.or(file.endpoint),
            root_prefix: self.root_prefix.or(file.root_prefix),
            credentials_file: self.credentials_file.or(file.credentials_file),
            anonymous: self.anonymous.or(file.anonymous),
            part_size: self.part_size.or(file.part_size),
            upload_concurrency: self.upload_concurrency.or(file.upload_concurrency),
            redirect: self.redirect.or(file.redirect),
        }
    }

    pub fn resolve(self, timeouts: Timeouts) -> Result<GcsConfig, ConfigError> {
        let bucket = self.bucket.ok_or(ConfigError::Missing("--gcs-bucket"))?;
        let credentials = match (self.credentials_file, self.anonymous.unwrap_or(false)) {
            (Some(path), false) => GcsCredentials::KeyFile(path),
            (None, true) => GcsCredentials::Anonymous,
            (None, false) => GcsCredentials::Environment,
            (Some(_), true) => {
                return Err(ConfigError::Invalid(
                    "--gcs-anonymous and --gcs-credentials-file exclude each other".into(),
                ));
            }
        };
        Ok(GcsConfig {
            bucket,
            endpoint: self.endpoint,
            credentials,
            settings: cloud_settings(
                "gcs",
                self.root_prefix,
                self.part_size,
                self.upload_concurrency,
                self.redirect,
                timeouts,
            )?,
        })
    }
}
