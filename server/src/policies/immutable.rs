//! Immutable tags: tags that once pushed may not be moved to another manifest or deleted. The
//! HTTP API enforces them on pushes and deletes (and the web interface goes through it).

use globset::GlobMatcher;

use super::Error;

/// One immutable-tags rule: tags matching `tags` in repositories matching `repositories`.
#[derive(Debug, Clone)]
pub struct ImmutableTags {
    /// How refusals name the rule.
    pub name: String,
    repositories: Vec<GlobMatcher>,
    tags: Vec<GlobMatcher>,
}

impl ImmutableTags {
    /// A rule from glob patterns: `*` stays within a path segment, `**` crosses them, as in the
    /// access policy's rules.
    pub fn new(name: &str, repositories: &[String], tags: &[String]) -> Result<Self, Error> {
        let invalid = |problem: String| Error::Invalid {
            kind: "immutable-tags",
            rule: name.to_owned(),
            problem,
        };
        if repositories.is_empty() || tags.is_empty() {
            return Err(invalid(
                "name at least one repository pattern and one tag pattern".to_owned(),
            ));
        }
        let compile = |patterns: &[String]| super::compile(patterns, invalid);
        Ok(Self {
            name: name.to_owned(),
            repositories: compile(repositories)?,
            tags: compile(tags)?,
        })
    }

    pub(super) fn covers_repository(&self, repository: &str) -> bool {
        self.repositories
            .iter()
            .any(|glob| glob.is_match(repository))
    }

    pub(super) fn covers(&self, repository: &str, tag: &str) -> bool {
        self.covers_repository(repository) && self.tags.iter().any(|glob| glob.is_match(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Policies, Retention};
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn rules_match_repositories_and_tags_by_pattern() {
        let policies = Policies::new(
            vec![
                ImmutableTags::new("releases", &strings(&["team/**"]), &strings(&["v*", "1.*"]))
                    .unwrap(),
                ImmutableTags::new("base", &strings(&["base"]), &strings(&["*"])).unwrap(),
            ],
            Retention::default(),
        );
        let cases = [
            ("team/app", "v1.2", Some("releases")),
            ("team/a/b", "1.0", Some("releases")),
            ("team/app", "latest", None),
            ("teamx/app", "v1", None),
            ("base", "anything", Some("base")),
            ("base/sub", "anything", None),
        ];
        for (repository, tag, rule) in cases {
            assert_eq!(
                policies.immutable(repository, tag).map(|r| r.name.as_str()),
                rule,
                "{repository}:{tag}"
            );
        }
        assert!(policies.has_immutable_tags("team/app"));
        assert!(!policies.has_immutable_tags("other/app"));
        assert!(!Policies::default().has_immutable_tags("team/app"));
    }

    #[test]
    fn unusable_rules_are_refused_with_their_name() {
        let bad = ImmutableTags::new("broken", &strings(&["team/[z-a]"]), &strings(&["v*"]));
        assert!(matches!(bad, Err(Error::Invalid { rule, .. }) if rule == "broken"));
        assert!(ImmutableTags::new("empty", &[], &strings(&["v*"])).is_err());
        assert!(ImmutableTags::new("empty", &strings(&["a"]), &[]).is_err());
    }
}
