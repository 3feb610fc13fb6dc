//! Tags and the `<reference>` of a manifest URL, which is a tag or a digest.

use std::fmt;
use std::str::FromStr;

use super::{Digest, ParseError};

/// A validated tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. Never `.` or `..`, never contains `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Tag {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_');
        let rest_ok = bytes[1.min(bytes.len())..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !first_ok || !rest_ok || bytes.len() > 128 {
            return Err(ParseError::Tag);
        }
        Ok(Self(s.to_owned()))
    }
}

/// What follows `/manifests/` in a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A tag can never contain ':', so the colon decides which grammar applies.
        if s.contains(':') {
            s.parse().map(Self::Digest)
        } else {
            s.parse().map(Self::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => tag.fmt(f),
            Self::Digest(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let max = "a".repeat(128);
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", max.as_str()] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        let too_long = "a".repeat(129);
        for bad in [
            "",
            ".",
            "..",
            "-x",
            ".x",
            "a/b",
            "a:b",
            "a%2e",
            "ä",
            too_long.as_str(),
        ] {
            assert_eq!(bad.parse::<Tag>(), Err(ParseError::Tag), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(digest.parse(), Ok(Reference::Digest(_))));
        assert!("sha256:zz".parse::<Reference>().is_err());
    }
}
