//! What registry events cost on the push path: manifest push latency and blob push throughput
//! of a release-build Stowage on the filesystem (fsync on), with one webhook endpoint and
//! without. The receiver runs in this process and accepts everything. Printed, not asserted.

// A benchmark reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use stowage_e2e::Stowage;

const MANIFESTS: usize = 300;
const BLOB: usize = 64 << 20;

async fn receiver() -> String {
    let app = axum::Router::new().route("/events", axum::routing::post(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn push_blob(http: &reqwest::Client, registry: &Stowage, data: Vec<u8>) -> String {
    let digest = stowage_e2e::sha256(&data);
    let started = http
        .post(registry.url("/v2/bench/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let separator = if location.contains('?') { '&' } else { '?' };
    let url = format!(
        "http://{}{location}{separator}digest={digest}",
        registry.address
    );
    let finished = http.put(url).body(data).send().await.unwrap();
    assert_eq!(finished.status(), 201);
    digest
}

async fn figures(registry: &Stowage) -> (Duration, Duration, f64) {
    let http = stowage_e2e::http();
    let config = push_blob(&http, registry, b"{}".to_vec()).await;
    let mut latencies = Vec::with_capacity(MANIFESTS);
    for i in 0..MANIFESTS {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [],
            "annotations": {"n": i.to_string()}
        });
        let started = Instant::now();
        let response = http
            .put(registry.url(&format!("/v2/bench/app/manifests/t{i}")))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(serde_json::to_vec(&manifest).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let started = Instant::now();
    for seed in 0..3u8 {
        let data: Vec<u8> = (0..BLOB)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        push_blob(&http, registry, data).await;
    }
    let throughput = (3 * BLOB) as f64 / 1e6 / started.elapsed().as_secs_f64();
    (
        latencies[MANIFESTS / 2],
        latencies[MANIFESTS * 99 / 100],
        throughput,
    )
}

#[tokio::main]
async fn main() {
    let scratch = tempfile::Builder::new()
        .prefix("stowage-bench-events")
        .tempdir_in(std::env::current_dir().unwrap())
        .unwrap();
    let binary = stowage_e2e::build_dir().join("stowage");
    assert!(
        binary.exists(),
        "build the server first: cargo build --release -p stowage"
    );
    let url = receiver().await;
    let config = scratch.path().join("events.toml");
    std::fs::write(
        &config,
        format!("[[notifications.endpoints]]\nname = \"bench\"\nurl = \"{url}\"\n"),
    )
    .unwrap();
    println!("events: push costs with one webhook endpoint (release build, filesystem, fsync on)");
    println!(
        "  {:<12} {:>24} {:>24} {:>22}",
        "", "manifest push p50", "manifest push p99", "blob push (64 MiB)"
    );
    for (what, with_events) in [("events off", false), ("events on", true)] {
        let root = scratch.path().join(what.replace(' ', "-"));
        let mut args = vec!["--fs-root".to_owned(), root.to_str().unwrap().to_owned()];
        if with_events {
            args.extend(["--config".to_owned(), config.to_str().unwrap().to_owned()]);
        }
        let registry = Stowage::start_with_binary(&binary, &args);
        let (p50, p99, throughput) = figures(&registry).await;
        println!(
            "  {what:<12} {:>21.2} ms {:>21.2} ms {:>17.1} MB/s",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0,
            throughput
        );
    }
}
