//! Kubernetes events about Registries.
//!
//! kube's [`Recorder`] merges an event into an earlier one with the same type, reason and action
//! (counting a repeat and keeping the first note), so "applied generation 8" would show as a
//! repeat of "applied generation 1". A note that differs is different news: each distinct note
//! gets a recorder of its own, so identical events still merge into one series while new ones
//! are recorded as such.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Whether `error` is the API server refusing to create anything in a namespace that is being
/// deleted.
pub fn namespace_terminating(error: &kube::Error) -> bool {
    let kube::Error::Api(status) = error else {
        return false;
    };
    status.code == 403
        && (status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
            || status.message.contains("because it is being terminated"))
}

/// As long as kube's recorder keeps an event to merge repeats into.
const MERGE_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Publishes events, one series per distinct (object, type, reason, note).
pub struct Events {
    client: Client,
    reporter: Reporter,
    recorders: Mutex<HashMap<String, (Recorder, Instant)>>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            recorders: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `note` about `regarding`; a failure to record it is logged, never fatal.
    /// Returns `false` when the namespace is being deleted, so takes no events any more.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) -> bool {
        let key = format!(
            "{}/{}/{}\u{0}{type_:?}\u{0}{reason}\u{0}{note}",
            regarding.namespace.as_deref().unwrap_or_default(),
            regarding.name.as_deref().unwrap_or_default(),
            regarding.uid.as_deref().unwrap_or_default(),
        );
        let recorder = self.recorder(key);
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        match recorder.publish(&event, regarding).await {
            Ok(()) => true,
            Err(error) if namespace_terminating(&error) => {
                tracing::debug!(%error, reason, "no event: the namespace is being deleted");
                false
            }
            Err(error) => {
                tracing::warn!(%error, reason, "could not record an event");
                true
            }
        }
    }

    /// The recorder for `key`, forgetting those idle past the merge window.
    fn recorder(&self, key: String) -> Recorder {
        let mut recorders = self
            .recorders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        recorders.retain(|_, (_, used)| now.duration_since(*used) < MERGE_WINDOW);
        let (recorder, used) = recorders.entry(key).or_insert_with(|| {
            (
                Recorder::new(self.client.clone(), self.reporter.clone()),
                now,
            )
        });
        *used = now;
        recorder.clone()
    }
}
