//! The rules table: histories of pushes and pulls, times policies, give the exact set kept.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use super::*;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + DAY * 20_000
}

/// A digest named by a short word, so a case reads as its history.
fn digest(name: &str) -> Digest {
    let hex: String = format!("{:0>64}", hex_of(name));
    format!("sha256:{hex}").parse().unwrap()
}

fn hex_of(name: &str) -> String {
    name.bytes().map(|b| format!("{:02x}", b % 16)).collect()
}

/// A repository's history, built tag by tag.
#[derive(Default)]
struct History(Facts);

impl History {
    /// `tag` pushed `hours` ago, pointing at manifest `manifest`.
    fn tag(mut self, tag: &str, manifest: &str, hours: u32) -> Self {
        self.0.tags.push(Tag {
            name: tag.to_owned(),
            digest: digest(manifest),
            pushed: now() - HOUR * hours,
        });
        if !self
            .0
            .manifests
            .iter()
            .any(|m| m.digest == digest(manifest))
        {
            self = self.manifest(manifest, hours);
        }
        self
    }

    /// Manifest `name` pushed `hours` ago, untagged unless a tag names it.
    fn manifest(mut self, name: &str, hours: u32) -> Self {
        self.0.manifests.push(Manifest {
            digest: digest(name),
            pushed: now() - HOUR * hours,
            last_pulled: None,
            children: Vec::new(),
            subject: None,
        });
        self
    }

    fn edit(mut self, name: &str, change: impl FnOnce(&mut Manifest)) -> Self {
        let manifest = self
            .0
            .manifests
            .iter_mut()
            .find(|m| m.digest == digest(name))
            .expect("a manifest of the history");
        change(manifest);
        self
    }

    /// Manifest `name` last pulled `days` ago (on that day's start, as pulls are recorded).
    fn pulled(self, name: &str, days: u32) -> Self {
        self.edit(name, |m| m.last_pulled = Some(now() - DAY * days))
    }

    /// An index `name` listing `children`.
    fn index(self, name: &str, children: &[&str]) -> Self {
        let children = children.iter().map(|c| digest(c)).collect();
        self.edit(name, |m| m.children = children)
    }

    /// A referrer `name` of `subject`, pushed `hours` ago.
    fn referrer(self, name: &str, subject: &str, hours: u32) -> Self {
        let subject = digest(subject);
        self.manifest(name, hours)
            .edit(name, |m| m.subject = Some(subject))
    }
}

fn rule(name: &str, tags: &[&str], keep: Keep) -> RetentionRule {
    RetentionRule::new(RuleSpec {
        name: name.to_owned(),
        repositories: vec!["team/**".to_owned()],
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        keep,
        ..RuleSpec::default()
    })
    .unwrap()
}

fn semver(range: Option<&str>, newest_per: Line, count: usize) -> Option<SemverKeep> {
    Some(SemverKeep {
        range: range.map(|r| r.parse().unwrap()),
        newest_per,
        count,
    })
}

struct Outcome {
    tags_kept: BTreeSet<String>,
    manifests_gone: BTreeSet<Digest>,
}

fn apply(rules: Vec<RetentionRule>, history: &History, in_use: &[&str]) -> Outcome {
    let in_use: HashSet<Digest> = in_use.iter().map(|d| digest(d)).collect();
    let verdict = Retention::new(rules).decide("team/app", &history.0, &in_use, now());
    let gone: BTreeSet<&str> = verdict.tags.iter().map(|(t, _)| t.as_str()).collect();
    Outcome {
        tags_kept: history
            .0
            .tags
            .iter()
            .map(|t| t.name.clone())
            .filter(|t| !gone.contains(t.as_str()))
            .collect(),
        manifests_gone: verdict.manifests.into_iter().map(|(d, _)| d).collect(),
    }
}

fn set(tags: &[&str]) -> BTreeSet<String> {
    tags.iter().map(|t| (*t).to_owned()).collect()
}

fn digests(names: &[&str]) -> BTreeSet<Digest> {
    names.iter().map(|n| digest(n)).collect()
}

/// Five releases a day apart (v1.0.0 oldest) and a `latest`, each on a manifest of its own.
fn releases() -> History {
    History::default()
        .tag("v1.0.0", "m100", 5 * 24)
        .tag("v1.1.0", "m110", 4 * 24)
        .tag("v1.1.1", "m111", 3 * 24)
        .tag("v2.0.0", "m200", 2 * 24)
        .tag("v2.0.1", "m201", 24)
        .tag("latest", "m201", 24)
}

