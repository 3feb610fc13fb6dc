//! A repository in a registry, as a source and as a destination, over the Distribution API.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::{Method, Response, StatusCode, Url, header};
use serde_json::{Value, json};

use super::ends::{
    BlobOutcome, BlobStream, Destination, Fetched, Naming, Source, Wanted, verified,
};
use super::error::CopyError;
use super::manifest::{Descriptor, Manifest, media_type_of};
use super::progress::Meter;
use super::upload::{self, Uploads};
use crate::client::{RegistryClient, repository_scope};
use crate::oci::{Digest, DigestHasher, media_type};

/// One repository of one registry.
pub struct RegistryRepository {
    client: Arc<RegistryClient>,
    /// The registry as the user named it (credentials and messages use this name).
    host: String,
    repository: String,
    /// `pull`, or `pull,push` for a destination: one token covers every request.
    scopes: Vec<String>,
    uploads: Uploads,
}

impl RegistryRepository {
    pub fn source(client: Arc<RegistryClient>, host: &str, repository: &str) -> Self {
        Self::new(client, host, repository, "pull", Uploads::default())
    }

    pub fn destination(
        client: Arc<RegistryClient>,
        host: &str,
        repository: &str,
        uploads: Uploads,
    ) -> Self {
        Self::new(client, host, repository, "pull,push", uploads)
    }

    fn new(
        client: Arc<RegistryClient>,
        host: &str,
        repository: &str,
        actions: &str,
        uploads: Uploads,
    ) -> Self {
        Self {
            client,
            host: host.to_owned(),
            repository: repository.to_owned(),
            scopes: vec![repository_scope(repository, actions)],
            uploads,
        }
    }

    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn uploads(&self) -> &Uploads {
        &self.uploads
    }

    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// `docker://host/repo:tag` or `…@digest`, for messages.
    pub fn display(&self, reference: &str) -> String {
        let separator = if reference.contains(':') { '@' } else { ':' };
        format!(
            "docker://{}/{}{separator}{reference}",
            self.host, self.repository
        )
    }

    /// `/v2/<repository>/<rest>` on this registry.
    pub async fn url(&self, rest: &str) -> Result<Url, CopyError> {
        Ok(self
            .client
            .url(&format!("/v2/{}/{rest}", self.repository))
            .await?)
    }

    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        idempotent: bool,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Response, CopyError> {
        Ok(self
            .client
            .send(&self.scopes, method, url, idempotent, build)
            .await?)
    }

    pub async fn error(&self, response: Response) -> CopyError {
        self.client.status_error(response).await.into()
    }

    /// A manifest by tag or digest, as served: the exact bytes, checked against the digest.
    async fn get_manifest(&self, reference: &str) -> Result<Option<Fetched>, CopyError> {
        let Some(fetched) = self
            .client
            .fetch_manifest(&self.repository, reference)
            .await?
        else {
            return Ok(None);
        };
        let manifest = Manifest::parse(&fetched.bytes)
            .map_err(|why| CopyError::Registry(format!("{}: {why}", self.display(reference))))?;
        let media_type = media_type_of(fetched.content_type.as_deref(), &manifest);
        Ok(Some(Fetched {
            descriptor: Descriptor::new(&media_type, fetched.digest, fetched.bytes.len() as u64),
            bytes: fetched.bytes,
        }))
    }
}

#[async_trait]
impl Source for RegistryRepository {
    async fn manifest(&self, wanted: &Wanted) -> Result<Fetched, CopyError> {
        let reference = match wanted {
            Wanted::Tag(tag) => tag.clone(),
            Wanted::Digest(digest) => digest.to_string(),
            Wanted::Only => "latest".to_owned(),
        };
        self.get_manifest(&reference)
            .await?
            .ok_or_else(|| CopyError::NotFound(self.display(&reference)))
    }

