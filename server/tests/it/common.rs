//! A registry listening on 127.0.0.1, and helpers that speak the distribution API to it.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use stowage::cli::{Cli, Command};
use stowage::config::ServeConfig;
use stowage::oci::Digest;
use stowage::storage::{self, BlobStore};
use stowage::upload::{SecretKey, TokenKeys};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    /// The storage root, when the server runs on the filesystem.
    pub root: PathBuf,
    store: Arc<dyn BlobStore>,
    config: ServeConfig,
    keys: TokenKeys,
    /// Replicas behind the one address (see `STOWAGE_TEST_REPLICAS`).
    replicas: usize,
    _dir: Arc<tempfile::TempDir>,
    _task: Arc<Task>,
}

/// The serving task, stopped when the last view of the server is dropped.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `s3`, `azure` or `gcs` runs the suite against the S3 server in `STOWAGE_TEST_S3_*`, the
/// Azurite in `STOWAGE_TEST_AZURE_*` or the fake-gcs-server in `STOWAGE_TEST_GCS_*` (as
/// `make test` does).
const ENV_STORAGE: &str = "STOWAGE_TEST_STORAGE";

/// `redis` shares the blob cache in the Redis at `STOWAGE_TEST_REDIS` (as `make test`'s S3 run
/// does); otherwise each server keeps it in memory.
const ENV_BLOB_CACHE: &str = "STOWAGE_TEST_BLOB_CACHE";

/// A number above 1 serves every server of the suite as that many replicas (each with its own
/// process state, on the same storage and key) behind one address that hands each request to
/// the next replica in turn, so the suite checks that replicas answer as one node.
const ENV_REPLICAS: &str = "STOWAGE_TEST_REPLICAS";

fn replicas_from_env() -> usize {
    match std::env::var(ENV_REPLICAS) {
        Ok(count) => count
            .parse::<usize>()
            .expect("STOWAGE_TEST_REPLICAS is a number"),
        Err(_) => 1,
    }
}

/// One router that sends each request to the next of `apps`, round robin.
fn round_robin(mut apps: Vec<axum::Router>) -> axum::Router {
    if apps.len() == 1 {
        return apps.remove(0);
    }
    let apps = Arc::new(apps);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (apps, next) = (Arc::clone(&apps), Arc::clone(&next));
        async move {
            use tower::ServiceExt as _;
            let turn = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % apps.len();
            match apps[turn].clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    })
}

