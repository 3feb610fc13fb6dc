//! The OCI Distribution Spec's vocabulary: repository names, tags, references and digests, the
//! API's paths and its error codes, and patterns over names and tags.
//!
//! Pure types with no I/O. Every value here has been validated against the spec's grammar, so the
//! layers above can build storage keys from them without further checks.

mod digest;
mod error;
mod name;
pub mod path;
pub mod pattern;
mod reference;

pub use digest::{Algorithm, Digest, DigestHasher};
pub use error::{Code, DistributionCode, ErrorBody};
pub use name::RepositoryName;
pub use reference::{Reference, Tag};

/// The media types a registry has to tell apart when it validates and serves manifests.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Layers that live elsewhere (Windows base layers); a registry does not hold them.
    pub const DOCKER_FOREIGN_LAYER: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
}

/// Why a name, tag, digest or reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid repository name")]
    Name,
    #[error("invalid tag")]
    Tag,
    #[error("invalid digest: {0}")]
    Digest(String),
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
}