    async fn blob(&self, descriptor: &Descriptor, offset: u64) -> Result<BlobStream, CopyError> {
        let response = self
            .client
            .fetch_blob(&self.repository, &descriptor.digest, offset)
            .await?
            .ok_or_else(|| {
                CopyError::Registry(format!(
                    "docker://{}/{}: blob {} is missing",
                    self.host, self.repository, descriptor.digest
                ))
            })?;
        // A registry that ignores Range sends it all: skip what is not wanted.
        let skip = if response.status() == StatusCode::PARTIAL_CONTENT {
            0
        } else {
            offset
        };
        let client = Arc::clone(&self.client);
        let stream = response
            .bytes_stream()
            .map_err(move |err| CopyError::from(client.network(&err)))
            .boxed();
        let stream = skip_bytes(stream, skip);
        if offset == 0 {
            Ok(verified(
                stream,
                descriptor,
                DigestHasher::new(descriptor.digest.algorithm()),
                0,
            ))
        } else {
            // The bytes before `offset` were not read again here; the destination checks the
            // whole blob against its digest when the upload is finished.
            Ok(stream)
        }
    }

    async fn tags(&self) -> Result<Vec<String>, CopyError> {
        let mut tags = Vec::new();
        let mut url = self.url("tags/list?n=1000").await?;
        loop {
            let response = self.send(Method::GET, &url, true, |r| r).await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Err(CopyError::NotFound(format!(
                    "docker://{}/{}",
                    self.host, self.repository
                )));
            }
            if !response.status().is_success() {
                return Err(self.error(response).await);
            }
            let next = next_link(&response);
            let page: Value = response
                .json()
                .await
                .map_err(|err| CopyError::Registry(format!("tags list: {err}")))?;
            tags.extend(
                page["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_owned)),
            );
            match next {
                Some(link) => url = self.client.resolve(&link).await?,
                None => return Ok(tags),
            }
        }
    }

    async fn referrers(&self, subject: &Descriptor) -> Result<Vec<Descriptor>, CopyError> {
        let url = self.url(&format!("referrers/{}", subject.digest)).await?;
        let response = self
            .send(Method::GET, &url, true, |r| {
                r.header(header::ACCEPT, media_type::OCI_INDEX)
            })
            .await?;
        let index = if response.status().is_success() {
            response
                .json::<Value>()
                .await
                .map_err(|err| CopyError::Registry(format!("referrers: {err}")))?
        } else if response.status() == StatusCode::NOT_FOUND {
            // No referrers API: the spec's fallback is an index under a tag named for the digest.
            match self.get_manifest(&fallback_tag(&subject.digest)).await? {
                Some(fetched) => serde_json::from_slice(&fetched.bytes)
                    .map_err(|err| CopyError::Registry(format!("referrers tag: {err}")))?,
                None => return Ok(Vec::new()),
            }
        } else {
            return Err(self.error(response).await);
        };
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| serde_json::from_value(d.clone()).ok())
            .collect())
    }

    fn registry_repository(&self) -> Option<(&str, &str)> {
        Some((&self.host, &self.repository))
    }
}

/// The referrers tag schema's tag for `digest`: `sha256-<hex>`.
fn fallback_tag(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().as_str(), digest.hex())
}

