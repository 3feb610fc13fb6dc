//! The interface's only stylesheet, script and icon, compiled into the binary: an air-gapped cluster
//! loads nothing from elsewhere. Their addresses carry the version, so they can be cached long.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

pub const STYLESHEET: &str = concat!("/ui/static/app.css?v=", env!("CARGO_PKG_VERSION"));
pub const SCRIPT: &str = concat!("/ui/static/app.js?v=", env!("CARGO_PKG_VERSION"));

pub const ICON: &str = concat!("/ui/static/icon.svg?v=", env!("CARGO_PKG_VERSION"));

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");
const SVG: &str = include_str!("assets/icon.svg");

/// `GET /ui/static/<file>`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        "icon.svg" => (SVG, "image/svg+xml"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
