//! The one place the web interface's failures become pages: a status and a message a person can
//! act on. Server-side failures are logged where they are turned into [`ApiError`]s and shown
//! only as a generic message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::views;
use crate::api::ApiError;
use crate::registry;

/// Why a page could not be shown or a form not carried out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing at this address, or nothing the caller may see (the two look the same).
    #[error("not found")]
    NotFound,
    /// An anonymous caller asked for something that needs signing in; back to `next` after.
    #[error("sign in to see this page")]
    SignIn { next: String },
    /// A form without this session's CSRF token, or sent from another site.
    #[error("this form was not sent from this registry's pages; reload the page and try again")]
    Forged,
    /// Signed in, but not allowed to do this.
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    BadRequest(String),
    /// What the registry refused or failed at, with its status.
    #[error("{}", .0.message())]
    Api(ApiError),
}

impl From<ApiError> for Error {
    fn from(err: ApiError) -> Self {
        Self::Api(err)
    }
}

impl From<registry::Error> for Error {
    fn from(err: registry::Error) -> Self {
        match err {
            registry::Error::NameUnknown | registry::Error::ManifestUnknown => Self::NotFound,
            other => Self::Api(other.into()),
        }
    }
}

impl Error {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::SignIn { .. } => StatusCode::SEE_OTHER,
            Self::Forged | Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Api(err) => err.status(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Self::SignIn { next } = &self {
            return Redirect::to(&super::session::login_url(next)).into_response();
        }
        let status = self.status();
        let message = if status.is_server_error() {
            "the registry could not answer this; try again later".to_owned()
        } else {
            self.to_string()
        };
        (status, views::error(status, &message)).into_response()
    }
}
