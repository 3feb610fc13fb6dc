//! Registry events delivered to webhooks, in CNCF Distribution's format.
//!
//! # Durable once the request succeeded
//! Distribution keeps pending events in memory and loses them when it dies. Here, an event is
//! written to storage, one small object per endpoint in an outbox
//! (`_stowage/events/<endpoint>/<time>-<replica>-<id>`), before the response of a push, delete or
//! mount is sent. Each replica drains its own events at once, and any replica takes over events
//! older than `takeover-after` (a replica that died, or a receiver that was down), so a SIGKILL
//! right after a push loses nothing. Delivery is at least once; the event `id` lets receivers
//! drop duplicates. Pull events are written just after the response, off the pull's path.

mod delivery;
pub mod event;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::Url;

pub use delivery::{SIGNATURE_HEADER, signature};
pub use event::{Action, Actor, Event, RequestInfo, Source, Target};

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

/// The outbox directory of one endpoint.
fn outbox(endpoint: &str) -> String {
    format!("{OUTBOX}/{endpoint}")
}

/// Records events and delivers them to the configured endpoints.
pub struct Notifier {
    store: Arc<dyn BlobStore>,
    endpoints: Vec<Arc<delivery::Endpoint>>,
    instance: String,
    source_addr: String,
    scheme: &'static str,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("endpoints", &self.endpoints.len())
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts delivering to `endpoints` (one task each); `None` when there are none.
    pub fn start(
        endpoints: &[EndpointSettings],
        store: Arc<dyn BlobStore>,
        source_addr: String,
        scheme: &'static str,
        metrics: Option<&Arc<Metrics>>,
    ) -> Result<Option<Arc<Self>>, String> {
        if endpoints.is_empty() {
            return Ok(None);
        }
        let instance = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let endpoints = endpoints
            .iter()
            .map(|config| delivery::Endpoint::new(config.clone(), metrics.cloned()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        for endpoint in &endpoints {
            tokio::spawn(delivery::drain(
                Arc::clone(endpoint),
                Arc::clone(&store),
                instance.clone(),
            ));
        }
        Ok(Some(Arc::new(Self {
            store,
            endpoints,
            instance,
            source_addr,
            scheme,
        })))
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

    /// Writes `event` to the outbox of every endpoint that wants it; once this returns, the
    /// event will be delivered even if this process dies.
    pub async fn record(&self, event: &Event) -> storage::Result<()> {
        let wanting: Vec<&Arc<delivery::Endpoint>> =
            self.endpoints.iter().filter(|e| e.wants(event)).collect();
        if wanting.is_empty() {
            return Ok(());
        }
        let body = Bytes::from(serde_json::to_vec(event).map_err(std::io::Error::other)?);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let name = format!("{nanos:020}-{}-{}", self.instance, event.id);
        let writes = wanting.iter().map(|endpoint| {
            let key = format!("{}/{name}", outbox(endpoint.name()));
            let body = body.clone();
            async move { self.store.put(&key, body).await }
        });
        futures::future::try_join_all(writes).await?;
        for endpoint in wanting {
            endpoint.wake();
        }
        Ok(())
    }

    /// Waits until this replica's events are delivered, or `deadline` passes: on shutdown,
    /// the grace period goes to delivering what is pending.
    pub async fn drain(&self, deadline: tokio::time::Instant) {
        for endpoint in &self.endpoints {
            endpoint.wake();
            let _ =
                tokio::time::timeout_at(deadline, endpoint.idle(&self.instance, &self.store)).await;
        }
    }
}
