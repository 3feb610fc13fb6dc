//! Stowage (release build) beside CNCF Distribution 2.8.2, on the same backend in the same run:
//! the filesystem, and S3 on a Garage started here (Distribution's `s3` driver with redirects
//! off, and its in-memory blob descriptor cache on, as it ships). Then Stowage alone on Azure
//! Blob Storage (Azurite) and Google Cloud Storage (fake-gcs-server), started here: the
//! Distribution build at hand (Debian's) has no `azure` or `gcs` driver. Printed, not asserted,
//! with the ratio Stowage / Distribution (above 1 is Stowage ahead):
//! - push of one blob streamed in one `PATCH`, and in 16 MiB chunks; pull of it;
//! - 32 concurrent pushes;
//! - manifest `GET` and `HEAD` by tag, and blob `HEAD`, at 1 and 64 clients (p50 and p99);
//! - 64 clients pulling the same 10-layer image (manifest and blobs), warm, and cold (a fresh
//!   process, so nothing is cached in it);
//! - each server's peak RSS (VmHWM) over the scenario.
//!
//! Then, Stowage alone: manifest `GET`s with access control (anonymous, Basic, bearer token).
//!
//! Each scenario runs on fresh server processes. Client and servers share the machine, so the
//! figures are a floor. Sizes: `STOWAGE_BENCH_BYTES` (one blob, default 1 GiB) and
//! `STOWAGE_BENCH_CONCURRENT_BYTES` (each concurrent push, default 64 MiB), in bytes. A part of
//! the run: `STOWAGE_BENCH_BACKENDS=s3` (or `filesystem`, `azure`, `gcs`, comma-separated),
//! `STOWAGE_BENCH_ONLY="push,blob HEAD"`.

// A benchmark reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use stowage_e2e::emulators::{AzureEndpoint, Emulator, GcsEndpoint};
use stowage_e2e::garage::{Garage, S3Endpoint};
use stowage_e2e::{Distribution, Stowage};

const GENERATOR_CHUNK: usize = 1 << 20;
const UPLOAD_CHUNK: u64 = 16 << 20;
const CONCURRENT_UPLOADS: usize = 32;
const RPS_DURATION: Duration = Duration::from_secs(3);
const IMAGE_LAYERS: usize = 10;
const IMAGE_LAYER_BYTES: u64 = 1 << 20;
const IMAGE_CLIENTS: usize = 64;

/// Deterministic content, generated as it is sent so the client holds at most one chunk.
fn content(seed: u64, offset: u64, len: usize) -> Bytes {
    let block = (offset / GENERATOR_CHUNK as u64) ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Bytes::from(
        (0..len)
            .map(|i| (i as u64 ^ block.wrapping_mul(31)) as u8)
            .collect::<Vec<_>>(),
    )
}

