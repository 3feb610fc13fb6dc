//! Registry events delivered to sinks: webhooks in CNCF Distribution's format, and the
//! replication rules above this layer.
//!
//! # Durable once the request succeeded
//! Distribution keeps pending events in memory and loses them when it dies. Here, an event is
//! written to storage, one small object per sink in an outbox
//! (`_stowage/events/<endpoint>/<time>-<replica>-<id>` for a webhook), before the response of a
//! push, delete or mount is sent. Each replica drains its own events at once, and any replica takes over events
//! older than `takeover-after` (a replica that died, or a receiver that was down), so a SIGKILL
//! right after a push loses nothing. Delivery is at least once; the event `id` lets receivers
//! drop duplicates. Pull events are written just after the response, off the pull's path.

pub mod claims;
pub mod event;
mod outbox;
mod webhook;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::Url;

pub use event::{Action, Actor, Event, RequestInfo, Source, Target};
pub use outbox::{Outlet, Pacing, Sink, pending};
pub use webhook::{SIGNATURE_HEADER, Webhook, signature};

use crate::metrics::Metrics;
use crate::storage::{self, BlobStore};

/// A webhook endpoint, as `config` resolves it.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    pub name: String,
    pub url: Url,
    pub headers: BTreeMap<String, String>,
    pub header_files: BTreeMap<String, PathBuf>,
    pub signing_key_file: Option<PathBuf>,
    pub timeout: Duration,
    pub backoff: Duration,
    pub ignored_media_types: HashSet<String>,
    pub ignored_actions: HashSet<String>,
    pub takeover_after: Duration,
}

const OUTBOX: &str = "_stowage/events";

/// The outbox directory of one webhook endpoint.
fn outbox_of(endpoint: &str) -> String {
    format!("{OUTBOX}/{endpoint}")
}

/// Records events and delivers them to the configured sinks: webhooks, replication rules.
pub struct Notifier {
    store: Arc<dyn BlobStore>,
    outlets: Vec<Arc<Outlet>>,
    instance: String,
    source_addr: String,
    scheme: &'static str,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("outlets", &self.outlets.len())
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The outlets of webhook `endpoints`.
pub fn webhooks(
    endpoints: &[EndpointSettings],
    metrics: Option<&Arc<Metrics>>,
) -> Result<Vec<Outlet>, String> {
    endpoints
        .iter()
        .map(|config| {
            let pacing = Pacing {
                backoff: config.backoff,
                takeover_after: config.takeover_after,
            };
            let webhook = Webhook::new(config.clone())?;
            Ok(Outlet::new(Arc::new(webhook), pacing, metrics.cloned()))
        })
        .collect()
}

impl Notifier {
    /// Starts draining `outlets` (one task each); `None` when there are none.
    pub fn start(
        outlets: Vec<Outlet>,
        store: Arc<dyn BlobStore>,
        source_addr: String,
        scheme: &'static str,
    ) -> Option<Arc<Self>> {
        if outlets.is_empty() {
            return None;
        }
        let instance = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let outlets: Vec<Arc<Outlet>> = outlets.into_iter().map(Arc::new).collect();
        for outlet in &outlets {
            tokio::spawn(outbox::drain(
                Arc::clone(outlet),
                Arc::clone(&store),
                instance.clone(),
            ));
        }
        Some(Arc::new(Self {
            store,
            outlets,
            instance,
            source_addr,
            scheme,
        }))
    }

    /// `https` or `http`, for the URLs in events.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The `source` of events recorded here.
    pub fn source(&self) -> Source {
        Source {
            addr: self.source_addr.clone(),
            instance_id: self.instance.clone(),
        }
    }

    /// Writes `event` to the outbox of every sink that wants it; once this returns, the
    /// event will be delivered even if this process dies.
    pub async fn record(&self, event: &Event) -> storage::Result<()> {
        let wanting: Vec<&Arc<Outlet>> = self.outlets.iter().filter(|o| o.wants(event)).collect();
        if wanting.is_empty() {
            return Ok(());
        }
        let body = Bytes::from(serde_json::to_vec(event).map_err(std::io::Error::other)?);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let name = format!("{nanos:020}-{}-{}", self.instance, event.id);
        let writes = wanting.iter().map(|outlet| {
            let key = format!("{}/{name}", outlet.outbox());
            let body = body.clone();
            async move { self.store.put(&key, body).await }
        });
        futures::future::try_join_all(writes).await?;
        for outlet in wanting {
            outlet.wake();
        }
        Ok(())
    }

    /// Waits until this replica's events are delivered, or `deadline` passes: on shutdown,
    /// the grace period goes to delivering what is pending.
    pub async fn drain(&self, deadline: tokio::time::Instant) {
        for outlet in &self.outlets {
            outlet.wake();
            let _ =
                tokio::time::timeout_at(deadline, outlet.idle(&self.instance, &self.store)).await;
        }
    }
}