/// The target of a `Link: <…>; rel="next"` header.
fn next_link(response: &Response) -> Option<String> {
    let link = response.headers().get(header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// Drops the first `skip` bytes of `stream`.
fn skip_bytes(stream: BlobStream, skip: u64) -> BlobStream {
    if skip == 0 {
        return stream;
    }
    stream
        .scan(skip, |left, item| {
            let item = item.map(|mut chunk| {
                let drop = (*left).min(chunk.len() as u64);
                *left -= drop;
                chunk.split_off(drop as usize)
            });
            std::future::ready(Some(item))
        })
        .try_filter(|chunk| std::future::ready(!chunk.is_empty()))
        .boxed()
}

#[async_trait]
impl Destination for RegistryRepository {
    async fn has_blob(&self, descriptor: &Descriptor) -> Result<bool, CopyError> {
        let url = self.url(&format!("blobs/{}", descriptor.digest)).await?;
        let response = self.send(Method::HEAD, &url, true, |r| r).await?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.error(response).await),
        }
    }

    async fn put_blob(
        &self,
        descriptor: &Descriptor,
        source: &dyn Source,
        mount_from: Option<&str>,
        meter: &Meter,
    ) -> Result<BlobOutcome, CopyError> {
        let started = match mount_from {
            Some(from) => match upload::mount(self, descriptor, from).await? {
                upload::Mount::Mounted => return Ok(BlobOutcome::Mounted),
                upload::Mount::Started(location) => Some(location),
            },
            None => None,
        };
        upload::upload(self, descriptor, source, meter, started).await
    }

    async fn put_manifest(&self, manifest: &Fetched, naming: &Naming) -> Result<(), CopyError> {
        let descriptor = &manifest.descriptor;
        let reference = match naming {
            Naming::Tag(tag) => tag.clone(),
            Naming::Root | Naming::Child => descriptor.digest.to_string(),
        };
        let url = self.url(&format!("manifests/{reference}")).await?;
        let body = manifest.bytes.clone();
        let response = self
            .send(Method::PUT, &url, true, |r| {
                r.header(header::CONTENT_TYPE, &descriptor.media_type)
                    .body(body.clone())
            })
            .await?;
        if !response.status().is_success() {
            let err = self.error(response).await;
            return Err(match err {
                CopyError::Registry(message) => CopyError::Registry(format!(
                    "storing manifest {}: {message}",
                    self.display(&reference)
                )),
                other => other,
            });
        }
        let subject_applied = response.headers().contains_key("oci-subject");
        if !subject_applied
            && let Ok(Manifest {
                subject: Some(subject),
                ..
            }) = Manifest::parse(&manifest.bytes)
        {
            self.add_to_fallback_index(&subject.digest, manifest)
                .await?;
        }
        Ok(())
    }

    async fn holds_manifest(&self, manifest: &Fetched, naming: &Naming) -> Result<bool, CopyError> {
        let reference = match naming {
            Naming::Tag(tag) => tag.clone(),
            Naming::Root | Naming::Child => manifest.descriptor.digest.to_string(),
        };
        let held = self
            .client
            .manifest_digest(&self.repository, &reference)
            .await?;
        Ok(held.as_ref() == Some(&manifest.descriptor.digest))
    }

    async fn commit(&self) -> Result<(), CopyError> {
        Ok(())
    }

    fn registry_repository(&self) -> Option<(&str, &str)> {
        Some((&self.host, &self.repository))
    }
}

impl RegistryRepository {
    /// On a registry without the referrers API, lists `referrer` in the index tagged
    /// `sha256-<hex of subject>`, as the spec asks clients to.
    async fn add_to_fallback_index(
        &self,
        subject: &Digest,
        referrer: &Fetched,
    ) -> Result<(), CopyError> {
        let tag = fallback_tag(subject);
        let mut index: Value = match self.get_manifest(&tag).await? {
            Some(existing) => serde_json::from_slice(&existing.bytes)
                .map_err(|err| CopyError::Registry(format!("referrers tag {tag}: {err}")))?,
            None => {
                json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": []})
            }
        };
        let digest = referrer.descriptor.digest.to_string();
        let manifests = index["manifests"]
            .as_array_mut()
            .ok_or_else(|| CopyError::Registry(format!("referrers tag {tag} is not an index")))?;
        if manifests.iter().any(|d| d["digest"] == digest.as_str()) {
            return Ok(());
        }
        let document: Value = serde_json::from_slice(&referrer.bytes).unwrap_or(Value::Null);
        let mut entry = json!({
            "mediaType": referrer.descriptor.media_type,
            "digest": digest,
            "size": referrer.descriptor.size,
        });
        let artifact_type = document
            .get("artifactType")
            .or_else(|| document.pointer("/config/mediaType"));
        if let Some(artifact_type) = artifact_type {
            entry["artifactType"] = artifact_type.clone();
        }
        if let Some(annotations) = document.get("annotations") {
            entry["annotations"] = annotations.clone();
        }
        manifests.push(entry);
        let bytes = Bytes::from(
            serde_json::to_vec(&index).map_err(|err| CopyError::Registry(err.to_string()))?,
        );
        let fetched = Fetched {
            descriptor: Descriptor::new(
                media_type::OCI_INDEX,
                Digest::sha256_of(&bytes),
                bytes.len() as u64,
            ),
            bytes,
        };
        // Tagged directly: a registry without the referrers API needs no subject handling.
        let url = self.url(&format!("manifests/{tag}")).await?;
        let body = fetched.bytes.clone();
        let response = self
            .send(Method::PUT, &url, true, |r| {
                r.header(header::CONTENT_TYPE, media_type::OCI_INDEX)
                    .body(body.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.error(response).await);
        }
        Ok(())
    }
}
