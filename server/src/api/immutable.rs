//! Immutable tags: a push that would move one to another manifest, and a delete that would
//! remove one (by tag, or with the manifest it names), get `403 DENIED` naming the rule. Pushing
//! the manifest a tag already names is no move, and succeeds.
//!
//! Two first pushes of one new tag at the same moment are not told apart: the later write wins,
//! as for any tag. Once a tag exists, every push and delete through any replica sees it.

use axum::http::StatusCode;
use oci_spec::distribution::ErrorCode;

use super::{ApiError, AppState};
use crate::oci::{Digest, Reference, RepositoryName, Tag};

impl AppState {
    /// Refuses pushing `digest` under `tag` when the tag is immutable and names another manifest.
    pub(super) async fn refuse_moving(
        &self,
        name: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), ApiError> {
        let Some(rule) = self.policies.immutable(name.as_str(), tag.as_str()) else {
            return Ok(());
        };
        match self
            .registry
            .resolve(name, &Reference::Tag(tag.clone()))
            .await
        {
            Ok(current) if current != *digest => Err(denied(format!(
                "tag {name}:{tag} is immutable (rule {:?}): it names {current}; push under a new tag",
                rule.name
            ))),
            Ok(_) | Err(crate::registry::Error::ManifestUnknown) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Refuses a delete that would remove an immutable tag.
    pub(super) async fn refuse_untagging(
        &self,
        name: &RepositoryName,
        reference: &Reference,
    ) -> Result<(), ApiError> {
        if !self.policies.has_immutable_tags(name.as_str()) {
            return Ok(());
        }
        let (tags, what) = match reference {
            Reference::Tag(tag) => (vec![tag.clone()], "deleted"),
            Reference::Digest(digest) => (
                self.registry.tags_pointing_at(name, digest).await?,
                "deleted with the manifest it names",
            ),
        };
        for tag in tags {
            if let Some(rule) = self.policies.immutable(name.as_str(), tag.as_str()) {
                return Err(denied(format!(
                    "tag {name}:{tag} is immutable (rule {:?}): it cannot be {what}",
                    rule.name
                )));
            }
        }
        Ok(())
    }
}

fn denied(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Denied, message)
}
