//! Who may do what where: rules from a TOML file, read again whenever the file changes.
//!
//! ```toml
//! [groups]
//! team-a = ["alice", "bob"]
//!
//! [[rules]]
//! repositories = ["team-a/**"]
//! subjects = ["group:team-a"]
//! actions = ["pull", "push", "delete"]
//! ```
//!
//! **The first matching rule decides.** Rules are read top to bottom; the first whose
//! repository patterns match the repository and whose subjects include the caller grants
//! exactly its actions, and no later rule is consulted. A caller no rule matches may do
//! nothing. Put specific rules first and broad ones last.
//!
//! Repository patterns are globs over `/`-separated names: `*` matches within one segment,
//! `**` any number of segments (`team-a/**` matches `team-a/app` and `team-a/x/y`, not
//! `team-a` itself). Subjects are `anonymous` (no credentials), `authenticated` (any valid
//! credentials), `user:<name>` and `group:<name>`. Kubernetes service accounts are users named
//! `system:serviceaccount:<namespace>:<name>`, in the groups `system:serviceaccounts` and
//! `system:serviceaccounts:<namespace>`, as in Kubernetes RBAC.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use globset::GlobMatcher;
use serde::Deserialize;

use super::access::{Action, Actions};
use crate::oci::pattern::glob;

/// Who a caller is, once their credentials have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    /// An account of the htpasswd file.
    User(String),
    /// A Kubernetes workload, by its projected service account token.
    ServiceAccount {
        namespace: String,
        name: String,
    },
    /// The subject of a token from an external token server.
    External(String),
}

impl Principal {
    /// The name rules and tokens know the caller by; empty for anonymous callers.
    pub fn name(&self) -> String {
        match self {
            Self::Anonymous => String::new(),
            Self::User(name) | Self::External(name) => name.clone(),
            Self::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }

    /// The principal a token's subject names (see [`Principal::name`]).
    pub fn from_subject(subject: &str) -> Self {
        if subject.is_empty() {
            return Self::Anonymous;
        }
        match subject
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
        {
            Some((namespace, name)) => Self::ServiceAccount {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            None => Self::User(subject.to_owned()),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Self::Anonymous)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("anonymous"),
            other => f.write_str(&other.name()),
        }
    }
}

/// A policy file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub rules: Vec<RuleFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub repositories: Vec<String>,
    pub subjects: Vec<String>,
    pub actions: Vec<String>,
}

/// A problem in a policy, reported with the rule it is in.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("parsing the policy: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("rule {rule}: repository pattern {pattern:?}: {reason}")]
    Pattern {
        rule: usize,
        pattern: String,
        reason: String,
    },
    #[error(
        "rule {rule}: unknown subject {0:?} (use anonymous, authenticated, user:<name> or \
         group:<name>)",
        subject
    )]
    Subject { rule: usize, subject: String },
    #[error("rule {rule}: unknown action {action:?} (use pull, push, delete or *)")]
    Action { rule: usize, action: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    Anonymous,
    Authenticated,
    User(String),
    Group(String),
}

#[derive(Debug, Clone)]
struct Rule {
    repositories: Vec<GlobMatcher>,
    subjects: Vec<Subject>,
    actions: Actions,
}

/// The rules in force.
#[derive(Debug, Clone)]
pub struct Policy {
    groups: BTreeMap<String, BTreeSet<String>>,
    rules: Vec<Rule>,
}

impl Policy {
    /// Without a policy file, authenticated callers may do everything, as with Distribution's
    /// htpasswd auth.
    pub fn authenticated_may_do_everything() -> Self {
        Self::from_file(PolicyFile {
            groups: BTreeMap::new(),
            rules: vec![RuleFile {
                repositories: vec!["**".into()],
                subjects: vec!["authenticated".into()],
                actions: vec!["*".into()],
            }],
        })
        .unwrap_or_else(|_| unreachable!("the built-in policy is valid"))
    }

    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        Self::from_file(toml::from_str(text)?)
    }

    pub fn from_file(file: PolicyFile) -> Result<Self, PolicyError> {
        let rules = file
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| compile(index + 1, rule))
            .collect::<Result<_, _>>()?;
        let groups = file
            .groups
            .into_iter()
            .map(|(group, members)| (group, members.into_iter().collect()))
            .collect();
        Ok(Self { groups, rules })
    }

    /// Adds a last rule letting everyone pull everything: anonymous pull.
    #[must_use]
    pub fn with_anonymous_pull(mut self) -> Self {
        self.rules.push(Rule {
            repositories: vec![glob("**").unwrap_or_else(|_| unreachable!())],
            subjects: vec![Subject::Anonymous, Subject::Authenticated],
            actions: Action::Pull.into(),
        });
        self
    }

    /// What `principal` may do to `repository`: the actions of the first rule that matches.
    pub fn allowed(&self, principal: &Principal, repository: &str) -> Actions {
        self.rules
            .iter()
            .find(|rule| {
                rule.repositories.iter().any(|g| g.is_match(repository))
                    && rule.subjects.iter().any(|s| self.includes(s, principal))
            })
            .map_or(Actions::NONE, |rule| rule.actions)
    }

    /// Whether some rule lets anonymous callers pull something.
    pub fn anonymous_may_pull_somewhere(&self) -> bool {
        self.rules.iter().any(|rule| {
            rule.actions.contains(Action::Pull) && rule.subjects.contains(&Subject::Anonymous)
        })
    }

    fn includes(&self, subject: &Subject, principal: &Principal) -> bool {
        match (subject, principal) {
            (Subject::Anonymous, Principal::Anonymous) => true,
            (_, Principal::Anonymous) | (Subject::Anonymous, _) => false,
            (Subject::Authenticated, _) => true,
            (Subject::User(user), principal) => *user == principal.name(),
            (Subject::Group(group), principal) => {
                let builtin = match principal {
                    Principal::ServiceAccount { namespace, .. } => {
                        group == "system:serviceaccounts"
                            || group.strip_prefix("system:serviceaccounts:") == Some(namespace)
                    }
                    _ => false,
                };
                builtin
                    || self
                        .groups
                        .get(group)
                        .is_some_and(|members| members.contains(&principal.name()))
            }
        }
    }
}

