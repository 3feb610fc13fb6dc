//! One upstream registry: which repositories it serves, and the client that reaches it.

use std::time::Duration;

use reqwest::Url;

use crate::client::{ClientOptions, CredentialSource, RegistryClient};
use crate::oci::RepositoryName;

/// An upstream, as `config` resolves it.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub prefix: RepositoryName,
    pub url: Url,
    pub credentials: CredentialSource,
    pub tag_ttl: Duration,
    pub serve_stale: bool,
    pub tls_verify: bool,
    pub timeout: Duration,
    pub docker_hub: bool,
}

/// An upstream and its client.
pub struct Upstream {
    pub config: UpstreamSettings,
    pub client: RegistryClient,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("prefix", &self.config.prefix)
            .field("url", &self.config.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client, loading credential files (and watching them for changes).
    pub fn new(config: UpstreamSettings, reload_interval: Duration) -> Result<Self, String> {
        let credentials = config
            .credentials
            .watch(reload_interval)
            .map_err(|err| err.to_string())?;
        let options = ClientOptions {
            tls_verify: config.tls_verify,
            ca_file: None,
            credentials,
            read_timeout: config.timeout,
            deadline: Some(config.timeout),
        };
        let client =
            RegistryClient::for_url(&config.url, options).map_err(|err| err.to_string())?;
        Ok(Self { config, client })
    }

    /// The upstream's name for local repository `name`, if this upstream serves it:
    /// `docker.io/library/alpine` → `library/alpine`, and on Docker Hub `docker.io/alpine` →
    /// `library/alpine` too.
    pub fn remote_name(&self, name: &RepositoryName) -> Option<String> {
        let rest = name
            .as_str()
            .strip_prefix(self.config.prefix.as_str())?
            .strip_prefix('/')?;
        if self.config.docker_hub && !rest.contains('/') {
            Some(format!("library/{rest}"))
        } else {
            Some(rest.to_owned())
        }
    }

    pub fn prefix(&self) -> &str {
        self.config.prefix.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(prefix: &str, url: &str) -> Upstream {
        let url: Url = url.parse().unwrap();
        let settings = UpstreamSettings {
            prefix: prefix.parse().unwrap(),
            docker_hub: url.host_str() == Some("registry-1.docker.io"),
            url,
            credentials: CredentialSource::Anonymous,
            tag_ttl: Duration::from_secs(300),
            serve_stale: true,
            tls_verify: true,
            timeout: Duration::from_secs(30),
        };
        Upstream::new(settings, Duration::from_secs(10)).unwrap()
    }

    #[tokio::test]
    async fn names_map_by_prefix_with_docker_hubs_library_rule() {
        let name = |s: &str| s.parse::<RepositoryName>().unwrap();
        let hub = upstream("docker.io", "https://registry-1.docker.io");
        assert_eq!(
            hub.remote_name(&name("docker.io/alpine")).as_deref(),
            Some("library/alpine")
        );
        assert_eq!(
            hub.remote_name(&name("docker.io/grafana/grafana"))
                .as_deref(),
            Some("grafana/grafana")
        );
        assert_eq!(
            hub.remote_name(&name("docker.io")),
            None,
            "the prefix alone is no image"
        );
        assert_eq!(hub.remote_name(&name("docker.iox/alpine")), None);
        let mirror = upstream("mirror/quay", "http://127.0.0.1:5000");
        assert_eq!(
            mirror.remote_name(&name("mirror/quay/app")).as_deref(),
            Some("app")
        );
        assert_eq!(mirror.remote_name(&name("mirror/quay2/app")), None);
    }
}
