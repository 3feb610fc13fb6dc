//! End-to-end: the real `stowage` binary with real clients and CNCF Distribution.

// Tests report failure by panicking.
#![allow(clippy::unwrap_used)]

mod distribution_compat;
mod lifecycle;
mod oras;
mod s3;
mod skopeo;
mod stateless;
