//! The blob upload protocol: `POST /v2/<name>/blobs/uploads/` to start (or push monolithically,
//! or mount), then `PATCH`, `PUT`, `GET` and `DELETE` on `/v2/<name>/blobs/uploads/<id>`.
//!
//! Each response hands the client a `Location` whose `_state` parameter is the signed upload
//! state; the next request may go to any replica.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use super::events::Origin;
use super::headers::{DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, RANGE, parse_content_range};
use super::state::AppState;
use super::{ApiError, Call, header_value};
use crate::events::{Action, Target};
use crate::oci::{Algorithm, Digest, RepositoryName};
use crate::storage::ByteStream;
use crate::upload::{UploadState, Uploads};

/// `POST /v2/<name>/blobs/uploads/`.
pub(super) async fn start(call: Call, name: RepositoryName) -> Result<Response, ApiError> {
    if call.method != Method::POST {
        return Err(call.method_not_allowed());
    }
    let mut mount_algorithm = None;
    if let Some(mount) = &call.params.mount {
        let digest: Digest = mount.parse()?;
        mount_algorithm = Some(digest.algorithm());
        // A mount from a repository the caller may not read falls back to an upload, so it
        // never tells whether the blob is there.
        if let Some(from) = call
            .params
            .from
            .as_deref()
            .filter(|from| call.may_pull(from))
        {
            let from: RepositoryName = from.parse()?;
            if call
                .state
                .registry
                .mount_blob(&name, &from, &digest)
                .await?
            {
                if call.state.events.is_some() {
                    let size = call.state.registry.blob_size(&name, &digest).await?;
                    let target = Target {
                        from_repository: Some(from.to_string()),
                        ..call.state.blob_target(&call.origin, &name, &digest, size)
                    };
                    call.state
                        .notify(&call.origin, Action::Mount, target)
                        .await?;
                }
                return Ok(blob_created(&name, &digest));
            }
        }
        // Not mountable: the spec says to fall back to a regular upload session.
    }
    let digest = call
        .params
        .digest
        .as_deref()
        .map(str::parse::<Digest>)
        .transpose()?;
    // The session hashes with the algorithm of the digest it will be finished with, when that
    // is known: a monolithic digest, an explicit choice, or the blob a failed mount named.
    let algorithm = match (&digest, &call.params.digest_algorithm) {
        (Some(digest), _) => digest.algorithm(),
        (None, Some(algorithm)) => algorithm.parse()?,
        (None, None) => mount_algorithm.unwrap_or(Algorithm::Sha256),
    };
    let uploads = &call.state.uploads;
    let state = uploads.start(&name, algorithm).await?;
    let Some(digest) = digest else {
        return Ok(upload_progress(
            uploads,
            &name,
            &state,
            StatusCode::ACCEPTED,
        ));
    };
    // Monolithic push: the whole blob is this request's body.
    let body = request_body(&call.headers, call.body, None)?;
    let state = uploads.append(&state, body).await?;
    call.state
        .registry
        .finish_upload(uploads, &state, &digest)
        .await?;
    blob_pushed(&call.state, &call.origin, &name, &digest, state.write.size).await
}

/// The answer to an upload that became blob `digest` of `size` bytes, once its event is recorded.
async fn blob_pushed(
    state: &AppState,
    origin: &Origin,
    name: &RepositoryName,
    digest: &Digest,
    size: u64,
) -> Result<Response, ApiError> {
    let target = state.blob_target(origin, name, digest, size);
    state.notify(origin, Action::Push, target).await?;
    Ok(blob_created(name, digest))
}

