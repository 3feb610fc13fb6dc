//! The one place errors become HTTP responses: the spec's JSON error body, code and status.
//!
//! Client mistakes are logged at debug level; server-side failures are logged once here, at error
//! level, and reach the client only as a generic message.

use crate::oci::ErrorBody;
pub use crate::oci::{Code, DistributionCode};
use crate::{auth, oci, proxy, registry, storage, upload};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use oci_spec::distribution::ErrorCode;

/// An error response. Boxed so `Result<Response, ApiError>` stays small.
#[derive(Debug)]
pub struct ApiError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    status: StatusCode,
    code: Code,
    message: String,
    detail: Option<serde_json::Value>,
    headers: HeaderMap,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<Code>, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            status,
            code: code.into(),
            message: message.into(),
            detail: None,
            headers: HeaderMap::new(),
        }))
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.0.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn code(&self) -> &Code {
        &self.0.code
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn name_invalid() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::NameInvalid,
            "invalid repository name",
        )
    }

    pub fn digest_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid, message)
    }

    pub fn size_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::SizeInvalid, message)
    }

    pub fn upload_invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BlobUploadInvalid,
            message,
        )
    }

    pub fn upload_unknown() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadUnknown,
            "blob upload unknown to registry",
        )
    }

    pub fn unsupported(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, ErrorCode::Unsupported, message)
    }

    pub fn range_invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            DistributionCode::RangeInvalid,
            message,
        )
    }

    /// A failure on our side. The cause is logged here and never shown to the client.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            DistributionCode::Unknown,
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Inner {
            status,
            code,
            message,
            detail,
            headers,
        } = *self.0;
        if !status.is_server_error() {
            tracing::debug!(?code, %message, "request refused");
        }
        let body = ErrorBody::new(code, &message, detail.as_ref());
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().extend(headers);
        response
    }
}

impl ApiError {
    /// Access refused: `401` with `challenge`, `403 DENIED`, or `429` with `Retry-After`.
    pub fn refused(
        err: &auth::AuthError,
        challenge: HeaderValue,
        detail: serde_json::Value,
    ) -> Self {
        match err {
            auth::AuthError::Unauthorized | auth::AuthError::InsufficientScope => Self::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "authentication required",
            )
            .with_detail(detail)
            .with_header(axum::http::header::WWW_AUTHENTICATE, challenge),
            auth::AuthError::Denied => Self::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                "requested access to the resource is denied",
            )
            .with_detail(detail),
            auth::AuthError::TooManyAttempts(wait) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                "too many failed logins; retry later",
            )
            .with_header(
                axum::http::header::RETRY_AFTER,
                crate::limits::retry_after(*wait),
            ),
        }
    }
}

impl From<oci::ParseError> for ApiError {
    fn from(err: oci::ParseError) -> Self {
        match err {
            oci::ParseError::Name => Self::name_invalid(),
            oci::ParseError::Tag => Self::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ManifestInvalid,
                "invalid tag",
            ),
            oci::ParseError::Digest(_) | oci::ParseError::UnsupportedAlgorithm(_) => {
                Self::digest_invalid(err.to_string())
            }
        }
    }
}

impl From<storage::Error> for ApiError {
    fn from(err: storage::Error) -> Self {
        match err {
            storage::Error::Unavailable(_) => {
                tracing::warn!(error = %err, "storage unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    DistributionCode::Unavailable,
                    "storage is unavailable, retry later",
                )
                .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("5"))
            }
            storage::Error::Body(_) => Self::upload_invalid(err.to_string()),
            other => Self::internal(&other),
        }
    }
}

impl From<registry::Error> for ApiError {
    fn from(err: registry::Error) -> Self {
        use registry::Error as E;
        match err {
            E::NameUnknown => Self::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NameUnknown,
                "repository name not known to registry",
            ),
            E::BlobUnknown => Self::new(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                "blob unknown to registry",
            ),
            E::ManifestUnknown => Self::new(
                StatusCode::NOT_FOUND,
                ErrorCode::ManifestUnknown,
                "manifest unknown",
            ),
            E::ManifestBlobUnknown(ref digest) => {
                let detail = serde_json::json!({ "digest": digest.to_string() });
                Self::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::ManifestBlobUnknown,
                    err.to_string(),
                )
                .with_detail(detail)
            }
            E::ManifestInvalid(_) => Self::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ManifestInvalid,
                err.to_string(),
            ),
            E::ManifestDigestMismatch { .. } => Self::digest_invalid(err.to_string()),
            E::Storage(err) => err.into(),
            E::TooSlow => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                DistributionCode::Unavailable,
                err.to_string(),
            )
            .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")),
            E::CorruptLink(_) => Self::internal(&err),
            E::Upload(err) => err.into(),
            E::OverQuota(_) => Self::new(StatusCode::FORBIDDEN, ErrorCode::Denied, err.to_string()),
        }
    }
}

impl From<proxy::Error> for ApiError {
    fn from(err: proxy::Error) -> Self {
        match err {
            proxy::Error::Registry(err) => err.into(),
            // Not the client's doing, nor this registry's: the upstream's, and it says which.
            proxy::Error::Upstream { .. } | proxy::Error::Corrupt { .. } => {
                tracing::warn!(error = %err, "pull through the cache failed");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    DistributionCode::Unavailable,
                    err.to_string(),
                )
            }
        }
    }
}

impl From<upload::Error> for ApiError {
    fn from(err: upload::Error) -> Self {
        use upload::{Error as E, TokenError};
        match err {
            E::Token(TokenError::Expired) | E::Unknown => Self::upload_unknown(),
            E::Token(_) => Self::upload_invalid(err.to_string()),
            E::Stale => Self::range_invalid(err.to_string()),
            E::Busy => Self::new(
                StatusCode::CONFLICT,
                ErrorCode::BlobUploadInvalid,
                err.to_string(),
            ),
            E::DigestMismatch { .. } => Self::digest_invalid(err.to_string()),
            E::Body(_) => Self::upload_invalid(err.to_string()),
            E::Storage(err) => err.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_the_spec_body() {
        let response = ApiError::name_invalid()
            .with_detail(serde_json::json!({"x": 1}))
            .into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"errors":[{"code":"NAME_INVALID","message":"invalid repository name","detail":{"x":1}}]})
        );
        let unavailable =
            ApiError::from(storage::Error::Unavailable("down".into())).into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            unavailable
                .headers()
                .contains_key(http::header::RETRY_AFTER)
        );
    }
}
