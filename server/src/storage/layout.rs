//! Where things live in storage: CNCF Distribution's v2 layout, so a registry can move between
//! Distribution and Stowage on the same folder or bucket without copying anything.
//!
//! ```text
//! docker/registry/v2/blobs/<alg>/<hex[..2]>/<hex>/data                      content
//! docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link          blob in repository
//! docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link
//! docker/registry/v2/repositories/<name>/_uploads/<id>/{data,startedat}
//! docker/registry/v2/repositories/<name>/_referrers/<alg>/<subject>/<alg>/<hex>/link   (Stowage's own)
//! ```
//!
//! Distribution skips `_`-prefixed directories other than its own when it walks a repository, so
//! the referrers index stays invisible to it.

use crate::oci::{Digest, RepositoryName, Tag};

const ROOT: &str = "docker/registry/v2";

/// Directory holding every repository.
pub fn repositories_root() -> String {
    format!("{ROOT}/repositories")
}

/// Directory holding every blob.
pub fn blobs_root() -> String {
    format!("{ROOT}/blobs")
}

/// The sweep a garbage collection has announced; outside Distribution's tree, so it never sees it.
pub fn gc_marker() -> String {
    format!("{ROOT}/_stowage/gc-sweep.json")
}

/// The lease on the announced sweep, renewed by the collection sweeping (see `crate::sweep`):
/// a small object beside the marker, so a renewal never rewrites the candidate list.
pub fn gc_lease() -> String {
    format!("{ROOT}/_stowage/gc-sweep-lease.json")
}

/// The reverse index garbage collection decides from (see `crate::index`); Stowage's own.
pub fn index_root() -> String {
    format!("{ROOT}/_stowage/index")
}

/// The review journal: what may have become unreferenced, for the next collection to look at.
pub fn journal_root() -> String {
    format!("{ROOT}/_stowage/journal")
}

/// Directory of one repository.
pub fn repository(name: &RepositoryName) -> String {
    format!("{ROOT}/repositories/{name}")
}

/// The content of a blob (layers, configs and manifests alike).
pub fn blob_data(digest: &Digest) -> String {
    let hex = digest.hex();
    format!(
        "{ROOT}/blobs/{}/{}/{hex}/data",
        digest.algorithm().as_str(),
        &hex[..2]
    )
}

/// The link that makes a blob part of a repository.
pub fn layer_link(name: &RepositoryName, digest: &Digest) -> String {
    format!(
        "{}/_layers/{}/{}/link",
        repository(name),
        digest.algorithm().as_str(),
        digest.hex()
    )
}

/// The link that makes a manifest part of a repository.
pub fn revision_link(name: &RepositoryName, digest: &Digest) -> String {
    format!(
        "{}/_manifests/revisions/{}/{}/link",
        repository(name),
        digest.algorithm().as_str(),
        digest.hex()
    )
}

/// Marks a directory as a repository in Distribution's catalog walk.
pub const MANIFESTS_DIR: &str = "_manifests";

/// Directory whose children are the repository's tags.
pub fn tags_dir(name: &RepositoryName) -> String {
    format!("{}/_manifests/tags", repository(name))
}

/// Directory of one tag.
pub fn tag_dir(name: &RepositoryName, tag: &Tag) -> String {
    format!("{}/{tag}", tags_dir(name))
}

/// The link a tag currently points at.
pub fn tag_current_link(name: &RepositoryName, tag: &Tag) -> String {
    format!("{}/current/link", tag_dir(name, tag))
}

/// The tag's history entry for one manifest.
pub fn tag_index_link(name: &RepositoryName, tag: &Tag, digest: &Digest) -> String {
    format!(
        "{}/index/{}/{}/link",
        tag_dir(name, tag),
        digest.algorithm().as_str(),
        digest.hex()
    )
}

/// Directory of one upload session.
pub fn upload_dir(name: &RepositoryName, id: &str) -> String {
    format!("{}/_uploads/{id}", repository(name))
}

/// The resumable write of an upload session.
pub fn upload_data(name: &RepositoryName, id: &str) -> String {
    format!("{}/data", upload_dir(name, id))
}

/// When the upload session started (RFC 3339), which upload purging reads.
pub fn upload_started_at(name: &RepositoryName, id: &str) -> String {
    format!("{}/startedat", upload_dir(name, id))
}

/// The upload's latest state, written after each chunk, so that a client whose response was
/// lost can ask where the upload stands (Stowage's own; Distribution keeps `hashstates/`).
pub fn upload_latest_state(name: &RepositoryName, id: &str) -> String {
    format!("{}/state", upload_dir(name, id))
}

/// Where a finished upload is staged while it is read back to check a digest of another
/// algorithm than the one computed while it streamed in.
pub fn upload_staged(name: &RepositoryName, id: &str) -> String {
    format!("{}/staged", upload_dir(name, id))
}

/// When manifest `digest` of `name` was last pulled (a day number, Stowage's own).
pub fn last_pull(name: &RepositoryName, digest: &Digest) -> String {
    format!(
        "{}/_pulls/{}/{}",
        repository(name),
        digest.algorithm().as_str(),
        digest.hex()
    )
}

/// When a mirrored repository was last pulled (a day number), for the cache's retention.
pub fn mirror_last_pull(name: &RepositoryName) -> String {
    format!("{}/_proxy/lastpull", repository(name))
}

/// Directory of the manifests that name `subject` as their subject.
pub fn referrers_dir(name: &RepositoryName, subject: &Digest) -> String {
    format!(
        "{}/_referrers/{}/{}",
        repository(name),
        subject.algorithm().as_str(),
        subject.hex()
    )
}

/// The entry recording that `referrer` refers to `subject`.
pub fn referrer_link(name: &RepositoryName, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}/{}/{}/link",
        referrers_dir(name, subject),
        referrer.algorithm().as_str(),
        referrer.hex()
    )
}

/// The digest a link file points at; `None` for a corrupt link.
pub fn parse_link(content: &[u8]) -> Option<Digest> {
    std::str::from_utf8(content).ok()?.trim().parse().ok()
}

/// The content of a link file: the digest it points at, as Distribution writes it.
pub fn link_content(digest: &Digest) -> bytes::Bytes {
    bytes::Bytes::from(digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_distribution_paths() {
        let name: RepositoryName = "library/alpine".parse().unwrap();
        let digest: Digest = format!("sha256:ab{}", "c".repeat(62)).parse().unwrap();
        let hex = digest.hex().to_owned();
        assert_eq!(
            blob_data(&digest),
            format!("docker/registry/v2/blobs/sha256/ab/{hex}/data")
        );
        assert_eq!(
            layer_link(&name, &digest),
            format!("docker/registry/v2/repositories/library/alpine/_layers/sha256/{hex}/link")
        );
        assert_eq!(
            tag_current_link(&name, &"3.19".parse().unwrap()),
            "docker/registry/v2/repositories/library/alpine/_manifests/tags/3.19/current/link"
        );
        assert_eq!(
            revision_link(&name, &digest),
            format!(
                "docker/registry/v2/repositories/library/alpine/_manifests/revisions/sha256/{hex}/link"
            )
        );
    }
}