/// `stowage serve` flags for the S3 server `make test` started, under a fresh prefix.
fn s3_flags() -> Vec<String> {
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: run `make test`, which starts Garage"))
    };
    let prefix = format!("it-{}", uuid_like());
    [
        ("--storage", "s3".to_owned()),
        ("--s3-endpoint", var("STOWAGE_TEST_S3_ENDPOINT")),
        ("--s3-region", var("STOWAGE_TEST_S3_REGION")),
        ("--s3-bucket", var("STOWAGE_TEST_S3_BUCKET")),
        ("--s3-access-key-id", var("STOWAGE_TEST_S3_ACCESS_KEY_ID")),
        (
            "--s3-secret-access-key",
            var("STOWAGE_TEST_S3_SECRET_ACCESS_KEY"),
        ),
        ("--s3-path-style", "true".to_owned()),
        ("--s3-root-prefix", prefix),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// `stowage serve` flags for the Azurite `make test` started, under a fresh prefix.
fn azure_flags() -> Vec<String> {
    let endpoint = std::env::var("STOWAGE_TEST_AZURE_ENDPOINT")
        .expect("STOWAGE_TEST_AZURE_ENDPOINT is not set: run `make test`, which starts Azurite");
    // Azurite's development account and key, which Microsoft publishes.
    [
        ("--storage", "azure".to_owned()),
        ("--azure-endpoint", endpoint),
        ("--azure-account", "devstoreaccount1".to_owned()),
        (
            "--azure-access-key",
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
                .to_owned(),
        ),
        ("--azure-container", "stowage".to_owned()),
        ("--azure-root-prefix", format!("it-{}", uuid_like())),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// `stowage serve` flags for the fake-gcs-server `make test` started, under a fresh prefix.
fn gcs_flags() -> Vec<String> {
    let endpoint = std::env::var("STOWAGE_TEST_GCS_ENDPOINT").expect(
        "STOWAGE_TEST_GCS_ENDPOINT is not set: run `make test`, which starts fake-gcs-server",
    );
    [
        ("--storage", "gcs".to_owned()),
        ("--gcs-endpoint", endpoint),
        ("--gcs-anonymous", "true".to_owned()),
        ("--gcs-bucket", "stowage".to_owned()),
        ("--gcs-root-prefix", format!("it-{}", uuid_like())),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

fn uuid_like() -> String {
    (0..8)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Server {
    /// A registry on the suite's storage: a fresh temporary directory, or a fresh prefix of the
    /// S3 bucket when `STOWAGE_TEST_STORAGE=s3`.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// As `start`, with extra `stowage serve` flags.
    pub async fn start_with(flags: &[&str]) -> Self {
        let storage = match std::env::var(ENV_STORAGE).as_deref() {
            Ok("s3") => s3_flags(),
            Ok("azure") => azure_flags(),
            Ok("gcs") => gcs_flags(),
            Ok("filesystem") | Err(_) => Vec::new(),
            Ok(other) => panic!("unknown {ENV_STORAGE}={other}"),
        };
        let cache = match std::env::var(ENV_BLOB_CACHE).as_deref() {
            Ok("redis") => vec![
                "--blob-cache-redis".to_owned(),
                std::env::var("STOWAGE_TEST_REDIS")
                    .expect("STOWAGE_TEST_REDIS is not set: run `make test`, which starts Redis"),
            ],
            Ok("memory") | Err(_) => Vec::new(),
            Ok(other) => panic!("unknown {ENV_BLOB_CACHE}={other}"),
        };
        let mut all: Vec<&str> = storage.iter().chain(&cache).map(String::as_str).collect();
        all.extend_from_slice(flags);
        Self::launch(&all, replicas_from_env()).await
    }

    /// As `start_with`, reading `config` as its `--config` file, which lives as long as the
    /// directory returned.
    pub async fn start_with_config(config: &str) -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stowage.toml");
        std::fs::write(&path, config).unwrap();
        let server = Self::start_with(&["--config", path.to_str().unwrap()]).await;
        (server, dir)
    }

    /// As `start_with`, always as one process: for tests of what each replica keeps to itself
    /// by design (failed-login counts, the day's pull marks, remembered blob facts).
    pub async fn start_one_replica_with(flags: &[&str]) -> Self {
        let mut server = Self::start_with(flags).await;
        if server.replicas > 1 {
            server = Self::serve(
                server.config.clone(),
                server.store(),
                server.keys.clone(),
                server.root.clone(),
                Arc::clone(&server._dir),
                1,
            )
            .await;
        }
        server
    }

    /// A registry on filesystem storage, for tests about the filesystem itself.
    pub async fn start_fs() -> Self {
        Self::launch(&[], replicas_from_env()).await
    }

    async fn launch(flags: &[&str], replicas: usize) -> Self {
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
        let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!("parsed a serve command line")
        };
        let config = args.resolve().unwrap();
        // As `main` does first: the cloud backends' HTTP clients need it.
        stowage::tls::install_crypto_provider();
        let store = storage::open(&config.storage).await.unwrap();
        let keys = config
            .keys
            .clone()
            .unwrap_or_else(|| TokenKeys::new(SecretKey::random(), None));
        Self::serve(config, store, keys, root, Arc::new(dir), replicas).await
    }

    /// Another replica of this registry: its own process state, the same storage and key.
    pub async fn replica(&self) -> Self {
        Self::serve(
            self.config.clone(),
            self.store(),
            self.keys.clone(),
            self.root.clone(),
            Arc::clone(&self._dir),
            self.replicas,
        )
        .await
    }

    /// Another replica whose settings differ as `change` makes them.
    pub async fn replica_with(&self, change: impl FnOnce(&mut ServeConfig)) -> Self {
        let mut config = self.config.clone();
        change(&mut config);
        Self::serve(
            config,
            self.store(),
            self.keys.clone(),
            self.root.clone(),
            Arc::clone(&self._dir),
            self.replicas,
        )
        .await
    }

    async fn serve(
        config: ServeConfig,
        store: Arc<dyn BlobStore>,
        keys: TokenKeys,
        root: PathBuf,
        dir: Arc<tempfile::TempDir>,
        replicas: usize,
    ) -> Self {
        let mut apps = Vec::new();
        for _ in 0..replicas.max(1) {
            let app = stowage::serve::app(&config, Arc::clone(&store), keys.clone())
                .await
                .unwrap();
            apps.push(app);
        }
        let app = round_robin(apps);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
            .unwrap();
        });
        let http = {
            stowage::tls::install_crypto_provider();
            reqwest::Client::builder()
        }
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
        Self {
            base,
            http,
            root,
            store,
            config,
            keys,
            replicas,
            _dir: dir,
            _task: Arc::new(Task(task)),
        }
    }

    /// The same server, as a client sending `authorization` with every request.
    pub fn acting_as(&self, authorization: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            authorization.parse().unwrap(),
        );
        Self {
            base: self.base.clone(),
            http: {
                stowage::tls::install_crypto_provider();
                reqwest::Client::builder()
            }
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .unwrap(),
            root: self.root.clone(),
            store: Arc::clone(&self.store),
            config: self.config.clone(),
            keys: self.keys.clone(),
            replicas: self.replicas,
            _dir: Arc::clone(&self._dir),
            _task: Arc::clone(&self._task),
        }
    }

    /// The storage the server runs on, for tests that act on it directly (as `stowage gc` does).
    pub fn store(&self) -> Arc<dyn BlobStore> {
        Arc::clone(&self.store)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path` and decodes the JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        response.json().await.unwrap()
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

    /// Every stored key whose path contains `part`, whatever the backend.
    pub async fn stored_keys(&self, part: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut dirs = vec!["docker".to_owned()];
        while let Some(dir) = dirs.pop() {
            let Ok(children) = self.store.list(&dir).await else {
                continue;
            };
            for child in children {
                let key = format!("{dir}/{child}");
                if self.store.stat(&key).await.is_ok() {
                    keys.push(key);
                } else {
                    dirs.push(key);
                }
            }
        }
        keys.retain(|k| k.contains(part));
        keys
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

/// The status, and the first error's code and message (empty when the body has none).
pub async fn error_of(response: Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    let error = &body["errors"][0];
    (
        status,
        error["code"].as_str().unwrap_or_default().to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
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
