//! The PersistentVolumeClaim for filesystem storage.

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use kube::ResourceExt;

use crate::crd::Registry;
use crate::resources::{SERVER_COMPONENT, owned_meta};

/// The claim the pods mount: the user's existing one, or `<name>-data`.
pub fn data_claim_name(registry: &Registry) -> String {
    registry
        .spec
        .storage
        .filesystem
        .as_ref()
        .and_then(|fs| fs.existing_claim.clone())
        .unwrap_or_else(|| format!("{}-data", registry.name_any()))
}

/// The claim to make, when filesystem storage is asked for without an existing claim. Unless
/// `retainOnDelete` is off it has no owner, so deleting the Registry keeps the images.
pub fn persistent_volume_claim(registry: &Registry) -> Option<PersistentVolumeClaim> {
    let fs = registry.spec.storage.filesystem.as_ref()?;
    if fs.existing_claim.is_some() {
        return None;
    }
    let mut metadata = owned_meta(registry, data_claim_name(registry), SERVER_COMPONENT);
    if fs.retain_on_delete {
        metadata.owner_references = None;
    }
    Some(PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: fs.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_owned(), fs.size.clone())].into()),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::{fs_registry, registry, s3_registry};

    #[test]
    fn a_claim_is_made_for_filesystem_storage_only() {
        assert!(persistent_volume_claim(&s3_registry()).is_none());
        let claim = persistent_volume_claim(&fs_registry()).expect("claim");
        assert_eq!(claim.metadata.name.as_deref(), Some("images-data"));
        let spec = claim.spec.expect("spec");
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
        assert_eq!(
            spec.resources
                .expect("resources")
                .requests
                .expect("requests")["storage"]
                .0,
            "50Gi"
        );
    }

    #[test]
    fn the_claim_outlives_the_registry_unless_asked_otherwise() {
        let kept = persistent_volume_claim(&fs_registry()).expect("claim");
        assert!(kept.metadata.owner_references.is_none());
        let owned = registry(serde_json::json!({
            "storage": {"filesystem": {"retainOnDelete": false}}
        }));
        let claim = persistent_volume_claim(&owned).expect("claim");
        assert_eq!(claim.metadata.owner_references.expect("owner").len(), 1);
    }

    #[test]
    fn an_existing_claim_is_mounted_not_made() {
        let registry = registry(serde_json::json!({
            "storage": {"filesystem": {"existingClaim": "old-registry"}}
        }));
        assert!(persistent_volume_claim(&registry).is_none());
        assert_eq!(data_claim_name(&registry), "old-registry");
    }
}
