//! Manifests and blobs of a repository, fetched and checked against their digests.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::{Method, Response, StatusCode, header};

use super::{ClientError, RegistryClient, repository_scope};
use crate::oci::{Algorithm, Digest};

/// What clients accept when they fetch a manifest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.artifact.manifest.v1+json";

/// The largest manifest accepted from another registry (the registry's own limit is 4 MiB too).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// A manifest as a registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    /// `Content-Type`, without parameters.
    pub content_type: Option<String>,
    /// Of `bytes`, checked against the digest asked for or the one the registry announced.
    pub digest: Digest,
}

impl RegistryClient {
    /// The manifest `reference` names in `repository`; `None` when the registry has none.
    pub async fn fetch_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<FetchedManifest>, ClientError> {
        let Some(response) = self
            .manifest_request(Method::GET, repository, reference)
            .await?
        else {
            return Ok(None);
        };
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let announced = announced_digest(&response);
        let bytes = read_capped(response, MAX_MANIFEST_BYTES)
            .await
            .map_err(|err| self.network(&err))?
            .ok_or_else(|| {
                self.protocol(format!(
                    "{repository}:{reference}: a manifest larger than {MAX_MANIFEST_BYTES} bytes"
                ))
            })?;
        let expected = reference.parse::<Digest>().ok().or(announced);
        let algorithm = expected
            .as_ref()
            .map_or(Algorithm::Sha256, Digest::algorithm);
        let digest = Digest::of(algorithm, &bytes);
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(ClientError::Verification(format!(
                "{}/{repository}:{reference}: the manifest served hashes to {digest}, not {expected}",
                self.host()
            )));
        }
        Ok(Some(FetchedManifest {
            bytes,
            content_type,
            digest,
        }))
    }

    /// The digest of the manifest `reference` names, from a `HEAD` (which Docker Hub does not
    /// count against pull limits); `None` when there is none. Falls back to a `GET` when the
    /// registry does not announce the digest.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Digest>, ClientError> {
        let Some(response) = self
            .manifest_request(Method::HEAD, repository, reference)
            .await?
        else {
            return Ok(None);
        };
        match announced_digest(&response) {
            Some(digest) => Ok(Some(digest)),
            None => Ok(self
                .fetch_manifest(repository, reference)
                .await?
                .map(|fetched| fetched.digest)),
        }
    }

    /// A successful `GET` or `HEAD` of a manifest; `None` on `404`.
    async fn manifest_request(
        &self,
        method: Method,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Response>, ClientError> {
        let url = self
            .url(&format!("/v2/{repository}/manifests/{reference}"))
            .await?;
        let scopes = [repository_scope(repository, "pull")];
        let response = self
            .send(&scopes, method, &url, true, |r| {
                r.header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => Ok(Some(response)),
            _ => Err(self.status_error(response).await),
        }
    }

    /// `GET` of a blob, from `offset`; `None` when the registry does not have it.
    pub async fn fetch_blob(
        &self,
        repository: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<Option<Response>, ClientError> {
        self.blob_request(Method::GET, repository, digest, offset)
            .await
    }

    /// A blob's size and media type, from a `HEAD`; `None` when the registry does not have it.
    pub async fn blob_head(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<BlobHead>, ClientError> {
        let Some(response) = self
            .blob_request(Method::HEAD, repository, digest, 0)
            .await?
        else {
            return Ok(None);
        };
        // The header itself: the response to a `HEAD` has no body, so its length is 0.
        let size = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.protocol(format!("HEAD of blob {digest}: no Content-Length")))?;
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Some(BlobHead { size, media_type }))
    }

    /// A successful `GET` or `HEAD` of a blob, from `offset`; `None` on `404`.
    async fn blob_request(
        &self,
        method: Method,
        repository: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<Option<Response>, ClientError> {
        let url = self
            .url(&format!("/v2/{repository}/blobs/{digest}"))
            .await?;
        let scopes = [repository_scope(repository, "pull")];
        let response = self
            .send(&scopes, method, &url, true, |r| {
                if offset > 0 {
                    r.header(header::RANGE, format!("bytes={offset}-"))
                } else {
                    r
                }
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => Ok(Some(response)),
            _ => Err(self.status_error(response).await),
        }
    }
}

/// What a registry's `HEAD` says of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHead {
    pub size: u64,
    /// The `Content-Type` it answers with, if any.
    pub media_type: Option<String>,
}

fn announced_digest(response: &Response) -> Option<Digest> {
    response
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A response body, or `None` when it is longer than `limit`.
pub async fn read_capped(response: Response, limit: u64) -> Result<Option<Bytes>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Ok(None);
    }
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk?);
        if body.len() as u64 > limit {
            return Ok(None);
        }
    }
    Ok(Some(body.freeze()))
}
