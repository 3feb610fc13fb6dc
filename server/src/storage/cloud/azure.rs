//! Azure Blob Storage, through `object_store`: a write's parts are uncommitted blocks of its blob (each under a random
//! block id, so racing requests never replace each other's), committed with one block list and
//! then copied to their destination inside the account.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::azure::{AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};

use super::{Cloud, CloudSettings, CloudStore, gone_is_fine};
use crate::storage::{ByteStream, Error, ObjectMeta, Result, Timeouts, plain};

/// How Stowage signs in to the storage account.
#[derive(Clone)]
pub enum AzureCredentials {
    /// Whatever the environment provides, in `object_store`'s order: AKS workload identity (the
    /// `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID` and `AZURE_TENANT_ID` its webhook
    /// injects), `AZURE_STORAGE_*` variables, then the VM's managed identity.
    Environment,
    /// The storage account's shared key.
    AccessKey(String),
    /// A shared access signature (its query string).
    Sas(String),
    /// An Entra ID application's client secret.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: String,
    },
}

/// Where the container is and how to reach it.
#[derive(Clone)]
pub struct AzureConfig {
    pub account: String,
    pub container: String,
    /// The blob service's URL, for private endpoints and Azurite
    /// (`http://127.0.0.1:10000/devstoreaccount1`); `None` for `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    pub credentials: AzureCredentials,
    pub settings: CloudSettings,
}

impl fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = match &self.credentials {
            AzureCredentials::Environment => "environment",
            AzureCredentials::AccessKey(_) => "<access key>",
            AzureCredentials::Sas(_) => "<shared access signature>",
            AzureCredentials::ClientSecret { .. } => "<client secret>",
        };
        f.debug_struct("AzureConfig")
            .field("account", &self.account)
            .field("container", &self.container)
            .field("endpoint", &self.endpoint)
            .field("credentials", &credentials)
            .field("settings", &self.settings)
            .finish()
    }
}

impl AzureConfig {
    /// The blob service's URL.
    fn service_url(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", self.account))
    }
}

/// Sorts `object_store` failures into what callers act on: missing, unavailable (retry
/// later), or broken (refused credentials, a missing container: an operator's problem).
// By value so it reads as `.map_err(classify)`.
#[allow(clippy::needless_pass_by_value)]
fn classify(err: object_store::Error) -> Error {
    use object_store::Error as E;
    match &err {
        E::NotFound { .. } => Error::NotFound,
        E::Generic { source, .. } if unavailable(source.as_ref()) => {
            Error::Unavailable(plain(&err))
        }
        _ => Error::Io(io::Error::other(plain(&err))),
    }
}

/// Whether a failure is the kind that passes: no answer (a connection refused or reset, a
/// timeout), or an answer that says "later" (429, 5xx).
fn unavailable(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(next) = cause {
        if next
            .downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return true;
        }
        cause = next.source();
    }
    // object_store keeps the status of an answer to itself but for its words.
    let words = plain(err);
    match words
        .split("status code: ")
        .nth(1)
        .and_then(|rest| rest.get(..3))
    {
        Some(status) => status == "429" || status.starts_with('5'),
        None => true,
    }
}

/// The HTTP client's settings: connections within the attempt time; no limit
/// on a whole request, since a download streams for as long as it takes (the storage guard
/// fails a stream that stalls), and every other call is bounded by [`CloudStore`].
fn client_options(timeouts: &Timeouts, endpoint: Option<&str>) -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_connect_timeout(timeouts.connect())
        .with_timeout_disabled()
        .with_allow_http(endpoint.is_some_and(|url| url.starts_with("http://")))
}

/// One retry, within the request limit.
fn retry_config(timeouts: &Timeouts) -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 1,
        retry_timeout: timeouts.request,
    }
}

fn build_error(err: &object_store::Error) -> Error {
    Error::Io(io::Error::other(format!(
        "Azure storage settings: {}",
        plain(err)
    )))
}

