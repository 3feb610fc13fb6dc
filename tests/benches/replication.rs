//! Replicating 1,000 tags (10 repositories of 100 images, each a shared 1 MiB base layer, its
//! own 16 KiB layer and config) from a release-build Stowage on the filesystem:
//!
//! - `stowage replicate --once` (the scheduled reconciliation) and `skopeo sync`, the tool
//!   teams script for the same job, each into an empty CNCF Distribution and an empty Stowage;
//! - live replication, a rule on the serving registry, while the 1,000 tags are pushed.
//!
//! Printed side by side: wall time, the requests the destination served, and the copying
//! process's peak resident memory (for live replication, the serving source's). Not asserted.

// A benchmark reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;
use stowage_e2e::{Distribution, Stowage, require, sha256};

const REPOSITORIES: usize = 10;
const TAGS_PER_REPOSITORY: usize = 100;
const BASE_LAYER: usize = 1 << 20;
const OWN_LAYER: usize = 16 << 10;

/// A destination registry, started empty.
enum Destination {
    Distribution(Distribution),
    Stowage(Stowage),
}

impl Destination {
    fn start(kind: &str, root: &Path, binary: &Path) -> Self {
        match kind {
            "Distribution" => Self::Distribution(Distribution::start(root)),
            _ => Self::Stowage(Stowage::start_with_binary(
                binary,
                &["--fs-root".to_owned(), root.to_str().unwrap().to_owned()],
            )),
        }
    }

    fn address(&self) -> &str {
        match self {
            Self::Distribution(d) => &d.address,
            Self::Stowage(s) => &s.address,
        }
    }

    fn requests(&self) -> usize {
        match self {
            Self::Distribution(d) => d.requests().len(),
            Self::Stowage(s) => s.requests().len(),
        }
    }

    /// How many of the 1,000 tags it lists.
    async fn tags(&self, http: &reqwest::Client) -> usize {
        let mut found = 0;
        for repository in 0..REPOSITORIES {
            let url = format!(
                "http://{}/v2/bench/app{repository}/tags/list?n=1000",
                self.address()
            );
            let Ok(response) = http.get(url).send().await else {
                continue;
            };
            if let Ok(list) = response.json::<serde_json::Value>().await {
                found += list["tags"].as_array().map_or(0, Vec::len);
            }
        }
        found
    }
}

fn noise(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn push_blob(http: &reqwest::Client, address: &str, repository: &str, data: Vec<u8>) {
    let digest = sha256(&data);
    let started = http
        .post(format!("http://{address}/v2/{repository}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let separator = if location.contains('?') { '&' } else { '?' };
    let finished = http
        .put(format!(
            "http://{address}{location}{separator}digest={digest}"
        ))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), 201);
}

fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": sha256(data), "size": data.len()})
}

/// Pushes the 1,000 tags to `address`, eight at a time.
async fn push_tags(address: &str) {
    let http = stowage_e2e::http();
    for repository in 0..REPOSITORIES {
        let name = format!("bench/app{repository}");
        let base = noise(BASE_LAYER, repository as u64 + 1);
        push_blob(&http, address, &name, base.clone()).await;
        let base = descriptor("application/vnd.oci.image.layer.v1.tar", &base);
        let pushes = (0..TAGS_PER_REPOSITORY).map(|tag| {
            let (http, name, base) = (http.clone(), name.clone(), base.clone());
            async move {
                let seed = (repository * TAGS_PER_REPOSITORY + tag) as u64 + 1000;
                let layer = noise(OWN_LAYER, seed);
                let config = serde_json::to_vec(&json!({
                    "architecture": "amd64", "os": "linux",
                    "config": {"Labels": {"tag": tag.to_string()}},
                    "rootfs": {"type": "layers", "diff_ids": [base["digest"], sha256(&layer)]}
                }))
                .unwrap();
                let manifest = serde_json::to_vec(&json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
                    "layers": [base, descriptor("application/vnd.oci.image.layer.v1.tar", &layer)]
                }))
                .unwrap();
                push_blob(&http, address, &name, config).await;
                push_blob(&http, address, &name, layer).await;
                let stored = http
                    .put(format!("http://{address}/v2/{name}/manifests/v{tag}"))
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(manifest)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(stored.status(), 201);
            }
        });
        futures::stream::iter(pushes)
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
    }
}

