//! Replication to other registries: the `[[replication]]` tables of the config file.
//!
//! ```toml
//! [[replication]]
//! name = "dr-site"
//! url = "https://registry.dr.example"
//! repositories = ["team/**"]       # every repository when unset
//! tags = ["v*"]                    # every tag when unset
//! prefix = "mirror/"               # team/app there is mirror/team/app
//! deletes = true                   # deletes here are deleted there too
//! username = "replicator"              # or token-file, or credentials-dir (a mounted
//! password-file = "/etc/stowage/dr-password"  # Secret with username and password, or token)
//! ca-file = "/etc/stowage/dr-ca.pem"    # trusted besides the system's certificates
//! bandwidth = "50MiB"              # per second, for the rule's copies together
//! jobs = 4
//! reconcile-every = "1h"
//! ```

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::{ConfigError, humantime_serde_opt};
use crate::client::CredentialSource;
use crate::events::Pacing;
use crate::replication::RuleSettings;

/// One `[[replication]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ReplicationTable {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub deletes: bool,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A token sent as `Authorization: Bearer`, with no token flow.
    pub token_file: Option<PathBuf>,
    /// A directory (a mounted Secret) with `username` and `password` files, or `token`.
    pub credentials_dir: Option<PathBuf>,
    /// Verify the destination's certificate [default: true].
    pub tls_verify: Option<bool>,
    /// Certificates (PEM) to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// `50MiB`: bytes per second.
    pub bandwidth: Option<String>,
    pub jobs: Option<usize>,
    #[serde(default, with = "humantime_serde_opt")]
    pub reconcile_every: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub timeout: Option<Duration>,
    pub chunk_size: Option<String>,
    /// The first wait after the destination failed; it doubles up to a minute.
    #[serde(default, with = "humantime_serde_opt")]
    pub backoff: Option<Duration>,
    /// Events another replica wrote are replicated by any replica once they are this old.
    #[serde(default, with = "humantime_serde_opt")]
    pub takeover_after: Option<Duration>,
}

/// Resolves the `[[replication]]` tables.
pub fn resolve(tables: Vec<ReplicationTable>) -> Result<Vec<RuleSettings>, ConfigError> {
    let mut names = HashSet::new();
    tables
        .into_iter()
        .map(|table| {
            let invalid = |why: String| {
                ConfigError::Invalid(format!("[[replication]] {:?}: {why}", table.name))
            };
            if !(super::is_plain_name(&table.name) && table.name.len() <= 63) {
                return Err(invalid(
                    "a name is up to 63 letters, digits, - and _".into(),
                ));
            }
            if !names.insert(table.name.clone()) {
                return Err(invalid("listed twice".into()));
            }
            let url = Url::parse(&table.url).map_err(|err| invalid(format!("url: {err}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(invalid(format!(
                    "{url} is not an http(s) URL of a registry"
                )));
            }
            if url.path() != "/" {
                return Err(invalid(format!(
                    "{url}: name the registry, not a path in it (repositories go in prefix)"
                )));
            }
            let prefix = table.prefix.trim_start_matches('/').to_owned();
            if !(prefix.is_empty() || prefix.ends_with('/')) {
                return Err(invalid(format!("prefix {prefix:?} ends with /")));
            }
            let credentials = CredentialSource::from_fields(
                table.username.clone(),
                table.password_file.clone(),
                table.token_file.clone(),
                table.credentials_dir.clone(),
            )
            .map_err(invalid)?;
            let size = |value: &Option<String>, what: &str| {
                value
                    .as_deref()
                    .map(crate::units::parse_size)
                    .transpose()
                    .map_err(|err| invalid(format!("{what}: {err}")))
            };
            Ok(RuleSettings {
                name: table.name.clone(),
                url,
                prefix,
                repositories: table.repositories.clone(),
                tags: table.tags.clone(),
                deletes: table.deletes,
                credentials,
                tls_verify: table.tls_verify.unwrap_or(true),
                ca_file: table.ca_file.clone(),
                bandwidth: size(&table.bandwidth, "bandwidth")?,
                jobs: table.jobs.unwrap_or(4).clamp(1, 64),
                reconcile_every: table.reconcile_every,
                timeout: table.timeout.unwrap_or(Duration::from_secs(60)),
                chunk_size: size(&table.chunk_size, "chunk-size")?,
                pacing: Pacing {
                    backoff: table.backoff.unwrap_or(Duration::from_secs(1)),
                    takeover_after: table.takeover_after.unwrap_or(Duration::from_secs(30)),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        replication: Vec<ReplicationTable>,
    }

    fn parse(text: &str) -> Result<Vec<RuleSettings>, String> {
        let file: File = toml::from_str(text).map_err(|err| err.to_string())?;
        resolve(file.replication).map_err(|err| err.to_string())
    }

    #[test]
    fn a_rule_takes_its_defaults_and_its_sizes() {
        let rules = parse(
            "[[replication]]\nname = \"dr\"\nurl = \"https://dr.example:5000\"\n\
             bandwidth = \"50MiB\"\nprefix = \"mirror/\"\nreconcile-every = \"1h\"\n",
        )
        .unwrap();
        let rule = &rules[0];
        assert_eq!(rule.url.as_str(), "https://dr.example:5000/");
        assert_eq!(rule.bandwidth, Some(50 << 20));
        assert_eq!(rule.prefix, "mirror/");
        assert_eq!(rule.jobs, 4);
        assert!(rule.tls_verify && !rule.deletes);
        assert_eq!(rule.reconcile_every, Some(Duration::from_secs(3600)));
        assert_eq!(rule.pacing.takeover_after, Duration::from_secs(30));
        assert_eq!(rule.credentials, CredentialSource::Anonymous);
        let mounted = parse(
            "[[replication]]\nname = \"dr\"\nurl = \"https://dr.example\"\n\
             credentials-dir = \"/etc/stowage/replication/dr\"\nca-file = \"/ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            mounted[0].credentials,
            CredentialSource::Directory("/etc/stowage/replication/dr".into())
        );
        assert_eq!(
            mounted[0].ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let cases = [
            ("name = \"a b\"\nurl = \"https://x\"", "a name is"),
            ("name = \"a\"\nurl = \"ftp://x\"", "not an http(s) URL"),
            ("name = \"a\"\nurl = \"https://x/v2/team\"", "not a path"),
            (
                "name = \"a\"\nurl = \"https://x\"\nprefix = \"mirror\"",
                "ends with /",
            ),
            (
                "name = \"a\"\nurl = \"https://x\"\nusername = \"u\"",
                "credentials are one of",
            ),
            (
                "name = \"a\"\nurl = \"https://x\"\nbandwidth = \"fast\"",
                "bandwidth",
            ),
            (
                "name = \"a\"\nurl = \"https://x\"\ncolour = \"red\"",
                "unknown field",
            ),
        ];
        for (table, why) in cases {
            let err = parse(&format!("[[replication]]\n{table}\n")).unwrap_err();
            assert!(err.contains(why), "{table}: {err}");
        }
        let twice = "[[replication]]\nname = \"a\"\nurl = \"https://x\"\n";
        assert!(
            parse(&format!("{twice}{twice}"))
                .unwrap_err()
                .contains("listed twice")
        );
    }
}
