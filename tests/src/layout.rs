//! OCI image layouts on disk, built from real tar layers, for clients to push and pull.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::sha256;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A descriptor of something written into the layout.
#[derive(Debug, Clone)]
pub struct Written {
    pub digest: String,
    pub size: usize,
    pub media_type: &'static str,
}

impl Written {
    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// An OCI image layout being assembled.
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self {
            dir: dir.to_owned(),
            refs: Vec::new(),
        }
    }

    /// The bytes of blob `digest` (`sha256:…`).
    pub fn read(&self, digest: &str) -> Vec<u8> {
        let hex = digest.trim_start_matches("sha256:");
        fs::read(self.dir.join("blobs/sha256").join(hex)).unwrap()
    }

    fn blob(&self, data: &[u8], media_type: &'static str) -> Written {
        let digest = sha256(data);
        let hex = digest.trim_start_matches("sha256:");
        fs::write(self.dir.join("blobs/sha256").join(hex), data).unwrap();
        Written {
            digest,
            size: data.len(),
            media_type,
        }
    }

    /// Writes an image whose layers each hold the given files; returns its manifest.
    pub fn image(&self, architecture: &str, layers: &[&[(&str, &[u8])]]) -> Written {
        self.image_with(
            architecture,
            layers,
            &json!({"Env": ["PATH=/usr/bin"]}),
            None,
        )
    }

    /// As [`Layout::image`], with the config's run settings (`Env`, `Labels`, `Entrypoint`…)
    /// and the manifest's annotations as given.
    pub fn image_with(
        &self,
        architecture: &str,
        layers: &[&[(&str, &[u8])]],
        run_config: &Value,
        annotations: Option<&Value>,
    ) -> Written {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for files in layers {
            let tar = tar_of(files);
            diff_ids.push(sha256(&tar));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &tar).unwrap();
            let layer = self.blob(
                &gz.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            );
            descriptors.push(layer.descriptor());
        }
        let config = json!({
            "architecture": architecture,
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": run_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": (0..layers.len())
                .map(|n| json!({"created": "2026-01-01T00:00:00Z", "created_by": format!("ADD layer-{n} /")}))
                .collect::<Vec<_>>(),
        });
        let config = self.blob(
            &serde_json::to_vec(&config).unwrap(),
            "application/vnd.oci.image.config.v1+json",
        );
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": descriptors,
        });
        if let Some(annotations) = annotations {
            manifest["annotations"] = annotations.clone();
        }
        self.blob(&serde_json::to_vec(&manifest).unwrap(), OCI_MANIFEST)
    }

    /// Writes an artifact that refers to `subject` (a signature, an SBOM), as cosign and oras
    /// write them: an empty config, one layer, and the artifact type.
    pub fn referrer(&self, subject: &Written, artifact_type: &str, payload: &[u8]) -> Written {
        let config = self.blob(b"{}", "application/vnd.oci.empty.v1+json");
        let layer = self.blob(payload, "application/vnd.dev.cosign.simplesigning.v1+json");
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
            "subject": subject.descriptor(),
        });
        self.blob(&serde_json::to_vec(&manifest).unwrap(), OCI_MANIFEST)
    }

    /// Writes an image whose layers hold `layers` as they are (registries do not look inside
    /// layers); for blobs too large to build as tar archives in a test.
    pub fn raw_image(&self, layers: &[&[u8]]) -> Written {
        let layers: Vec<Value> = layers
            .iter()
            .map(|data| {
                self.blob(data, "application/vnd.oci.image.layer.v1.tar")
                    .descriptor()
            })
            .collect();
        let config = self.blob(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
            "application/vnd.oci.image.config.v1+json",
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers,
        });
        self.blob(&serde_json::to_vec(&manifest).unwrap(), OCI_MANIFEST)
    }

    /// Writes an index of the given images (one per architecture); returns the index.
    pub fn index(&self, images: &[(&str, &Written)]) -> Written {
        let manifests: Vec<Value> = images
            .iter()
            .map(|(arch, image)| {
                let mut d = image.descriptor();
                d["platform"] = json!({"architecture": arch, "os": "linux"});
                d
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        self.blob(&serde_json::to_vec(&index).unwrap(), OCI_INDEX)
    }

    /// Names `manifest` `tag` in the layout's index.json, instead of what it named before.
    pub fn tag(&mut self, tag: &str, manifest: &Written) {
        let mut d = manifest.descriptor();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.refs
            .retain(|r| r["annotations"]["org.opencontainers.image.ref.name"] != tag);
        self.refs.push(d);
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// `oci:<dir>:<tag>` for skopeo.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }
}

/// `size` bytes that do not repeat in any short period, made quickly.
pub fn filler(size: usize, seed: u64) -> Vec<u8> {
    // Distinct seeds give distinct content (an odd multiplier keeps them apart).
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1) | 1;
    (0..size)
        .map(|_| {
            // xorshift64: cheap enough for hundreds of MiB in a debug build.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Every blob digest stored in the layout at `dir`.
pub fn blob_digests(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect()
}

/// The manifest digest that `tag` names in the layout at `dir`.
pub fn tagged_digest(dir: &Path, tag: &str) -> String {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {}", dir.display()))["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}
