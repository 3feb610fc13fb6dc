//! What the registry keeps no matter who asks, and what it lets go: the `[policies]` table of
//! the config file.
//!
//! ```toml
//! [[policies.immutable-tags]]
//! name = "releases"
//! repositories = ["team/**"]
//! tags = ["v*", "release-*"]
//!
//! [[policies.retention]]
//! name = "recent-builds"
//! repositories = ["team/**"]
//! tags = ["build-*"]
//! most-recently-pushed = 10
//! pushed-within = "30d"            # and: both must hold
//! untagged-older-than = "7d"
//!
//! [[policies.retention]]
//! name = "releases"
//! repositories = ["team/**"]
//! semver = { range = ">=1.0.0", newest-per = "minor", count = 3 }
//!
//! [[policies.quota]]
//! name = "teams"
//! namespaces = ["team-*"]          # each namespace on its own, each blob counted once
//! bytes = "500GiB"
//!
//! [[policies.quota]]
//! name = "sandbox"
//! repositories = ["sandbox/**"]    # each repository on its own
//! bytes = "5GiB"
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, humantime_serde_opt};
use crate::policies::retention::{Keep, Line, RuleSpec, SemverKeep};
use crate::policies::{ImmutableTags, Policies, Quota, QuotaScope, Retention, RetentionRule};

/// The `[policies]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicySettings {
    #[serde(default)]
    pub immutable_tags: Vec<ImmutableTagsTable>,
    #[serde(default)]
    pub retention: Vec<RetentionTable>,
    #[serde(default)]
    pub quota: Vec<QuotaTable>,
}

/// One `[[policies.quota]]` table: each repository matching `repositories`, or each namespace
/// matching `namespaces` (one of the two), stores at most `bytes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct QuotaTable {
    /// How refusals, metrics and reports name the rule; its position when unset.
    pub name: Option<String>,
    pub repositories: Option<Vec<String>>,
    pub namespaces: Option<Vec<String>>,
    /// `500GiB`, `5G`, `1TiB` or plain bytes.
    pub bytes: String,
}

impl QuotaTable {
    fn resolve(self, name: &str) -> Result<Quota, ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid(format!("quota {name:?}: {problem}"));
        let (scope, patterns) = match (self.repositories, self.namespaces) {
            (Some(repositories), None) => (QuotaScope::Repository, repositories),
            (None, Some(namespaces)) => (QuotaScope::Namespace, namespaces),
            _ => {
                return Err(invalid(
                    "set repositories or namespaces, not both".to_owned(),
                ));
            }
        };
        let limit = crate::units::parse_size(&self.bytes).map_err(invalid)?;
        Quota::new(name, scope, &patterns, limit)
            .map_err(|err| ConfigError::Invalid(err.to_string()))
    }
}

/// One `[[policies.immutable-tags]]` table: tags matching `tags` in repositories matching
/// `repositories` cannot be moved to another manifest or deleted.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImmutableTagsTable {
    /// How refusals name the rule; its position when unset.
    pub name: Option<String>,
    pub repositories: Vec<String>,
    pub tags: Vec<String>,
}

/// One `[[policies.retention]]` table: in repositories matching `repositories`, the tags
/// matching `tags` (every tag when unset) that meet every condition set are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetentionTable {
    /// How reports name the rule; its position when unset.
    pub name: Option<String>,
    pub repositories: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub most_recently_pushed: Option<usize>,
    pub most_recently_pulled: Option<usize>,
    #[serde(default, with = "humantime_serde_opt")]
    pub pushed_within: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub pulled_within: Option<Duration>,
    pub semver: Option<SemverTable>,
    /// Manifests untagged for longer than this go.
    #[serde(default, with = "humantime_serde_opt")]
    pub untagged_older_than: Option<Duration>,
    /// Keep signatures, SBOMs and other referrers when their subject goes.
    #[serde(default)]
    pub keep_referrers: bool,
}

/// `semver = { range = ">=1.0.0", newest-per = "minor", count = 3 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SemverTable {
    pub range: Option<String>,
    pub newest_per: LineName,
    pub count: usize,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineName {
    Major,
    Minor,
}