/// What happened, the rules, the history, the digests in use; the tags kept and the manifests
/// deleted.
type Case<'a> = (
    &'a str,
    Vec<RetentionRule>,
    History,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<&'a str>,
);

#[test]
fn the_rules_table() {
    let keep_pushed = |n| Keep {
        most_recently_pushed: Some(n),
        ..Keep::default()
    };
    let signature_of = |subject: &str| format!("sha256-{}.sig", &digest(subject).to_string()[7..]);
    let (old_signature, new_signature) = (signature_of("m100"), signature_of("m201"));
    let cases: Vec<Case<'_>> = vec![
        (
            "the 2 most recently pushed (ties by name)",
            vec![rule("last-2", &[], keep_pushed(2))],
            releases(),
            vec![],
            vec!["latest", "v2.0.1"],
            vec!["m100", "m110", "m111", "m200"],
        ),
        (
            "AND within a rule: the 3 most recent, but only those pushed within 60h",
            vec![rule(
                "recent",
                &[],
                Keep {
                    most_recently_pushed: Some(3),
                    pushed_within: Some(60 * HOUR),
                    ..Keep::default()
                },
            )],
            releases(),
            vec![],
            vec!["latest", "v2.0.0", "v2.0.1"],
            vec!["m100", "m110", "m111"],
        ),
        (
            "AND cuts deeper than either condition alone",
            vec![rule(
                "recent",
                &[],
                Keep {
                    most_recently_pushed: Some(3),
                    pushed_within: Some(30 * HOUR),
                    ..Keep::default()
                },
            )],
            releases(),
            vec![],
            vec!["latest", "v2.0.1"],
            vec!["m100", "m110", "m111", "m200"],
        ),
        (
            "OR across rules: latest by pattern, and the oldest release by pull",
            vec![
                rule("latest", &["latest"], Keep::default()),
                rule(
                    "pulled",
                    &["v*"],
                    Keep {
                        pulled_within: Some(7 * DAY),
                        ..Keep::default()
                    },
                ),
            ],
            releases().pulled("m100", 2).pulled("m110", 30),
            vec![],
            vec!["latest", "v1.0.0"],
            vec!["m110", "m111", "m200"],
        ),
        (
            "the most recently pulled, never-pulled ranking last",
            vec![rule(
                "popular",
                &[],
                Keep {
                    most_recently_pulled: Some(2),
                    ..Keep::default()
                },
            )],
            releases().pulled("m110", 1).pulled("m100", 3),
            vec![],
            vec!["v1.0.0", "v1.1.0"],
            vec!["m111", "m200", "m201"],
        ),
        (
            "semver: the newest of each major",
            vec![rule(
                "majors",
                &[],
                Keep {
                    semver: semver(None, Line::Major, 1),
                    ..Keep::default()
                },
            )],
            releases(),
            vec![],
            vec!["v1.1.1", "v2.0.1"],
            vec!["m100", "m110", "m200"],
        ),
        (
            "semver: the newest 2 of each minor within a range; `latest` is no version",
            vec![rule(
                "minors",
                &[],
                Keep {
                    semver: semver(Some(">=1.1.0"), Line::Minor, 2),
                    ..Keep::default()
                },
            )],
            releases(),
            vec![],
            vec!["v1.1.0", "v1.1.1", "v2.0.0", "v2.0.1"],
            vec!["m100"],
        ),
        (
            "digests in use override every rule, an index's platform manifest too",
            vec![rule("last-1", &[], keep_pushed(1))],
            releases()
                .manifest("arm64", 5 * 24)
                .index("m110", &["arm64"]),
            vec!["m100", "arm64"],
            vec!["latest", "v1.0.0", "v1.1.0"],
            vec!["m111", "m200"],
        ),
        (
            "a manifest still tagged otherwise stays",
            vec![rule("latest", &["latest"], Keep::default())],
            releases(),
            vec![],
            vec!["latest"],
            vec!["m100", "m110", "m111", "m200"],
        ),
        (
            "untagged manifests go only past a rule's untagged-older-than",
            vec![
                RetentionRule::new(RuleSpec {
                    name: "untagged".to_owned(),
                    repositories: vec!["team/**".to_owned()],
                    keep: keep_pushed(10),
                    untagged_older_than: Some(48 * HOUR),
                    ..RuleSpec::default()
                })
                .unwrap(),
            ],
            releases().manifest("old", 72).manifest("young", 24),
            vec![],
            vec!["latest", "v1.0.0", "v1.1.0", "v1.1.1", "v2.0.0", "v2.0.1"],
            vec!["old"],
        ),
        (
            "without untagged-older-than, untagged manifests are left to gc",
            vec![rule("all", &[], keep_pushed(10))],
            releases().manifest("old", 720),
            vec![],
            vec!["latest", "v1.0.0", "v1.1.0", "v1.1.1", "v2.0.0", "v2.0.1"],
            vec![],
        ),
        (
            "an index that stays keeps what it lists; one that goes takes them",
            vec![rule("last-1", &[], keep_pushed(1))],
            releases()
                .manifest("amd64", 24)
                .manifest("old-amd64", 5 * 24)
                .index("m201", &["amd64"])
                .index("m100", &["old-amd64"]),
            vec![],
            vec!["latest"],
            vec!["m100", "m110", "m111", "m200", "old-amd64"],
        ),
        (
            "referrers go with their subject, by subject field or by tag schema",
            vec![rule("last-1", &[], keep_pushed(1))],
            releases()
                .referrer("sbom-old", "m100", 5 * 24)
                .referrer("sbom-new", "m201", 24)
                .tag(&old_signature, "sig-old", 5 * 24)
                .tag(&new_signature, "sig-new", 24),
            vec![],
            vec!["latest", &new_signature],
            vec!["m100", "m110", "m111", "m200", "sbom-old", "sig-old"],
        ),
    ];
    for (what, rules, history, in_use, kept, gone) in cases {
        let outcome = apply(rules, &history, &in_use);
        assert_eq!(outcome.tags_kept, set(&kept), "{what}: tags kept");
        assert_eq!(
            outcome.manifests_gone,
            digests(&gone),
            "{what}: manifests deleted"
        );
    }
}