/// `PATCH`, `PUT`, `GET` and `DELETE /v2/<name>/blobs/uploads/<id>`.
pub(super) async fn serve(
    call: Call,
    name: RepositoryName,
    id: &str,
) -> Result<Response, ApiError> {
    let token = call
        .params
        .state
        .as_deref()
        .ok_or_else(ApiError::upload_unknown)?;
    let state = call.state.uploads.open(token, &name, id)?;
    match call.method {
        Method::GET | Method::HEAD => {
            // Any token of a live upload learns where it really stands, with a fresh token.
            let state = call.state.uploads.status(&state).await?;
            Ok(upload_progress(
                &call.state.uploads,
                &name,
                &state,
                StatusCode::NO_CONTENT,
            ))
        }
        Method::PATCH => {
            let uploads = call.state.uploads;
            let state = append_chunk(&uploads, &state, &call.headers, call.body, true).await?;
            Ok(upload_progress(
                &uploads,
                &name,
                &state,
                StatusCode::ACCEPTED,
            ))
        }
        Method::PUT => {
            let digest = call
                .params
                .digest
                .as_deref()
                .ok_or_else(|| {
                    ApiError::digest_invalid("digest parameter is required to finish an upload")
                })?
                .parse::<Digest>()?;
            let state =
                append_chunk(&call.state.uploads, &state, &call.headers, call.body, false).await?;
            call.state
                .registry
                .finish_upload(&call.state.uploads, &state, &digest)
                .await?;
            blob_pushed(&call.state, &call.origin, &name, &digest, state.write.size).await
        }
        Method::DELETE => {
            call.state.uploads.cancel(&state).await?;
            Ok((StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response())
        }
        _ => Err(call.method_not_allowed()),
    }
}

/// Appends the request body, if any, checking `Content-Range` against the upload's offset;
/// `stays_open` records the new state for a client that may lose this response.
async fn append_chunk(
    uploads: &Uploads,
    state: &UploadState,
    headers: &axum::http::HeaderMap,
    body: Body,
    stays_open: bool,
) -> Result<UploadState, ApiError> {
    let content_range = headers.get(header::CONTENT_RANGE).map(|v| {
        v.to_str()
            .ok()
            .and_then(parse_content_range)
            .ok_or_else(|| {
                ApiError::range_invalid("malformed Content-Range")
                    .with_header(RANGE, range_value(state))
            })
    });
    let declared = match content_range.transpose()? {
        Some((start, end)) => {
            if start != state.offset() {
                return Err(ApiError::range_invalid(format!(
                    "chunk starts at {start}, upload is at {}",
                    state.offset()
                ))
                .with_header(RANGE, range_value(state)));
            }
            let length = (end - start).checked_add(1).ok_or_else(|| {
                ApiError::range_invalid("Content-Range is too large")
                    .with_header(RANGE, range_value(state))
            })?;
            Some(length)
        }
        None => None,
    };
    let mut body = request_body(headers, body, declared)?;
    // An empty body (a PUT that only finishes) must not touch storage.
    let Some(first) = body.next().await else {
        return Ok(state.clone());
    };
    let body = futures::stream::once(async move { first })
        .chain(body)
        .boxed();
    Ok(if stays_open {
        uploads.append_recorded(state, body).await?
    } else {
        uploads.append(state, body).await?
    })
}

/// The request body as a stream that fails unless it has exactly the declared length.
fn request_body(
    headers: &axum::http::HeaderMap,
    body: Body,
    declared_by_range: Option<u64>,
) -> Result<ByteStream, ApiError> {
    let content_length = super::content_length(headers)?;
    if let (Some(length), Some(range)) = (content_length, declared_by_range)
        && length != range
    {
        return Err(ApiError::size_invalid(format!(
            "Content-Length {length} does not match Content-Range length {range}"
        )));
    }
    let stream = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(io::Error::other));
    Ok(ExactLength {
        inner: stream.boxed(),
        remaining: declared_by_range.or(content_length),
    }
    .boxed())
}

/// Fails the stream when it carries more or fewer bytes than declared, so a short or long chunk
/// never advances the upload.
struct ExactLength {
    inner: ByteStream,
    remaining: Option<u64>,
}

impl Stream for ExactLength {
    type Item = io::Result<bytes::Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        let Some(remaining) = self.remaining else {
            return polled;
        };
        match polled {
            Poll::Ready(Some(Ok(chunk))) => {
                let len = chunk.len() as u64;
                if len > remaining {
                    self.remaining = Some(0);
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "body is longer than declared",
                    ))));
                }
                self.remaining = Some(remaining - len);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) if remaining > 0 => {
                self.remaining = None;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body is shorter than declared",
                ))))
            }
            other => other,
        }
    }
}

/// `Range: 0-<last byte>`; Distribution answers `0-0` for an empty upload, and clients expect it.
fn range_value(state: &UploadState) -> axum::http::HeaderValue {
    header_value(format!("0-{}", state.offset().saturating_sub(1)))
}

fn upload_progress(
    uploads: &Uploads,
    name: &RepositoryName,
    state: &UploadState,
    status: StatusCode,
) -> Response {
    let token = uploads.seal(state);
    let location = format!("/v2/{name}/blobs/uploads/{}?_state={token}", state.id);
    (
        status,
        [
            (header::LOCATION, header_value(location)),
            (RANGE, range_value(state)),
            (DOCKER_UPLOAD_UUID, header_value(&state.id)),
            (header::CONTENT_LENGTH, header_value("0")),
        ],
    )
        .into_response()
}

fn blob_created(name: &RepositoryName, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                header_value(format!("/v2/{name}/blobs/{digest}")),
            ),
            (DOCKER_CONTENT_DIGEST, header_value(digest.to_string())),
            (header::CONTENT_LENGTH, header_value("0")),
        ],
    )
        .into_response()
}
