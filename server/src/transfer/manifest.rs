//! Just enough of the manifest formats to walk an image graph: descriptors of what a manifest,
//! index or artifact refers to, its subject, and platforms. Manifests themselves are copied as
//! the bytes they are, never re-serialized, so their digests hold.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::oci::{Digest, media_type};

/// A content descriptor, keeping fields this client does not use so they survive a rewrite of
/// a layout's `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            other: serde_json::Map::new(),
        }
    }

    /// A short name for logs and progress bars: `sha256:0123456789ab`.
    pub fn short(&self) -> String {
        let hex = self.digest.hex();
        format!(
            "{}:{}",
            self.digest.algorithm().as_str(),
            &hex[..12.min(hex.len())]
        )
    }
}

/// Where an image runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// `os/arch[/variant]`, as `--platform` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformFilter {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl FromStr for PlatformFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, architecture] | [os, architecture, _]
                if !os.is_empty() && !architecture.is_empty() =>
            {
                Ok(Self {
                    os: (*os).to_owned(),
                    architecture: (*architecture).to_owned(),
                    variant: parts.get(2).map(|v| (*v).to_owned()),
                })
            }
            _ => Err(format!("{s:?} is not os/arch[/variant]")),
        }
    }
}

impl fmt::Display for PlatformFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

impl PlatformFilter {
    pub fn matches(&self, platform: &Platform) -> bool {
        platform.os == self.os
            && platform.architecture == self.architecture
            && (self.variant.is_none() || platform.variant == self.variant)
    }
}

/// An image manifest, an index, or an artifact manifest: whichever fields it has.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// An index's manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// The blobs of the (withdrawn) OCI artifact manifest, which some tools still write.
    #[serde(default)]
    pub blobs: Vec<Descriptor>,
    #[serde(default)]
    pub subject: Option<Descriptor>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|err| format!("not a manifest: {err}"))
    }

    pub fn is_index(&self, media_type: &str) -> bool {
        matches!(
            media_type,
            media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST
        ) || (self.config.is_none() && !self.manifests.is_empty())
    }

    /// The blobs an image or artifact needs at the destination; foreign layers live elsewhere.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(&self.layers)
            .chain(&self.blobs)
            .filter(|d| d.media_type != media_type::DOCKER_FOREIGN_LAYER)
    }
}

/// The media type of manifest `bytes`: what the source said, else the document's own field.
pub fn media_type_of(declared: Option<&str>, manifest: &Manifest) -> String {
    declared
        .map(|value| value.split(';').next().unwrap_or(value).trim().to_owned())
        .filter(|value| !value.is_empty() && value != "application/octet-stream")
        .or_else(|| manifest.media_type.clone())
        .unwrap_or_else(|| {
            if manifest.manifests.is_empty() {
                media_type::OCI_MANIFEST.to_owned()
            } else {
                media_type::OCI_INDEX.to_owned()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
      "manifests":[
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":7,
         "digest":"sha256:0000000000000000000000000000000000000000000000000000000000000001",
         "platform":{"architecture":"arm","os":"linux","variant":"v7","os.features":["x"]}},
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":7,
         "digest":"sha256:0000000000000000000000000000000000000000000000000000000000000002",
         "platform":{"architecture":"amd64","os":"linux"},"x-extra":1}]}"#;

    #[test]
    fn an_index_and_its_platforms() {
        let index = Manifest::parse(INDEX.as_bytes()).unwrap();
        assert!(index.is_index(&media_type_of(None, &index)));
        assert_eq!(index.blobs().count(), 0);
        let arm: PlatformFilter = "linux/arm/v7".parse().unwrap();
        let amd64: PlatformFilter = "linux/amd64".parse().unwrap();
        let platforms: Vec<&Platform> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .collect();
        assert!(arm.matches(platforms[0]) && !arm.matches(platforms[1]));
        assert!(amd64.matches(platforms[1]));
        assert!("linux".parse::<PlatformFilter>().is_err());
        // Unknown fields survive a round trip.
        let again = serde_json::to_value(&index.manifests[1]).unwrap();
        assert_eq!(again["x-extra"], 1);
        let platform = serde_json::to_value(&index.manifests[0]).unwrap();
        assert_eq!(platform["platform"]["os.features"][0], "x");
    }

    #[test]
    fn an_image_lists_config_and_layers_but_not_foreign_ones() {
        let image = Manifest::parse(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"c","size":1,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000003"},
            "layers":[{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","size":1,
              "digest":"sha256:0000000000000000000000000000000000000000000000000000000000000004"},
              {"mediaType":"l","size":1,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000005"}]}"#,
        )
        .unwrap();
        let media_type = media_type_of(
            Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
            &image,
        );
        assert_eq!(media_type, media_type::DOCKER_MANIFEST);
        assert!(!image.is_index(&media_type));
        assert_eq!(image.blobs().count(), 2);
    }
}
