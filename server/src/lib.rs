//! Stowage: an OCI Distribution Spec v1.1 registry on pluggable storage, built to run as many
//! stateless replicas.
//!
//! # Layers
//!
//! Each top-level module sits on a floor and uses only modules on the floors below its own,
//! never one beside or above it; `make lint` checks it (`scripts/check-layers.py` reads this
//! table). A concept two floors share lives on the lowest floor that needs it, and each feature
//! owns its settings type, which `config` builds from flags, environment and the file.
//!
//! | floor | modules | |
//! |---|---|---|
//! | 10 | `cli` | the command line: parses it, runs a subcommand |
//! | 9 | `config` | flags, environment and the TOML file, resolved into each feature's settings |
//! | 8 | `serve`, `copy` | the server's start-up and shutdown; `stowage copy` |
//! | 7 | `ui` | the web interface: pages over the API's state and rules |
//! | 6 | `api`, `report` | the HTTP API: routing, access checks, the one mapping of errors to responses; what the commands print |
//! | 5 | `proxy`, `gc`, `replication` | the pull-through cache; garbage collection and upload purging; images copied to other registries |
//! | 4 | `registry`, `auth`, `events`, `transfer` | repositories, manifests and blobs, and the quotas their commits keep; who may do what; webhooks; copying images between registries and layouts |
//! | 3 | `metrics`, `upload`, `sweep`, `index`, `client` | Prometheus metrics; upload sessions and their tokens; what gc announces it will delete; the reverse index and review journal gc decides from, and the usage they count; a client of other registries |
//! | 2 | `limits`, `manifest`, `policies`, `routes`, `storage`, `tls` | overload limits; manifest parsing; immutable tags, retention and quota rules; route templates; the storage backends; certificates |
//! | 1 | `oci`, `idle`, `reload`, `telemetry`, `units` | the spec's vocabulary (names, digests, paths, error codes); small tools below everything (sizes among them) |

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod copy;
pub mod events;
pub mod gc;
pub mod idle;
pub mod index;
pub mod limits;
pub mod manifest;
pub mod metrics;
pub mod oci;
pub mod policies;
pub mod proxy;
pub mod registry;
pub mod reload;
pub mod replication;
pub mod report;
pub mod routes;
pub mod serve;
pub mod storage;
pub mod sweep;
pub mod telemetry;
pub mod tls;
pub mod transfer;
pub mod ui;
pub mod units;
pub mod upload;

pub use api::router;
