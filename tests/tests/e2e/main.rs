//! End-to-end: the real `stowage` binary with real clients and CNCF Distribution.

// Tests report failure by panicking.
#![allow(clippy::unwrap_used)]

mod auth;
mod blob_cache;
mod clouds;
mod clouds_hang;
mod clouds_registry;
mod copy;
mod distribution_compat;
mod events;
mod gc;
mod gc_crash;
mod images;
mod immutable;
mod lifecycle;
mod metrics;
mod oras;
mod overload;
mod proxy;
mod proxy_chain;
mod quota;
mod replicas;
mod replication;
mod retention;
mod s3;
mod s3_faults;
mod s3_hang;
mod skopeo;
mod stateless;
mod tls;
mod traces;
mod ui;
