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
use crate::storage::{self, BlobStore, ByteStream, Checkpoint, WriteState, layout};
pub use token::{SecretKey, TokenError, TokenKeys, UploadState};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A recorded upload state is a few hundred bytes; anything larger is not one of ours.
const MAX_RECORDED_STATE: u64 = 64 * 1024;

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
    #[error("provided digest {expected} did not match uploaded content ({actual})")]
    DigestMismatch { expected: Digest, actual: Digest },
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
    /// stays valid, so the client can retry the same request. For a request that finishes the
    /// upload at once (nothing to recover if its answer is lost).
    pub async fn append(&self, state: &UploadState, body: ByteStream) -> Result<UploadState> {
        self.append_inner(state, body, false).await
    }

    /// As [`Uploads::append`] for a chunk that leaves the upload open: the new state is also
    /// recorded in storage, at the append's commit point, so a client that loses the response
    /// carrying it can recover it with [`Uploads::status`].
    pub async fn append_recorded(
        &self,
        state: &UploadState,
        body: ByteStream,
    ) -> Result<UploadState> {
        self.append_inner(state, body, true).await
    }

    async fn append_inner(
        &self,
        state: &UploadState,
        body: ByteStream,
        record: bool,
    ) -> Result<UploadState> {
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
        let repository = self.repository(state)?;
        let expires_at = self.fresh_expiry();
        let recorder = RecordState {
            store: &*self.store,
            key: layout::upload_latest_state(&repository, &state.id),
            state,
            hasher: &hasher,
            expires_at,
        };
        let checkpoint: Option<&dyn Checkpoint> = if record { Some(&recorder) } else { None };
        let key = layout::upload_data(&repository, &state.id);
        let write = self
            .store
            .append_with_checkpoint(&key, &state.write, hashing, checkpoint)
            .await?;
        Ok(recorder.next(write))
    }

    /// Where the upload really stands, asked with any of its tokens: the latest recorded state,
    /// or the token's own, whichever storage confirms as current. So a client whose `PATCH`
    /// response was lost (a replica died after storing the chunk) resumes from the real offset.
    ///
    /// # Errors
    /// [`Error::Unknown`] when the session is gone, or (only after concurrent requests on one
    /// upload, which no client sends) when no known state is current: the client starts again.
    pub async fn status(&self, state: &UploadState) -> Result<UploadState> {
        let repository = self.repository(state)?;
        let recorded = storage::read_if_present(
            &*self.store,
            &layout::upload_latest_state(&repository, &state.id),
            MAX_RECORDED_STATE,
        )
        .await?
        .and_then(|json| serde_json::from_slice::<UploadState>(&json).ok())
        .filter(|recorded| recorded.repository == state.repository && recorded.id == state.id);
        let data = layout::upload_data(&repository, &state.id);
        for candidate in recorded.iter().chain(std::iter::once(state)) {
            if self.store.is_current(&data, &candidate.write).await? {
                return Ok(UploadState {
                    expires_at: self.fresh_expiry(),
                    ..candidate.clone()
                });
            }
        }
        self.check_alive(state).await?;
        tracing::warn!(
            upload = %state.id,
            "no recorded state of the upload is current; the client must start it again"
        );
        Err(Error::Unknown)
    }

    /// Checks the upload against `expected` and, if it matches, makes its bytes the content of
    /// blob `expected`; true when it wrote them, false when the blob was already stored. A
    /// mismatch ends the session: its bytes can never become a blob. The session stays until
    /// [`Uploads::close`], so the bytes can be committed again if the blob goes meanwhile.
    ///
    /// Linking the blob into the repository is the registry's part (`Registry::finish_upload`).
    ///
    /// The digest computed while the bytes streamed in settles it when `expected` uses the same
    /// algorithm; for another algorithm, the stored bytes are read back and hashed.
    pub async fn commit(&self, state: &UploadState, expected: &Digest) -> Result<bool> {
        let repository = self.repository(state)?;
        let data = layout::upload_data(&repository, &state.id);
        let blob = layout::blob_data(expected);
        if expected.algorithm() == state.algorithm {
            let actual = DigestHasher::restore(state.algorithm, &state.hash_state)
                .ok_or(TokenError::Malformed)?
                .finish();
            if &actual != expected {
                self.cancel(state).await?;
                return Err(Error::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            match self.store.stat(&blob).await {
                // Content addressing: the same digest is the same bytes, so skip the copy.
                Ok(_) => return Ok(false),
                Err(storage::Error::NotFound) => {
                    self.store
                        .commit_resumable(&data, &state.write, &blob)
                        .await?;
                }
                Err(err) => return Err(err.into()),
            }
        } else {
            let staged = layout::upload_staged(&repository, &state.id);
            self.store
                .commit_resumable(&data, &state.write, &staged)
                .await?;
            let actual = self.digest_of(&staged, expected.algorithm()).await?;
            if &actual != expected {
                self.store
                    .delete(&layout::upload_dir(&repository, &state.id))
                    .await?;
                return Err(Error::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            self.store.rename(&staged, &blob).await?;
        }
        Ok(true)
    }

    /// Ends a session whose blob is linked. The blob is pushed: a session left behind is an
    /// ordinary stale upload, which purging removes, and no reason to tell the client its push
    /// failed.
    pub async fn close(&self, state: &UploadState) {
        let Ok(repository) = self.repository(state) else {
            return;
        };
        if let Err(err) = self
            .store
            .delete(&layout::upload_dir(&repository, &state.id))
            .await
        {
            tracing::warn!(upload = %state.id, error = %err, "a finished upload's session was left for purging");
        }
    }

    /// Confirms the session still exists: a token outlives a finished, cancelled or purged one.
    async fn check_alive(&self, state: &UploadState) -> Result<()> {
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

    /// The `algorithm` digest of the object at `key`, streamed from storage.
    async fn digest_of(&self, key: &str, algorithm: Algorithm) -> Result<Digest> {
        let mut hasher = DigestHasher::new(algorithm);
        let mut stream = self.store.get(key, None).await?;
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk.map_err(storage::Error::Io)?);
        }
        Ok(hasher.finish())
    }

    /// When a token issued now expires.
    fn fresh_expiry(&self) -> u64 {
        token::unix_seconds(SystemTime::now()) + self.token_ttl.as_secs()
    }

    fn repository(&self, state: &UploadState) -> Result<RepositoryName> {
        state
            .repository
            .parse()
            .map_err(|_| TokenError::Malformed.into())
    }
}

/// Records an upload's next state beside its data, at the commit point of the append that
/// makes it (the hash state is final by then: the body has been read to its end).
struct RecordState<'a> {
    store: &'a dyn BlobStore,
    key: String,
    state: &'a UploadState,
    hasher: &'a Mutex<DigestHasher>,
    expires_at: u64,
}

impl RecordState<'_> {
    fn next(&self, write: WriteState) -> UploadState {
        UploadState {
            write,
            hash_state: lock(self.hasher).save(),
            expires_at: self.expires_at,
            ..self.state.clone()
        }
    }
}

#[async_trait::async_trait]
impl Checkpoint for RecordState<'_> {
    async fn save(&self, next: &WriteState) -> storage::Result<()> {
        // Plain data with string keys: serializing cannot fail.
        let json = serde_json::to_vec(&self.next(next.clone())).unwrap_or_default();
        self.store.put(&self.key, json.into()).await
    }
}

fn lock(hasher: &Mutex<DigestHasher>) -> std::sync::MutexGuard<'_, DigestHasher> {
    hasher
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
