//! What the pages show of manifests and image configs, read leniently: a field of an unexpected
//! shape is left out, never an error, since anything a repository holds was written by someone
//! else. Pure, so every rule is tested on bytes.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// Configs larger than this are not read for display.
pub const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

/// Where an index entry runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
    #[serde(rename = "os.version")]
    pub os_version: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        if let Some(version) = &self.os_version {
            write!(f, " ({version})")?;
        }
        Ok(())
    }
}

/// One manifest an index lists.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default, deserialize_with = "lenient")]
    pub platform: Option<Platform>,
    #[serde(default, deserialize_with = "lenient")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The entries of an index, those that can be read.
pub fn index_entries(body: &[u8]) -> Vec<IndexEntry> {
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<serde_json::Value>,
    }
    serde_json::from_slice::<Index>(body)
        .map(|index| {
            index
                .manifests
                .into_iter()
                .filter_map(|entry| serde_json::from_value(entry).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// An image's configuration, as `docker inspect` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    #[serde(deserialize_with = "lenient")]
    pub created: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub author: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub architecture: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub os: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub config: Option<RunConfig>,
    #[serde(deserialize_with = "lenient")]
    pub history: Option<Vec<History>>,
}

/// How a container of the image runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(deserialize_with = "lenient")]
    pub user: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub env: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient")]
    pub cmd: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient")]
    pub working_dir: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(deserialize_with = "lenient")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(deserialize_with = "lenient")]
    pub stop_signal: Option<String>,
}

/// One step of how the image was built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct History {
    #[serde(deserialize_with = "lenient")]
    pub created: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub created_by: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub comment: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub empty_layer: Option<bool>,
}

/// Reads an image config; `None` when it is not a JSON object.
pub fn image_config(body: &[u8]) -> Option<ImageConfig> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if !value.is_object() {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// A field of the expected shape, or nothing.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// The short form of a digest: its algorithm's first 12 hex digits.
pub fn short_digest(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.get(..12).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_keep_what_can_be_read() {
        let body = br#"{"schemaVersion":2,"manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":7,
             "platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
            {"digest":"sha256:bb","size":"big","platform":"nonsense"},
            {"digest":"sha256:cc","platform":{"architecture":"amd64","os":"windows","os.version":"10.0.1"},
             "annotations":{"a":1}}
        ]}"#;
        let entries = index_entries(body);
        assert_eq!(
            entries.len(),
            2,
            "an entry whose size is no number is left out"
        );
        assert_eq!(
            entries[0].platform.as_ref().unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(
            entries[1].platform.as_ref().unwrap().to_string(),
            "windows/amd64 (10.0.1)"
        );
        assert_eq!(
            entries[1].annotations, None,
            "annotations that are not strings"
        );
        assert!(index_entries(b"not json").is_empty());
    }

    #[test]
    fn configs_of_odd_shapes_show_what_they_can() {
        let body = br#"{"created":"2026-01-01T00:00:00Z","architecture":7,
            "config":{"Env":["A=1"],"Entrypoint":"/bin/sh","Cmd":["-c","x"],
                      "Labels":{"x":"<script>"},"ExposedPorts":{"80/tcp":{}}},
            "history":[{"created_by":"RUN x","empty_layer":true},{"comment":5}]}"#;
        let config = image_config(body).unwrap();
        assert_eq!(config.created.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(config.architecture, None);
        let run = config.config.unwrap();
        assert_eq!(run.env, Some(vec!["A=1".to_owned()]));
        assert_eq!(run.entrypoint, None, "a string where a list belongs");
        assert_eq!(run.cmd.unwrap().len(), 2);
        assert_eq!(run.labels.unwrap()["x"], "<script>");
        let history = config.history.unwrap();
        assert_eq!(history[0].empty_layer, Some(true));
        assert_eq!(history[1].comment, None);
        assert_eq!(image_config(b"[1]"), None);
    }

    #[test]
    fn digests_shorten_to_twelve_characters() {
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_digest("sha256:01"), "01");
    }
}
