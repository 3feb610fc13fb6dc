//! Blob upload sessions, independent of HTTP and of the storage backend.
//!
//! A session's state lives only in its signed token (see [`token`]): bytes go to a resumable
//! write in storage, the running digest is updated while they stream past, and finishing checks
//! the digest before the blob becomes visible. No process memory is needed between requests.

pub mod token;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use crate::oci::{Algorithm, Digest, DigestHasher, RepositoryName};
use crate::storage::{self, BlobStore, ByteStream, layout};
pub use token::{SecretKey, TokenError, TokenKeys, UploadState};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an upload request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The session is gone (finished, cancelled or purged).
    #[error("upload session unknown")]
    Unknown,
    /// The token is valid but another request has moved the upload on since it was issued.
    #[error("upload state is out of date; another request has written to this upload since")]
    Stale,
    #[error("another request is writing to this upload")]
    Busy,
    #[error("provided digest did not match uploaded content")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("upload was started for {started:?}, cannot finish with a {requested:?} digest")]
    AlgorithmMismatch {
        started: Algorithm,
        requested: Algorithm,
    },
    #[error("request body failed: {0}")]
    Body(#[source] io::Error),
    #[error(transparent)]
    Storage(storage::Error),
}

impl From<storage::Error> for Error {
    fn from(err: storage::Error) -> Self {
        match err {
            storage::Error::NotFound => Self::Unknown,
            storage::Error::Stale => Self::Stale,
            storage::Error::Busy => Self::Busy,
            storage::Error::Body(err) => Self::Body(err),
            other => Self::Storage(other),
        }
    }
}

/// Starts, continues, finishes and cancels upload sessions.
#[derive(Debug, Clone)]
pub struct Uploads {
    store: Arc<dyn BlobStore>,
    keys: TokenKeys,
    token_ttl: Duration,
}

impl Uploads {
    pub fn new(store: Arc<dyn BlobStore>, keys: TokenKeys, token_ttl: Duration) -> Self {
        Self {
            store,
            keys,
            token_ttl,
        }
    }

    /// Opens a new session in `repository` whose digest will be computed with `algorithm`.
    pub async fn start(
        &self,
        repository: &RepositoryName,
        algorithm: Algorithm,
    ) -> Result<UploadState> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = SystemTime::now();
        // `startedat` is what upload purging (ours and Distribution's) reads to find old sessions.
        let started = humantime::format_rfc3339_seconds(now).to_string();
        self.store
            .put(&layout::upload_started_at(repository, &id), started.into())
            .await?;
        let write = self
            .store
            .create_resumable(&layout::upload_data(repository, &id))
            .await?;
        let started_at = token::unix_seconds(now);
        Ok(UploadState {
            repository: repository.to_string(),
            id,
            started_at,
            expires_at: started_at + self.token_ttl.as_secs(),
            algorithm,
            hash_state: DigestHasher::new(algorithm).save(),
            write,
        })
    }

    /// The token for `state`, to hand to the client.
    pub fn seal(&self, state: &UploadState) -> String {
        self.keys.seal(state)
    }

    /// The state in a client's token, checked against the upload the URL names.
    pub fn open(&self, token: &str, repository: &RepositoryName, id: &str) -> Result<UploadState> {
        Ok(self.keys.open(token, repository, id, SystemTime::now())?)
    }

    /// Appends `body` to the upload, hashing it on the way to storage. On error the old state
    /// stays valid, so the client can retry the same request.
    pub async fn append(&self, state: &UploadState, body: ByteStream) -> Result<UploadState> {
        let hasher = DigestHasher::restore(state.algorithm, &state.hash_state)
            .ok_or(TokenError::Malformed)?;
        let hasher = Arc::new(Mutex::new(hasher));
        let hashing = {
            let hasher = Arc::clone(&hasher);
            body.map(move |chunk| {
                if let Ok(bytes) = &chunk {
                    lock(&hasher).update(bytes);
                }
                chunk
            })
            .boxed()
        };
        let key = layout::upload_data(&self.repository(state)?, &state.id);
        let write = self.store.append(&key, &state.write, hashing).await?;
        let hash_state = lock(&hasher).save();
        let expires_at = token::unix_seconds(SystemTime::now()) + self.token_ttl.as_secs();
        Ok(UploadState {
            write,
            hash_state,
            expires_at,
            ..state.clone()
        })
    }

    /// Checks the upload against `expected` and, if it matches, makes it the blob `expected` in
    /// the upload's repository. A mismatch ends the session: its bytes can never become a blob.
    pub async fn finish(&self, state: &UploadState, expected: &Digest) -> Result<()> {
        if expected.algorithm() != state.algorithm {
            return Err(Error::AlgorithmMismatch {
                started: state.algorithm,
                requested: expected.algorithm(),
            });
        }
        let actual = DigestHasher::restore(state.algorithm, &state.hash_state)
            .ok_or(TokenError::Malformed)?
            .finish();
        let repository = self.repository(state)?;
        if &actual != expected {
            self.cancel(state).await?;
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let blob = layout::blob_data(expected);
        match self.store.stat(&blob).await {
            // Content addressing: the same digest is the same bytes, so skip the copy.
            Ok(_) => {}
            Err(storage::Error::NotFound) => {
                let key = layout::upload_data(&repository, &state.id);
                self.store
                    .commit_resumable(&key, &state.write, &blob)
                    .await?;
            }
            Err(err) => return Err(err.into()),
        }
        let link = layout::layer_link(&repository, expected);
        self.store
            .put(&link, layout::link_content(expected))
            .await?;
        self.store
            .delete(&layout::upload_dir(&repository, &state.id))
            .await?;
        Ok(())
    }

    /// Confirms the session still exists: a token outlives a finished, cancelled or purged one.
    pub async fn check_alive(&self, state: &UploadState) -> Result<()> {
        let repository = self.repository(state)?;
        self.store
            .stat(&layout::upload_started_at(&repository, &state.id))
            .await?;
        Ok(())
    }

    /// Ends the session and removes its bytes.
    pub async fn cancel(&self, state: &UploadState) -> Result<()> {
        let repository = self.repository(state)?;
        let dir = layout::upload_dir(&repository, &state.id);
        self.store.list(&dir).await?; // NotFound → Unknown: nothing to cancel.
        self.store
            .abort_resumable(&layout::upload_data(&repository, &state.id))
            .await?;
        self.store.delete(&dir).await?;
        Ok(())
    }

    fn repository(&self, state: &UploadState) -> Result<RepositoryName> {
        state
            .repository
            .parse()
            .map_err(|_| TokenError::Malformed.into())
    }
}

fn lock(hasher: &Mutex<DigestHasher>) -> std::sync::MutexGuard<'_, DigestHasher> {
    hasher
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
