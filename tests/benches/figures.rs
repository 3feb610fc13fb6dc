//! Figures for a release build of `stowage`, on the filesystem and on S3 (a Garage started here).
//!
//! Printed, not asserted:
//! - push (streamed in one PATCH, and in 16 MiB chunks) and pull throughput of a 1 GiB blob;
//! - manifest `HEAD` and `GET` requests per second at 1 and 64 concurrent clients, p50 and p99;
//! - manifest `GET`s per second at 64 clients with access control on: anonymous, Basic auth and a
//!   bearer token;
//! - the server's peak RSS while 32 clients each push a 256 MiB blob at once.
//!
//! Each scenario runs on a fresh server process, so its peak RSS (VmHWM) is its own. Client and
//! server share the machine, so the figures are a floor. Run with `make bench`; sizes can be
//! lowered with `STOWAGE_BENCH_BYTES` and `STOWAGE_BENCH_CONCURRENT_BYTES`.

// A benchmark reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use stowage_e2e::Stowage;
use stowage_e2e::garage::Garage;

const GENERATOR_CHUNK: usize = 1 << 20;
const UPLOAD_CHUNK: u64 = 16 << 20;
const CONCURRENT_UPLOADS: usize = 32;
const RPS_DURATION: Duration = Duration::from_secs(3);

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

/// The process's peak resident set (VmHWM) in MiB.
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

fn location(registry: &Stowage, response: &reqwest::Response) -> String {
    registry.url(response.headers()["location"].to_str().unwrap())
}

