//! The server's TOML config file, in a ConfigMap. Secrets stay out of it: the file names the
//! mounted key files, and the S3 access key comes in through the environment.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use toml::{Table, Value};

use super::access::{ClusterFacts, auth_table, tls_table};
use super::keys::{CURRENT_KEY, PREVIOUS_KEY};
use super::pod::{METRICS_PORT, SERVER_PORT, UPLOAD_KEY_PATH};
use super::{SERVER_COMPONENT, owned_meta};
use crate::crd::{Registry, RetentionRule, SemverLine};

/// The ConfigMap key, and the file name in the pods.
pub const CONFIG_FILE: &str = "config.toml";

/// `stowage serve --config` settings for `registry` (kebab-case keys, as the server reads them),
/// with what `facts` found in the cluster.
pub fn server_config(registry: &Registry, facts: &ClusterFacts) -> String {
    let spec = &registry.spec;
    let mut table = Table::new();
    let mut set = |key: &str, value: Value| {
        table.insert(key.to_owned(), value);
    };
    set("listen", format!("0.0.0.0:{SERVER_PORT}").into());
    set("metrics-listen", format!("0.0.0.0:{METRICS_PORT}").into());
    for (key, value) in super::storage::storage_settings(registry) {
        set(&key, value);
    }
    set(
        "upload-secret-file",
        format!("{UPLOAD_KEY_PATH}/{CURRENT_KEY}").into(),
    );
    if facts.previous_upload_key {
        set(
            "upload-secret-previous-file",
            format!("{UPLOAD_KEY_PATH}/{PREVIOUS_KEY}").into(),
        );
    }
    let limits = &spec.limits;
    set("max-connections", i64::from(limits.max_connections).into());
    set(
        "max-concurrent-requests",
        i64::from(limits.max_concurrent_requests).into(),
    );
    set(
        "header-read-timeout",
        limits.header_read_timeout.clone().into(),
    );
    set("body-idle-timeout", limits.body_idle_timeout.clone().into());
    if let Some(rate) = limits.rate_limit {
        set("rate-limit", i64::from(rate).into());
    }
    if let Some(burst) = limits.rate_limit_burst {
        set("rate-limit-burst", i64::from(burst).into());
    }
    if !limits.trusted_proxies.is_empty() {
        set(
            "trusted-proxies",
            Value::Array(
                limits
                    .trusted_proxies
                    .iter()
                    .cloned()
                    .map(Value::from)
                    .collect(),
            ),
        );
    }
    set("read-only", spec.read_only.into());
    set("deletes-enabled", spec.deletes_enabled.into());
    set("ui", spec.ui.enabled.into());
    if let Some(ttl) = &spec.ui.session_ttl {
        set("ui-session-ttl", ttl.clone().into());
    }
    set("log-format", "json".into());
    set("log-level", spec.log_level.as_str().into());
    if let Some(auth) = auth_table(registry, facts) {
        set("auth", Value::Table(auth));
    }
    if let Some(tls) = tls_table(registry) {
        set("tls", Value::Table(tls));
    }
    if let Some(proxy) = super::proxy::proxy_table(registry) {
        set("proxy", Value::Table(proxy));
    }
    if let Some(notifications) = super::notifications::notifications_table(registry) {
        set("notifications", Value::Table(notifications));
    }
    if let Some(rules) = super::replication::replication_tables(registry) {
        set("replication", Value::Array(rules));
    }
    if let Some(cache) = super::cache::blob_cache_table(registry) {
        set("blob-cache", Value::Table(cache));
    }
    if let Some(policies) = policies_table(registry) {
        set("policies", Value::Table(policies));
    }
    format!(
        "# Written by stowage-operator for Registry {}/{}; edits are overwritten.\n{table}",
        registry.namespace().unwrap_or_default(),
        registry.name_any()
    )
}

/// A TOML array of `list`'s strings.
pub(super) fn toml_strings(list: &[String]) -> Value {
    Value::Array(list.iter().cloned().map(Value::from).collect())
}

