//! Retention: which tags and manifests of a repository stay, decided from what is known of them
//! (when each tag was pushed, when each manifest was last pulled, which digests workloads run).
//! Pure: the decision only; `stowage retention` gathers the facts and deletes.
//!
//! - A repository no rule covers is left alone.
//! - Within a rule, conditions combine with AND: "the 3 most recently pushed, pushed within
//!   100h" keeps a tag that is both. Rankings (`most-recently-pushed`, `most-recently-pulled`,
//!   `semver`'s newest per line) are taken among the tags the rule's `tags` patterns match.
//! - Across rules, a tag stays when any rule covering its repository keeps it.
//! - A tag whose manifest (or, for an index, one of its manifests) a workload runs stays
//!   whatever the rules say; so does a manifest a workload runs.
//! - A manifest whose every tag goes is deleted with them, unless it is still needed: tagged
//!   otherwise, run by a workload, or inside an index that stays. Manifests that were untagged
//!   already go only when a rule sets `untagged-older-than`.
//! - Referrers (signatures, SBOMs) go with their subject, unless a covering rule keeps them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use globset::GlobMatcher;

use super::Error;
use crate::oci::Digest;

/// What a rule needs of a tag to keep it; every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keep {
    /// Among the N most recently pushed tags.
    pub most_recently_pushed: Option<usize>,
    /// Among the N most recently pulled tags (a tag never pulled ranks last).
    pub most_recently_pulled: Option<usize>,
    pub pushed_within: Option<Duration>,
    /// Pulled within this long (pulls are recorded by the day).
    pub pulled_within: Option<Duration>,
    pub semver: Option<SemverKeep>,
}

/// Semantic-version tags (`1.2.3`, `v1.2.3`): those in `range`, the newest `count` of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemverKeep {
    pub range: Option<semver::VersionReq>,
    pub newest_per: Line,
    pub count: usize,
}

/// What a line of releases is: every version of one major, or of one major.minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Major,
    Minor,
}

/// One retention rule.
#[derive(Debug, Clone)]
pub struct RetentionRule {
    /// How reports name the rule.
    pub name: String,
    repositories: Vec<GlobMatcher>,
    /// The tags the rule looks at; none: every tag.
    tags: Vec<GlobMatcher>,
    keep: Keep,
    /// Manifests untagged for longer than this go.
    untagged_older_than: Option<Duration>,
    /// Keep referrers even when their subject goes.
    keep_referrers: bool,
}

/// A rule's settings, as the config file and the operator give them.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub name: String,
    pub repositories: Vec<String>,
    pub tags: Vec<String>,
    pub keep: Keep,
    pub untagged_older_than: Option<Duration>,
    pub keep_referrers: bool,
}

impl RetentionRule {
    pub fn new(spec: RuleSpec) -> Result<Self, Error> {
        let invalid = |problem: String| Error::Invalid {
            kind: "retention",
            rule: spec.name.clone(),
            problem,
        };
        if spec.repositories.is_empty() {
            return Err(invalid("name at least one repository pattern".to_owned()));
        }
        if spec.keep == Keep::default() && spec.tags.is_empty() {
            return Err(invalid(
                "keep something: name tag patterns or a condition (a rule keeping nothing would \
                 delete every tag)"
                    .to_owned(),
            ));
        }
        if spec.keep.semver.as_ref().is_some_and(|s| s.count == 0)
            || spec.keep.most_recently_pushed == Some(0)
            || spec.keep.most_recently_pulled == Some(0)
        {
            return Err(invalid("counts must be at least 1".to_owned()));
        }
        let compile = |patterns: &[String]| super::compile(patterns, invalid);
        Ok(Self {
            repositories: compile(&spec.repositories)?,
            tags: compile(&spec.tags)?,
            name: spec.name,
            keep: spec.keep,
            untagged_older_than: spec.untagged_older_than,
            keep_referrers: spec.keep_referrers,
        })
    }

    pub fn covers(&self, repository: &str) -> bool {
        self.repositories
            .iter()
            .any(|glob| glob.is_match(repository))
    }

    fn looks_at(&self, tag: &str) -> bool {
        self.tags.is_empty() || self.tags.iter().any(|glob| glob.is_match(tag))
    }

