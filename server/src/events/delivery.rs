//! One endpoint's delivery: drain its outbox in time order, in batches, with the signature and
//! headers it wants; back off when it fails, and count what happens.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hmac::{KeyInit, Mac};
use reqwest::header;
use tokio::sync::Notify;

use super::EndpointSettings;
use super::event::{EVENTS_MEDIA_TYPE, Envelope, Event};
use super::outbox;
use crate::metrics::Metrics;
use crate::storage::{self, BlobStore};

/// Events sent in one request at most.
const BATCH: usize = 50;
/// How often the outbox is looked at when nothing wakes the drainer: for events other replicas
/// left behind.
const SCAN_INTERVAL: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-stowage-signature";

/// An endpoint and its client.
pub struct Endpoint {
    config: EndpointSettings,
    http: reqwest::Client,
    wake: Notify,
    /// Cuts a backoff short: the replica is stopping and wants its events out.
    hurry: Notify,
    metrics: Option<Arc<Metrics>>,
}

impl Endpoint {
    pub fn new(config: EndpointSettings, metrics: Option<Arc<Metrics>>) -> Result<Self, String> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("stowage/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .build()
            .map_err(|err| format!("endpoint {}: {err}", config.name))?;
        Ok(Self {
            config,
            http,
            wake: Notify::new(),
            hurry: Notify::new(),
            metrics,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the endpoint takes events like `event`.
    pub fn wants(&self, event: &Event) -> bool {
        !self.config.ignored_actions.contains(event.action.as_str())
            && !event
                .target
                .media_type
                .as_ref()
                .is_some_and(|media_type| self.config.ignored_media_types.contains(media_type))
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Returns once none of `instance`'s events wait in the outbox, retrying without backoff
    /// meanwhile.
    pub async fn idle(&self, instance: &str, store: &Arc<dyn BlobStore>) {
        loop {
            self.hurry.notify_one();
            let names = list(store.as_ref(), self.name()).await.unwrap_or_default();
            if !names.iter().any(|name| owner(name) == Some(instance)) {
                return;
            }
            self.wake();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Delivers one batch of what is due; whether more is due.
    async fn deliver_due(&self, store: &dyn BlobStore, instance: &str) -> Result<bool, String> {
        let names = list(store, self.name())
            .await
            .map_err(|err| err.to_string())?;
        let now = unix_nanos(SystemTime::now());
        let age = |name: &str| {
            let written = name
                .split('-')
                .next()
                .and_then(|n| n.parse::<u128>().ok())
                .unwrap_or(0);
            Duration::from_nanos(u64::try_from(now.saturating_sub(written)).unwrap_or(u64::MAX))
        };
        if let Some(metrics) = &self.metrics {
            let oldest = names.first().map_or(Duration::ZERO, |name| age(name));
            metrics.events_pending(self.name(), names.len(), oldest);
        }
        let due: Vec<&String> = names
            .iter()
            .filter(|name| owner(name) == Some(instance) || age(name) > self.config.takeover_after)
            .take(BATCH)
            .collect();
        if due.is_empty() {
            return Ok(false);
        }
        let mut events = Vec::with_capacity(due.len());
        let mut keys = Vec::with_capacity(due.len());
        for name in &due {
            let key = format!("{}/{name}", outbox(self.name()));
            match storage::read_small(store, &key, 1 << 20).await {
                Ok(bytes) => match serde_json::from_slice::<Event>(&bytes) {
                    Ok(event) => {
                        events.push(event);
                        keys.push(key);
                    }
                    Err(err) => {
                        tracing::warn!(endpoint = self.name(), key, %err, "dropping an unreadable event");
                        keys.push(key);
                    }
                },
                // Delivered meanwhile by another replica.
                Err(storage::Error::NotFound) => {}
                Err(err) => return Err(err.to_string()),
            }
        }
        if !events.is_empty() {
            self.send(&events).await?;
        }
        for batch in keys.chunks(storage::DELETE_BATCH) {
            store
                .delete_objects(batch)
                .await
                .map_err(|err| err.to_string())?;
        }
        if let Some(metrics) = &self.metrics {
            metrics.events_delivered(self.name(), events.len());
        }
        Ok(due.len() == BATCH || names.len() > due.len())
    }

    async fn send(&self, events: &[Event]) -> Result<(), String> {
        let body = serde_json::to_vec(&Envelope { events }).map_err(|err| err.to_string())?;
        let mut request = self
            .http
            .post(self.config.url.clone())
            .header(header::CONTENT_TYPE, EVENTS_MEDIA_TYPE);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        for (name, file) in &self.config.header_files {
            let value = std::fs::read_to_string(file)
                .map_err(|err| format!("header {name} from {}: {err}", file.display()))?;
            request = request.header(name, value.trim_end());
        }
        if let Some(file) = &self.config.signing_key_file {
            let key = std::fs::read(file).map_err(|err| format!("{}: {err}", file.display()))?;
            request = request.header(SIGNATURE_HEADER, signature(trim_newline(&key), &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|err| format!("{}: {err}", self.config.url))?;
        if !response.status().is_success() {
            return Err(format!(
                "{} answered {}",
                self.config.url,
                response.status()
            ));
        }
        Ok(())
    }
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes a key of any length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn trim_newline(key: &[u8]) -> &[u8] {
    key.strip_suffix(b"\n").unwrap_or(key)
}

/// The replica that wrote an outbox entry: `<time>-<replica>-<event id>`.
fn owner(name: &str) -> Option<&str> {
    name.split('-').nth(1)
}

fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}

async fn list(store: &dyn BlobStore, endpoint: &str) -> storage::Result<Vec<String>> {
    match store.list(&outbox(endpoint)).await {
        Ok(names) => Ok(names),
        Err(storage::Error::NotFound) => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// Delivers `endpoint`'s outbox for as long as the process lives.
pub async fn drain(endpoint: Arc<Endpoint>, store: Arc<dyn BlobStore>, instance: String) {
    let mut backoff: Option<Duration> = None;
    loop {
        match backoff {
            Some(wait) => {
                let _ = tokio::time::timeout(wait, endpoint.hurry.notified()).await;
            }
            None => {
                let _ = tokio::time::timeout(SCAN_INTERVAL, endpoint.wake.notified()).await;
            }
        }
        match endpoint.deliver_due(store.as_ref(), &instance).await {
            Ok(more) => {
                backoff = None;
                if more {
                    endpoint.wake();
                }
            }
            Err(err) => {
                let next = backoff.map_or(endpoint.config.backoff, |b| (b * 2).min(MAX_BACKOFF));
                tracing::warn!(endpoint = endpoint.name(), error = %err, retry_in = ?next, "event delivery failed");
                if let Some(metrics) = &endpoint.metrics {
                    metrics.events_failed(endpoint.name(), backoff.is_some());
                }
                backoff = Some(next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(trim_newline(b"key\n"), b"key");
    }

    #[test]
    fn outbox_names_carry_their_owner() {
        assert_eq!(
            owner("00000000001764250000-abc123def456-5f0c-4e"),
            Some("abc123def456")
        );
    }
}
