//! What a registry keeps no matter who asks, what it lets go and how much it holds: immutable
//! tags, retention rules and quotas. Pure: rules, matching and decisions; the HTTP API enforces
//! immutable tags, the registry quotas, and `stowage retention` applies retention.

mod immutable;
mod quota;
pub mod retention;

pub use immutable::ImmutableTags;
pub use quota::{Quota, QuotaScope};
pub use retention::{Retention, RetentionRule};

/// The policies in force.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    immutable: Vec<ImmutableTags>,
    retention: Retention,
    quotas: Vec<Quota>,
}

/// Compiles a rule's glob patterns: `*` stays within a path segment, `**` crosses them, as in
/// the access policy's rules; `invalid` says what is wrong with one.
fn compile(
    patterns: &[String],
    invalid: impl Fn(String) -> Error,
) -> Result<Vec<globset::GlobMatcher>, Error> {
    patterns
        .iter()
        .map(|pattern| {
            crate::oci::pattern::glob(pattern).map_err(|err| invalid(format!("{pattern:?}: {err}")))
        })
        .collect()
}

/// A rule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{kind} rule {rule:?}: {problem}")]
    Invalid {
        kind: &'static str,
        rule: String,
        problem: String,
    },
}

impl Policies {
    pub fn new(immutable: Vec<ImmutableTags>, retention: Retention) -> Self {
        Self {
            immutable,
            retention,
            quotas: Vec::new(),
        }
    }

    /// The same policies, with `quotas` limiting what repositories and namespaces store.
    #[must_use]
    pub fn with_quotas(mut self, quotas: Vec<Quota>) -> Self {
        self.quotas = quotas;
        self
    }

    /// Every quota rule.
    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    /// The retention rules.
    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// What retention removes from `repository`: what the rules let go, but never a tag an
    /// immutable-tags rule protects (nor, so, the manifest it names).
    pub fn retention_verdict(
        &self,
        repository: &str,
        facts: &retention::Facts,
        in_use: &std::collections::HashSet<crate::oci::Digest>,
        now: std::time::SystemTime,
    ) -> retention::Verdict {
        let protected = |tag: &str| self.immutable(repository, tag).is_some();
        self.retention
            .decide_protecting(repository, facts, in_use, &protected, now)
    }

    /// The first rule that makes `tag` of `repository` immutable.
    pub fn immutable(&self, repository: &str, tag: &str) -> Option<&ImmutableTags> {
        self.immutable
            .iter()
            .find(|rule| rule.covers(repository, tag))
    }

    /// Whether any tag of `repository` can be immutable (so a manifest delete must look at
    /// which tags it would take with it).
    pub fn has_immutable_tags(&self, repository: &str) -> bool {
        self.immutable
            .iter()
            .any(|rule| rule.covers_repository(repository))
    }
}
