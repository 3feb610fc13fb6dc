//! Interrupted uploads to a destination, recorded in this registry's storage: the replica that
//! takes over a replication another replica began resumes its upload from the destination's
//! offset instead of sending the blob again.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::Url;

use crate::storage::{self, BlobStore};
use crate::transfer::{ResumeRecords, Saved};

/// Records under `<dir>/<key>`.
pub struct StoredRecords {
    store: Arc<dyn BlobStore>,
    dir: String,
}

impl StoredRecords {
    pub fn new(store: Arc<dyn BlobStore>, dir: String) -> Self {
        Self { store, dir }
    }

    fn key(&self, key: &str) -> String {
        format!("{}/{key}", self.dir)
    }
}

#[async_trait]
impl ResumeRecords for StoredRecords {
    async fn load(&self, key: &str) -> Option<Url> {
        let body = storage::read_small(self.store.as_ref(), &self.key(key), 64 << 10)
            .await
            .ok()?;
        let saved: Saved = serde_json::from_slice(&body).ok()?;
        Url::parse(&saved.location).ok()
    }

    async fn save(&self, key: &str, location: &Url, offset: u64) {
        let saved = Saved {
            location: location.to_string(),
            offset,
        };
        let Ok(body) = serde_json::to_vec(&saved) else {
            return;
        };
        if let Err(err) = self.store.put(&self.key(key), Bytes::from(body)).await {
            tracing::debug!(%err, "cannot record an upload for resuming");
        }
    }

    async fn forget(&self, key: &str) {
        let _ = self.store.delete_objects(&[self.key(key)]).await;
    }
}
