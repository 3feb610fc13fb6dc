//! Content digests, and a hasher whose running state can be saved and resumed.
//!
//! The resumable state is what lets any replica continue an upload: the state after the last
//! accepted chunk travels (signed) in the upload token, so no replica ever re-reads the upload to
//! hash it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

use super::ParseError;

/// The digest algorithms this registry stores content under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }
}

impl FromStr for Algorithm {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Self::Sha256),
            "sha512" => Ok(Self::Sha512),
            other => Err(ParseError::UnsupportedAlgorithm(other.to_owned())),
        }
    }
}

/// A validated `sha256:<64 hex>` or `sha512:<128 hex>` digest.
///
/// The hex part is lowercase hexadecimal only, so it is safe in storage keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded part, after the colon.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        let mut hasher = DigestHasher::new(Algorithm::Sha256);
        hasher.update(data);
        hasher.finish()
    }

    /// The digest of `data` under `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Self {
        let mut hasher = DigestHasher::new(algorithm);
        hasher.update(data);
        hasher.finish()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // oci-spec checks the grammar and, for the sha2 family, the length and lowercase hex.
        let parsed = oci_spec::image::Digest::from_str(s)
            .map_err(|err| ParseError::Digest(err.to_string()))?;
        let algorithm = parsed.algorithm().as_ref().parse()?;
        Ok(Self {
            algorithm,
            hex: parsed.digest().to_owned(),
        })
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A running digest computation that can be frozen into bytes and thawed on another process.
#[derive(Clone)]
pub enum DigestHasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DigestHasher")
            .field(&self.algorithm())
            .finish()
    }
}

impl DigestHasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(Sha256::new()),
            Algorithm::Sha512 => Self::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Sha256(_) => Algorithm::Sha256,
            Self::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far; the hasher itself is left untouched.
    pub fn peek(&self) -> Digest {
        self.clone().finish()
    }

    pub fn finish(self) -> Digest {
        let (algorithm, bytes) = match self {
            Self::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Self::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest {
            algorithm,
            hex: hex(&bytes),
        }
    }

    /// The running state, including any buffered partial block.
    pub fn save(&self) -> Vec<u8> {
        match self {
            Self::Sha256(h) => h.serialize().to_vec(),
            Self::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// Rebuilds a hasher from [`DigestHasher::save`]'s output; `None` if the bytes are not a state.
    pub fn restore(algorithm: Algorithm, state: &[u8]) -> Option<Self> {
        Some(match algorithm {
            Algorithm::Sha256 => Self::Sha256(Sha256::deserialize(state.try_into().ok()?).ok()?),
            Algorithm::Sha512 => Self::Sha512(Sha512::deserialize(state.try_into().ok()?).ok()?),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(Digest::sha256_of(b""), d);
        let sha512 = format!("sha512:{}", "0".repeat(128));
        assert_eq!(
            sha512.parse::<Digest>().unwrap().algorithm(),
            Algorithm::Sha512
        );
    }

    #[test]
    fn rejects_bad_digests() {
        let cases = [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:abc",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "g".repeat(64)),
            &format!("sha256:{}", "a".repeat(65)),
            &format!("sha256:../{}", "a".repeat(61)),
            &format!("sha384:{}", "a".repeat(96)),
            "md5:d41d8cd98f00b204e9800998ecf8427e",
        ];
        for case in cases {
            assert!(case.parse::<Digest>().is_err(), "{case:?}");
        }
    }

    #[test]
    fn hasher_resumes_from_saved_state() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
            let mut first = DigestHasher::new(algorithm);
            first.update(&data[..333]);
            let saved = first.save();
            let mut resumed = DigestHasher::restore(algorithm, &saved).unwrap();
            resumed.update(&data[333..]);
            assert_eq!(resumed.finish(), Digest::of(algorithm, &data));
        }
        assert!(DigestHasher::restore(Algorithm::Sha256, b"short").is_none());
    }
}
