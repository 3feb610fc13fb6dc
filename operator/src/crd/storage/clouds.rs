//! `spec.storage.azure` and `spec.storage.gcs`: a blob container or a bucket shared by every
//! replica, with the ways each cloud signs a workload in.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::{SecretFile, bounds};

/// An Azure Blob Storage container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.accessKeySecret) ? 1 : 0) + (has(self.sasTokenSecret) ? 1 : 0) + \
     (has(self.clientSecret) ? 1 : 0) + (has(self.workloadIdentity) ? 1 : 0) <= 1"
).message(
    "set at most one way to sign in: accessKeySecret, sasTokenSecret, clientSecret or workloadIdentity"
))]
pub struct AzureStorage {
    /// The storage account. Immutable, like the container.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("account is immutable"))]
    #[schemars(length(min = 3, max = 24), regex(pattern = "^[a-z0-9]+$"))]
    pub account: String,

    /// The blob container. Immutable: moving a registry to another container means copying it.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("container is immutable"))]
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub container: String,

    /// The blob service URL, for private endpoints and Azurite; unset:
    /// `https://<account>.blob.core.windows.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::URL))]
    pub endpoint: Option<String>,

    /// A prefix for every key (Distribution's `rootdirectory`), to share a container.
    /// Immutable, like the container.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("rootPrefix is immutable"))]
    #[schemars(length(max = bounds::KEY_PREFIX))]
    pub root_prefix: String,

    /// Send pulls straight to Azure with SAS URLs.
    #[serde(default)]
    pub redirect: bool,

    /// A Secret holding the account's shared key (its key `accessKey` unless named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_secret: Option<SecretFile>,

    /// A Secret holding a shared access signature, its query string (key `sasToken` unless
    /// named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token_secret: Option<SecretFile>,

    /// An Entra ID application signing in with a client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<AzureClientSecret>,

    /// AKS workload identity: the pods sign in as this managed identity or application through
    /// the token AKS projects into them. With none of these set, the server takes what the
    /// environment offers, such as the node's managed identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<AzureWorkloadIdentity>,
}

/// An Entra ID application's client secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AzureClientSecret {
    /// The directory (tenant) id.
    #[schemars(length(min = 1, max = bounds::AZURE_ID))]
    pub tenant_id: String,
    /// The application (client) id.
    #[schemars(length(min = 1, max = bounds::AZURE_ID))]
    pub client_id: String,
    /// The Secret holding the client secret (key `clientSecret` unless named).
    pub secret: SecretFile,
}

/// The identity AKS workload identity signs the pods in as.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AzureWorkloadIdentity {
    /// The client id of the managed identity or application with a federated credential for
    /// the Registry's ServiceAccount (`system:serviceaccount:<namespace>:<registry name>`).
    #[schemars(length(min = 1, max = bounds::AZURE_ID))]
    pub client_id: String,
    /// Its tenant; unset: the cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::AZURE_ID))]
    pub tenant_id: Option<String>,
}

/// A Google Cloud Storage bucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.credentialsSecret) ? 1 : 0) + (has(self.workloadIdentity) ? 1 : 0) + \
     (has(self.anonymous) && self.anonymous ? 1 : 0) <= 1"
).message("set at most one way to sign in: credentialsSecret, workloadIdentity or anonymous"))]
pub struct GcsStorage {
    /// The bucket. Immutable: moving a registry to another bucket means copying it.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("bucket is immutable"))]
    #[schemars(length(min = 3, max = 222))]
    pub bucket: String,

    /// The JSON API's URL, for private endpoints and emulators; unset:
    /// `https://storage.googleapis.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::URL))]
    pub endpoint: Option<String>,

    /// A prefix for every key (Distribution's `rootdirectory`), to share a bucket. Immutable,
    /// like the bucket.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("rootPrefix is immutable"))]
    #[schemars(length(max = bounds::KEY_PREFIX))]
    pub root_prefix: String,

    /// Send pulls straight to GCS with V4 signed URLs.
    #[serde(default)]
    pub redirect: bool,

    /// A Secret holding a service account's JSON key (key `key.json` unless named). Without
    /// one the server uses application default credentials: on GKE, workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretFile>,

    /// GKE workload identity through a Google service account, which annotates the Registry's
    /// ServiceAccount. Not needed when IAM grants the Kubernetes ServiceAccount itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<GkeWorkloadIdentity>,

    /// Send no credentials at all: for emulators such as fake-gcs-server.
    #[serde(default)]
    pub anonymous: bool,
}

/// The Google service account the pods act as.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GkeWorkloadIdentity {
    /// Its email, such as `registry@my-project.iam.gserviceaccount.com`; it must let the
    /// Registry's ServiceAccount impersonate it (`roles/iam.workloadIdentityUser`).
    #[schemars(length(min = 1, max = bounds::EMAIL))]
    pub service_account: String,
}
