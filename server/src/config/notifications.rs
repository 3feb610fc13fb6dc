//! Webhooks for registry events: the `[[notifications.endpoints]]` tables of the config file.
//!
//! ```toml
//! [[notifications.endpoints]]
//! name = "scanner"
//! url = "https://scanner.example/events"
//! headers = { "X-Team" = "platform" }
//! header-files = { "Authorization" = "/etc/stowage/scanner-auth" }
//! signing-key-file = "/etc/stowage/scanner-hmac"
//! ignored-actions = ["pull"]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::ConfigError;
use super::humantime_serde_opt;
use crate::events::EndpointSettings;

/// The `[notifications]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NotificationSettings {
    #[serde(default)]
    pub endpoints: Vec<EndpointTable>,
    /// Events another replica wrote are delivered by any replica once they are this old: the
    /// writer died, or could not deliver them [default: 30s].
    #[serde(default, with = "humantime_serde_opt")]
    pub takeover_after: Option<Duration>,
}

/// One `[[notifications.endpoints]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EndpointTable {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header values read from files (secrets), read again for each delivery.
    #[serde(default)]
    pub header_files: BTreeMap<String, PathBuf>,
    /// A key for `X-Stowage-Signature: sha256=<HMAC-SHA256 of the body>`.
    pub signing_key_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde_opt")]
    pub timeout: Option<Duration>,
    /// The first wait after a failed delivery; it doubles up to a minute.
    #[serde(default, with = "humantime_serde_opt")]
    pub backoff: Option<Duration>,
    #[serde(default)]
    pub ignored_media_types: Vec<String>,
    /// `push`, `pull`, `delete`, `mount`.
    #[serde(default)]
    pub ignored_actions: Vec<String>,
}

const ACTIONS: [&str; 4] = ["push", "pull", "delete", "mount"];

impl NotificationSettings {
    pub fn resolve(self) -> Result<Vec<EndpointSettings>, ConfigError> {
        let mut names = HashSet::new();
        let takeover_after = self.takeover_after.unwrap_or(Duration::from_secs(30));
        self.endpoints
            .into_iter()
            .map(|endpoint| {
                let invalid = |why: String| {
                    ConfigError::Invalid(format!(
                        "[[notifications.endpoints]] {:?}: {why}",
                        endpoint.name
                    ))
                };
                if !super::is_plain_name(&endpoint.name) {
                    return Err(invalid("a name is letters, digits, - and _".into()));
                }
                if !names.insert(endpoint.name.clone()) {
                    return Err(invalid("listed twice".into()));
                }
                let url =
                    Url::parse(&endpoint.url).map_err(|err| invalid(format!("url: {err}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid(format!("{url} is not an http(s) URL")));
                }
                if let Some(action) = endpoint
                    .ignored_actions
                    .iter()
                    .find(|a| !ACTIONS.contains(&a.as_str()))
                {
                    return Err(invalid(format!("unknown action {action:?}")));
                }
                for header in endpoint.headers.keys().chain(endpoint.header_files.keys()) {
                    reqwest::header::HeaderName::from_bytes(header.as_bytes())
                        .map_err(|_| invalid(format!("bad header name {header:?}")))?;
                }
                Ok(EndpointSettings {
                    name: endpoint.name.clone(),
                    url,
                    headers: endpoint.headers.clone(),
                    header_files: endpoint.header_files.clone(),
                    signing_key_file: endpoint.signing_key_file.clone(),
                    timeout: endpoint.timeout.unwrap_or(Duration::from_secs(5)),
                    backoff: endpoint.backoff.unwrap_or(Duration::from_secs(1)),
                    ignored_media_types: endpoint.ignored_media_types.iter().cloned().collect(),
                    ignored_actions: endpoint.ignored_actions.iter().cloned().collect(),
                    takeover_after,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<EndpointSettings>, String> {
        toml::from_str::<NotificationSettings>(text)
            .map_err(|err| err.to_string())?
            .resolve()
            .map_err(|err| err.to_string())
    }

    #[test]
    fn endpoints_with_defaults_and_refusals() {
        let endpoints = parse(
            "[[endpoints]]\nname = \"scan\"\nurl = \"http://127.0.0.1:9/e\"\nignored-actions = [\"pull\"]\n\
             headers = { \"X-Team\" = \"a\" }",
        )
        .unwrap();
        assert_eq!(endpoints[0].timeout, Duration::from_secs(5));
        assert!(endpoints[0].ignored_actions.contains("pull"));
        let one = |body: &str| parse(&format!("[[endpoints]]\n{body}"));
        assert!(one("name = \"a b\"\nurl = \"http://x\"").is_err());
        assert!(one("name = \"a\"\nurl = \"ftp://x\"").is_err());
        assert!(one("name = \"a\"\nurl = \"http://x\"\nignored-actions = [\"fetch\"]").is_err());
        assert!(
            one("name = \"a\"\nurl = \"http://x\"\nheaders = { \"bad header\" = \"v\" }").is_err()
        );
        let twice = "[[endpoints]]\nname = \"a\"\nurl = \"http://x\"\n[[endpoints]]\nname = \"a\"\nurl = \"http://y\"";
        assert!(parse(twice).is_err());
    }
}
