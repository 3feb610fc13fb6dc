//! Quotas with real clients and replicas: skopeo pushing over a quota fails with the quota and
//! the usage in its message and leaves nothing the quota counts once gc has run; three replicas
//! pushing at once overshoot by at most one blob per other replica.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::metrics::Scrape;
use reqwest::StatusCode;
use serde_json::Value;
use stowage_e2e::layout::{Layout, filler};
use stowage_e2e::{Stowage, free_port, require, run, sha256, skopeo, stowage_bin};

/// Each repository of `team` may store 1 MiB.
const TEAM_QUOTA: &str = r#"
[[policies.quota]]
name = "team-repositories"
repositories = ["team/**"]
bytes = "1MiB"
"#;

fn try_skopeo_copy(from: &str, to: &str) -> Output {
    Command::new(require("skopeo"))
        .args([
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            from,
            to,
        ])
        .output()
        .unwrap()
}

/// What `stowage usage` counts below `namespace` on `storage`.
fn usage(storage: &[String], namespace: &str) -> Value {
    let output = run(Command::new(stowage_bin())
        .args(["usage", "--output", "json", "--namespace", namespace])
        .args(storage));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn config_file(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("stowage.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn skopeo_over_a_quota_fails_with_the_usage_and_leaves_nothing_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let storage = vec![
        "--fs-root".to_owned(),
        dir.path().join("data").display().to_string(),
    ];
    skopeo_over_a_quota_on(dir.path(), &storage);
}

#[test]
fn skopeo_over_a_quota_fails_with_the_usage_and_leaves_nothing_on_garage() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("quota-{:016x}", rand::random::<u64>());
    let storage = stowage_e2e::garage::S3Endpoint::from_env().stowage_flags(&prefix);
    skopeo_over_a_quota_on(dir.path(), &storage);
}

