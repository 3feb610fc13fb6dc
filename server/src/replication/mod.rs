//! Replication: images pushed here copied to other registries, driven by the event outbox and
//! repaired by a scheduled reconciliation.
//!
//! # On push
//! Each rule is a [`Sink`](crate::events::Sink) with its own outbox
//! (`_stowage/replication/<rule>/outbox`): a manifest push, and with `deletes` a delete, is in
//! that outbox before the client hears its answer, and any replica delivers it, so it
//! happens at least once even when the replica that took the push dies. An event is a hint,
//! not an instruction: delivering it copies what its tag names *now* (and checks again after
//! the copy), so events delivered twice, late or out of order across replicas still leave the
//! destination with the newest state. Referrers (signatures, SBOMs, attestations) travel with
//! their subject, and one pushed later follows on its own.
//!
//! # On a schedule
//! [`reconcile`] compares every tag the rule covers with the destination and sends what is
//! missing or different, blobs included, so a destination wiped or edited by hand is repaired.
//!
//! # What is sent
//! The copy engine ([`crate::transfer`]) asks the destination before sending each blob and
//! manifest, uploads in chunks and records each chunk in this registry's storage, so a replica
//! that takes over resumes another's upload. Each rule has its own bandwidth limit.

mod reconcile;
mod records;
mod sink;
mod source;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use globset::GlobMatcher;
use reqwest::Url;

pub use reconcile::{Change, Reconciled, reconcile, reconcile_on_schedule};
pub use sink::Replicator;

use crate::client::{ClientOptions, CredentialSource, RegistryClient};
use crate::events::{Outlet, Pacing};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::transfer::{Display, Progress, RegistryRepository, Uploads};
use records::StoredRecords;

/// One replication rule, as `config` resolves it.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    pub name: String,
    /// The destination registry: `https://host[:port]`.
    pub url: Url,
    /// Put before each repository's name at the destination (`mirror/` → `mirror/team/app`).
    pub prefix: String,
    /// Repositories replicated: glob patterns; every repository when empty.
    pub repositories: Vec<String>,
    /// Tags replicated: glob patterns; every tag when empty.
    pub tags: Vec<String>,
    /// Also delete there what is deleted here.
    pub deletes: bool,
    pub credentials: CredentialSource,
    pub tls_verify: bool,
    /// Certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Bytes per second read for this rule, over all its copies together.
    pub bandwidth: Option<u64>,
    /// Blobs sent at once.
    pub jobs: usize,
    /// How often every tag is compared with the destination; never when unset.
    pub reconcile_every: Option<Duration>,
    /// Give up on a destination that sends nothing for this long.
    pub timeout: Duration,
    /// Chunks of uploads.
    pub chunk_size: Option<u64>,
    pub pacing: Pacing,
}

/// Why a rule cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("replication rule {rule}: {problem}")]
    Invalid { rule: String, problem: String },
}

/// A rule ready to replicate: its patterns compiled, its destination's client.
pub struct Rule {
    pub settings: RuleSettings,
    repositories: Vec<GlobMatcher>,
    tags: Vec<GlobMatcher>,
    client: Arc<RegistryClient>,
    host: String,
    /// Paces every copy of the rule to its bandwidth, and counts what was sent.
    progress: Arc<Progress>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.settings.name)
            .field("url", &self.settings.url.as_str())
            .finish_non_exhaustive()
    }
}

/// How often credential files are checked for a new password (a rotated token).
const CREDENTIALS_INTERVAL: Duration = Duration::from_secs(10);

impl Rule {
    pub fn new(settings: RuleSettings) -> Result<Self, Error> {
        let invalid = |problem: String| Error::Invalid {
            rule: settings.name.clone(),
            problem,
        };
        let compile = |patterns: &[String]| {
            patterns
                .iter()
                .map(|p| {
                    crate::oci::pattern::glob(p).map_err(|err| invalid(format!("{p:?}: {err}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let repositories = compile(&settings.repositories)?;
        let tags = compile(&settings.tags)?;
        let credentials = settings
            .credentials
            .watch(CREDENTIALS_INTERVAL)
            .map_err(|err| invalid(err.to_string()))?;
        let options = ClientOptions {
            tls_verify: settings.tls_verify,
            ca_file: settings.ca_file.clone(),
            credentials,
            read_timeout: settings.timeout,
            deadline: None,
        };
        let client = RegistryClient::for_url(&settings.url, options)
            .map_err(|err| invalid(err.to_string()))?;
        Ok(Self {
            host: client.host().to_owned(),
            client: Arc::new(client),
            repositories,
            tags,
            progress: Progress::new(Display::Quiet, settings.bandwidth),
            settings,
        })
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn covers_repository(&self, repository: &str) -> bool {
        self.repositories.is_empty() || self.repositories.iter().any(|g| g.is_match(repository))
    }

    pub fn covers_tag(&self, tag: &str) -> bool {
        self.tags.is_empty() || self.tags.iter().any(|g| g.is_match(tag))
    }

    /// Where the rule keeps its outbox, its upload records and its last reconciliation.
    fn state_dir(&self) -> String {
        format!("_stowage/replication/{}", self.settings.name)
    }

    fn outbox(&self) -> String {
        format!("{}/outbox", self.state_dir())
    }

    /// `repository`'s counterpart at the destination, to send to.
    fn destination(&self, repository: &str, registry: &Registry) -> RegistryRepository {
        let records = StoredRecords::new(
            Arc::clone(registry.store()),
            format!("{}/uploads", self.state_dir()),
        );
        let uploads = Uploads {
            chunk_size: self.settings.chunk_size,
            resume: Some(Arc::new(records)),
        };
        RegistryRepository::destination(
            Arc::clone(&self.client),
            &self.host,
            &format!("{}{repository}", self.settings.prefix),
            uploads,
        )
    }
}

/// The rules of `settings`, checked.
pub fn rules(settings: &[RuleSettings]) -> Result<Vec<Arc<Rule>>, Error> {
    settings
        .iter()
        .map(|s| Rule::new(s.clone()).map(Arc::new))
        .collect()
}

/// An outlet per rule, for the registry's notifier to record events into.
pub fn outlets(
    rules: &[Arc<Rule>],
    registry: &Registry,
    metrics: Option<&Arc<Metrics>>,
) -> Vec<Outlet> {
    rules
        .iter()
        .map(|rule| {
            let replicator = Replicator::new(Arc::clone(rule), registry.clone(), metrics.cloned());
            Outlet::new(Arc::new(replicator), rule.settings.pacing, metrics.cloned())
        })
        .collect()
}
