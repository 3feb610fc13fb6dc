//! Registry events from API requests: the request's part of each event, and recording it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, Method, header};

use super::ApiError;
use super::state::AppState;
use crate::events::{Action, Actor, Event, RequestInfo, Target};
use crate::oci::{Digest, RepositoryName};

/// What an event says of the request that caused it.
pub fn request_info(method: &Method, headers: &HeaderMap, peer: Option<SocketAddr>) -> RequestInfo {
    let header = |name: &header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    RequestInfo {
        id,
        addr: peer.map(|p| p.to_string()).unwrap_or_default(),
        host: header(&header::HOST),
        method: method.to_string(),
        useragent: header(&header::USER_AGENT),
    }
}

/// Who caused an event, and with which request; empty when events are off.
#[derive(Debug, Default)]
pub struct Origin {
    pub request: RequestInfo,
    /// The caller's name; `None` for anonymous callers.
    pub actor: Option<String>,
}

impl AppState {
    /// Records an event about `target`, when events are on. Push, delete and mount events are
    /// in storage before the response is sent (a failure to record fails the request, which
    /// the client retries); pull events are recorded off the pull's path.
    pub(super) async fn notify(
        &self,
        origin: &Origin,
        action: Action,
        target: Target,
    ) -> Result<(), ApiError> {
        let Some(notifier) = &self.events else {
            return Ok(());
        };
        let event = Event::now(
            action,
            target,
            origin.request.clone(),
            Actor {
                name: origin.actor.clone(),
            },
            notifier.source(),
        );
        if action == Action::Pull {
            let notifier = Arc::clone(notifier);
            tokio::spawn(async move {
                if let Err(err) = notifier.record(&event).await {
                    tracing::warn!(%err, "a pull event was not recorded");
                }
            });
            return Ok(());
        }
        notifier.record(&event).await?;
        Ok(())
    }

    /// Where `digest` can be fetched, as the client addressed this registry.
    pub(super) fn url_of(
        &self,
        origin: &Origin,
        name: &RepositoryName,
        kind: &str,
        digest: &Digest,
    ) -> Option<String> {
        let scheme = self.events.as_ref()?.scheme();
        Some(format!(
            "{scheme}://{}/v2/{name}/{kind}/{digest}",
            origin.request.host
        ))
    }

    /// The event target of a blob of `size` bytes.
    pub(super) fn blob_target(
        &self,
        origin: &Origin,
        name: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Target {
        Target {
            media_type: Some("application/octet-stream".to_owned()),
            digest: Some(digest.to_string()),
            size: Some(size),
            length: Some(size),
            repository: name.to_string(),
            url: self.url_of(origin, name, "blobs", digest),
            ..Target::default()
        }
    }
}