    /// The tags of `tags` this rule keeps, with what `facts` says of their manifests.
    fn kept<'a>(&self, tags: &[&'a Tag], facts: &Facts, now: SystemTime) -> BTreeSet<&'a str> {
        let candidates: Vec<&Tag> = tags
            .iter()
            .copied()
            .filter(|tag| self.looks_at(&tag.name))
            .collect();
        let pulled = |tag: &Tag| facts.manifest(&tag.digest).and_then(|m| m.last_pulled);
        let within = |at: Option<SystemTime>, limit: Duration| {
            at.is_some_and(|at| now.duration_since(at).unwrap_or_default() <= limit)
        };
        let newest = |n: usize, at: &dyn Fn(&Tag) -> Option<SystemTime>| -> BTreeSet<&str> {
            let mut ranked = candidates.clone();
            // Newest first; ties broken by name, so a decision never depends on listing order.
            ranked.sort_by(|a, b| at(b).cmp(&at(a)).then_with(|| a.name.cmp(&b.name)));
            ranked
                .into_iter()
                .take(n)
                .map(|tag| tag.name.as_str())
                .collect()
        };
        let keep = &self.keep;
        let by_push = keep
            .most_recently_pushed
            .map(|n| newest(n, &|tag| Some(tag.pushed)));
        let by_pull = keep.most_recently_pulled.map(|n| newest(n, &pulled));
        let by_semver = keep
            .semver
            .as_ref()
            .map(|semver| semver_kept(semver, &candidates));
        candidates
            .iter()
            .filter(|tag| {
                by_push
                    .as_ref()
                    .is_none_or(|set| set.contains(tag.name.as_str()))
            })
            .filter(|tag| {
                by_pull
                    .as_ref()
                    .is_none_or(|set| set.contains(tag.name.as_str()))
            })
            .filter(|tag| {
                by_semver
                    .as_ref()
                    .is_none_or(|set| set.contains(tag.name.as_str()))
            })
            .filter(|tag| {
                keep.pushed_within
                    .is_none_or(|limit| within(Some(tag.pushed), limit))
            })
            .filter(|tag| {
                keep.pulled_within.is_none_or(|limit| {
                    // Pulls are recorded by the day: a pull today counts as now.
                    within(pulled(tag), limit + Duration::from_secs(86_400))
                })
            })
            .map(|tag| tag.name.as_str())
            .collect()
    }
}

/// The tags `semver` keeps among `candidates`.
fn semver_kept<'a>(semver: &SemverKeep, candidates: &[&'a Tag]) -> BTreeSet<&'a str> {
    let mut lines: BTreeMap<(u64, u64), Vec<(semver::Version, &str)>> = BTreeMap::new();
    for tag in candidates {
        let Ok(version) = semver::Version::parse(tag.name.strip_prefix('v').unwrap_or(&tag.name))
        else {
            continue;
        };
        if semver
            .range
            .as_ref()
            .is_some_and(|range| !range.matches(&version))
        {
            continue;
        }
        let line = match semver.newest_per {
            Line::Major => (version.major, 0),
            Line::Minor => (version.major, version.minor),
        };
        lines.entry(line).or_default().push((version, &tag.name));
    }
    lines
        .into_values()
        .flat_map(|mut versions| {
            versions.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            versions
                .into_iter()
                .take(semver.count)
                .map(|(_, name)| name)
        })
        .collect()
}

/// A tag of the repository.
#[derive(Debug, Clone)]
pub struct Tag {
    pub name: String,
    pub digest: Digest,
    /// When the tag was last pushed (moved to its digest).
    pub pushed: SystemTime,
}

/// A manifest of the repository.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    /// When it was pushed.
    pub pushed: SystemTime,
    /// The start of the day it was last pulled, if it ever was.
    pub last_pulled: Option<SystemTime>,
    /// The manifests an index lists.
    pub children: Vec<Digest>,
    /// What it refers to, for a referrer (a signature, an SBOM).
    pub subject: Option<Digest>,
}

/// What is known of one repository.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub tags: Vec<Tag>,
    pub manifests: Vec<Manifest>,
}

impl Facts {
    fn manifest(&self, digest: &Digest) -> Option<&Manifest> {
        self.manifests.iter().find(|m| &m.digest == digest)
    }
}

/// Why something goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No rule covering the repository keeps the tag; the rules that looked at it.
    NotKept { rules: Vec<String> },
    /// Its last tag goes.
    Untagged,
    /// Untagged for longer than a rule allows.
    UntaggedTooLong { rule: String },
    /// The manifest it refers to goes.
    SubjectGoes { subject: Digest },
    /// The index listing it goes.
    IndexGoes { index: Digest },
}

/// What retention removes from one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub tags: Vec<(String, Reason)>,
    pub manifests: Vec<(Digest, Reason)>,
}

/// The retention rules in force.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    rules: Vec<RetentionRule>,
}