/// The `[policies]` table: immutable tags, retention rules and quotas.
fn policies_table(registry: &Registry) -> Option<Table> {
    let policies = registry.spec.policies.as_ref()?;
    if policies.immutable_tags.is_empty()
        && policies.retention.is_empty()
        && policies.quotas.is_empty()
    {
        return None;
    }
    let immutable = policies
        .immutable_tags
        .iter()
        .map(|rule| {
            let mut table = Table::new();
            table.insert("name".to_owned(), rule.name.clone().into());
            table.insert("repositories".to_owned(), toml_strings(&rule.repositories));
            table.insert("tags".to_owned(), toml_strings(&rule.tags));
            Value::Table(table)
        })
        .collect();
    let retention = policies
        .retention
        .iter()
        .map(|rule| Value::Table(retention_table(rule)))
        .collect();
    let quotas = policies
        .quotas
        .iter()
        .map(|quota| {
            let mut table = Table::new();
            table.insert("name".to_owned(), quota.name.clone().into());
            if !quota.repositories.is_empty() {
                table.insert("repositories".to_owned(), toml_strings(&quota.repositories));
            }
            if !quota.namespaces.is_empty() {
                table.insert("namespaces".to_owned(), toml_strings(&quota.namespaces));
            }
            table.insert("bytes".to_owned(), quota.bytes.clone().into());
            Value::Table(table)
        })
        .collect();
    let mut table = Table::new();
    table.insert("immutable-tags".to_owned(), Value::Array(immutable));
    table.insert("retention".to_owned(), Value::Array(retention));
    table.insert("quota".to_owned(), Value::Array(quotas));
    Some(table)
}

/// One `[[policies.retention]]` table.
fn retention_table(rule: &RetentionRule) -> Table {
    let mut table = Table::new();
    let mut set = |key: &str, value: Value| {
        table.insert(key.to_owned(), value);
    };
    set("name", rule.name.clone().into());
    set("repositories", toml_strings(&rule.repositories));
    if !rule.tags.is_empty() {
        set("tags", toml_strings(&rule.tags));
    }
    let counts = [
        ("most-recently-pushed", rule.most_recently_pushed),
        ("most-recently-pulled", rule.most_recently_pulled),
    ];
    for (key, count) in counts {
        if let Some(count) = count {
            set(key, i64::from(count).into());
        }
    }
    let durations = [
        ("pushed-within", &rule.pushed_within),
        ("pulled-within", &rule.pulled_within),
        ("untagged-older-than", &rule.untagged_older_than),
    ];
    for (key, duration) in durations {
        if let Some(duration) = duration {
            set(key, duration.clone().into());
        }
    }
    if let Some(semver) = &rule.semver {
        let mut keep = Table::new();
        if let Some(range) = &semver.range {
            keep.insert("range".to_owned(), range.clone().into());
        }
        let line = match semver.newest_per {
            SemverLine::Major => "major",
            SemverLine::Minor => "minor",
        };
        keep.insert("newest-per".to_owned(), line.into());
        keep.insert("count".to_owned(), i64::from(semver.count).into());
        set("semver", Value::Table(keep));
    }
    if rule.keep_referrers {
        set("keep-referrers", true.into());
    }
    table
}

/// The ConfigMap holding [`server_config`].
pub fn config_map(registry: &Registry, config: String) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(registry, config_map_name(registry), SERVER_COMPONENT),
        data: Some([(CONFIG_FILE.to_owned(), config)].into()),
        ..ConfigMap::default()
    }
}

