//! A registry listening on 127.0.0.1, and helpers that speak the distribution API to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use stowage::cli::{Cli, Command};
use stowage::oci::Digest;
use stowage::storage;
use stowage::upload::{SecretKey, TokenKeys};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    pub root: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// A registry on filesystem storage in a fresh temporary directory.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// As `start`, with extra `stowage serve` flags.
    pub async fn start_with(flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let root_arg = root.to_str().unwrap().to_owned();
        let mut argv = vec![
            "stowage",
            "serve",
            "--fs-root",
            &root_arg,
            "--fs-fsync",
            "false",
        ];
        argv.extend_from_slice(flags);
        let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command;
        let config = args.resolve().unwrap();
        let store = storage::open(&config.storage).await.unwrap();
        let keys = config
            .keys
            .clone()
            .unwrap_or_else(|| TokenKeys::new(SecretKey::random(), None));
        let app = stowage::cli::app(&config, Arc::clone(&store), keys);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            base,
            http,
            root,
            _dir: dir,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Resolves a `Location` header (relative or absolute) against this server.
    pub fn location(&self, response: &Response) -> String {
        let location = header(response, "location");
        if location.starts_with("http") {
            location
        } else {
            self.url(&location)
        }
    }

    /// Pushes `data` as a blob in one request and returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let response = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            response.text().await.unwrap()
        );
        digest
    }

    /// Pushes a manifest and returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a small image (config + one layer) and tags it; returns the manifest's bytes and digest.
    pub async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Vec<u8>, Digest) {
        let manifest = self.image_manifest(repo, layer, None).await;
        let response = self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            response.text().await.unwrap()
        );
        let digest = Digest::sha256_of(&manifest);
        (manifest, digest)
    }

    /// Uploads a config and `layer` and returns an image manifest referencing them.
    pub async fn image_manifest(&self, repo: &str, layer: &[u8], extra: Option<Value>) -> Vec<u8> {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let config_digest = self.push_blob(repo, config).await;
        let layer_digest = self.push_blob(repo, layer).await;
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": LAYER, "digest": layer_digest.to_string(), "size": layer.len()}],
        });
        if let Some(Value::Object(extra)) = extra {
            manifest.as_object_mut().unwrap().extend(extra);
        }
        serde_json::to_vec(&manifest).unwrap()
    }

    /// Every file below the storage root whose path contains `part`.
    pub fn stored_files(&self, part: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out.retain(|p| p.to_string_lossy().contains(part));
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Asserts that `response` is the spec's error body with `code` and `status`.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) {
    let actual_status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual_status, status, "body: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["errors"][0]["code"], code, "body: {text}");
    assert!(body["errors"][0]["message"].is_string(), "body: {text}");
}

/// Bytes that are different for each `seed`.
pub fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