/// Runs `command` to the end: its wall time and peak resident memory in MiB, read from
/// `/proc` while it runs (VmHWM only grows, so the last reading is the peak). Its output goes
/// to a file, which a pipe nobody reads while it runs would not take.
fn measure(command: &mut Command) -> (Duration, f64) {
    let mut output = tempfile::tempfile().unwrap();
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(output.try_clone().unwrap())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            peak_kib = peak_kib.max(hwm_kib(&status));
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    if !status.success() {
        let mut stderr = String::new();
        std::io::Seek::rewind(&mut output).unwrap();
        std::io::Read::read_to_string(&mut output, &mut stderr).unwrap();
        panic!("{command:?} failed: {stderr}");
    }
    (took, peak_kib as f64 / 1024.0)
}

fn hwm_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rule(destination: &str, extra: &str) -> String {
    format!("[[replication]]\nname = \"bench\"\nurl = \"http://{destination}\"\n{extra}")
}

fn print_row(what: &str, into: &str, took: Duration, requests: usize, peak_mib: f64) {
    println!(
        "  {what:<28} {into:<14} {:>10.2} {requests:>10} {peak_mib:>16.1}",
        took.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let scratch = tempfile::Builder::new()
        .prefix("stowage-bench-replication")
        .tempdir_in(std::env::current_dir().unwrap())
        .unwrap();
    let binary: PathBuf = stowage_e2e::build_dir().join("stowage");
    assert!(
        binary.exists(),
        "build the server first: cargo build --release -p stowage"
    );
    let http = stowage_e2e::http();
    let tags = REPOSITORIES * TAGS_PER_REPOSITORY;

    let source_root = scratch.path().join("source");
    let source = Stowage::start_with_binary(
        &binary,
        &[
            "--fs-root".to_owned(),
            source_root.to_str().unwrap().to_owned(),
        ],
    );
    push_tags(&source.address).await;

    println!(
        "replication: {tags} tags in {REPOSITORIES} repositories from a release-build Stowage \
         (filesystem)"
    );
    println!(
        "  {:<28} {:<14} {:>10} {:>10} {:>16}",
        "", "into", "wall (s)", "requests", "peak RSS (MiB)"
    );
    let sync_list = scratch.path().join("sync.yaml");
    let images: String = (0..REPOSITORIES)
        .map(|r| format!("    bench/app{r}: \".*\"\n"))
        .collect();
    std::fs::write(
        &sync_list,
        format!(
            "{}:\n  tls-verify: false\n  images-by-tag-regex:\n{images}",
            source.address
        ),
    )
    .unwrap();
    for into in ["Distribution", "Stowage"] {
        let destination = Destination::start(
            into,
            &scratch.path().join(format!("skopeo-{into}")),
            &binary,
        );
        let (took, peak) = measure(
            Command::new(require("skopeo"))
                .args([
                    "sync",
                    "--src",
                    "yaml",
                    "--dest",
                    "docker",
                    "--dest-tls-verify=false",
                ])
                .arg(&sync_list)
                // skopeo keeps a repository's last path segment: bench/app0 goes to bench/.
                .arg(format!("{}/bench", destination.address())),
        );
        assert_eq!(destination.tags(&http).await, tags);
        print_row("skopeo sync", into, took, destination.requests(), peak);

        let destination =
            Destination::start(into, &scratch.path().join(format!("once-{into}")), &binary);
        let config = scratch.path().join(format!("once-{into}.toml"));
        std::fs::write(&config, rule(destination.address(), "")).unwrap();
        let (took, peak) = measure(
            Command::new(&binary)
                .args(["replicate", "--once", "--fs-fsync", "false", "--fs-root"])
                .arg(&source_root)
                .arg("--config")
                .arg(&config),
        );
        assert_eq!(destination.tags(&http).await, tags);
        print_row(
            "stowage replicate --once",
            into,
            took,
            destination.requests(),
            peak,
        );
    }
    drop(source);

    // Live: the rule on the serving registry while the tags are pushed to it.
    let destination =
        Destination::start("Stowage", &scratch.path().join("live-destination"), &binary);
    let config = scratch.path().join("live.toml");
    std::fs::write(&config, rule(destination.address(), "")).unwrap();
    let live_root = scratch.path().join("live-source");
    let live = Stowage::start_with_binary(
        &binary,
        &[
            "--fs-root".to_owned(),
            live_root.to_str().unwrap().to_owned(),
            "--config".to_owned(),
            config.to_str().unwrap().to_owned(),
        ],
    );
    let started = Instant::now();
    push_tags(&live.address).await;
    let pushed = started.elapsed();
    while destination.tags(&http).await < tags {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "live replication stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    print_row(
        "live, while pushed",
        "Stowage",
        started.elapsed(),
        destination.requests(),
        live.peak_rss_kib() as f64 / 1024.0,
    );
    println!(
        "  (the pushes alone took {:.2} s; live peak RSS is the serving source's)",
        pushed.as_secs_f64()
    );
}