pub(super) fn config_map_name(registry: &Registry) -> String {
    format!("{}-config", registry.name_any())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{fs_registry, registry, s3_registry};
    use super::*;

    fn parsed(config: &str) -> Table {
        config.parse().expect("valid TOML")
    }

    #[test]
    fn s3_settings_reach_the_server() {
        let config = parsed(&server_config(&s3_registry(), &ClusterFacts::default()));
        assert_eq!(config["storage"].as_str(), Some("s3"));
        assert_eq!(config["s3-bucket"].as_str(), Some("images"));
        assert_eq!(config["s3-region"].as_str(), Some("us-east-1"));
        assert_eq!(
            config["s3-endpoint"].as_str(),
            Some("http://garage.storage:3900")
        );
        assert_eq!(config["s3-path-style"].as_bool(), Some(true));
        assert_eq!(config["s3-redirect"].as_bool(), Some(false));
        assert!(!config.contains_key("s3-root-prefix"));
        assert!(!config.contains_key("fs-root"));
        assert_eq!(config["listen"].as_str(), Some("0.0.0.0:5000"));
    }

    #[test]
    fn filesystem_storage_points_at_the_volume() {
        let config = parsed(&server_config(&fs_registry(), &ClusterFacts::default()));
        assert_eq!(config["storage"].as_str(), Some("filesystem"));
        assert_eq!(
            config["fs-root"].as_str(),
            Some(crate::resources::DATA_PATH)
        );
        assert!(!config.contains_key("s3-bucket"));
    }

    #[test]
    fn the_previous_key_is_named_only_while_rotating() {
        let plain = parsed(&server_config(&s3_registry(), &ClusterFacts::default()));
        assert_eq!(
            plain["upload-secret-file"].as_str(),
            Some("/etc/stowage/upload-key/current")
        );
        assert!(!plain.contains_key("upload-secret-previous-file"));
        let rotating = parsed(&server_config(
            &s3_registry(),
            &ClusterFacts {
                previous_upload_key: true,
                ..ClusterFacts::default()
            },
        ));
        assert_eq!(
            rotating["upload-secret-previous-file"].as_str(),
            Some("/etc/stowage/upload-key/previous")
        );
    }

    #[test]
    fn modes_and_logging() {
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "b3x", "rootPrefix": "team-a"}},
            "readOnly": true,
            "deletesEnabled": false,
            "logLevel": "debug",
            "ui": {"enabled": true, "sessionTtl": "2h"},
            "policies": {"immutableTags": [
                {"name": "releases", "repositories": ["team/**"], "tags": ["v*", "release-*"]}
            ], "quotas": [{"name": "teams", "namespaces": ["team-*"], "bytes": "500Gi"}]}
        }));
        let config = parsed(&server_config(&registry, &ClusterFacts::default()));
        assert_eq!(config["read-only"].as_bool(), Some(true));
        assert_eq!(config["deletes-enabled"].as_bool(), Some(false));
        assert_eq!(config["log-level"].as_str(), Some("debug"));
        assert_eq!(config["ui"].as_bool(), Some(true));
        assert_eq!(config["ui-session-ttl"].as_str(), Some("2h"));
        let rule = &config["policies"]["immutable-tags"][0];
        assert_eq!(rule["name"].as_str(), Some("releases"));
        assert_eq!(rule["tags"][1].as_str(), Some("release-*"));
        let quota = &config["policies"]["quota"][0];
        assert_eq!(quota["name"].as_str(), Some("teams"));
        assert_eq!(quota["namespaces"][0].as_str(), Some("team-*"));
        assert!(quota.get("repositories").is_none());
        assert_eq!(quota["bytes"].as_str(), Some("500Gi"));
        assert_eq!(config["log-format"].as_str(), Some("json"));
        assert_eq!(config["s3-root-prefix"].as_str(), Some("team-a"));
        // The limits' defaults are written out, so the pods run with what the spec shows.
        assert_eq!(config["max-connections"].as_integer(), Some(4096));
        assert_eq!(config["max-concurrent-requests"].as_integer(), Some(512));
        assert_eq!(config["header-read-timeout"].as_str(), Some("20s"));
        assert_eq!(config["body-idle-timeout"].as_str(), Some("60s"));
        assert!(config.get("rate-limit").is_none());
    }

    #[test]
    fn the_config_map_is_owned_and_named_after_the_registry() {
        let map = config_map(&s3_registry(), "x = 1".to_owned());
        assert_eq!(map.metadata.name.as_deref(), Some("images-config"));
        assert_eq!(map.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(map.data.expect("data")[CONFIG_FILE], "x = 1");
    }
}
