//! What `spec.proxy` adds to the server: the `[proxy]` table of its config, and the upstreams'
//! credential Secrets, each mounted whole as a directory so updates reach the pods.

use k8s_openapi::api::core::v1::{Volume, VolumeMount};
use toml::{Table, Value};

use crate::crd::Registry;

const CREDENTIALS_DIR: &str = "/etc/stowage/proxy";

/// The `[proxy]` table: retention and one `[[proxy.upstreams]]` table per upstream.
pub fn proxy_table(registry: &Registry) -> Option<Table> {
    let proxy = registry.spec.proxy.as_ref()?;
    let upstreams = proxy
        .upstreams
        .iter()
        .enumerate()
        .map(|(index, upstream)| {
            let mut table = Table::new();
            table.insert("prefix".to_owned(), upstream.prefix.clone().into());
            table.insert("url".to_owned(), upstream.url.clone().into());
            table.insert("tag-ttl".to_owned(), upstream.tag_ttl.clone().into());
            table.insert("serve-stale".to_owned(), upstream.serve_stale.into());
            if upstream.credentials_secret.is_some() {
                table.insert(
                    "credentials-dir".to_owned(),
                    format!("{CREDENTIALS_DIR}/{index}").into(),
                );
            }
            Value::Table(table)
        })
        .collect();
    let mut table = Table::new();
    table.insert("upstreams".to_owned(), Value::Array(upstreams));
    if let Some(retention) = &proxy.retention {
        table.insert("retention".to_owned(), retention.clone().into());
    }
    Some(table)
}

/// The upstreams' credential Secrets.
pub fn proxy_secrets(registry: &Registry) -> Vec<String> {
    registry
        .spec
        .proxy
        .iter()
        .flat_map(|proxy| &proxy.upstreams)
        .filter_map(|upstream| upstream.credentials_secret.clone())
        .collect()
}

/// A volume and mount per upstream with credentials, at the directory its table names.
pub fn proxy_volumes(registry: &Registry) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let upstreams = registry
        .spec
        .proxy
        .iter()
        .flat_map(|proxy| &proxy.upstreams);
    for (index, upstream) in upstreams.enumerate() {
        let Some(secret) = &upstream.credentials_secret else {
            continue;
        };
        let (volume, mount) = super::whole_secret(
            format!("proxy-{index}"),
            secret,
            format!("{CREDENTIALS_DIR}/{index}"),
        );
        volumes.push(volume);
        mounts.push(mount);
    }
    (volumes, mounts)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::registry;
    use super::*;

    fn mirror() -> Registry {
        registry(serde_json::json!({
            "storage": {"s3": {"bucket": "images"}},
            "proxy": {
                "retention": "720h",
                "upstreams": [
                    {"prefix": "docker.io", "url": "https://registry-1.docker.io", "credentialsSecret": "hub"},
                    {"prefix": "ghcr.io", "url": "https://ghcr.io", "tagTtl": "1m", "serveStale": false}
                ]
            }
        }))
    }

    #[test]
    fn upstreams_become_config_tables_with_their_credentials_mounted() {
        let table = proxy_table(&mirror()).expect("a proxy table");
        assert_eq!(table["retention"].as_str(), Some("720h"));
        let upstreams = table["upstreams"].as_array().expect("upstreams");
        assert_eq!(upstreams[0]["prefix"].as_str(), Some("docker.io"));
        assert_eq!(upstreams[0]["tag-ttl"].as_str(), Some("5m"));
        assert_eq!(upstreams[0]["serve-stale"].as_bool(), Some(true));
        assert_eq!(
            upstreams[0]["credentials-dir"].as_str(),
            Some("/etc/stowage/proxy/0")
        );
        assert_eq!(upstreams[1]["tag-ttl"].as_str(), Some("1m"));
        assert!(upstreams[1].get("credentials-dir").is_none());
        let (volumes, mounts) = proxy_volumes(&mirror());
        assert_eq!(volumes.len(), 1);
        let secret = volumes[0].secret.as_ref().expect("a Secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("hub"));
        assert!(
            secret.items.is_none(),
            "the whole Secret, so updates reach the pod"
        );
        assert_eq!(mounts[0].mount_path, "/etc/stowage/proxy/0");
        assert_eq!(proxy_secrets(&mirror()), ["hub"]);
    }
}