async fn start_upload(http: &reqwest::Client, registry: &Stowage, repo: &str) -> String {
    let response = http
        .post(registry.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    location(registry, &response)
}

async fn finish(http: &reqwest::Client, location: &str, digest: &str) {
    let response = http
        .put(format!("{location}&digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

async fn push_streamed(
    http: &reqwest::Client,
    registry: &Stowage,
    repo: &str,
    seed: u64,
    size: u64,
    digest: &str,
) {
    let upload = start_upload(http, registry, repo).await;
    let response = http
        .patch(&upload)
        .body(stream_range(seed, 0, size))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    finish(http, &location(registry, &response), digest).await;
}

async fn push_chunked(
    http: &reqwest::Client,
    registry: &Stowage,
    repo: &str,
    seed: u64,
    size: u64,
    digest: &str,
) {
    let mut upload = start_upload(http, registry, repo).await;
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
        upload = location(registry, &response);
    }
    finish(http, &upload, digest).await;
}

async fn pull(http: &reqwest::Client, registry: &Stowage, repo: &str, digest: &str) -> u64 {
    let response = http
        .get(registry.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut hasher = Sha256::new();
    let mut received = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(format!("sha256:{}", hex(&hasher.finalize())), digest);
    received
}

fn row(what: &str, figure: &str, rss: Option<f64>) {
    let rss = rss.map(|r| format!("{r:.1} MiB")).unwrap_or_default();
    println!("  {what:<44} {figure:>30} {rss:>12}");
}

async fn throughput(flags: &[String], size: u64) {
    let registry = Stowage::start_with_binary(&binary(), flags);
    let http = stowage_e2e::http();
    let mib = size >> 20;
    let digest = digest_of(1, size);
    let started = Instant::now();
    push_streamed(&http, &registry, "bench/streamed", 1, size, &digest).await;
    let rate = format!("{:.1} MB/s", mb_per_s(size, started.elapsed()));
    row(
        &format!("push {mib} MiB, streamed (1 PATCH)"),
        &rate,
        Some(peak_rss_mib(registry.pid())),
    );
    // Another seed, so the chunked push cannot skip its commit as an existing blob.
    let digest = digest_of(2, size);
    let started = Instant::now();
    push_chunked(&http, &registry, "bench/chunked", 2, size, &digest).await;
    let rate = format!("{:.1} MB/s", mb_per_s(size, started.elapsed()));
    row(
        &format!("push {mib} MiB, 16 MiB chunks"),
        &rate,
        Some(peak_rss_mib(registry.pid())),
    );
    let started = Instant::now();
    let received = pull(&http, &registry, "bench/chunked", &digest).await;
    let rate = format!("{:.1} MB/s", mb_per_s(received, started.elapsed()));
    row(
        &format!("pull {mib} MiB (client checks digest)"),
        &rate,
        Some(peak_rss_mib(registry.pid())),
    );
}

async fn push_manifest(
    http: &reqwest::Client,
    registry: &Stowage,
    authorization: Option<&str>,
) -> String {
    let authorized = |request: reqwest::RequestBuilder| match authorization {
        Some(authorization) => request.header("authorization", authorization),
        None => request,
    };
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = format!("sha256:{}", hex(&Sha256::digest(config)));
    let url = registry.url(&format!(
        "/v2/bench/rps/blobs/uploads/?digest={config_digest}"
    ));
    assert_eq!(
        authorized(http.post(url))
            .body(&config[..])
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [],
    });
    let url = registry.url("/v2/bench/rps/manifests/latest");
    let pushed = authorized(http.put(&url))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    url
}

async fn manifest_rates(flags: &[String]) {
    let registry = Stowage::start_with_binary(&binary(), flags);
    let http = stowage_e2e::http();
    let url = Arc::new(push_manifest(&http, &registry, None).await);
    for method in [reqwest::Method::HEAD, reqwest::Method::GET] {
        for clients in [1usize, 64] {
            let figure = request_rate(&http, &url, &method, clients, None).await;
            row(
                &format!("manifest {method} by tag, {clients} client(s)"),
                &figure,
                None,
            );
        }
    }
}

/// Requests per second and latency of `method` on `url` from `clients` at once.
async fn request_rate(
    http: &reqwest::Client,
    url: &Arc<String>,
    method: &reqwest::Method,
    clients: usize,
    authorization: Option<&str>,
) -> String {
    let deadline = Instant::now() + RPS_DURATION;
    let authorization: Option<Arc<str>> = authorization.map(Arc::from);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, method) = (http.clone(), Arc::clone(url), method.clone());
            let authorization = authorization.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let mut request = http.request(method.clone(), url.as_str());
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
    format!(
        "{:.0} req/s, p50 {:.2} p99 {:.2} ms",
        latencies.len() as f64 / RPS_DURATION.as_secs_f64(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0
    )
}

/// Authenticated manifest GETs at 64 clients: anonymous, Basic (bcrypt cost 10, as
/// `htpasswd -B -C 10` makes) and a bearer token, on one server.
async fn authenticated_rates(flags: &[String], scratch: &std::path::Path) {
    let htpasswd = scratch.join("htpasswd");
    let hash = bcrypt::hash("bench-password", 10).unwrap();
    std::fs::write(&htpasswd, format!("bench:{hash}\n")).unwrap();
    let mut flags = flags.to_vec();
    flags.extend(
        [
            "--htpasswd",
            htpasswd.to_str().unwrap(),
            "--anonymous-pull",
            "true",
        ]
        .map(str::to_owned),
    );
    let registry = Stowage::start_with_binary(&binary(), &flags);
    let http = stowage_e2e::http();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bench:bench-password")
    );
    let url = Arc::new(push_manifest(&http, &registry, Some(&basic)).await);
    let token: serde_json::Value = http
        .get(registry.url("/auth/token?service=stowage&scope=repository:bench/rps:pull"))
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
        row(&format!("manifest GET, 64 clients, {who}"), &figure, None);
    }
}

async fn concurrent_uploads(flags: &[String], size: u64) {
    let registry = Arc::new(Stowage::start_with_binary(&binary(), flags));
    let http = stowage_e2e::http();
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT_UPLOADS as u64)
        .map(|i| {
            let (http, registry) = (http.clone(), Arc::clone(&registry));
            let digest = digest_of(100 + i, size);
            tokio::spawn(async move {
                push_streamed(
                    &http,
                    &registry,
                    &format!("bench/c{i}"),
                    100 + i,
                    size,
                    &digest,
                )
                .await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let total = size * CONCURRENT_UPLOADS as u64;
    row(
        &format!(
            "{CONCURRENT_UPLOADS} concurrent pushes of {} MiB",
            size >> 20
        ),
        &format!("{:.1} MB/s in all", mb_per_s(total, started.elapsed())),
        Some(peak_rss_mib(registry.pid())),
    );
}

fn binary() -> std::path::PathBuf {
    let binary = stowage_e2e::build_dir().join("stowage");
    assert!(
        binary.exists(),
        "build the server first: cargo build --release -p stowage"
    );
    binary
}

fn env_bytes(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn backend(name: &str, flags: &[String], size: u64, concurrent_size: u64) {
    println!("{name}");
    throughput(flags, size).await;
    manifest_rates(flags).await;
    concurrent_uploads(flags, concurrent_size).await;
}

#[tokio::main]
async fn main() {
    let size = env_bytes("STOWAGE_BENCH_BYTES", 1 << 30);
    let concurrent_size = env_bytes("STOWAGE_BENCH_CONCURRENT_BYTES", 256 << 20);
    let scratch = tempfile::Builder::new()
        .prefix("stowage-bench")
        .tempdir_in(std::env::current_dir().unwrap())
        .unwrap();
    println!("  {:<44} {:>30} {:>12}", "", "figure", "server RSS");

    let root = scratch.path().join("fs");
    let fs_flags = vec!["--fs-root".to_owned(), root.to_str().unwrap().to_owned()];
    backend("filesystem (fsync on)", &fs_flags, size, concurrent_size).await;
    println!("access control (filesystem)");
    authenticated_rates(&fs_flags, scratch.path()).await;

    let garage = Garage::start(&scratch.path().join("garage"));
    let s3_flags = garage.endpoint.stowage_flags("bench");
    backend(
        "S3 (Garage on the same machine, 8 MiB parts)",
        &s3_flags,
        size,
        concurrent_size,
    )
    .await;
}
