//! The vocabulary of access control: actions on repositories, and the Docker token spec's
//! scopes (`repository:team/app:pull,push`) that ask for them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One thing a caller may do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read manifests, blobs, tags and referrers.
    Pull,
    /// Upload blobs and put manifests and tags.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
}

impl Action {
    pub const ALL: [Self; 3] = [Self::Pull, Self::Push, Self::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::Delete => "delete",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Self::Pull => 1,
            Self::Push => 2,
            Self::Delete => 4,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Self = Self(0);
    pub const ALL: Self = Self(7);

    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    #[must_use]
    pub fn with(self, action: Action) -> Self {
        Self(self.0 | action.bit())
    }

    #[must_use]
    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// Parses one action word; `*` means all of them. Unknown words mean nothing, so a newer
    /// client's action is never mistaken for one of ours.
    pub fn parse_word(word: &str) -> Option<Self> {
        match word.trim() {
            "pull" => Some(Action::Pull.into()),
            "push" => Some(Action::Push.into()),
            "delete" => Some(Action::Delete.into()),
            "*" => Some(Self::ALL),
            _ => None,
        }
    }

    /// The actions of a comma-separated list, ignoring words it does not know.
    pub fn parse_list(list: &str) -> Self {
        list.split(',')
            .filter_map(Self::parse_word)
            .fold(Self::NONE, |all, one| Self(all.0 | one.0))
    }

    pub fn words(self) -> Vec<String> {
        self.iter().map(|a| a.as_str().to_owned()).collect()
    }
}

impl From<Action> for Actions {
    fn from(action: Action) -> Self {
        Self(action.bit())
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

/// What a request needs: an action on a repository, or the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Repository(String),
    Catalog,
}

/// One requested or granted scope, as the token spec writes them and JWTs carry them
/// (`{"type":"repository","name":"team/app","actions":["pull"]}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

pub const REPOSITORY: &str = "repository";
pub const REGISTRY: &str = "registry";
pub const CATALOG: &str = "catalog";

impl Scope {
    /// Parses `type[(class)]:name:actions`; the name is everything between the first and the
    /// last colon. `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, rest) = text.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        // `repository(plugin)` names a resource class; the class does not change access.
        let kind = kind.split_once('(').map_or(kind, |(kind, _)| kind);
        if name.is_empty() {
            return None;
        }
        Some(Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: actions.split(',').map(|a| a.trim().to_owned()).collect(),
        })
    }

    /// Every scope in `scope` parameters, which clients repeat or separate with spaces.
    pub fn parse_all<'a>(params: impl IntoIterator<Item = &'a str>) -> Vec<Self> {
        params
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(Self::parse)
            .collect()
    }

    pub fn repository(name: &str, actions: Actions) -> Self {
        Self {
            kind: REPOSITORY.to_owned(),
            name: name.to_owned(),
            actions: actions.words(),
        }
    }

    pub fn catalog() -> Self {
        Self {
            kind: REGISTRY.to_owned(),
            name: CATALOG.to_owned(),
            actions: vec!["*".to_owned()],
        }
    }

    pub fn is_catalog(&self) -> bool {
        self.kind == REGISTRY && self.name == CATALOG
    }

    /// The repository actions this scope names.
    pub fn actions(&self) -> Actions {
        Actions::parse_list(&self.actions.join(","))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// What a token grants: the scopes in its `access` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(pub Vec<Scope>);

impl Grants {
    /// The actions granted on `repository`.
    pub fn on_repository(&self, repository: &str) -> Actions {
        self.0
            .iter()
            .filter(|scope| scope.kind == REPOSITORY && scope.name == repository)
            .fold(Actions::NONE, |all, scope| {
                Actions(all.0 | scope.actions().0)
            })
    }

    pub fn catalog(&self) -> bool {
        self.0.iter().any(Scope::is_catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_as_clients_send_them() {
        let scope = Scope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(
            (scope.kind.as_str(), scope.name.as_str()),
            ("repository", "team/app")
        );
        assert_eq!(
            scope.actions(),
            Actions::from(Action::Pull).with(Action::Push)
        );
        let host = Scope::parse("repository(plugin):localhost:5000/app:*").unwrap();
        assert_eq!(host.name, "localhost:5000/app");
        assert_eq!(host.actions(), Actions::ALL);
        assert!(Scope::parse("registry:catalog:*").unwrap().is_catalog());
        assert_eq!(Scope::parse("nonsense"), None);
        assert_eq!(Scope::parse("repository::pull"), None);
        let all = Scope::parse_all(["repository:a:pull repository:b:push", "registry:catalog:*"]);
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].to_string(), "repository:b:push");
        assert_eq!(Actions::parse_list("pull,fly"), Action::Pull.into());
    }

    #[test]
    fn grants_collect_actions_per_repository() {
        let grants = Grants(vec![
            Scope::repository("a", Action::Pull.into()),
            Scope::repository("a", Action::Push.into()),
            Scope::repository("b", Actions::ALL),
        ]);
        assert_eq!(
            grants.on_repository("a"),
            Actions::from(Action::Pull).with(Action::Push)
        );
        assert_eq!(grants.on_repository("c"), Actions::NONE);
        assert!(!grants.catalog());
    }
}
