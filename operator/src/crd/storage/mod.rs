//! `spec.storage`: where the registry keeps blobs and manifests, a volume, an S3 bucket, an
//! Azure blob container or a GCS bucket.

mod clouds;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{bounds, yes};

pub use clouds::{
    AzureClientSecret, AzureStorage, AzureWorkloadIdentity, GcsStorage, GkeWorkloadIdentity,
};

/// Where the registry keeps blobs and manifests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.filesystem) ? 1 : 0) + (has(self.s3) ? 1 : 0) + (has(self.azure) ? 1 : 0) + \
     (has(self.gcs) ? 1 : 0) == 1"
).message("set exactly one storage kind: filesystem, s3, azure or gcs"))]
pub struct Storage {
    /// A PersistentVolumeClaim: simple, but only for a single replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemStorage>,

    /// An S3 bucket shared by every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,

    /// An Azure Blob Storage container shared by every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureStorage>,

    /// A Google Cloud Storage bucket shared by every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsStorage>,
}

impl Storage {
    /// Whether every replica sees the same storage (anything but a volume).
    pub fn is_shared(&self) -> bool {
        self.filesystem.is_none()
    }
}

/// A volume claimed for the registry's data.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemStorage {
    /// Size of the claim the operator makes.
    #[serde(default = "volume_size")]
    #[schemars(transform = bounds::kubernetes)]
    pub size: Quantity,

    /// Storage class of the claim; the cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NAME))]
    pub storage_class_name: Option<String>,

    /// Use this existing claim instead of making one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NAME))]
    pub existing_claim: Option<String>,

    /// Keep the claim the operator made when the Registry is deleted.
    #[serde(default = "yes")]
    pub retain_on_delete: bool,
}

/// An S3 (or S3-compatible) bucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// The bucket. Immutable: moving a registry to another bucket means copying it.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("bucket is immutable"))]
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,

    /// The bucket's region.
    #[serde(default = "region")]
    #[schemars(length(max = 64))]
    pub region: String,

    /// The S3 endpoint for servers other than AWS, such as `http://garage.storage:3900`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::URL))]
    pub endpoint: Option<String>,

    /// Address the bucket in the path rather than the host name (most self-hosted servers).
    #[serde(default)]
    pub path_style: bool,

    /// A prefix for every key, to share a bucket. Immutable, like the bucket.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("rootPrefix is immutable"))]
    #[schemars(length(max = bounds::KEY_PREFIX))]
    pub root_prefix: String,

    /// Send pulls straight to S3 with presigned URLs.
    #[serde(default)]
    pub redirect: bool,

    /// A Secret with the access key; without one the server uses the pod's identity (IRSA and
    /// the like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<S3Credentials>,
}

/// Where the S3 access key is.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    /// Name of the Secret, in the Registry's namespace.
    #[schemars(length(max = bounds::NAME))]
    pub name: String,

    /// The Secret's key holding the access key ID.
    #[serde(default = "access_key_id_key")]
    #[schemars(length(max = bounds::NAME))]
    pub access_key_id_key: String,

    /// The Secret's key holding the secret access key.
    #[serde(default = "secret_access_key_key")]
    #[schemars(length(max = bounds::NAME))]
    pub secret_access_key_key: String,
}

fn volume_size() -> Quantity {
    Quantity("10Gi".to_owned())
}

fn region() -> String {
    "us-east-1".to_owned()
}

fn access_key_id_key() -> String {
    "accessKeyId".to_owned()
}

fn secret_access_key_key() -> String {
    "secretAccessKey".to_owned()
}
