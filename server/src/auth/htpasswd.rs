//! Accounts from an htpasswd file, bcrypt hashes only (as Distribution).
//!
//! bcrypt is slow on purpose, so a successful check is remembered for a short while, keyed by
//! an HMAC of the credentials under a key that lives only in this process: the cache never
//! holds a password or anything a password could be recovered from faster than by bcrypt.
//! Unknown users are checked against a dummy hash of the same cost, so the time an answer
//! takes does not tell which users exist.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// How long a successful check is remembered.
const REMEMBER_FOR: Duration = Duration::from_secs(120);
/// The cost `htpasswd -B` uses, for the dummy hash of a file with no entries.
const HTPASSWD_DEFAULT_COST: u32 = 5;
/// Remembered checks at most; beyond that the oldest are forgotten.
const MAX_REMEMBERED: usize = 10_000;

/// A problem with an htpasswd file.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error(
        "line {line}: user {user:?} does not have a bcrypt hash ($2y$, $2b$ or $2a$); \
         create entries with `htpasswd -B`"
    )]
    NotBcrypt { line: usize, user: String },
    #[error("line {line}: expected `user:hash`")]
    Malformed { line: usize },
}

/// The accounts of one version of the file.
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// A hash no password matches, of the file's highest cost.
    dummy: String,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Htpasswd {
    pub fn parse(text: &str) -> Result<Self, HtpasswdError> {
        let mut users = HashMap::new();
        let mut cost = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or(HtpasswdError::Malformed { line: index + 1 })?;
            let parts = bcrypt_cost(hash).ok_or_else(|| HtpasswdError::NotBcrypt {
                line: index + 1,
                user: user.to_owned(),
            })?;
            cost = Some(cost.map_or(parts, |c: u32| c.max(parts)));
            users.insert(user.to_owned(), hash.to_owned());
        }
        // Never matched by anything: the password hashed is random and thrown away.
        let cost = cost.unwrap_or(HTPASSWD_DEFAULT_COST);
        let dummy = bcrypt::hash(rand::random::<[u8; 24]>(), cost).unwrap_or_default();
        Ok(Self { users, dummy })
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Whether `password` is `user`'s; as slow for unknown users as for known ones.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash.as_str(), true),
            None => (self.dummy.as_str(), false),
        };
        bcrypt::verify(password, hash).unwrap_or(false) && known
    }
}

fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = ["$2y$", "$2b$", "$2a$"]
        .iter()
        .find_map(|prefix| hash.strip_prefix(prefix))?;
    let (cost, _) = rest.split_once('$')?;
    cost.parse().ok().filter(|cost| (4..=31).contains(cost))
}

/// Successful checks remembered for a while, per version of the file.
pub struct Remembered {
    key: Zeroizing<[u8; 32]>,
    seen: RwLock<HashMap<[u8; 32], (u64, Instant)>>,
}

impl Default for Remembered {
    fn default() -> Self {
        Self {
            key: Zeroizing::new(rand::random()),
            seen: RwLock::default(),
        }
    }
}

impl Remembered {
    fn fingerprint(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        // Length-prefixed, so no other split of the same bytes gives the same fingerprint.
        mac.update(&(user.len() as u64).to_be_bytes());
        mac.update(user.as_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether these credentials were verified against file version `version` lately.
    pub fn knows(&self, version: u64, user: &str, password: &str) -> bool {
        let fingerprint = self.fingerprint(user, password);
        let seen = self
            .seen
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.get(&fingerprint)
            .is_some_and(|(v, at)| *v == version && at.elapsed() < REMEMBER_FOR)
    }

    pub fn remember(&self, version: u64, user: &str, password: &str) {
        let fingerprint = self.fingerprint(user, password);
        let mut seen = self
            .seen
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, (v, at)| *v == version && at.elapsed() < REMEMBER_FOR);
            if seen.len() >= MAX_REMEMBERED {
                seen.clear();
            }
        }
        seen.insert(fingerprint, (version, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> String {
        format!(
            "# accounts\nalice:{}\n\nbob:{}\n",
            bcrypt::hash("wonderland", 4).unwrap(),
            bcrypt::hash("builder", 4).unwrap().replace("$2b$", "$2y$")
        )
    }

    #[test]
    fn verifies_bcrypt_entries() {
        let accounts = Htpasswd::parse(&file()).unwrap();
        assert!(accounts.verify("alice", "wonderland"));
        assert!(accounts.verify("bob", "builder"));
        assert!(!accounts.verify("alice", "builder"));
        assert!(!accounts.verify("mallory", "wonderland"));
        assert!(!accounts.verify("mallory", ""));
        assert!(accounts.contains("bob") && !accounts.contains("mallory"));
        // Unknown users cost a real bcrypt check of the file's cost.
        assert!(accounts.dummy.starts_with("$2b$04$"), "{}", accounts.dummy);
    }

    #[test]
    fn refuses_other_hash_kinds_by_line() {
        for (text, needle) in [
            (
                "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
                "line 1: user \"alice\"",
            ),
            ("# c\nbob:$apr1$abc$def\n", "line 2"),
            ("carol:plaintext\n", "bcrypt"),
            ("nocolon\n", "user:hash"),
        ] {
            let err = Htpasswd::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn remembers_per_version_and_never_the_password() {
        let remembered = Remembered::default();
        assert!(!remembered.knows(1, "alice", "wonderland"));
        remembered.remember(1, "alice", "wonderland");
        assert!(remembered.knows(1, "alice", "wonderland"));
        assert!(!remembered.knows(1, "alice", "Wonderland"));
        assert!(!remembered.knows(2, "alice", "wonderland"));
        // "al" + "ice…" must not collide with "alice" + "…".
        assert!(!remembered.knows(1, "al", "icewonderland"));
    }
}
