//! `WWW-Authenticate` challenges, as registries send them on `401`.

use std::collections::HashMap;

/// How a registry asks to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// The Distribution token flow: fetch a token from `realm` for the scopes wanted.
    Bearer {
        realm: String,
        service: Option<String>,
        /// The scope the refused request needed, when the registry says.
        scope: Option<String>,
        /// `insufficient_scope` or `invalid_token`: the token held is not good enough.
        error: Option<String>,
    },
    /// Credentials with every request.
    Basic,
}

impl Challenge {
    /// The first challenge in a `WWW-Authenticate` value that this client can answer.
    pub fn parse(header: &str) -> Option<Self> {
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut params = parameters(rest);
        Some(Self::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
            error: params.remove("error"),
        })
    }
}

/// `key="quoted, value",other=token` pairs; keys are lowercased, quotes and escapes removed.
fn parameters(input: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            return params;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_quoted_commas_and_escapes() {
        let challenge = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        );
        assert_eq!(
            challenge,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
                error: Some("insufficient_scope".into()),
            })
        );
        let escaped = Challenge::parse(r#"bearer Realm="a\"b", service=plain"#);
        assert_eq!(
            escaped,
            Some(Challenge::Bearer {
                realm: "a\"b".into(),
                service: Some("plain".into()),
                scope: None,
                error: None,
            })
        );
    }

    #[test]
    fn basic_and_unknown_schemes() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(
            Challenge::parse("Bearer service=x"),
            None,
            "a realm is required"
        );
    }
}
