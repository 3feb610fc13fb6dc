//! `GET`, `HEAD`, `PUT` and `DELETE /v2/<name>/manifests/<reference>`.

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use oci_spec::distribution::ErrorCode;

use super::events::Origin;
use super::headers::{DOCKER_CONTENT_DIGEST, OCI_SUBJECT};
use super::state::AppState;
use super::{ApiError, Call, header_value};
use crate::events::{Action, Target};
use crate::manifest::essence;
use crate::oci::{Digest, Reference, RepositoryName};

pub(super) async fn serve(
    call: Call,
    name: RepositoryName,
    reference: &str,
) -> Result<Response, ApiError> {
    let parsed = reference.parse::<Reference>();
    match call.method {
        Method::GET | Method::HEAD => {
            // A reference that cannot exist names no manifest: the spec's 404, not a 400, for
            // reads (conformance asks this); writes still get the precise 400.
            let Ok(reference) = parsed else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::ManifestUnknown,
                    format!("no manifest can have the reference {reference:?}"),
                ));
            };
            fetch(call, name, reference).await
        }
        _ => write(call, name, parsed?).await,
    }
}

async fn write(
    call: Call,
    name: RepositoryName,
    reference: Reference,
) -> Result<Response, ApiError> {
    match call.method {
        Method::PUT => push(call, name, reference).await,
        Method::DELETE => {
            call.state.refuse_deletes()?;
            call.state.delete(&call.origin, &name, &reference).await?;
            Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
        }
        _ => Err(call.method_not_allowed()),
    }
}

async fn fetch(
    call: Call,
    name: RepositoryName,
    reference: Reference,
) -> Result<Response, ApiError> {
    let proxied = call
        .state
        .proxy
        .as_ref()
        .and_then(|proxy| proxy.route(&name).map(|route| (proxy, route)));
    let (manifest, stale) = match proxied {
        Some((proxy, route)) => {
            let served = proxy
                .manifest(&call.state.registry, &name, &route, &reference)
                .await?;
            (served.manifest, served.stale)
        }
        None => (
            call.state.registry.get_manifest(&name, &reference).await?,
            false,
        ),
    };
    // Like Distribution, a tag is only served in a media type the client says it accepts; a
    // digest always is, since the client already knows what it asked for.
    if matches!(reference, Reference::Tag(_)) && !accepts(&call.headers, &manifest.media_type) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ManifestUnknown,
            format!(
                "manifest is a {}, which the Accept header does not allow",
                manifest.media_type
            ),
        ));
    }
    let headers = [
        (header::CONTENT_TYPE, header_value(&manifest.media_type)),
        (
            header::CONTENT_LENGTH,
            header_value(manifest.body.len().to_string()),
        ),
        (
            DOCKER_CONTENT_DIGEST,
            header_value(manifest.digest.to_string()),
        ),
        (
            header::ETAG,
            header_value(format!("\"{}\"", manifest.digest)),
        ),
    ];
    let mut response = if call.method == Method::HEAD {
        (headers, axum::body::Body::empty()).into_response()
    } else {
        let length = manifest.body.len() as u64;
        let target = manifest_target(
            &call.state,
            &call.origin,
            &name,
            &reference,
            manifest.media_type.clone(),
            &manifest.digest,
            length,
        );
        call.state
            .notify(&call.origin, Action::Pull, target)
            .await?;
        // Off the pull's path: at most one small write a day per manifest and replica.
        if !call
            .state
            .registry
            .pull_recorded_today(&name, &manifest.digest)
        {
            let (registry, repository, digest) = (
                call.state.registry.clone(),
                name.clone(),
                manifest.digest.clone(),
            );
            tokio::spawn(async move { registry.record_pull(&repository, &digest).await });
        }
        (headers, manifest.body).into_response()
    };
    if stale {
        // RFC 7234's stale warning: the upstream could not be asked.
        response.headers_mut().insert(
            header::WARNING,
            header_value("110 stowage \"Response is Stale: the upstream is unreachable\""),
        );
    }
    Ok(response)
}