impl CloudStore {
    /// Connects to the container; fails fast (and the replica reports not ready) while Azure
    /// is down.
    pub async fn open_azure(config: &AzureConfig) -> Result<Self> {
        let timeouts = config.settings.timeouts;
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_account(&config.account)
            .with_container_name(&config.container)
            .with_client_options(client_options(&timeouts, config.endpoint.as_deref()))
            .with_retry(retry_config(&timeouts));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        builder = match &config.credentials {
            AzureCredentials::Environment => builder,
            AzureCredentials::AccessKey(key) => builder.with_access_key(key),
            AzureCredentials::Sas(sas) => {
                builder.with_config(AzureConfigKey::SasKey, sas.trim_start_matches('?'))
            }
            AzureCredentials::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => builder.with_client_secret_authorization(client_id, secret, tenant_id),
        };
        let azure = Azure {
            store: builder.build().map_err(|err| build_error(&err))?,
            http: reqwest::Client::builder()
                .connect_timeout(timeouts.connect())
                .build()
                .map_err(|err| Error::Io(io::Error::other(err)))?,
            sas: match &config.credentials {
                AzureCredentials::Sas(sas) => Some(sas.trim_start_matches('?').to_owned()),
                _ => None,
            },
            blob_url: format!("{}/{}", config.service_url(), config.container),
            timeouts,
        };
        Ok(Self::new(
            "Azure container",
            format!("{}/{}", config.account, config.container),
            Arc::new(azure),
            &config.settings,
        ))
    }
}

/// One container, through `object_store`; a write's parts are the blocks of its blob.
struct Azure {
    store: MicrosoftAzure,
    /// Asks a copy's status, which `object_store` does not report.
    http: reqwest::Client,
    /// The shared access signature, when that is how Stowage signs in.
    sas: Option<String>,
    /// `<service>/<container>`.
    blob_url: String,
    timeouts: Timeouts,
}

impl Azure {
    /// A URL that may ask for the blob `name`'s properties: signed by Stowage's key (or a
    /// user delegation key), or carrying the shared access signature it signs in with.
    async fn properties_url(&self, name: &str) -> Result<Option<String>> {
        let path = path(name)?;
        if let Some(sas) = &self.sas {
            return Ok(Some(format!("{}/{path}?{sas}", self.blob_url)));
        }
        match self
            .store
            .signed_url(http::Method::HEAD, &path, Duration::from_secs(300))
            .await
        {
            Ok(url) => Ok(Some(url.to_string())),
            Err(err) => {
                tracing::debug!(error = %plain(&err), "cannot sign a URL to follow a copy");
                Ok(None)
            }
        }
    }

    /// Waits until the copy to `name` is done. Within an account Azure usually copies at
    /// once, but may finish later (`x-ms-copy-status: pending`), so the destination is only
    /// trusted once its status says `success`.
    async fn copied(&self, name: &str, limit: Duration) -> Result<()> {
        let Some(url) = self.properties_url(name).await? else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + limit;
        let mut pause = Duration::from_millis(50);
        loop {
            let response = tokio::time::timeout(
                self.timeouts.request,
                self.http
                    .head(&url)
                    .header("x-ms-version", "2021-08-06")
                    .send(),
            )
            .await
            .map_err(|_| Error::Unavailable("asking a copy's status timed out".into()))?
            .map_err(|err| Error::Unavailable(format!("asking a copy's status: {err}")))?;
            let status = response
                .headers()
                .get("x-ms-copy-status")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("success")
                .to_owned();
            match status.as_str() {
                "success" => return Ok(()),
                "pending" if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                "pending" => {
                    return Err(Error::Unavailable(format!(
                        "a copy inside Azure did not finish within {limit:?}"
                    )));
                }
                other => {
                    return Err(Error::Io(io::Error::other(format!(
                        "a copy inside Azure ended {other}"
                    ))));
                }
            }
        }
    }
}

/// The `object_store` path of a full object name.
fn path(name: &str) -> Result<Path> {
    Path::parse(name).map_err(|_| {
        Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unsafe key {name:?}"),
        ))
    })
}

fn meta(object: &object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        size: object.size,
        modified: SystemTime::from(object.last_modified),
    }
}