fn stream_range(seed: u64, start: u64, end: u64) -> reqwest::Body {
    let offsets = (start..end).step_by(GENERATOR_CHUNK);
    let stream = futures::stream::iter(offsets).map(move |offset| {
        let len = (end - offset).min(GENERATOR_CHUNK as u64) as usize;
        Ok::<_, std::io::Error>(content(seed, offset, len))
    });
    reqwest::Body::wrap_stream(stream)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest_of(seed: u64, size: u64) -> String {
    let mut hasher = Sha256::new();
    for offset in (0..size).step_by(GENERATOR_CHUNK) {
        hasher.update(content(
            seed,
            offset,
            (size - offset).min(GENERATOR_CHUNK as u64) as usize,
        ));
    }
    format!("sha256:{}", hex(&hasher.finalize()))
}

/// A process's peak resident set (VmHWM) in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

/// Where a registry keeps its data.
enum Backend<'a> {
    Filesystem(&'a Path),
    S3(&'a S3Endpoint),
    Azure(&'a AzureEndpoint),
    Gcs(&'a GcsEndpoint),
}

impl Backend<'_> {
    /// The servers measured on this backend: Stowage (`true`), and Distribution where the
    /// build at hand has a driver for it.
    fn servers(&self) -> &'static [bool] {
        match self {
            Self::Filesystem(_) | Self::S3(_) => &[true, false],
            Self::Azure(_) | Self::Gcs(_) => &[true],
        }
    }
}

/// The emulators serve a fraction of a cloud's rate, one process on a shared core: 32 pushes
/// at once would send each part below the 1 MiB/s a transfer must keep to not count as hung,
/// and the storage guard would rightly shed them. The bench measures throughput, so it lets
/// transfers run slower there.
fn emulator_flags(mut flags: Vec<String>) -> Vec<String> {
    flags.extend(
        [
            "--storage-timeout",
            "30s",
            "--storage-min-throughput",
            "65536",
        ]
        .map(str::to_owned),
    );
    flags
}

/// A registry under test, on a backend of its own.
enum Server {
    Stowage(Stowage),
    Distribution(Distribution),
}

impl Server {
    fn start(stowage: bool, backend: &Backend<'_>) -> Self {
        let scope = format!("{:016x}", rand::random::<u64>());
        if stowage {
            let flags = match backend {
                Backend::Filesystem(root) => {
                    vec![
                        "--fs-root".to_owned(),
                        root.join(&scope).to_str().unwrap().to_owned(),
                    ]
                }
                Backend::S3(s3) => s3.stowage_flags(&scope),
                Backend::Azure(azure) => emulator_flags(azure.stowage_flags(&scope)),
                Backend::Gcs(gcs) => emulator_flags(gcs.stowage_flags(&scope)),
            };
            Self::Stowage(Stowage::start_with_binary(&binary(), &flags))
        } else {
            // As Distribution ships configured: with its in-memory blob descriptor cache.
            let storage = match backend {
                Backend::Filesystem(root) => Distribution::fs_storage(&root.join(&scope)),
                Backend::S3(s3) => Distribution::s3_storage(s3, &scope),
                Backend::Azure(_) | Backend::Gcs(_) => {
                    unreachable!("no Distribution driver for this backend here")
                }
            };
            Self::Distribution(Distribution::start_with_storage(
                &Distribution::with_blob_cache(&storage),
            ))
        }
    }

    fn address(&self) -> &str {
        match self {
            Self::Stowage(s) => &s.address,
            Self::Distribution(d) => &d.address,
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("http://{}{path}", self.address())
        }
    }

    fn rss(&self) -> f64 {
        peak_rss_mib(match self {
            Self::Stowage(s) => s.pid(),
            Self::Distribution(d) => d.pid(),
        })
    }
}

fn location(server: &Server, response: &reqwest::Response) -> String {
    server.url(response.headers()["location"].to_str().unwrap())
}

async fn start_upload(http: &reqwest::Client, server: &Server, repo: &str) -> String {
    let response = http
        .post(server.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    location(server, &response)
}

async fn finish(http: &reqwest::Client, location: &str, digest: &str) {
    let separator = if location.contains('?') { '&' } else { '?' };
    let response = http
        .put(format!("{location}{separator}digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

async fn push_streamed(http: &reqwest::Client, server: &Server, repo: &str, seed: u64, size: u64) {
    let upload = start_upload(http, server, repo).await;
    let response = http
        .patch(&upload)
        .body(stream_range(seed, 0, size))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    finish(http, &location(server, &response), &digest_of(seed, size)).await;
}

async fn push_chunked(http: &reqwest::Client, server: &Server, repo: &str, seed: u64, size: u64) {
    let mut upload = start_upload(http, server, repo).await;
    for start in (0..size).step_by(UPLOAD_CHUNK as usize) {
        let end = (start + UPLOAD_CHUNK).min(size);
        let response = http
            .patch(&upload)
            .header("content-range", format!("{start}-{}", end - 1))
            .header("content-length", (end - start).to_string())
            .body(stream_range(seed, start, end))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        upload = location(server, &response);
    }
    finish(http, &upload, &digest_of(seed, size)).await;
}

/// Pulls a blob, checking its digest; the bytes received. The digest is computed on a thread of
/// its own, beside the receiving, so the client's hashing is not what the figure measures.
async fn pull(http: &reqwest::Client, url: &str, digest: &str) -> u64 {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let mut stream = response.bytes_stream();
    let (chunks, mut to_hash) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        while let Some(chunk) = to_hash.blocking_recv() {
            hasher.update(&chunk);
        }
        hex(&hasher.finalize())
    });
    let mut received = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len() as u64;
        chunks.send(chunk).await.unwrap();
    }
    drop(chunks);
    assert_eq!(format!("sha256:{}", hashing.await.unwrap()), digest);
    received
}

/// Pushes an image of `layers` blobs (seeded from `seed`) tagged `latest` in `repo`; the
/// manifest URL and the blob URLs with their digests.
async fn push_image(
    http: &reqwest::Client,
    server: &Server,
    repo: &str,
    seed: u64,
    layers: usize,
    layer_bytes: u64,
    authorization: Option<&str>,
) -> (String, Vec<(String, String)>) {
    let authorized = |request: reqwest::RequestBuilder| match authorization {
        Some(value) => request.header("authorization", value),
        None => request,
    };
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = format!("sha256:{}", hex(&Sha256::digest(config)));
    let url = server.url(&format!("/v2/{repo}/blobs/uploads/?digest={config_digest}"));
    let started = authorized(http.post(url))
        .body(&config[..])
        .send()
        .await
        .unwrap();
    if started.status() == 202 {
        // Distribution 2.8 takes no one-request push: finish the session it started.
        let location = location(server, &started);
        let separator = if location.contains('?') { '&' } else { '?' };
        let response = authorized(http.put(format!("{location}{separator}digest={config_digest}")))
            .body(&config[..])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    } else {
        assert_eq!(started.status(), 201);
    }
    let mut descriptors = Vec::new();
    let mut blobs = Vec::new();
    for layer in 0..layers as u64 {
        let seed = seed * 1000 + layer;
        if authorization.is_none() {
            push_streamed(http, server, repo, seed, layer_bytes).await;
        }
        let digest = digest_of(seed, layer_bytes);
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": layer_bytes}));
        blobs.push((server.url(&format!("/v2/{repo}/blobs/{digest}")), digest));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descriptors,
    });
    let url = server.url(&format!("/v2/{repo}/manifests/latest"));
    let pushed = authorized(http.put(&url))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    (url, blobs)
}

/// A figure, higher is better, with how to print it.
struct Figure {
    value: f64,
    text: String,
}

/// Requests per second and latency of `method` on `url` from `clients` at once.
async fn request_rate(
    http: &reqwest::Client,
    url: &str,
    method: &reqwest::Method,
    clients: usize,
    authorization: Option<&str>,
) -> Figure {
    let deadline = Instant::now() + RPS_DURATION;
    let url: Arc<str> = Arc::from(url);
    let authorization: Option<Arc<str>> = authorization.map(Arc::from);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, method) = (http.clone(), Arc::clone(&url), method.clone());
            let authorization = authorization.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let mut request = http
                        .request(method.clone(), &*url)
                        .header("accept", "application/vnd.oci.image.manifest.v1+json");
                    if let Some(authorization) = &authorization {
                        request = request.header("authorization", &**authorization);
                    }
                    let response = request.send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    let _ = response.bytes().await.unwrap();
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let rate = latencies.len() as f64 / RPS_DURATION.as_secs_f64();
    Figure {
        value: rate,
        text: format!(
            "{rate:.0}/s p50 {:.2} p99 {:.2}",
            at(0.5).as_secs_f64() * 1000.0,
            at(0.99).as_secs_f64() * 1000.0
        ),
    }
}

fn throughput_figure(bytes: u64, elapsed: Duration) -> Figure {
    let rate = mb_per_s(bytes, elapsed);
    Figure {
        value: rate,
        text: format!("{rate:.1} MB/s"),
    }
}

/// One line: Stowage's figure and peak RSS, and Distribution's when it ran.
fn side_by_side(what: &str, ours: (&Figure, f64), theirs: Option<(&Figure, f64)>) {
    let (ours, our_rss) = ours;
    match theirs {
        Some((theirs, their_rss)) => println!(
            "  {what:<34} {:>28} {:>28} {:>6.2}x {our_rss:>7.1} {their_rss:>7.1}",
            ours.text,
            theirs.text,
            ours.value / theirs.value
        ),
        None => println!(
            "  {what:<34} {:>28} {:>28} {:>7} {our_rss:>7.1}",
            ours.text, "—", ""
        ),
    }
}

/// Prints the figures of [`Backend::servers`], Stowage's first.
fn print_figures(what: &str, figures: &[(Figure, f64)]) {
    let (ours, our_rss) = &figures[0];
    side_by_side(
        what,
        (ours, *our_rss),
        figures.get(1).map(|(figure, rss)| (figure, *rss)),
    );
}

/// Runs `scenario` on a fresh Stowage, then on a fresh Distribution; prints both.
async fn compare<F, Fut>(what: &str, backend: &Backend<'_>, scenario: F)
where
    F: Fn(Arc<Server>) -> Fut,
    Fut: std::future::Future<Output = Figure>,
{
    if !selected(what) {
        return;
    }
    let mut figures = Vec::new();
    for &stowage in backend.servers() {
        let server = Arc::new(Server::start(stowage, backend));
        let figure = scenario(Arc::clone(&server)).await;
        figures.push((figure, server.rss()));
    }
    print_figures(what, &figures);
}

/// Many clients pulling one image (its manifest, then every layer), all at once.
async fn pull_image_storm(
    http: &reqwest::Client,
    manifest: &str,
    blobs: &[(String, String)],
) -> Figure {
    let started = Instant::now();
    let blobs = Arc::new(blobs.to_vec());
    let tasks: Vec<_> = (0..IMAGE_CLIENTS)
        .map(|_| {
            let (http, manifest, blobs) = (http.clone(), manifest.to_owned(), Arc::clone(&blobs));
            tokio::spawn(async move {
                let response = http
                    .get(&manifest)
                    .header("accept", "application/vnd.oci.image.manifest.v1+json")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
                let mut bytes = 0;
                for (url, digest) in blobs.iter() {
                    bytes += pull(&http, url, digest).await;
                }
                bytes
            })
        })
        .collect();
    let mut bytes = 0;
    for task in tasks {
        bytes += task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let pulls = IMAGE_CLIENTS as f64 / elapsed.as_secs_f64();
    Figure {
        value: pulls,
        text: format!("{pulls:.1} pulls/s {:.0} MB/s", mb_per_s(bytes, elapsed)),
    }
}

async fn backend(name: &str, backend: &Backend<'_>, size: u64, concurrent_size: u64) {
    println!("{name}");
    println!(
        "  {:<34} {:>28} {:>28} {:>7} {:>15}",
        "", "Stowage", "Distribution 2.8.2", "ratio", "peak RSS (MiB)"
    );
    let http = stowage_e2e::http();
    let mib = size >> 20;
    compare(&format!("push {mib} MiB, one PATCH"), backend, |server| {
        let http = http.clone();
        async move {
            let started = Instant::now();
            push_streamed(&http, &server, "bench/streamed", 1, size).await;
            throughput_figure(size, started.elapsed())
        }
    })
    .await;
    compare(
        &format!("push {mib} MiB, 16 MiB chunks"),
        backend,
        |server| {
            let http = http.clone();
            async move {
                let started = Instant::now();
                push_chunked(&http, &server, "bench/chunked", 2, size).await;
                throughput_figure(size, started.elapsed())
            }
        },
    )
    .await;
    compare(&format!("pull {mib} MiB"), backend, |server| {
        let http = http.clone();
        async move {
            push_streamed(&http, &server, "bench/pull", 3, size).await;
            let digest = digest_of(3, size);
            let url = server.url(&format!("/v2/bench/pull/blobs/{digest}"));
            let started = Instant::now();
            let received = pull(&http, &url, &digest).await;
            throughput_figure(received, started.elapsed())
        }
    })
    .await;
    compare(
        &format!(
            "{CONCURRENT_UPLOADS} pushes of {} MiB at once",
            concurrent_size >> 20
        ),
        backend,
        |server| {
            let http = http.clone();
            async move {
                let started = Instant::now();
                let tasks: Vec<_> = (0..CONCURRENT_UPLOADS as u64)
                    .map(|i| {
                        let (http, server) = (http.clone(), Arc::clone(&server));
                        tokio::spawn(async move {
                            push_streamed(
                                &http,
                                &server,
                                &format!("bench/c{i}"),
                                100 + i,
                                concurrent_size,
                            )
                            .await;
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                throughput_figure(
                    concurrent_size * CONCURRENT_UPLOADS as u64,
                    started.elapsed(),
                )
            }
        },
    )
    .await;
    for clients in [1usize, 64] {
        for (what, method, blob) in [
            ("manifest GET", reqwest::Method::GET, false),
            ("manifest HEAD", reqwest::Method::HEAD, false),
            ("blob HEAD", reqwest::Method::HEAD, true),
        ] {
            compare(&format!("{what}, {clients} client(s)"), backend, |server| {
                let (http, method) = (http.clone(), method.clone());
                async move {
                    let (manifest, blobs) =
                        push_image(&http, &server, "bench/rps", 7, 1, 1024, None).await;
                    let url = if blob { blobs[0].0.clone() } else { manifest };
                    request_rate(&http, &url, &method, clients, None).await
                }
            })
            .await;
        }
    }
    for cold in [false, true] {
        let what = format!(
            "{IMAGE_CLIENTS} pull a {IMAGE_LAYERS}-layer image{}",
            if cold { ", cold" } else { "" }
        );
        let mut figures = Vec::new();
        for &stowage in backend.servers() {
            let mut server = Server::start(stowage, backend);
            let (manifest, blobs) = push_image(
                &http,
                &server,
                "bench/image",
                9,
                IMAGE_LAYERS,
                IMAGE_LAYER_BYTES,
                None,
            )
            .await;
            if cold {
                // A fresh process: nothing of the image is cached in it.
                server = restarted(server);
            } else {
                pull_image_storm(&http, &manifest, &blobs).await;
            }
            let figure = pull_image_storm(&http, &manifest, &blobs).await;
            figures.push((figure, server.rss()));
        }
        print_figures(&what, &figures);
    }
}

/// The same server, restarted on the same storage and address.
fn restarted(server: Server) -> Server {
    match server {
        Server::Stowage(mut stowage) => {
            stowage.restart();
            Server::Stowage(stowage)
        }
        Server::Distribution(mut distribution) => {
            distribution.restart();
            Server::Distribution(distribution)
        }
    }
}

/// Manifest GETs at 64 clients with access control: anonymous, Basic (bcrypt cost 10, as
/// `htpasswd -B -C 10` makes) and a bearer token, on one Stowage.
async fn authenticated_rates(root: &Path) {
    println!("access control (Stowage, filesystem)");
    let htpasswd = root.join("htpasswd");
    let hash = bcrypt::hash("bench-password", 10).unwrap();
    std::fs::write(&htpasswd, format!("bench:{hash}\n")).unwrap();
    let flags: Vec<String> = [
        "--fs-root",
        root.join("auth").to_str().unwrap(),
        "--htpasswd",
        htpasswd.to_str().unwrap(),
        "--anonymous-pull",
        "true",
    ]
    .map(str::to_owned)
    .to_vec();
    let server = Server::Stowage(Stowage::start_with_binary(&binary(), &flags));
    let http = stowage_e2e::http();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bench:bench-password")
    );
    let (url, _) = push_image(&http, &server, "bench/rps", 7, 0, 0, Some(&basic)).await;
    let token: serde_json::Value = http
        .get(server.url("/auth/token?service=stowage&scope=repository:bench/rps:pull"))
        .header("authorization", &basic)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    for (who, authorization) in [
        ("anonymous", None),
        ("Basic auth", Some(basic.as_str())),
        ("bearer token", Some(bearer.as_str())),
    ] {
        let figure = request_rate(&http, &url, &reqwest::Method::GET, 64, authorization).await;
        println!(
            "  {:<34} {:>28}",
            format!("manifest GET, 64 clients, {who}"),
            figure.text
        );
    }
}

fn binary() -> PathBuf {
    let binary = stowage_e2e::build_dir().join("stowage");
    assert!(
        binary.exists(),
        "build the server first: cargo build --release -p stowage"
    );
    binary
}

/// Whether `STOWAGE_BENCH_ONLY` (comma-separated parts of scenario names; all when unset)
/// selects the scenario `what`.
fn selected(what: &str) -> bool {
    std::env::var("STOWAGE_BENCH_ONLY").map_or(true, |only| {
        only.split(',').any(|part| what.contains(part.trim()))
    })
}

/// Whether `STOWAGE_BENCH_BACKENDS` (`filesystem`, `s3`, `azure`, `gcs`, comma-separated; all
/// when unset) selects `backend`.
fn backend_selected(backend: &str) -> bool {
    std::env::var("STOWAGE_BENCH_BACKENDS").map_or(true, |only| {
        only.split(',').any(|part| part.trim() == backend)
    })
}

fn env_bytes(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let size = env_bytes("STOWAGE_BENCH_BYTES", 1 << 30);
    let concurrent_size = env_bytes("STOWAGE_BENCH_CONCURRENT_BYTES", 64 << 20);
    let scratch = tempfile::Builder::new()
        .prefix("stowage-bench")
        .tempdir_in(std::env::current_dir().unwrap())
        .unwrap();
    let root = scratch.path().join("fs");
    if backend_selected("filesystem") {
        backend(
            "filesystem (fsync on)",
            &Backend::Filesystem(&root),
            size,
            concurrent_size,
        )
        .await;
    }
    if backend_selected("s3") {
        let garage = Garage::start(&scratch.path().join("garage"));
        backend(
            "S3 (Garage on the same machine)",
            &Backend::S3(&garage.endpoint),
            size,
            concurrent_size,
        )
        .await;
    }
    if backend_selected("azure") {
        let (_azurite, azure) = Emulator::azurite(&scratch.path().join("azurite"));
        backend(
            "Azure Blob Storage (Azurite on the same machine; Stowage alone)",
            &Backend::Azure(&azure),
            size,
            concurrent_size,
        )
        .await;
    }
    if backend_selected("gcs") {
        let (_fake_gcs, gcs) = Emulator::fake_gcs_on_disk(&scratch.path().join("fake-gcs"));
        backend(
            "Google Cloud Storage (fake-gcs-server on the same machine; Stowage alone)",
            &Backend::Gcs(&gcs),
            size,
            concurrent_size,
        )
        .await;
    }
    if selected("access control") {
        authenticated_rates(scratch.path()).await;
    }
}
