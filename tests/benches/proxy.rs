//! The pull-through cache once warm, against a normal repository of the same release-build
//! Stowage: blob pull throughput, and manifest `GET`s by tag per second at 64 clients (within
//! the tag TTL, so the upstream is not asked). The upstream is CNCF Distribution on the same
//! machine. Printed, not asserted. `STOWAGE_BENCH_PROXY_BYTES` sets the blob size.

// A benchmark reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use stowage_e2e::layout::{Layout, filler};
use stowage_e2e::{Distribution, Stowage, run};

const CLIENTS: usize = 64;
const RATE_DURATION: Duration = Duration::from_secs(3);
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json";

async fn pull_rate(http: &reqwest::Client, url: &str) -> f64 {
    let started = Instant::now();
    let mut bytes = 0u64;
    for _ in 0..3 {
        let mut body = http.get(url).send().await.unwrap().bytes_stream();
        while let Some(chunk) = body.next().await {
            bytes += chunk.unwrap().len() as u64;
        }
    }
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
}

async fn manifest_rate(http: &reqwest::Client, url: &str) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RATE_DURATION;
    let clients = (0..CLIENTS).map(|_| {
        let (http, url, done) = (http.clone(), url.to_owned(), Arc::clone(&done));
        tokio::spawn(async move {
            while Instant::now() < deadline {
                let response = http
                    .get(&url)
                    .header("accept", ACCEPT)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    futures::future::join_all(clients).await;
    done.load(Ordering::Relaxed) as f64 / RATE_DURATION.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let size: usize = std::env::var("STOWAGE_BENCH_PROXY_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 << 20);
    let scratch = tempfile::Builder::new()
        .prefix("stowage-bench-proxy")
        .tempdir_in(std::env::current_dir().unwrap())
        .unwrap();
    let mut source = Layout::new(&scratch.path().join("layout"));
    let layer = filler(size, 77);
    let digest = stowage_e2e::sha256(&layer);
    let image = source.raw_image(&[&layer]);
    drop(layer);
    source.tag("v1", &image);
    let upstream = Distribution::start(&scratch.path().join("upstream"));
    let binary = stowage_e2e::build_dir().join("stowage");
    assert!(
        binary.exists(),
        "build the server first: cargo build --release -p stowage"
    );
    let config = scratch.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[[proxy.upstreams]]\nprefix = \"dist\"\nurl = \"http://{}\"\n",
            upstream.address
        ),
    )
    .unwrap();
    let root = scratch.path().join("mirror");
    let args: Vec<String> = [
        "--fs-root",
        root.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let registry = Stowage::start_with_binary(&binary, &args);
    for target in [
        format!("docker://{}/team/app:v1", upstream.address),
        format!("docker://{}/team/app:v1", registry.address),
    ] {
        run(std::process::Command::new(&binary)
            .args([
                "copy",
                "-q",
                "--dest-tls-verify=false",
                &source.reference("v1"),
                &target,
            ])
            .env("XDG_CACHE_HOME", scratch.path()));
    }
    let http = stowage_e2e::http();
    // Warm the cache: the first pull goes to the upstream.
    let cold = pull_rate(
        &http,
        &registry.url(&format!("/v2/dist/team/app/blobs/{digest}")),
    )
    .await;

    println!(
        "pull-through cache, warm (release build, filesystem, {} MiB blob)",
        size >> 20
    );
    println!("  {:<44} {:>16} {:>16}", "", "normal repo", "mirrored repo");
    let normal = pull_rate(
        &http,
        &registry.url(&format!("/v2/team/app/blobs/{digest}")),
    )
    .await;
    let mirrored = pull_rate(
        &http,
        &registry.url(&format!("/v2/dist/team/app/blobs/{digest}")),
    )
    .await;
    println!(
        "  {:<44} {:>11.1} MB/s {:>11.1} MB/s",
        "blob pull (3 in a row)", normal, mirrored
    );
    let normal = manifest_rate(&http, &registry.url("/v2/team/app/manifests/v1")).await;
    let mirrored = manifest_rate(&http, &registry.url("/v2/dist/team/app/manifests/v1")).await;
    println!(
        "  {:<44} {:>12.0} req/s {:>11.0} req/s",
        "manifest GET by tag, 64 clients", normal, mirrored
    );
    println!(
        "  (the first, cold pull through the cache, including its first fetch: {cold:.1} MB/s)"
    );
}
