//! Children whose resource type another project installs (cert-manager's Certificate, the
//! Prometheus Operator's ServiceMonitor): applied when the spec asks for them and the type
//! exists, deleted when the spec no longer asks for them.

use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};

use super::{Error, is_not_found, kube_error};
use crate::resources::FIELD_MANAGER;

/// What became of an optional child.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Optional {
    /// Applied, or deleted as the spec asks.
    Done,
    /// The cluster has no such resource type: its CRD is not installed.
    NoSuchResource,
}

/// Applies `wanted` (or deletes the child `name` when it is `None`).
pub(super) async fn apply_or_delete(
    client: &Client,
    namespace: &str,
    resource: &ApiResource,
    name: &str,
    wanted: Option<&DynamicObject>,
) -> Result<Optional, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let kind = &resource.kind;
    let result = match wanted {
        Some(object) => api
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .map(drop)
            .map_err(|error| (error, format!("applying {kind} {name}"))),
        None => api
            .delete(name, &DeleteParams::background())
            .await
            .map(drop)
            .map_err(|error| (error, format!("deleting {kind} {name}"))),
    };
    match result {
        Ok(()) => Ok(Optional::Done),
        // Not found: on delete, nothing to delete; on apply, no such resource type.
        Err((error, _)) if is_not_found(&error) => Ok(if wanted.is_some() {
            Optional::NoSuchResource
        } else {
            Optional::Done
        }),
        Err((error, action)) => Err(kube_error(action)(error)),
    }
}
