//! What `spec.notifications` adds to the server: the `[notifications]` table of its config, and
//! the Secrets its header values and signing keys come from, each mounted whole.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Volume, VolumeMount};
use toml::{Table, Value};

use crate::crd::{Registry, SecretKey};

const SECRETS_DIR: &str = "/etc/stowage/notifications";

fn file_of(secret: &SecretKey) -> String {
    format!("{SECRETS_DIR}/{}/{}", secret.name, secret.key)
}

/// The `[notifications]` table, one `[[notifications.endpoints]]` table per endpoint.
pub fn notifications_table(registry: &Registry) -> Option<Table> {
    let notifications = registry.spec.notifications.as_ref()?;
    let endpoints = notifications
        .endpoints
        .iter()
        .map(|endpoint| {
            let mut table = Table::new();
            table.insert("name".to_owned(), endpoint.name.clone().into());
            table.insert("url".to_owned(), endpoint.url.clone().into());
            table.insert("timeout".to_owned(), endpoint.timeout.clone().into());
            table.insert("backoff".to_owned(), endpoint.backoff.clone().into());
            if !endpoint.headers.is_empty() {
                let headers = endpoint
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect();
                table.insert("headers".to_owned(), Value::Table(headers));
            }
            if !endpoint.secret_headers.is_empty() {
                let files = endpoint
                    .secret_headers
                    .iter()
                    .map(|(header, secret)| (header.clone(), file_of(secret).into()))
                    .collect();
                table.insert("header-files".to_owned(), Value::Table(files));
            }
            if let Some(key) = &endpoint.signing_key {
                table.insert("signing-key-file".to_owned(), file_of(key).into());
            }
            if !endpoint.ignored_media_types.is_empty() {
                let types = endpoint
                    .ignored_media_types
                    .iter()
                    .cloned()
                    .map(Value::from)
                    .collect();
                table.insert("ignored-media-types".to_owned(), Value::Array(types));
            }
            if !endpoint.ignored_actions.is_empty() {
                let actions = endpoint
                    .ignored_actions
                    .iter()
                    .map(|a| Value::from(a.as_str()))
                    .collect();
                table.insert("ignored-actions".to_owned(), Value::Array(actions));
            }
            Value::Table(table)
        })
        .collect();
    let mut table = Table::new();
    table.insert("endpoints".to_owned(), Value::Array(endpoints));
    Some(table)
}

/// The Secrets the endpoints read, each once.
pub fn notification_secrets(registry: &Registry) -> Vec<String> {
    let names: BTreeSet<String> = registry
        .spec
        .notifications
        .iter()
        .flat_map(|n| &n.endpoints)
        .flat_map(|e| e.secret_headers.values().chain(&e.signing_key))
        .map(|secret| secret.name.clone())
        .collect();
    names.into_iter().collect()
}

/// A volume and mount per Secret, at the directory the config's file paths name.
pub fn notification_volumes(registry: &Registry) -> (Vec<Volume>, Vec<VolumeMount>) {
    notification_secrets(registry)
        .into_iter()
        .enumerate()
        .map(|(index, secret)| {
            super::whole_secret(
                format!("notifications-{index}"),
                &secret,
                format!("{SECRETS_DIR}/{secret}"),
            )
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::registry;
    use super::*;

    #[test]
    fn endpoints_become_tables_reading_mounted_secrets() {
        let registry = registry(serde_json::json!({
            "storage": {"s3": {"bucket": "images"}},
            "notifications": {"endpoints": [{
                "name": "scanner",
                "url": "https://scanner.example/events",
                "headers": {"X-Team": "platform"},
                "secretHeaders": {"Authorization": {"name": "scanner", "key": "auth"}},
                "signingKey": {"name": "scanner", "key": "hmac"},
                "ignoredActions": ["pull"]
            }]}
        }));
        let table = notifications_table(&registry).expect("a table");
        let endpoint = &table["endpoints"].as_array().expect("endpoints")[0];
        assert_eq!(endpoint["timeout"].as_str(), Some("5s"));
        assert_eq!(endpoint["headers"]["X-Team"].as_str(), Some("platform"));
        assert_eq!(
            endpoint["header-files"]["Authorization"].as_str(),
            Some("/etc/stowage/notifications/scanner/auth")
        );
        assert_eq!(
            endpoint["signing-key-file"].as_str(),
            Some("/etc/stowage/notifications/scanner/hmac")
        );
        assert_eq!(endpoint["ignored-actions"][0].as_str(), Some("pull"));
        let (volumes, mounts) = notification_volumes(&registry);
        assert_eq!(volumes.len(), 1, "one Secret, mounted once");
        assert_eq!(mounts[0].mount_path, "/etc/stowage/notifications/scanner");
    }
}