fn compile(rule: usize, file: RuleFile) -> Result<Rule, PolicyError> {
    let repositories = file
        .repositories
        .iter()
        .map(|pattern| {
            glob(pattern).map_err(|reason| PolicyError::Pattern {
                rule,
                pattern: pattern.clone(),
                reason,
            })
        })
        .collect::<Result<_, _>>()?;
    let subjects = file
        .subjects
        .into_iter()
        .map(|subject| match subject.as_str() {
            "anonymous" => Ok(Subject::Anonymous),
            "authenticated" => Ok(Subject::Authenticated),
            other => match other.split_once(':') {
                Some(("user", name)) if !name.is_empty() => Ok(Subject::User(name.to_owned())),
                Some(("group", name)) if !name.is_empty() => Ok(Subject::Group(name.to_owned())),
                _ => Err(PolicyError::Subject { rule, subject }),
            },
        })
        .collect::<Result<_, _>>()?;
    let actions = file
        .actions
        .into_iter()
        .map(|action| Actions::parse_word(&action).ok_or(PolicyError::Action { rule, action }))
        .try_fold(Actions::NONE, |all, one| {
            one.map(|one| all.iter().chain(one.iter()).collect())
        })?;
    Ok(Rule {
        repositories,
        subjects,
        actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
        [groups]
        team-a = ["alice", "system:serviceaccount:ci:builder"]

        [[rules]]
        repositories = ["team-a/**"]
        subjects = ["group:team-a"]
        actions = ["pull", "push"]

        [[rules]]
        repositories = ["team-a/**"]
        subjects = ["user:carol"]
        actions = ["*"]

        [[rules]]
        repositories = ["*/cache"]
        subjects = ["group:system:serviceaccounts:build"]
        actions = ["push", "pull"]

        [[rules]]
        repositories = ["public/*"]
        subjects = ["anonymous", "authenticated"]
        actions = ["pull"]
    "#;

    fn user(name: &str) -> Principal {
        Principal::User(name.into())
    }

    fn service_account(namespace: &str, name: &str) -> Principal {
        Principal::ServiceAccount {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = Policy::parse(POLICY).unwrap();
        let pull_push = Actions::from(Action::Pull).with(Action::Push);
        let cases = [
            (user("alice"), "team-a/app", pull_push),
            (user("alice"), "team-a/x/y", pull_push),
            (user("alice"), "team-a", Actions::NONE),
            (user("carol"), "team-a/app", Actions::ALL),
            (user("bob"), "team-a/app", Actions::NONE),
            (service_account("ci", "builder"), "team-a/app", pull_push),
            (service_account("build", "any"), "tools/cache", pull_push),
            (
                service_account("build", "any"),
                "tools/x/cache",
                Actions::NONE,
            ),
            (
                service_account("other", "any"),
                "tools/cache",
                Actions::NONE,
            ),
            (Principal::Anonymous, "public/base", Action::Pull.into()),
            (user("bob"), "public/base", Action::Pull.into()),
            (Principal::Anonymous, "team-a/app", Actions::NONE),
        ];
        for (principal, repository, expected) in cases {
            assert_eq!(
                policy.allowed(&principal, repository),
                expected,
                "{principal} on {repository}"
            );
        }
    }

    #[test]
    fn anonymous_pull_comes_last_and_includes_everyone() {
        let policy = Policy::authenticated_may_do_everything();
        assert_eq!(policy.allowed(&Principal::Anonymous, "x"), Actions::NONE);
        assert_eq!(policy.allowed(&user("u"), "x/y"), Actions::ALL);
        let open = Policy::parse(POLICY).unwrap().with_anonymous_pull();
        assert_eq!(
            open.allowed(&Principal::Anonymous, "x"),
            Action::Pull.into()
        );
        assert_eq!(
            open.allowed(&user("bob"), "team-a/app"),
            Action::Pull.into()
        );
        // An earlier rule still decides for whoever it matches.
        assert_eq!(
            open.allowed(&user("alice"), "team-a/app"),
            Actions::from(Action::Pull).with(Action::Push)
        );
    }

    #[test]
    fn mistakes_are_named() {
        let bad = [
            (
                "[[rules]]\nrepositories=[\"a[\"]\nsubjects=[\"anonymous\"]\nactions=[\"pull\"]",
                "pattern",
            ),
            (
                "[[rules]]\nrepositories=[\"a\"]\nsubjects=[\"someone\"]\nactions=[\"pull\"]",
                "subject",
            ),
            (
                "[[rules]]\nrepositories=[\"a\"]\nsubjects=[\"anonymous\"]\nactions=[\"fly\"]",
                "action",
            ),
            ("[[rules]]\nrepos=[\"a\"]", "unknown field"),
        ];
        for (text, needle) in bad {
            let err = Policy::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn subjects_round_trip_through_token_names() {
        for principal in [
            user("alice"),
            service_account("ns", "sa"),
            Principal::Anonymous,
        ] {
            assert_eq!(Principal::from_subject(&principal.name()), principal);
        }
    }
}
