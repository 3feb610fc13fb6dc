//! The Stowage operator: reconciles `Registry` resources into running registries.

pub mod crd;
pub mod manifests;
pub mod rbac;
pub mod resources;