fn skopeo_over_a_quota_on(dir: &std::path::Path, storage: &[String]) {
    let mut flags = storage.to_vec();
    flags.extend(["--config".to_owned(), config_file(dir, TEAM_QUOTA)]);
    let stowage = Stowage::start_args(&flags);
    let mut layout = Layout::new(&dir.join("layout"));
    // Two layers of 600 KiB: the first fits, the second does not.
    let (first, second) = (filler(600 << 10, 1), filler(600 << 10, 2));
    let large = layout.raw_image(&[&first, &second]);
    let small = layout.raw_image(&[&filler(100 << 10, 3)]);
    layout.tag("large", &large);
    layout.tag("small", &small);
    let target = format!("docker://{}/team/app:v1", stowage.address);

    let refused = try_skopeo_copy(&layout.reference("large"), &target);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "the push went over the quota");
    // skopeo quotes the registry's message (so the quota's name shows as \"…\").
    for part in [
        "denied: quota",
        "team-repositories",
        "allows repository team/app to store 1.05 MB",
        "adds 614 kB",
    ] {
        assert!(stderr.contains(part), "{part:?} in {stderr}");
    }

    // No tag, no manifest; the layer that did not fit is not stored at all.
    let http = stowage_e2e::http();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = |path: String| {
        runtime.block_on(async { http.head(stowage.url(&path)).send().await.unwrap().status() })
    };
    assert_eq!(
        status(format!("/v2/team/app/manifests/{}", large.digest)),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(format!("/v2/team/app/blobs/{}", sha256(&second))),
        StatusCode::NOT_FOUND
    );
    let counted = usage(storage, "team");
    let stored = counted["repositories"]["team/app"].as_u64().unwrap_or(0);
    assert!(stored < 1 << 20, "{counted}");
    // What did fit (the first layer, maybe the config) belongs to no image: gc takes it, and
    // the repository counts nothing again. (gc leaves for its next run what was written within
    // the second before it started, as storage times objects to the second.)
    std::thread::sleep(std::time::Duration::from_secs(2));
    let report = crate::gc::stowage_gc_on(storage, &["--sweep-wait", "10s"]);
    assert_eq!(report["bytes_freed"].as_u64(), Some(stored), "{report}");
    let counted = usage(storage, "team");
    assert_eq!(counted["total_bytes"], 0, "{counted}");

    // An image that fits goes in as it is (skopeo would compress the raw layers otherwise),
    // and comes back whole.
    skopeo(&[
        "copy",
        "--preserve-digests",
        &layout.reference("small"),
        &target,
    ]);
    let tagged = runtime.block_on(async {
        let response = http
            .head(stowage.url("/v2/team/app/manifests/v1"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        response.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    });
    assert_eq!(tagged, small.digest);
    let back = dir.join("back");
    skopeo(&["copy", &target, &format!("oci:{}:v1", back.display())]);
}

/// The namespace `race` may store 1 MiB, and each blob is 64 KiB.
const RACE_QUOTA: &str = r#"
[[policies.quota]]
name = "race"
namespaces = ["race"]
bytes = "1MiB"
"#;
const RACE_LIMIT: u64 = 1 << 20;
const RACE_BLOB: usize = 64 << 10;
const RACE_REPLICAS: usize = 3;
const PUSHERS_PER_REPLICA: usize = 8;

/// Three replicas on Garage, eight pushers each, push distinct blobs until refused: the
/// namespace ends full, over its quota by at most one blob per other replica (each replica
/// commits one blob at a time per namespace and counts everything the others finished), and
/// what it stores is exactly what was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_pushing_at_once_overshoot_by_at_most_one_blob_per_other_replica() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("quota-race-{:016x}", rand::random::<u64>());
    let storage = stowage_e2e::garage::S3Endpoint::from_env().stowage_flags(&prefix);
    let mut flags = storage.clone();
    flags.extend([
        "--config".to_owned(),
        config_file(dir.path(), RACE_QUOTA),
        "--upload-secret".to_owned(),
        "one upload key for every replica of this test".to_owned(),
    ]);
    let metrics: Vec<String> = (0..RACE_REPLICAS)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let replicas: Vec<Stowage> = metrics
        .iter()
        .map(|address| {
            let mut flags = flags.clone();
            flags.extend(["--metrics-listen".to_owned(), address.clone()]);
            Stowage::start_args(&flags)
        })
        .collect();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seed = Arc::new(AtomicUsize::new(0));
    let http = stowage_e2e::http();
    let pushers: Vec<_> = (0..RACE_REPLICAS * PUSHERS_PER_REPLICA)
        .map(|pusher| {
            let base = format!("http://{}", replicas[pusher % RACE_REPLICAS].address);
            let (http, accepted, seed) = (http.clone(), Arc::clone(&accepted), Arc::clone(&seed));
            tokio::spawn(async move {
                let repo = format!("race/pusher-{pusher}");
                let mut refusals = 0;
                while refusals < 2 {
                    let blob = filler(RACE_BLOB, seed.fetch_add(1, Ordering::Relaxed) as u64);
                    let digest = sha256(&blob);
                    let response = http
                        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
                        .body(blob)
                        .send()
                        .await
                        .unwrap();
                    match response.status() {
                        StatusCode::CREATED => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        StatusCode::FORBIDDEN => {
                            let text = response.text().await.unwrap();
                            assert!(text.contains("namespace race"), "{text}");
                            refusals += 1;
                        }
                        other => panic!("{other}: {}", response.text().await.unwrap()),
                    }
                }
            })
        })
        .collect();
    for pusher in pushers {
        pusher.await.unwrap();
    }

    let accepted = accepted.load(Ordering::Relaxed) as u64;
    let counted = usage(&storage, "race");
    let stored = counted["namespaces"]["race"].as_u64().unwrap();
    assert_eq!(stored, accepted * RACE_BLOB as u64, "{counted}");
    eprintln!("{accepted} blobs accepted: {stored} bytes stored under a quota of {RACE_LIMIT}");
    let overshoot_bound = RACE_LIMIT + (RACE_REPLICAS as u64 - 1) * RACE_BLOB as u64;
    assert!(
        stored <= overshoot_bound,
        "{stored} bytes stored, more than {overshoot_bound}"
    );
    assert!(
        stored + RACE_BLOB as u64 > RACE_LIMIT,
        "refused while {stored} bytes left room"
    );

    // Every refusal is counted where it happened.
    let mut refused = 0.0;
    for address in &metrics {
        let scrape = Scrape::take(&http, address).await;
        refused += scrape.value("stowage_quota_refusals_total", &[("quota", "race")]);
    }
    assert_eq!(refused, (2 * RACE_REPLICAS * PUSHERS_PER_REPLICA) as f64);

    // A replica counts its metrics as it starts: the quota's figures are the same.
    let metrics_address = format!("127.0.0.1:{}", free_port());
    let mut counting = flags.clone();
    counting.extend(["--metrics-listen".to_owned(), metrics_address.clone()]);
    let _counting = Stowage::start_args(&counting);
    let labels = [("quota", "race"), ("scope", "namespace"), ("name", "race")];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let scrape = Scrape::take(&http, &metrics_address).await;
        let used = scrape.value("stowage_quota_used_bytes", &labels);
        if used > 0.0 || std::time::Instant::now() > deadline {
            assert_eq!(used, stored as f64);
            assert_eq!(
                scrape.value("stowage_quota_limit_bytes", &labels),
                RACE_LIMIT as f64
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(replicas);
}
