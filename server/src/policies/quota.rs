//! Quotas: how many bytes a repository, or a namespace, may store. Pure: which quotas cover a
//! repository, what they are counted over, and whether a new blob still fits; the registry
//! counts usage and refuses, under a lock per namespace (see `crate::registry`).

use globset::GlobMatcher;

use super::Error;
use crate::oci::RepositoryName;

/// What a quota counts: every repository its patterns match on its own, or every namespace
/// (a repository's first path part) as a whole, each blob once across its repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaScope {
    Repository,
    Namespace,
}

impl QuotaScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Repository => "repository",
            Self::Namespace => "namespace",
        }
    }
}

/// One quota rule: at most `limit` bytes in each repository or namespace its patterns match.
#[derive(Debug, Clone)]
pub struct Quota {
    /// How refusals, metrics and the status name the rule.
    pub name: String,
    pub scope: QuotaScope,
    /// Bytes each matching repository or namespace may store.
    pub limit: u64,
    patterns: Vec<GlobMatcher>,
}

impl Quota {
    /// A rule from glob patterns over repository names (`team/**`) or namespace names
    /// (`team-*`), as `scope` says.
    pub fn new(
        name: &str,
        scope: QuotaScope,
        patterns: &[String],
        limit: u64,
    ) -> Result<Self, Error> {
        let invalid = |problem: String| Error::Invalid {
            kind: "quota",
            rule: name.to_owned(),
            problem,
        };
        if patterns.is_empty() {
            return Err(invalid(format!(
                "name at least one {} pattern",
                scope.as_str()
            )));
        }
        if limit == 0 {
            return Err(invalid("a quota of 0 bytes allows nothing".to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            scope,
            limit,
            patterns: super::compile(patterns, invalid)?,
        })
    }

    /// The repository or namespace of `repository` this rule counts, when it covers it.
    pub fn scope_of<'a>(&self, repository: &'a RepositoryName) -> Option<&'a str> {
        let counted = match self.scope {
            QuotaScope::Repository => repository.as_str(),
            QuotaScope::Namespace => repository.namespace(),
        };
        self.patterns
            .iter()
            .any(|glob| glob.is_match(counted))
            .then_some(counted)
    }

    /// Whether `adding` more bytes fit beside `used`. A blob already counted adds nothing and
    /// always fits, so pushing what is stored again never fails, even over the quota.
    pub fn admits(&self, used: u64, adding: u64) -> bool {
        adding == 0 || used.saturating_add(adding) <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(scope: QuotaScope, patterns: &[&str], limit: u64) -> Quota {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        Quota::new("q", scope, &patterns, limit).unwrap()
    }

    fn name(name: &str) -> RepositoryName {
        name.parse().unwrap()
    }

    #[test]
    fn a_rule_counts_the_repository_or_the_namespace_it_matches() {
        let per_repository = quota(QuotaScope::Repository, &["team/**"], 10);
        assert_eq!(per_repository.scope_of(&name("team/app")), Some("team/app"));
        assert_eq!(per_repository.scope_of(&name("team/a/b")), Some("team/a/b"));
        assert_eq!(per_repository.scope_of(&name("team")), None);
        assert_eq!(per_repository.scope_of(&name("other/app")), None);

        let per_namespace = quota(QuotaScope::Namespace, &["team-*"], 10);
        assert_eq!(per_namespace.scope_of(&name("team-a/app")), Some("team-a"));
        assert_eq!(per_namespace.scope_of(&name("team-a")), Some("team-a"));
        assert_eq!(per_namespace.scope_of(&name("team/app")), None);
    }

    #[test]
    fn new_bytes_fit_up_to_the_limit_and_known_bytes_always() {
        let limit = quota(QuotaScope::Repository, &["*"], 100);
        assert!(limit.admits(0, 100));
        assert!(limit.admits(60, 40));
        assert!(!limit.admits(60, 41));
        assert!(limit.admits(150, 0), "what is counted already adds nothing");
        assert!(!limit.admits(u64::MAX, 1), "no overflow");
    }

    #[test]
    fn unusable_rules_are_refused_with_their_name() {
        let empty = Quota::new("empty", QuotaScope::Namespace, &[], 10);
        assert!(matches!(empty, Err(Error::Invalid { rule, .. }) if rule == "empty"));
        assert!(Quota::new("zero", QuotaScope::Namespace, &["a".to_owned()], 0).is_err());
        assert!(Quota::new("bad", QuotaScope::Repository, &["[z-a]".to_owned()], 1).is_err());
    }
}