impl RetentionTable {
    fn resolve(self, name: &str) -> Result<RetentionRule, ConfigError> {
        let semver = self
            .semver
            .map(|semver| {
                let range = semver
                    .range
                    .map(|range| {
                        range.parse().map_err(|err| {
                            ConfigError::Invalid(format!(
                                "retention rule {name:?}: semver range {range:?}: {err}"
                            ))
                        })
                    })
                    .transpose()?;
                Ok::<_, ConfigError>(SemverKeep {
                    range,
                    newest_per: match semver.newest_per {
                        LineName::Major => Line::Major,
                        LineName::Minor => Line::Minor,
                    },
                    count: semver.count,
                })
            })
            .transpose()?;
        RetentionRule::new(RuleSpec {
            name: name.to_owned(),
            repositories: self.repositories,
            tags: self.tags,
            keep: Keep {
                most_recently_pushed: self.most_recently_pushed,
                most_recently_pulled: self.most_recently_pulled,
                pushed_within: self.pushed_within,
                pulled_within: self.pulled_within,
                semver,
            },
            untagged_older_than: self.untagged_older_than,
            keep_referrers: self.keep_referrers,
        })
        .map_err(|err| ConfigError::Invalid(err.to_string()))
    }
}

impl PolicySettings {
    pub fn resolve(self) -> Result<Policies, ConfigError> {
        let immutable = each_named(
            self.immutable_tags,
            "immutable-tags",
            |table| table.name.as_ref(),
            |table, name| {
                ImmutableTags::new(name, &table.repositories, &table.tags)
                    .map_err(|err| ConfigError::Invalid(err.to_string()))
            },
        )?;
        let retention = each_named(
            self.retention,
            "retention",
            |table| table.name.as_ref(),
            RetentionTable::resolve,
        )?;
        let quotas = each_named(
            self.quota,
            "quota",
            |table| table.name.as_ref(),
            QuotaTable::resolve,
        )?;
        Ok(Policies::new(immutable, Retention::new(retention)).with_quotas(quotas))
    }
}

