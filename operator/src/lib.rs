//! The Stowage operator: reconciles `Registry` resources into running registries.

pub mod cli;
pub mod controller;
pub mod crd;
pub mod events;
pub mod manifests;
pub mod metrics;
pub mod rbac;
pub mod resources;
pub mod status;
pub mod storage;
