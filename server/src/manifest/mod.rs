//! Manifests as the registry sees them: which kind a document is, what it references, and
//! whether it is well-formed. Pure: no I/O, so every rule is unit-tested on bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::oci::{Digest, media_type};

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("manifest invalid: {0}")]
    Invalid(String),
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::Invalid(reason.into())
}

/// A content descriptor, leniently parsed: unknown fields are ignored, known ones validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Whether a manifest describes one image (or artifact) or a list of manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

/// The parts of a manifest the registry acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The media type it is served with.
    pub media_type: String,
    pub kind: Kind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// The blobs that must be in the repository before this manifest can be: the config and the
    /// layers, except layers that live elsewhere (foreign layers, or layers with `urls`).
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter().filter(|layer| {
            layer.media_type != media_type::DOCKER_FOREIGN_LAYER
                && layer.urls.as_ref().is_none_or(Vec::is_empty)
        }))
    }

    /// What the referrers API reports as this manifest's artifact type.
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type.as_deref().or(match self.kind {
            Kind::Image => self.config.as_ref().map(|c| c.media_type.as_str()),
            Kind::Index => None,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// Parses and validates a manifest that arrived with `content_type`.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, Error> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|err| invalid(format!("not a manifest: {err}")))?;
    if doc.schema_version != Some(serde_json::Value::from(2)) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let content_type = content_type.map(essence).filter(|ct| !ct.is_empty());
    if let (Some(declared), Some(header)) = (doc.media_type.as_deref(), content_type)
        && declared != header
    {
        return Err(invalid(format!(
            "mediaType {declared:?} does not match Content-Type {header:?}"
        )));
    }
    let media_type = match doc.media_type.as_deref().or(content_type) {
        Some(media_type) => media_type.to_owned(),
        // The OCI specs allow mediaType to be left out; the document's shape tells the kind.
        None if doc.manifests.is_some() => media_type::OCI_INDEX.to_owned(),
        None => media_type::OCI_MANIFEST.to_owned(),
    };
    let kind = match media_type.as_str() {
        media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => Kind::Image,
        media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST => Kind::Index,
        other => {
            return Err(invalid(format!(
                "unsupported manifest media type {other:?}"
            )));
        }
    };
    match kind {
        Kind::Image if doc.config.is_none() => {
            return Err(invalid("image manifest without config"));
        }
        Kind::Image if doc.layers.is_none() => {
            return Err(invalid("image manifest without layers"));
        }
        Kind::Image if doc.manifests.is_some() => {
            return Err(invalid("image manifest with a manifests list"));
        }
        Kind::Index if doc.manifests.is_none() => return Err(invalid("index without manifests")),
        Kind::Index if doc.config.is_some() || doc.layers.is_some() => {
            return Err(invalid("index with config or layers"));
        }
        _ => {}
    }
    Ok(Manifest {
        media_type,
        kind,
        config: doc.config,
        layers: doc.layers.unwrap_or_default(),
        manifests: doc.manifests.unwrap_or_default(),
        subject: doc.subject,
        artifact_type: doc.artifact_type,
        annotations: doc.annotations,
    })
}

/// The media type a stored manifest is served with. Stored manifests were validated on the way
/// in, so this only needs the `mediaType` field (or, when absent, the document's shape).
pub fn served_media_type(body: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sniff {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Sniff>(body) {
        Ok(Sniff {
            media_type: Some(media_type),
            ..
        }) => media_type,
        Ok(Sniff {
            manifests: Some(_), ..
        }) => media_type::OCI_INDEX.to_owned(),
        _ => media_type::OCI_MANIFEST.to_owned(),
    }
}

/// `type/subtype` without parameters, e.g. from `application/json; charset=utf-8`.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":10}},{{"mediaType":"{}","digest":"{}","size":10}}]{extra}}}"#,
            media_type::OCI_MANIFEST,
            digest('a'),
            digest('b'),
            media_type::DOCKER_FOREIGN_LAYER,
            digest('c'),
        )
    }

    #[test]
    fn parses_an_image_manifest() {
        let body = image(&format!(
            r#","subject":{{"mediaType":"{}","digest":"{}","size":5}},"artifactType":"application/x.test""#,
            media_type::OCI_MANIFEST,
            digest('d')
        ));
        let manifest = parse(body.as_bytes(), Some(media_type::OCI_MANIFEST)).unwrap();
        assert_eq!(manifest.kind, Kind::Image);
        let required: Vec<_> = manifest
            .required_blobs()
            .map(|d| d.digest.to_string())
            .collect();
        assert_eq!(required, [digest('a'), digest('b')]);
        assert_eq!(manifest.subject.unwrap().digest.to_string(), digest('d'));
        assert_eq!(
            manifest.artifact_type.as_deref(),
            Some("application/x.test")
        );
    }

    #[test]
    fn tells_kinds_apart_without_media_type() {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":1}}]}}"#,
            media_type::OCI_MANIFEST,
            digest('e')
        );
        let parsed = parse(index.as_bytes(), None).unwrap();
        assert_eq!(
            (parsed.kind, parsed.media_type.as_str()),
            (Kind::Index, media_type::OCI_INDEX)
        );
        assert_eq!(served_media_type(index.as_bytes()), media_type::OCI_INDEX);
        let docker_list = index.replace(
            r#""schemaVersion":2,"#,
            &format!(
                r#""schemaVersion":2,"mediaType":"{}","#,
                media_type::DOCKER_MANIFEST_LIST
            ),
        );
        assert_eq!(
            parse(docker_list.as_bytes(), None).unwrap().kind,
            Kind::Index
        );
    }

    #[test]
    fn rejects_invalid_manifests() {
        let bad_digest = image("").replace(&digest('b'), "sha256:nothex");
        let negative_size = image("").replace(r#""size":10"#, r#""size":-1"#);
        let cases = [
            ("not json".to_owned(), None),
            ("[]".to_owned(), None),
            ("{}".to_owned(), None),
            (
                image("").replace(r#""schemaVersion":2"#, r#""schemaVersion":1"#),
                None,
            ),
            (image(""), Some(media_type::OCI_INDEX)),
            (
                image("").replace(media_type::OCI_MANIFEST, "application/x.unknown"),
                None,
            ),
            (bad_digest, None),
            (negative_size, None),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
                    .into(),
                None,
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#
                    .into(),
                None,
            ),
            (image(r#","manifests":[]"#), None),
        ];
        for (body, content_type) in cases {
            assert!(
                matches!(parse(body.as_bytes(), content_type), Err(Error::Invalid(_))),
                "{body} with {content_type:?}"
            );
        }
    }

    #[test]
    fn content_type_parameters_are_ignored() {
        let ct = format!("{}; charset=utf-8", media_type::OCI_MANIFEST);
        assert!(parse(image("").as_bytes(), Some(&ct)).is_ok());
    }
}
