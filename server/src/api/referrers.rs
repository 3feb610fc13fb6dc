//! `GET /v2/<name>/referrers/<digest>`, with the `artifactType` filter.

use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};

use super::headers::OCI_FILTERS_APPLIED;
use super::{ApiError, Call, header_value};
use crate::oci::{Digest, RepositoryName, media_type};

pub(super) async fn list(
    call: Call,
    name: RepositoryName,
    digest: &str,
) -> Result<Response, ApiError> {
    if call.method != Method::GET {
        return Err(call.method_not_allowed());
    }
    let subject: Digest = digest.parse()?;
    let filter = call
        .params
        .artifact_type
        .as_deref()
        .filter(|t| !t.is_empty());
    let manifests = call
        .state
        .registry
        .referrers(&name, &subject, filter)
        .await?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    });
    let mut response = axum::Json(index).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header_value(media_type::OCI_INDEX));
    if filter.is_some() {
        headers.insert(OCI_FILTERS_APPLIED, header_value("artifactType"));
    }
    Ok(response)
}