#[test]
fn referrers_can_be_kept_when_their_subject_goes() {
    let rule = RetentionRule::new(RuleSpec {
        name: "keep-signatures".to_owned(),
        repositories: vec!["team/**".to_owned()],
        keep: Keep {
            most_recently_pushed: Some(1),
            ..Keep::default()
        },
        keep_referrers: true,
        ..RuleSpec::default()
    })
    .unwrap();
    let history = releases().referrer("sbom-old", "m100", 5 * 24);
    let outcome = apply(vec![rule], &history, &[]);
    assert!(!outcome.manifests_gone.contains(&digest("sbom-old")));
    assert!(outcome.manifests_gone.contains(&digest("m100")));
}

#[test]
fn repositories_no_rule_covers_are_left_alone() {
    let rules = Retention::new(vec![rule(
        "last-1",
        &[],
        Keep {
            most_recently_pushed: Some(1),
            ..Keep::default()
        },
    )]);
    assert!(rules.covers("team/app") && !rules.covers("other/app"));
    let verdict = rules.decide("other/app", &releases().0, &HashSet::new(), now());
    assert_eq!(verdict, Verdict::default());
}

#[test]
fn reasons_name_the_rules() {
    let rules = Retention::new(vec![
        rule("latest", &["latest"], Keep::default()),
        rule(
            "releases",
            &["v*"],
            Keep {
                most_recently_pushed: Some(1),
                ..Keep::default()
            },
        ),
    ]);
    let verdict = rules.decide("team/app", &releases().0, &HashSet::new(), now());
    let (tag, reason) = &verdict.tags[0];
    assert_eq!(tag, "v1.0.0");
    assert_eq!(
        reason,
        &Reason::NotKept {
            rules: vec!["releases".to_owned()]
        }
    );
    assert!(
        verdict
            .manifests
            .iter()
            .all(|(_, reason)| reason == &Reason::Untagged)
    );
}

#[test]
fn rules_that_would_delete_everything_are_refused() {
    let spec = |keep: Keep, tags: &[&str]| RuleSpec {
        name: "r".to_owned(),
        repositories: vec!["team/**".to_owned()],
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        keep,
        ..RuleSpec::default()
    };
    assert!(RetentionRule::new(spec(Keep::default(), &[])).is_err());
    assert!(
        RetentionRule::new(spec(
            Keep {
                most_recently_pushed: Some(0),
                ..Keep::default()
            },
            &[]
        ))
        .is_err()
    );
    assert!(RetentionRule::new(spec(Keep::default(), &["latest"])).is_ok());
    let no_repositories = RuleSpec {
        repositories: Vec::new(),
        ..spec(Keep::default(), &["latest"])
    };
    assert!(matches!(
        RetentionRule::new(no_repositories),
        Err(Error::Invalid {
            kind: "retention",
            ..
        })
    ));
}
