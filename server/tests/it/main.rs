//! Integration tests: a real registry listening on 127.0.0.1, driven over HTTP.

// Helpers outside #[test] functions panic on failure too: that is how they report it.
#![allow(clippy::unwrap_used)]

mod access;
mod bad_input;
mod blobs;
mod common;
mod gc;
mod immutable;
mod listing;
mod manifests;
mod pulls;
mod quota;
mod referrers;
mod settings;
mod ui;
mod uploads;
mod usage;
