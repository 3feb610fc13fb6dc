//! What `spec.replication` adds: the `[[replication]]` tables of the server's config, the
//! Secrets the rules read (credentials and CA certificates, each mounted whole so updates reach
//! the pods), and the arguments of the reconciliation CronJob.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Volume, VolumeMount};
use toml::Value;

use super::config::toml_strings;
use crate::crd::{Registry, ReplicationRule};

const SECRETS_DIR: &str = "/etc/stowage/replication";

fn secret_dir(secret: &str) -> String {
    format!("{SECRETS_DIR}/{secret}")
}

fn rules(registry: &Registry) -> impl Iterator<Item = &ReplicationRule> {
    registry.spec.replication.iter().flat_map(|r| &r.rules)
}

/// One `[[replication]]` table per rule. The reconciliation is the CronJob's, so the tables set
/// no `reconcile-every`: the pods deliver events only.
pub fn replication_tables(registry: &Registry) -> Option<Vec<Value>> {
    registry.spec.replication.as_ref()?;
    let tables = rules(registry)
        .map(|rule| {
            let mut table = toml::Table::new();
            table.insert("name".to_owned(), rule.name.clone().into());
            table.insert("url".to_owned(), rule.url.clone().into());
            if !rule.repositories.is_empty() {
                table.insert("repositories".to_owned(), toml_strings(&rule.repositories));
            }
            if !rule.tags.is_empty() {
                table.insert("tags".to_owned(), toml_strings(&rule.tags));
            }
            if !rule.prefix.is_empty() {
                table.insert("prefix".to_owned(), rule.prefix.clone().into());
            }
            table.insert("deletes".to_owned(), rule.deletes.into());
            if let Some(secret) = &rule.credentials_secret {
                table.insert("credentials-dir".to_owned(), secret_dir(secret).into());
            }
            table.insert("tls-verify".to_owned(), rule.tls.verify.into());
            if let Some(ca) = &rule.tls.ca {
                let file = format!("{}/{}", secret_dir(&ca.name), ca.key);
                table.insert("ca-file".to_owned(), file.into());
            }
            if let Some(bandwidth) = &rule.bandwidth {
                table.insert("bandwidth".to_owned(), bandwidth.clone().into());
            }
            table.insert("jobs".to_owned(), i64::from(rule.jobs).into());
            Value::Table(table)
        })
        .collect();
    Some(tables)
}

/// The Secrets the rules read, each once.
pub fn replication_secrets(registry: &Registry) -> Vec<String> {
    let names: BTreeSet<String> = rules(registry)
        .flat_map(|rule| {
            let ca = rule.tls.ca.as_ref().map(|ca| ca.name.clone());
            rule.credentials_secret.clone().into_iter().chain(ca)
        })
        .collect();
    names.into_iter().collect()
}

/// A volume and mount per Secret, at the directory the config's paths name.
pub fn replication_volumes(registry: &Registry) -> (Vec<Volume>, Vec<VolumeMount>) {
    replication_secrets(registry)
        .into_iter()
        .enumerate()
        .map(|(index, secret)| {
            super::whole_secret(format!("replication-{index}"), &secret, secret_dir(&secret))
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::registry;
    use super::*;

    fn replicating() -> Registry {
        registry(serde_json::json!({
            "storage": {"s3": {"bucket": "images"}},
            "replication": {"rules": [
                {
                    "name": "dr",
                    "url": "https://registry.dr.example",
                    "repositories": ["team/**"],
                    "prefix": "mirror/",
                    "deletes": true,
                    "credentialsSecret": "dr-push",
                    "tls": {"ca": {"name": "dr-ca", "key": "ca.crt"}},
                    "bandwidth": "50MiB"
                },
                {"name": "edge", "url": "http://edge:5000", "credentialsSecret": "dr-push", "tls": {"verify": false}}
            ]}
        }))
    }

    #[test]
    fn rules_become_tables_reading_mounted_secrets() {
        let tables = replication_tables(&replicating()).expect("tables");
        let dr = &tables[0];
        assert_eq!(dr["name"].as_str(), Some("dr"));
        assert_eq!(dr["repositories"][0].as_str(), Some("team/**"));
        assert_eq!(dr["prefix"].as_str(), Some("mirror/"));
        assert_eq!(dr["deletes"].as_bool(), Some(true));
        assert_eq!(
            dr["credentials-dir"].as_str(),
            Some("/etc/stowage/replication/dr-push")
        );
        assert_eq!(
            dr["ca-file"].as_str(),
            Some("/etc/stowage/replication/dr-ca/ca.crt")
        );
        assert_eq!(dr["bandwidth"].as_str(), Some("50MiB"));
        assert_eq!(dr["jobs"].as_integer(), Some(4));
        assert!(
            dr.get("reconcile-every").is_none(),
            "the CronJob reconciles"
        );
        let edge = &tables[1];
        assert_eq!(edge["tls-verify"].as_bool(), Some(false));
        assert!(edge.get("tags").is_none() && edge.get("prefix").is_none());

        assert_eq!(replication_secrets(&replicating()), ["dr-ca", "dr-push"]);
        let (volumes, mounts) = replication_volumes(&replicating());
        assert_eq!(volumes.len(), 2, "each Secret mounted once");
        assert_eq!(mounts[1].mount_path, "/etc/stowage/replication/dr-push");
    }
}
