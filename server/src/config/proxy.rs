//! The pull-through cache's upstreams: the `[[proxy.upstreams]]` tables of the config file.
//!
//! ```toml
//! [[proxy.upstreams]]
//! prefix = "docker.io"                   # docker.io/** mirrors Docker Hub
//! url = "https://registry-1.docker.io"
//! username = "me"
//! password-file = "/etc/stowage/hub-token"
//! tag-ttl = "5m"
//! ```

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::ConfigError;
use super::humantime_serde_opt;
use crate::client::CredentialSource;
use crate::oci::RepositoryName;
use crate::proxy::{self, UpstreamSettings};

/// How long a cached tag is served before the upstream is asked again.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(300);
/// How long an upstream may take to send anything before a pull gives up on it.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The `[proxy]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProxySettings {
    #[serde(default)]
    pub upstreams: Vec<UpstreamTable>,
    /// Cached repositories not pulled for this long are removed by `stowage gc`.
    #[serde(default, with = "humantime_serde_opt")]
    pub retention: Option<Duration>,
}

/// One `[[proxy.upstreams]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UpstreamTable {
    /// Repositories below this name (`docker.io`, `mirror/quay`) are pulled from `url`;
    /// `docker.io/**` is the same as `docker.io`.
    pub prefix: String,
    pub url: String,
    pub username: Option<String>,
    /// The password (or access token used as one) for `username`, read again when it changes.
    pub password_file: Option<PathBuf>,
    /// A token sent as `Authorization: Bearer`, with no token flow; read again when it changes.
    pub token_file: Option<PathBuf>,
    /// A directory (a mounted Secret) holding `username` and `password` files, or a `token`
    /// file; which it holds is looked at when the server starts.
    pub credentials_dir: Option<PathBuf>,
    #[serde(default, with = "humantime_serde_opt")]
    pub tag_ttl: Option<Duration>,
    /// Serve a cached tag, with a `Warning`, when the upstream is down [default: true].
    pub serve_stale: Option<bool>,
    /// Verify the upstream's certificate [default: true].
    pub tls_verify: Option<bool>,
    #[serde(default, with = "humantime_serde_opt")]
    pub timeout: Option<Duration>,
    /// Docker Hub's rule, `alpine` → `library/alpine` [default: on for Docker Hub's URLs].
    pub docker_hub: Option<bool>,
}

impl ProxySettings {
    pub fn resolve(self) -> Result<proxy::Settings, ConfigError> {
        let invalid = |prefix: &str, why: String| {
            ConfigError::Invalid(format!("[[proxy.upstreams]] prefix {prefix:?}: {why}"))
        };
        let mut seen = HashSet::new();
        let mut upstreams = Vec::new();
        for upstream in self.upstreams {
            let raw = upstream.prefix.trim_end_matches("/**").to_owned();
            let prefix: RepositoryName = raw
                .parse()
                .map_err(|_| invalid(&upstream.prefix, "not a repository name".into()))?;
            if !seen.insert(prefix.to_string()) {
                return Err(invalid(&upstream.prefix, "listed twice".into()));
            }
            let url = Url::parse(&upstream.url)
                .map_err(|err| invalid(&upstream.prefix, format!("url: {err}")))?;
            if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
                return Err(invalid(
                    &upstream.prefix,
                    format!("{url} is not an http(s) URL"),
                ));
            }
            let credentials = CredentialSource::from_fields(
                upstream.username,
                upstream.password_file,
                upstream.token_file,
                upstream.credentials_dir,
            )
            .map_err(|why| invalid(&upstream.prefix, why))?;
            let docker_hub = upstream.docker_hub.unwrap_or_else(|| {
                matches!(
                    url.host_str(),
                    Some("registry-1.docker.io" | "index.docker.io" | "docker.io")
                )
            });
            upstreams.push(UpstreamSettings {
                prefix,
                url,
                credentials,
                tag_ttl: upstream.tag_ttl.unwrap_or(DEFAULT_TAG_TTL),
                serve_stale: upstream.serve_stale.unwrap_or(true),
                tls_verify: upstream.tls_verify.unwrap_or(true),
                timeout: upstream.timeout.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT),
                docker_hub,
            });
        }
        Ok(proxy::Settings {
            upstreams,
            retention: self.retention,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<proxy::Settings, String> {
        toml::from_str::<ProxySettings>(text)
            .map_err(|err| err.to_string())?
            .resolve()
            .map_err(|err| err.to_string())
    }

    #[test]
    fn upstreams_with_defaults_and_credentials() {
        let config = parse(
            r#"
            retention = "30d"
            [[upstreams]]
            prefix = "docker.io/**"
            url = "https://registry-1.docker.io"
            [[upstreams]]
            prefix = "mirror/team"
            url = "http://10.0.0.1:5000"
            username = "puller"
            password-file = "/run/secrets/pw"
            tag-ttl = "1m"
            serve-stale = false
            "#,
        )
        .unwrap();
        assert_eq!(config.retention, Some(Duration::from_secs(30 * 86400)));
        let hub = &config.upstreams[0];
        assert_eq!(hub.prefix.as_str(), "docker.io");
        assert!(hub.docker_hub && hub.serve_stale);
        assert_eq!(hub.tag_ttl, DEFAULT_TAG_TTL);
        let team = &config.upstreams[1];
        assert!(!team.docker_hub && !team.serve_stale);
        assert_eq!(
            team.credentials,
            CredentialSource::Password {
                username: "puller".into(),
                password_file: "/run/secrets/pw".into()
            }
        );
    }

    #[test]
    fn bad_upstreams_are_refused() {
        let one = |body: &str| parse(&format!("[[upstreams]]\n{body}"));
        assert!(one("prefix = \"Bad\"\nurl = \"https://x\"").is_err());
        assert!(one("prefix = \"a\"\nurl = \"ftp://x\"").is_err());
        assert!(one("prefix = \"a\"\nurl = \"no scheme\"").is_err());
        assert!(one("prefix = \"a\"\nurl = \"https://x\"\nusername = \"u\"").is_err());
        assert!(one("prefix = \"a\"\nurl = \"https://x\"\nsurprise = 1").is_err());
        let twice = "[[upstreams]]\nprefix = \"a\"\nurl = \"https://x\"\n\
                     [[upstreams]]\nprefix = \"a/**\"\nurl = \"https://y\"";
        assert!(parse(twice).is_err());
    }
}