#[async_trait]
impl Cloud for Azure {
    async fn head(&self, name: &str) -> Result<Option<ObjectMeta>> {
        match self.store.head(&path(name)?).await.map_err(classify) {
            Ok(object) => Ok(Some(meta(&object))),
            Err(Error::NotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let got = self
            .store
            .get_opts(&path(name)?, options)
            .await
            .map_err(classify)?;
        Ok(got.into_stream().map_err(io::Error::other).boxed())
    }

    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        self.store
            .put(&path(name)?, PutPayload::from(data))
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        let dir = path(dir.trim_end_matches('/'))?;
        let listed = match self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(classify)
        {
            Ok(listed) => listed,
            Err(Error::NotFound) => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let dirs = listed.common_prefixes.iter().filter_map(Path::filename);
        let files = listed.objects.iter().filter_map(|o| o.location.filename());
        Ok(dirs.chain(files).map(str::to_owned).collect())
    }

    async fn list_all(&self, prefix: &str) -> Result<Vec<(String, ObjectMeta)>> {
        let prefix = path(prefix.trim_end_matches('/'))?;
        let listed = self
            .store
            .list(Some(&prefix))
            .map_ok(|object| (object.location.to_string(), meta(&object)))
            .try_collect::<Vec<_>>()
            .await
            .map_err(classify);
        match listed {
            Err(Error::NotFound) => Ok(Vec::new()),
            other => other,
        }
    }

    async fn delete(&self, names: Vec<String>) -> Result<()> {
        let paths = names
            .iter()
            .map(|name| path(name))
            .collect::<Result<Vec<_>>>()?;
        let paths = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
        let mut results = self.store.delete_stream(paths);
        while let Some(result) = results.next().await {
            gone_is_fine(result.map(drop).map_err(classify))?;
        }
        Ok(())
    }

    async fn signed_url(&self, name: &str, ttl: Duration) -> Result<String> {
        let url = self
            .store
            .signed_url(http::Method::GET, &path(name)?, ttl)
            .await
            .map_err(classify)?;
        Ok(url.to_string())
    }

    async fn ping(&self) -> Result<()> {
        // A listing, not a HEAD: a missing container fails it, as it should.
        let probe = path("_stowage_ping")?;
        match self
            .store
            .list_with_delimiter(Some(&probe))
            .await
            .map_err(classify)
        {
            Ok(_) => Ok(()),
            Err(Error::NotFound) => Err(Error::Io(io::Error::other(
                "the Azure container does not exist",
            ))),
            Err(err) => Err(err),
        }
    }

    async fn put_part(&self, name: &str, data: Bytes) -> Result<String> {
        let part = self
            .store
            .put_part(&path(name)?, &String::new(), 0, PutPayload::from(data))
            .await
            .map_err(classify)?;
        Ok(part.content_id)
    }

    async fn assemble(&self, name: &str, ids: &[String], dest: &str, size: u64) -> Result<()> {
        let blocks = ids
            .iter()
            .map(|id| PartId {
                content_id: id.clone(),
            })
            .collect();
        match self
            .store
            .complete_multipart(&path(name)?, &String::new(), blocks)
            .await
        {
            Ok(_) => {}
            // A block is gone: a request racing from the same state committed its own list,
            // which drops every block not on it. This state's bytes can no longer be published.
            Err(err) if err.to_string().contains("InvalidBlockList") => return Err(Error::Stale),
            Err(err) => return Err(classify(err)),
        }
        self.copy(name, dest, size).await?;
        gone_is_fine(self.store.delete(&path(name)?).await.map_err(classify))
    }

    async fn discard(&self, name: &str) -> Result<()> {
        // Uncommitted blocks cannot be deleted one by one; committing an empty block list drops
        // them all at once (else Azure would after a week), and the empty blob goes next.
        let blob = path(name)?;
        let dropped = self
            .store
            .complete_multipart(&blob, &String::new(), Vec::new())
            .await
            .map(drop)
            .map_err(classify);
        gone_is_fine(dropped)?;
        gone_is_fine(self.store.delete(&blob).await.map_err(classify))
    }

    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        self.store
            .copy(&path(from)?, &path(to)?)
            .await
            .map_err(classify)?;
        self.copied(to, self.timeouts.for_bytes(size)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_that_say_later_are_unavailable() {
        let status = |code: &str| -> Box<dyn std::error::Error + Send + Sync> {
            format!("Error performing PUT in 1s - Server returned non-2xx status code: {code} Service Unavailable: ")
                .into()
        };
        assert!(unavailable(status("503").as_ref()));
        assert!(unavailable(status("429").as_ref()));
        assert!(!unavailable(status("400").as_ref()));
        let refused: Box<dyn std::error::Error + Send + Sync> = "connection refused".into();
        assert!(unavailable(refused.as_ref()));
    }
}
