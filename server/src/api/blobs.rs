//! `GET`, `HEAD` and `DELETE /v2/<name>/blobs/<digest>`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::headers::{ByteRange, DOCKER_CONTENT_DIGEST, parse_range};
use super::{ApiError, Call, header_value};
use crate::oci::{Digest, RepositoryName};
use crate::proxy::BlobAnswer;

/// How long a redirect to storage stays valid.
const REDIRECT_TTL: Duration = Duration::from_secs(20 * 60);

pub(super) async fn serve(
    call: Call,
    name: RepositoryName,
    digest: &str,
) -> Result<Response, ApiError> {
    let digest: Digest = digest.parse()?;
    match call.method {
        Method::GET | Method::HEAD => fetch(call, name, digest).await,
        Method::DELETE => {
            call.state.refuse_deletes()?;
            call.state.registry.delete_blob(&name, &digest).await?;
            let target = crate::events::Target {
                digest: Some(digest.to_string()),
                repository: name.to_string(),
                ..crate::events::Target::default()
            };
            call.state
                .notify(&call.origin, crate::events::Action::Delete, target)
                .await?;
            Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
        }
        _ => Err(call.method_not_allowed()),
    }
}

async fn fetch(call: Call, name: RepositoryName, digest: Digest) -> Result<Response, ApiError> {
    let registry = &call.state.registry;
    let head = call.method == Method::HEAD;
    let mut known = None;
    if let Some(proxy) = &call.state.proxy
        && let Some(route) = proxy.route(&name)
    {
        match proxy.blob(registry, &name, &route, &digest, head).await? {
            BlobAnswer::Cached { size } => known = Some(size),
            BlobAnswer::Upstream { size, media_type } => {
                let mut response = blob_headers(&digest, StatusCode::OK, size);
                // The upstream's own media type, where it names one.
                if let Some(value) = media_type.and_then(|m| HeaderValue::from_str(&m).ok())
                    && let Some(headers) = response.headers_mut()
                {
                    headers.insert(header::CONTENT_TYPE, value);
                }
                return response
                    .body(Body::empty())
                    .map_err(|err| ApiError::internal(&err));
            }
            BlobAnswer::Streaming {
                size,
                body,
                mut done,
            } => {
                if call.header(&header::RANGE).is_none() {
                    let mut response = Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(DOCKER_CONTENT_DIGEST, digest.to_string());
                    if let Some(size) = size {
                        response = response.header(header::CONTENT_LENGTH, size);
                    }
                    return response
                        .body(Body::from_stream(body))
                        .map_err(|err| ApiError::internal(&err));
                }
                // A range of a blob not cached yet: cache it all, then serve the range.
                drop(body);
                let _ = done.wait_for(|done| *done).await;
            }
        }
    }
    let size = match known {
        Some(size) => size,
        None => registry.blob_size(&name, &digest).await?,
    };
    if !head && let Some(url) = registry.blob_redirect(&digest, REDIRECT_TTL).await? {
        let headers = [
            (header::LOCATION, header_value(url)),
            (DOCKER_CONTENT_DIGEST, header_value(digest.to_string())),
        ];
        return Ok((StatusCode::TEMPORARY_REDIRECT, headers).into_response());
    }
    let (status, range) = match parse_range(call.header(&header::RANGE), size) {
        ByteRange::Whole => (StatusCode::OK, 0..size),
        ByteRange::Part(range) => (StatusCode::PARTIAL_CONTENT, range),
        ByteRange::Unsatisfiable => {
            return Err(
                ApiError::range_invalid("requested range is outside the blob").with_header(
                    header::CONTENT_RANGE,
                    header_value(format!("bytes */{size}")),
                ),
            );
        }
    };
    let mut response = blob_headers(&digest, status, range.end - range.start);
    if status == StatusCode::PARTIAL_CONTENT {
        let content_range = format!("bytes {}-{}/{}", range.start, range.end - 1, size);
        response = response.header(header::CONTENT_RANGE, content_range);
    }
    let body = if head {
        Body::empty()
    } else {
        // The range even of a whole blob: storage can split a read it knows the length of.
        Body::from_stream(registry.open_blob(&digest, Some(range)).await?)
    };
    response.body(body).map_err(|err| ApiError::internal(&err))
}

/// The headers of a blob response with `length` bytes of body.
fn blob_headers(digest: &Digest, status: StatusCode, length: u64) -> axum::http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
        .header(header::CACHE_CONTROL, "max-age=31536000")
        .header(DOCKER_CONTENT_DIGEST, digest.to_string())
}