impl AppState {
    /// Deletes a tag, or a manifest with the tags that point at it, unless that would remove an
    /// immutable tag, and records the events: as Distribution reports it, each tag a manifest
    /// delete removed, then the manifest. The caller has checked that deletes are allowed.
    pub async fn delete(
        &self,
        origin: &Origin,
        name: &RepositoryName,
        reference: &Reference,
    ) -> Result<(), ApiError> {
        self.refuse_untagging(name, reference).await?;
        let untagged = self.registry.delete_manifest(name, reference).await?;
        for tag in untagged {
            let target = Target {
                repository: name.to_string(),
                tag: Some(tag.to_string()),
                ..Target::default()
            };
            self.notify(origin, Action::Delete, target).await?;
        }
        let target = Target {
            digest: match reference {
                Reference::Digest(digest) => Some(digest.to_string()),
                Reference::Tag(_) => None,
            },
            repository: name.to_string(),
            tag: tag_of(reference),
            ..Target::default()
        };
        self.notify(origin, Action::Delete, target).await
    }
}

/// The event target of manifest `digest`, `length` bytes of `media_type`, as `reference` named it.
fn manifest_target(
    state: &AppState,
    origin: &Origin,
    name: &RepositoryName,
    reference: &Reference,
    media_type: String,
    digest: &Digest,
    length: u64,
) -> Target {
    Target {
        media_type: Some(media_type),
        digest: Some(digest.to_string()),
        size: Some(length),
        length: Some(length),
        repository: name.to_string(),
        url: state.url_of(origin, name, "manifests", digest),
        tag: tag_of(reference),
        ..Target::default()
    }
}

fn tag_of(reference: &Reference) -> Option<String> {
    match reference {
        Reference::Tag(tag) => Some(tag.to_string()),
        Reference::Digest(_) => None,
    }
}

/// Whether any `Accept` header allows `media_type`. No header at all accepts everything.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut accepted = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(essence)
        .filter(|v| !v.is_empty())
        .peekable();
    if accepted.peek().is_none() {
        return true;
    }
    let main_type = media_type.split('/').next().unwrap_or_default();
    accepted.any(|a| {
        a == media_type || a == "*/*" || a.strip_suffix("/*").is_some_and(|t| t == main_type)
    })
}

async fn push(
    call: Call,
    name: RepositoryName,
    reference: Reference,
) -> Result<Response, ApiError> {
    let limit = call.state.registry.limits().max_manifest_size;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::SizeInvalid,
            format!("manifest exceeds the {limit} byte limit"),
        )
    };
    if super::content_length(&call.headers)?.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let content_type = call.header(&header::CONTENT_TYPE).map(str::to_owned);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let body = match Limited::new(call.body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(err) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ManifestInvalid,
                format!("reading manifest failed: {err}"),
            ));
        }
    };
    if let Reference::Tag(tag) = &reference {
        let digest = Digest::sha256_of(&body);
        call.state.refuse_moving(&name, tag, &digest).await?;
    }
    let (length, media_type) = (body.len() as u64, crate::manifest::served_media_type(&body));
    let outcome = call
        .state
        .registry
        .put_manifest(&name, &reference, content_type.as_deref(), body)
        .await?;
    let target = manifest_target(
        &call.state,
        &call.origin,
        &name,
        &reference,
        media_type,
        &outcome.digest,
        length,
    );
    call.state
        .notify(&call.origin, Action::Push, target)
        .await?;
    let mut response = (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                header_value(format!("/v2/{name}/manifests/{}", outcome.digest)),
            ),
            (
                DOCKER_CONTENT_DIGEST,
                header_value(outcome.digest.to_string()),
            ),
            (header::CONTENT_LENGTH, header_value("0")),
        ],
    )
        .into_response();
    if let Some(subject) = outcome.subject {
        response
            .headers_mut()
            .insert(OCI_SUBJECT, header_value(subject.to_string()));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let oci = crate::oci::media_type::OCI_MANIFEST;
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::ACCEPT, v.parse().unwrap());
            }
            headers
        };
        assert!(accepts(&with(&[]), oci));
        assert!(accepts(&with(&[oci]), oci));
        assert!(accepts(
            &with(&["application/json", &format!("{oci};q=0.5")]),
            oci
        ));
        assert!(accepts(&with(&["application/*"]), oci));
        assert!(accepts(&with(&["*/*"]), oci));
        assert!(!accepts(
            &with(&[crate::oci::media_type::DOCKER_MANIFEST]),
            oci
        ));
        assert!(!accepts(&with(&["text/*"]), oci));
    }
}
