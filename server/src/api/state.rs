//! What every handler shares.

use std::sync::Arc;

use crate::events::Notifier;
use crate::policies::Policies;
use crate::proxy::Proxy;
use crate::registry::Registry;
use crate::storage::Health;
use crate::upload::Uploads;

/// Switches that change what the API allows.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Whether manifests, tags and blobs may be deleted (otherwise `405 UNSUPPORTED`).
    pub deletes_enabled: bool,
    /// Refuse every write with `405 UNSUPPORTED`, e.g. during maintenance or migration.
    pub read_only: bool,
}

/// Shared, cheaply cloned application state.
#[derive(Debug, Clone)]
pub struct AppState {
    pub registry: Registry,
    pub uploads: Uploads,
    pub settings: Arc<ApiSettings>,
    /// Whether storage answers, kept by the storage guard's probe.
    pub health: Arc<Health>,
    /// The pull-through cache, when upstreams are configured.
    pub proxy: Option<Arc<Proxy>>,
    /// Where registry events go, when webhooks are configured.
    pub events: Option<Arc<Notifier>>,
    /// Immutable tags, enforced on pushes and deletes.
    pub policies: Arc<Policies>,
}