impl Retention {
    pub fn new(rules: Vec<RetentionRule>) -> Self {
        Self { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule covers `repository`: the others need no facts gathered.
    pub fn covers(&self, repository: &str) -> bool {
        self.rules.iter().any(|rule| rule.covers(repository))
    }

    /// What goes from `repository`, whose state is `facts`, when workloads run `in_use`.
    pub fn decide(
        &self,
        repository: &str,
        facts: &Facts,
        in_use: &HashSet<Digest>,
        now: SystemTime,
    ) -> Verdict {
        self.decide_protecting(repository, facts, in_use, &|_| false, now)
    }

    /// As [`Self::decide`], keeping also the tags `protected` names (immutable tags).
    pub fn decide_protecting(
        &self,
        repository: &str,
        facts: &Facts,
        in_use: &HashSet<Digest>,
        protected: &dyn Fn(&str) -> bool,
        now: SystemTime,
    ) -> Verdict {
        let rules: Vec<&RetentionRule> = self
            .rules
            .iter()
            .filter(|rule| rule.covers(repository))
            .collect();
        if rules.is_empty() {
            return Verdict::default();
        }
        let runs = |digest: &Digest| {
            in_use.contains(digest)
                || facts
                    .manifest(digest)
                    .is_some_and(|m| m.children.iter().any(|child| in_use.contains(child)))
        };
        let (referrer_tags, tags): (Vec<&Tag>, Vec<&Tag>) = facts
            .tags
            .iter()
            .partition(|tag| referrer_tag_subject(&tag.name).is_some());
        let kept_by_rules: BTreeSet<&str> = rules
            .iter()
            .flat_map(|rule| rule.kept(&tags, facts, now))
            .collect();
        let mut verdict = Verdict::default();
        let mut needed = BTreeSet::new();
        for tag in tags {
            if kept_by_rules.contains(tag.name.as_str())
                || runs(&tag.digest)
                || protected(&tag.name)
            {
                needed.insert(tag.digest.clone());
            } else {
                let looked = rules
                    .iter()
                    .filter(|rule| rule.looks_at(&tag.name))
                    .map(|rule| rule.name.clone())
                    .collect();
                verdict
                    .tags
                    .push((tag.name.clone(), Reason::NotKept { rules: looked }));
            }
        }

        // The manifests that stay: tagged, run, untagged but young enough, and whatever an
        // index among them lists.
        needed.extend(
            facts
                .manifests
                .iter()
                .filter(|m| runs(&m.digest))
                .map(|m| m.digest.clone()),
        );
        let untagged_limit = rules
            .iter()
            .filter_map(|rule| Some((rule.untagged_older_than?, rule.name.as_str())))
            .max_by_key(|(limit, _)| *limit);
        let was_tagged: BTreeSet<&Digest> = facts.tags.iter().map(|t| &t.digest).collect();
        // An index's manifests stay or go with it.
        let parent: BTreeMap<&Digest, &Digest> = facts
            .manifests
            .iter()
            .flat_map(|m| m.children.iter().map(move |child| (child, &m.digest)))
            .collect();
        for manifest in &facts.manifests {
            let young_enough = untagged_limit.is_none_or(|(limit, _)| {
                now.duration_since(manifest.pushed).unwrap_or_default() <= limit
            });
            let on_its_own = !was_tagged.contains(&manifest.digest)
                && !parent.contains_key(&manifest.digest)
                && manifest.subject.is_none();
            if on_its_own && young_enough {
                needed.insert(manifest.digest.clone());
            }
        }
        close_over_children(facts, &mut needed);

        // Referrers, by the subject field or by the tag schema (`sha256-<hex>.sig`), stay with
        // their subject; one whose subject is not in this repository is not ours to judge.
        let keep_referrers = rules.iter().any(|rule| rule.keep_referrers);
        let stays_with = |subject: &Digest, needed: &BTreeSet<Digest>| {
            keep_referrers || needed.contains(subject) || facts.manifest(subject).is_none()
        };
        for tag in referrer_tags {
            let subject = referrer_tag_subject(&tag.name).expect("partitioned on it");
            if stays_with(&subject, &needed) {
                needed.insert(tag.digest.clone());
            } else {
                verdict
                    .tags
                    .push((tag.name.clone(), Reason::SubjectGoes { subject }));
            }
        }
        for manifest in &facts.manifests {
            if let Some(subject) = &manifest.subject
                && stays_with(subject, &needed)
            {
                needed.insert(manifest.digest.clone());
            }
        }
        close_over_children(facts, &mut needed);

        for manifest in &facts.manifests {
            if needed.contains(&manifest.digest) {
                continue;
            }
            let reason = match &manifest.subject {
                Some(subject) => Reason::SubjectGoes {
                    subject: subject.clone(),
                },
                None if was_tagged.contains(&manifest.digest) => Reason::Untagged,
                None if parent.contains_key(&manifest.digest) => Reason::IndexGoes {
                    index: parent[&manifest.digest].clone(),
                },
                None => Reason::UntaggedTooLong {
                    rule: untagged_limit
                        .map(|(_, name)| name.to_owned())
                        .unwrap_or_default(),
                },
            };
            verdict.manifests.push((manifest.digest.clone(), reason));
        }
        verdict
    }
}

/// The subject a tag of the referrers tag schema names (`sha256-<hex>`, with a suffix such as
/// `.sig`, `.att` or `.sbom` as cosign writes them).
fn referrer_tag_subject(tag: &str) -> Option<Digest> {
    let rest = tag.strip_prefix("sha256-")?;
    let hex = rest.get(..64)?;
    let suffix = &rest[64..];
    if !(suffix.is_empty() || suffix.starts_with('.')) {
        return None;
    }
    format!("sha256:{hex}").parse().ok()
}

/// Adds to `needed` every manifest an index in it lists, and so on down.
fn close_over_children(facts: &Facts, needed: &mut BTreeSet<Digest>) {
    let mut pending: Vec<Digest> = needed.iter().cloned().collect();
    while let Some(digest) = pending.pop() {
        for child in facts
            .manifest(&digest)
            .map(|m| m.children.as_slice())
            .unwrap_or_default()
        {
            if needed.insert(child.clone()) {
                pending.push(child.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests;
