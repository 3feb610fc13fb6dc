//! Push and pull figures for a running `stowage` (release build) on filesystem storage.
//!
//! Prints, not asserts: throughput of a large blob pushed streamed (one PATCH) and in chunks,
//! pulled back, and the server's peak RSS, which stays bounded however large the blob.
//!
//! Run with `make bench`. `STOWAGE_BENCH_BYTES` sets the blob size (default 1 GiB).

// A benchmark reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use stowage_e2e::Stowage;

const GENERATOR_CHUNK: usize = 1 << 20;
const UPLOAD_CHUNK: u64 = 16 << 20;

/// Deterministic content, generated as it is sent so the client holds at most one chunk.
fn content(offset: u64, len: usize) -> Bytes {
    let seed = offset / GENERATOR_CHUNK as u64;
    Bytes::from(
        (0..len)
            .map(|i| (i as u64 ^ seed.wrapping_mul(0x9e37_79b9)) as u8)
            .collect::<Vec<_>>(),
    )
}

fn stream_range(start: u64, end: u64) -> reqwest::Body {
    let offsets = (start..end).step_by(GENERATOR_CHUNK);
    let stream = futures::stream::iter(offsets).map(move |offset| {
        let len = (end - offset).min(GENERATOR_CHUNK as u64) as usize;
        Ok::<_, std::io::Error>(content(offset, len))
    });
    reqwest::Body::wrap_stream(stream)
}

fn digest_of(size: u64) -> String {
    let mut hasher = Sha256::new();
    for offset in (0..size).step_by(GENERATOR_CHUNK) {
        hasher.update(content(
            offset,
            (size - offset).min(GENERATOR_CHUNK as u64) as usize,
        ));
    }
    format!(
        "sha256:{}",
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
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

fn mb_per_s(bytes: u64, started: Instant) -> f64 {
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
}

async fn start_upload(http: &reqwest::Client, registry: &Stowage, repo: &str) -> String {
    let response = http
        .post(registry.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    registry.url(response.headers()["location"].to_str().unwrap())
}

async fn finish(http: &reqwest::Client, location: &str, digest: &str) {
    let response = http
        .put(format!("{location}&digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

fn location_of(registry: &Stowage, response: &reqwest::Response) -> String {
    registry.url(response.headers()["location"].to_str().unwrap())
}

#[tokio::main]
async fn main() {
    let size: u64 = std::env::var("STOWAGE_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let dir = tempfile::Builder::new()
        .prefix("stowage-bench")
        .tempdir_in(std::env::current_dir().unwrap())
        .unwrap();
    let binary = stowage_e2e::build_dir().join("stowage");
    assert!(
        binary.exists(),
        "build the server first: cargo build --release -p stowage"
    );
    let root = dir.path().join("data");
    let registry = Stowage::start_with_binary(
        &binary,
        &["--fs-root".into(), root.to_str().unwrap().into()],
    );
    let http = reqwest::Client::new();
    let digest = digest_of(size);
    let idle_rss = peak_rss_mib(registry.pid());

    println!(
        "stowage push/pull, filesystem storage (fsync on), blob of {} MiB",
        size >> 20
    );
    println!(
        "{:<34} {:>12} {:>16}",
        "operation", "MB/s", "server peak RSS"
    );

    // Streamed: the whole blob in one PATCH.
    let location = start_upload(&http, &registry, "bench/streamed").await;
    let started = Instant::now();
    let response = http
        .patch(&location)
        .body(stream_range(0, size))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    finish(&http, &location_of(&registry, &response), &digest).await;
    println!(
        "{:<34} {:>12.1} {:>12.1} MiB",
        "push, streamed (1 PATCH)",
        mb_per_s(size, started),
        peak_rss_mib(registry.pid())
    );

    // Chunked: 16 MiB PATCHes with Content-Range, as chunking clients do. Same digest, so the
    // finish skips the copy; delete the first blob's content to measure a full commit.
    std::fs::remove_dir_all(root.join("docker/registry/v2/blobs")).unwrap();
    let mut location = start_upload(&http, &registry, "bench/chunked").await;
    let started = Instant::now();
    for start in (0..size).step_by(UPLOAD_CHUNK as usize) {
        let end = (start + UPLOAD_CHUNK).min(size);
        let response = http
            .patch(&location)
            .header("content-range", format!("{start}-{}", end - 1))
            .header("content-length", (end - start).to_string())
            .body(stream_range(start, end))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        location = location_of(&registry, &response);
    }
    finish(&http, &location, &digest).await;
    println!(
        "{:<34} {:>12.1} {:>12.1} MiB",
        "push, 16 MiB chunks",
        mb_per_s(size, started),
        peak_rss_mib(registry.pid())
    );

    // Pull it back, checking every byte's digest on the client.
    let started = Instant::now();
    let response = http
        .get(registry.url(&format!("/v2/bench/chunked/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let pulled = format!(
        "sha256:{}",
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    assert_eq!((received, pulled.as_str()), (size, digest.as_str()));
    println!(
        "{:<34} {:>12.1} {:>12.1} MiB",
        "pull (client verifies digest)",
        mb_per_s(size, started),
        peak_rss_mib(registry.pid())
    );
    println!("server RSS before any upload: {idle_rss:.1} MiB");
}
