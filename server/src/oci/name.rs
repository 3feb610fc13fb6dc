//! Repository names, as the distribution spec's `<name>` grammar defines them.

use std::fmt;
use std::str::FromStr;

use super::ParseError;

/// Names longer than this are refused; the spec advises registries to cap them, and a cap keeps
/// storage keys and log lines bounded.
const MAX_NAME_LEN: usize = 255;

/// A validated repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
///
/// Because every component must start and end with `[a-z0-9]`, a valid name can never contain `..`,
/// an empty component or a leading `/`: it is always safe to use as a relative storage path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace the repository belongs to: its first path part (`team` for
    /// `team/app/web`), what usage and quotas count together.
    pub fn namespace(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(first, _)| first)
    }

    /// The namespace as a repository name (a name's first part is a name too): the root of
    /// everything the namespace stores.
    pub fn namespace_root(&self) -> Self {
        Self(self.namespace().to_owned())
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RepositoryName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(ParseError::Name);
        }
        Ok(Self(s.to_owned()))
    }
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or any number of `-`.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__` or `-+`, always followed by an alphanumeric.
        let run_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[run_start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for name in [
            "a",
            "library/ubuntu",
            "a.b/c_d/e__f/g--h",
            "0/1/2",
            "x-y-z",
            "a-----b",
        ] {
            assert!(name.parse::<RepositoryName>().is_ok(), "{name}");
        }
    }

    #[test]
    fn a_namespace_is_the_first_path_part() {
        for (name, namespace) in [
            ("team/app/web", "team"),
            ("team/app", "team"),
            ("solo", "solo"),
        ] {
            let name: RepositoryName = name.parse().unwrap();
            assert_eq!(name.namespace(), namespace);
            assert_eq!(name.namespace_root().as_str(), namespace);
        }
    }

    #[test]
    fn rejects_invalid_names() {
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        for name in [
            "", "A", "a/", "/a", "a//b", "..", "a/../b", "a/./b", "-a", "a-", "a..b", "a___b",
            "a_-b", "a b", "a%2fb", "a\\b", "a:b", "ü", &too_long,
        ] {
            assert_eq!(
                name.parse::<RepositoryName>(),
                Err(ParseError::Name),
                "{name:?}"
            );
        }
    }
}
