//! The paths the server answers beside the registry API, and the route template of any path:
//! what access logs and metrics label a request with, never the path itself, whose repository
//! names are unbounded.

use crate::oci::path::OciPath;

/// Answers 200 while the process runs (a liveness probe).
pub const LIVENESS_PATH: &str = "/healthz";
/// Answers 200 while storage answers, 503 otherwise (a readiness probe), at once: from the
/// health the storage guard's background probe keeps, never by calling storage inline.
pub const READINESS_PATH: &str = "/readyz";
/// The route of the token endpoint.
pub const TOKEN_PATH: &str = "/auth/token";

/// The route template of `path`, for metrics: never the path itself, whose repository names
/// are unbounded.
pub fn route_of(path: &str) -> &'static str {
    match path {
        "/v2" | "/v2/" => return "base",
        TOKEN_PATH => return "token",
        LIVENESS_PATH => return "healthz",
        READINESS_PATH => return "readyz",
        _ => {}
    }
    if path == "/ui" || path.starts_with("/ui/") {
        return "ui";
    }
    match path.strip_prefix("/v2/").and_then(OciPath::parse) {
        Some(OciPath::Catalog) => "catalog",
        Some(OciPath::Tags { .. }) => "tags",
        Some(OciPath::Blob { .. }) => "blob",
        Some(OciPath::Uploads { .. }) => "uploads",
        Some(OciPath::Upload { .. }) => "upload",
        Some(OciPath::Manifest { .. }) => "manifest",
        Some(OciPath::Referrers { .. }) => "referrers",
        None => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn every_path_has_a_bounded_label() {
        let cases = [
            ("/v2/", "base"),
            ("/v2/team/app/manifests/v1", "manifest"),
            ("/v2/team/app/blobs/uploads/", "uploads"),
            ("/ui", "ui"),
            ("/ui/r/team/app/-/m/sha256:ab", "ui"),
            ("/uix", "other"),
            ("/readyz", "readyz"),
        ];
        for (path, route) in cases {
            assert_eq!(route_of(path), route, "{path}");
        }
    }
}