/// Resolves each of `tables` under its own name, or `<kind> #<position>` when it has none.
fn each_named<T, R>(
    tables: Vec<T>,
    kind: &str,
    name: impl Fn(&T) -> Option<&String>,
    resolve: impl Fn(T, &str) -> Result<R, ConfigError>,
) -> Result<Vec<R>, ConfigError> {
    tables
        .into_iter()
        .enumerate()
        .map(|(n, table)| {
            let name = name(&table)
                .cloned()
                .unwrap_or_else(|| format!("{kind} #{}", n + 1));
            resolve(table, &name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::SystemTime;

    use super::*;
    use crate::policies::retention::{Facts, Tag};

    fn resolved(text: &str) -> Result<Policies, ConfigError> {
        let table: toml::Table = toml::from_str(text).unwrap();
        let settings: PolicySettings = table["policies"]
            .clone()
            .try_into()
            .map_err(|err: toml::de::Error| ConfigError::Invalid(err.to_string()))?;
        settings.resolve()
    }

    #[test]
    fn retention_tables_become_rules() {
        let policies = resolved(
            r#"
            [[policies.retention]]
            repositories = ["team/**"]
            most-recently-pushed = 1
            pushed-within = "30d"
            semver = { range = ">=1.0.0", newest-per = "minor", count = 3 }
            untagged-older-than = "7d"
            keep-referrers = true
            "#,
        )
        .unwrap();
        let retention = policies.retention();
        assert!(retention.covers("team/app") && !retention.covers("other/app"));
        let now = SystemTime::now();
        let tag = |name: &str, hex: char, pushed: SystemTime| Tag {
            name: name.to_owned(),
            digest: format!("sha256:{}", hex.to_string().repeat(64))
                .parse()
                .unwrap(),
            pushed,
        };
        let hour_ago = now - std::time::Duration::from_secs(3600);
        let facts = Facts {
            tags: vec![tag("v1.0.0", 'a', now), tag("latest", 'b', hour_ago)],
            manifests: Vec::new(),
        };
        let verdict = retention.decide("team/app", &facts, &HashSet::new(), now);
        let gone: Vec<&str> = verdict.tags.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            gone,
            ["latest"],
            "the unnamed rule's conditions all apply: `latest` is no version"
        );
        let reason = format!("{:?}", verdict.tags[0].1);
        assert!(
            reason.contains("retention #1"),
            "named by position: {reason}"
        );
    }

    #[test]
    fn retention_never_deletes_an_immutable_tag() {
        let policies = resolved(
            r#"
            [[policies.immutable-tags]]
            repositories = ["team/**"]
            tags = ["v*"]
            [[policies.retention]]
            repositories = ["team/**"]
            tags = ["latest"]
            "#,
        )
        .unwrap();
        let now = SystemTime::now();
        let digest = |hex: char| -> crate::oci::Digest {
            format!("sha256:{}", hex.to_string().repeat(64))
                .parse()
                .unwrap()
        };
        let facts = Facts {
            tags: vec![
                Tag {
                    name: "v1".to_owned(),
                    digest: digest('a'),
                    pushed: now,
                },
                Tag {
                    name: "build-7".to_owned(),
                    digest: digest('b'),
                    pushed: now,
                },
            ],
            manifests: ['a', 'b']
                .map(|hex| crate::policies::retention::Manifest {
                    digest: digest(hex),
                    pushed: now,
                    last_pulled: None,
                    children: Vec::new(),
                    subject: None,
                })
                .to_vec(),
        };
        let verdict = policies.retention_verdict("team/app", &facts, &HashSet::new(), now);
        let tags: Vec<&str> = verdict.tags.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, ["build-7"], "v1 is immutable");
        let manifests: Vec<_> = verdict.manifests.iter().map(|(d, _)| d.clone()).collect();
        assert_eq!(manifests, [digest('b')]);
        let unprotected = policies
            .retention()
            .decide("team/app", &facts, &HashSet::new(), now);
        assert_eq!(unprotected.tags.len(), 2, "the rules alone would take v1");
    }

    #[test]
    fn unusable_retention_tables_are_refused() {
        for (text, expected) in [
            (
                "[[policies.retention]]\nrepositories = [\"a\"]\n",
                "keep something",
            ),
            (
                "[[policies.retention]]\nrepositories = [\"a\"]\nsemver = { range = \"not a range\", newest-per = \"major\", count = 1 }\n",
                "semver range",
            ),
            (
                "[[policies.retention]]\nrepositories = [\"a\"]\nmost-recently-pushed = 0\n",
                "at least 1",
            ),
            (
                "[[policies.retention]]\nrepositories = [\"a\"]\nkeep-last = 3\n",
                "unknown field",
            ),
            (
                "[[policies.retention]]\nrepositories = [\"a\"]\npushed-within = \"soon\"\n",
                "",
            ),
        ] {
            let err = resolved(text).expect_err(text);
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn quota_tables_name_repositories_or_namespaces_and_a_size() {
        let policies = resolved(
            r#"
            [[policies.quota]]
            name = "teams"
            namespaces = ["team-*"]
            bytes = "500GiB"

            [[policies.quota]]
            repositories = ["sandbox/**"]
            bytes = "5G"
            "#,
        )
        .unwrap();
        let quotas = policies.quotas();
        assert_eq!(quotas.len(), 2);
        assert_eq!(
            (quotas[0].name.as_str(), quotas[0].scope, quotas[0].limit),
            ("teams", QuotaScope::Namespace, 500 << 30)
        );
        assert_eq!(
            (quotas[1].name.as_str(), quotas[1].scope, quotas[1].limit),
            ("quota #2", QuotaScope::Repository, 5 << 30)
        );
        let app: crate::oci::RepositoryName = "team-a/app".parse().unwrap();
        assert_eq!(quotas[0].scope_of(&app), Some("team-a"));

        for (text, expected) in [
            ("bytes = \"1G\"\n", "not both"),
            (
                "repositories = [\"a\"]\nnamespaces = [\"a\"]\nbytes = \"1G\"\n",
                "not both",
            ),
            ("repositories = [\"a\"]\nbytes = \"lots\"\n", "not a size"),
            ("repositories = [\"a\"]\nbytes = \"0\"\n", "out of range"),
            ("repositories = []\nbytes = \"1G\"\n", "at least one"),
        ] {
            let text = format!("[[policies.quota]]\nname = \"q\"\n{text}");
            let err = resolved(&text).expect_err(&text);
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
    }
}
