//! The Stowage operator: reconciles `Registry` resources into running registries.
//!
//! # Layers
//!
//! Each top-level module uses only modules on the floors below its own; `make lint` checks it
//! (`scripts/check-layers.py` reads this table).
//!
//! | floor | modules | |
//! |---|---|---|
//! | 4 | `cli` | the command line, leader election, start-up |
//! | 3 | `controller` | the reconcile loop: applies the children, writes the status, publishes events |
//! | 2 | `status`, `manifests` | the status from what was observed; the generated YAML and `crdgen check` |
//! | 1 | `resources`, `rbac` | pure builders of every child object; the permissions the operator needs |
//! | 0 | `crd`, `events`, `metrics`, `storage` | the `Registry` types and their schema; event recording; metrics; storage checks |

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
