//! What `spec.blobCache` adds to the server: the `[blob-cache]` table of its config, and the
//! Secret with the Redis URL, mounted whole.

use k8s_openapi::api::core::v1::{Volume, VolumeMount};
use toml::Table;

use crate::crd::Registry;

const SECRETS_DIR: &str = "/etc/stowage/blob-cache";

/// The `[blob-cache]` table; none when the spec leaves the server's defaults.
pub fn blob_cache_table(registry: &Registry) -> Option<Table> {
    let cache = registry.spec.blob_cache.as_ref()?;
    let mut table = Table::new();
    table.insert("entries".to_owned(), cache.entries.max(0).into());
    if let Some(url) = &cache.redis_url {
        table.insert(
            "redis-file".to_owned(),
            format!("{SECRETS_DIR}/{}/{}", url.name, url.key).into(),
        );
    }
    Some(table)
}

/// The Secret holding the Redis URL, if any.
pub fn blob_cache_secret(registry: &Registry) -> Option<String> {
    let cache = registry.spec.blob_cache.as_ref()?;
    cache.redis_url.as_ref().map(|url| url.name.clone())
}

/// The Secret's volume and mount, at the directory the config's file path names.
pub fn blob_cache_volumes(registry: &Registry) -> (Vec<Volume>, Vec<VolumeMount>) {
    blob_cache_secret(registry)
        .map(|secret| {
            super::whole_secret(
                "blob-cache".to_owned(),
                &secret,
                format!("{SECRETS_DIR}/{secret}"),
            )
        })
        .into_iter()
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::registry;
    use super::*;

    #[test]
    fn the_redis_url_is_read_from_its_mounted_secret() {
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "images"}},
            "blobCache": {"redisUrl": {"name": "cache", "key": "url"}}
        }));
        let table = blob_cache_table(&registry).expect("a table");
        assert_eq!(table["entries"].as_integer(), Some(100_000));
        assert_eq!(
            table["redis-file"].as_str(),
            Some("/etc/stowage/blob-cache/cache/url")
        );
        let (volumes, mounts) = blob_cache_volumes(&registry);
        assert_eq!(volumes.len(), 1);
        assert_eq!(mounts[0].mount_path, "/etc/stowage/blob-cache/cache");

        let plain = super::super::fixtures::registry(serde_json::json!({
            "storage": {"s3": {"bucket": "images"}}
        }));
        assert!(blob_cache_table(&plain).is_none());
        assert!(blob_cache_volumes(&plain).0.is_empty());
    }
}
