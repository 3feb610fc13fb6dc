//! `stowage purge-uploads`: removes upload sessions that were started long ago and never
//! finished, as Distribution's upload purging does, aborting their S3 multipart uploads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Report;
use crate::oci::RepositoryName;
use crate::storage::{self, BlobStore, layout};

/// How a purge runs.
#[derive(Debug, Clone)]
pub struct PurgeOptions {
    pub dry_run: bool,
    /// Sessions started longer ago than this are removed.
    pub older_than: Duration,
}

/// Removes stale upload sessions.
pub async fn purge_uploads(
    store: Arc<dyn BlobStore>,
    options: &PurgeOptions,
) -> storage::Result<Report> {
    let started = Instant::now();
    let counting = Arc::new(storage::Counting::new(store));
    let store: &dyn BlobStore = counting.as_ref();
    let cutoff = SystemTime::now()
        .checked_sub(options.older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);

    // (repository, upload id) → (bytes held, start time)
    let mut sessions: HashMap<(RepositoryName, String), (u64, Option<SystemTime>, SystemTime)> =
        HashMap::new();
    for object in store.walk(&layout::repositories_root()).await? {
        let parts: Vec<&str> = object.key.split('/').collect();
        let Some(split) = parts.iter().position(|p| *p == "_uploads") else {
            continue;
        };
        let (Ok(repository), Some(id)) = (
            parts[..split].join("/").parse::<RepositoryName>(),
            parts.get(split + 1),
        ) else {
            continue;
        };
        let entry =
            sessions
                .entry((repository, (*id).to_owned()))
                .or_insert((0, None, object.modified));
        entry.0 += object.size;
        entry.2 = entry.2.min(object.modified);
        if parts.get(split + 2) == Some(&"startedat") {
            let key = format!("{}/{}", layout::repositories_root(), object.key);
            entry.1 = read_started_at(store, &key).await?;
        }
    }

    let mut report = Report {
        dry_run: options.dry_run,
        ..Report::default()
    };
    for ((repository, id), (bytes, started_at, oldest)) in sessions {
        // Distribution's rule: the recorded start time, or the files' age when it is missing.
        if started_at.unwrap_or(oldest) >= cutoff {
            continue;
        }
        report.deleted.push(format!("upload {repository}/{id}"));
        report.uploads_deleted += 1;
        report.bytes_freed += bytes;
        if !options.dry_run {
            store
                .abort_resumable(&layout::upload_data(&repository, &id))
                .await?;
            store.delete(&layout::upload_dir(&repository, &id)).await?;
        }
    }
    report.deleted.sort();
    report.duration_seconds = started.elapsed().as_secs_f64();
    report.storage_requests = counting.requests();
    Ok(report)
}

async fn read_started_at(store: &dyn BlobStore, key: &str) -> storage::Result<Option<SystemTime>> {
    let started = storage::read_if_present(store, key, 1024).await?;
    Ok(started
        .as_deref()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| humantime::parse_rfc3339_weak(s.trim()).ok()))
}
