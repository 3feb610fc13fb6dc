//! Stowage: an OCI Distribution Spec v1.1 registry on pluggable storage, built to run as many
//! stateless replicas.
//!
//! Dependencies point downwards: `api` (HTTP) → `registry` (repositories, manifests, uploads) →
//! `storage` (objects); `oci` is the shared vocabulary.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod copy;
pub mod events;
pub mod gc;
pub mod idle;
pub mod limits;
pub mod manifest;
pub mod metrics;
pub mod oci;
pub mod proxy;
pub mod registry;
pub mod reload;
pub mod report;
pub mod serve;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod upload;

pub use api::router;
