//! The blob-descriptor cache between real replicas: shared in a real `redis-server`, never
//! answering for a blob `stowage gc` deleted, and never failing a request when Redis is gone.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use stowage_e2e::garage::S3Endpoint;
use stowage_e2e::redis::RedisServer;
use stowage_e2e::{Stowage, free_port, http, metric, run, sha256, stowage_bin};

use crate::gc::push_image;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A replica with its metrics listener; `redis` shares its cache.
fn replica(storage: &[String], redis: Option<&RedisServer>) -> (Stowage, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args = storage.to_vec();
    args.extend(["--metrics-listen".to_owned(), metrics.clone()]);
    if let Some(redis) = redis {
        args.extend(["--blob-cache-redis".to_owned(), redis.url()]);
    }
    (Stowage::start_args(&args), metrics)
}

async fn cache_lookups(metrics: &str, tier: &str, outcome: &str) -> f64 {
    let series =
        format!("stowage_blob_cache_lookups_total{{tier=\"{tier}\",outcome=\"{outcome}\"}}");
    metric(metrics, &series).await.unwrap_or(0.0)
}

async fn head(base: &str, repo: &str, digest: &str) -> StatusCode {
    http()
        .head(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .unwrap()
        .status()
}

pub(crate) async fn push_blob(base: &str, repo: &str, blob: &[u8]) -> String {
    let digest = sha256(blob);
    let response = http()
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    digest
}

/// Two replicas on one bucket, their caches warm with a blob, which gc then deletes while both
/// are asked for it all along: once gc is done, neither (nor Redis) answers for it.
async fn gc_deleted_blobs_are_not_served_from_a_cache(shared: bool) {
    let s3 = S3Endpoint::from_env();
    let prefix = format!("blob-cache-gc-{:08x}", rand::random::<u32>());
    let storage = s3.stowage_flags(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let redis = shared.then(|| RedisServer::start(dir.path()));
    let (a, a_metrics) = replica(&storage, redis.as_ref());
    let (b, b_metrics) = replica(&storage, redis.as_ref());
    let (base_a, base_b) = (a.url(""), b.url(""));

    let doomed_layer = b"a layer only the deleted image has".to_vec();
    let doomed = sha256(&doomed_layer);
    let status = push_image(
        &http(),
        &base_a,
        "cached/app",
        "v1",
        b"{\"v\":1}",
        &[doomed_layer],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let kept_layer = b"a layer of the image that stays".to_vec();
    let kept = sha256(&kept_layer);
    let status = push_image(
        &http(),
        &base_a,
        "cached/app",
        "v2",
        b"{\"v\":2}",
        &[kept_layer],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    for base in [&base_a, &base_b, &base_b, &base_a] {
        assert_eq!(head(base, "cached/app", &doomed).await, StatusCode::OK);
    }
    assert!(cache_lookups(&b_metrics, "memory", "hit").await >= 1.0);
    if let Some(redis) = &redis {
        assert!(
            !redis.keys("stowage:*").is_empty(),
            "nothing was shared in Redis"
        );
    }

    // Untag v1: its layer stays linked, and served, until gc.
    let manifest = http()
        .get(format!("{base_a}/v2/cached/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    let digest = manifest.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    let deleted = http()
        .delete(format!("{base_a}/v2/cached/app/manifests/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    assert_eq!(head(&base_b, "cached/app", &doomed).await, StatusCode::OK);

    // Both replicas are asked for the blob throughout the run, keeping their caches busy.
    let stop = Arc::new(AtomicBool::new(false));
    let askers: Vec<_> = [base_a.clone(), base_b.clone()]
        .into_iter()
        .map(|base| {
            let (stop, doomed) = (Arc::clone(&stop), doomed.clone());
            tokio::spawn(async move {
                let mut answers = 0;
                while !stop.load(Ordering::Relaxed) {
                    let status = head(&base, "cached/app", &doomed).await;
                    assert!(
                        status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                        "{status}"
                    );
                    answers += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answers
            })
        })
        .collect();
    // Past the second the image was pushed in: gc keeps what storage times as new as its run.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let gc_storage = storage.clone();
    let report: Value = tokio::task::spawn_blocking(move || {
        let output = run(Command::new(stowage_bin())
            .args(["gc", "--output", "json", "--delete-untagged"])
            .args(["--grace-period", "0s", "--sweep-wait", "10s"])
            .args(&gc_storage));
        serde_json::from_slice(&output.stdout).unwrap()
    })
    .await
    .unwrap();
    let deleted: Vec<&str> = report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        deleted.contains(&format!("blob {doomed}").as_str()),
        "{report}"
    );

    // The moment gc is done, the blob is gone through either replica.
    for base in [&base_b, &base_a] {
        assert_eq!(
            head(base, "cached/app", &doomed).await,
            StatusCode::NOT_FOUND
        );
        let get = http()
            .get(format!("{base}/v2/cached/app/blobs/{doomed}"))
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), StatusCode::NOT_FOUND);
        assert_eq!(head(base, "cached/app", &kept).await, StatusCode::OK);
    }
    stop.store(true, Ordering::Relaxed);
    for asker in askers {
        assert!(asker.await.unwrap() > 100, "the replicas were hardly asked");
    }
    // The replicas saw the sweep coming and answered its candidate from storage meanwhile.
    assert!(cache_lookups(&b_metrics, "memory", "bypassed").await >= 1.0);
    assert!(cache_lookups(&a_metrics, "memory", "bypassed").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_deleted_blobs_are_not_served_from_memory() {
    gc_deleted_blobs_are_not_served_from_a_cache(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_deleted_blobs_are_not_served_from_redis() {
    gc_deleted_blobs_are_not_served_from_a_cache(true).await;
}

/// What one replica learns, another finds in Redis; with Redis gone, requests go to storage and
/// succeed; with Redis back, it is used again.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_the_cache_and_do_without_redis() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let storage = fs_flags(&root);
    let mut redis = RedisServer::start(dir.path());
    let (a, _) = replica(&storage, Some(&redis));
    let (b, b_metrics) = replica(&storage, Some(&redis));
    let (base_a, base_b) = (a.url(""), b.url(""));

    let digest = push_blob(&base_a, "shared/app", b"learned on one replica").await;
    assert_eq!(head(&base_a, "shared/app", &digest).await, StatusCode::OK);
    assert_eq!(head(&base_b, "shared/app", &digest).await, StatusCode::OK);
    assert!(
        cache_lookups(&b_metrics, "redis", "hit").await >= 1.0,
        "the second replica did not find the first one's facts in Redis"
    );

    // Redis dies: every request still succeeds, from storage, without waiting on Redis long.
    redis.stop();
    for round in 0..5u8 {
        let started = Instant::now();
        let digest = push_blob(&base_a, "shared/app", &[b'x', round]).await;
        assert_eq!(head(&base_b, "shared/app", &digest).await, StatusCode::OK);
        assert_eq!(head(&base_a, "shared/app", &digest).await, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "requests waited on the dead Redis: {:?}",
            started.elapsed()
        );
    }
    let status = push_image(
        &http(),
        &base_b,
        "shared/app",
        "v1",
        b"{}",
        &[b"layer".to_vec()],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(cache_lookups(&b_metrics, "redis", "error").await >= 1.0);

    // Redis comes back, empty: once the replicas stop standing aside, they fill it again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut round = 0u8;
    while redis.keys("stowage:*").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the replicas never used Redis again"
        );
        let digest = push_blob(&base_a, "shared/app", &[b'y', round]).await;
        assert_eq!(head(&base_b, "shared/app", &digest).await, StatusCode::OK);
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn fs_flags(root: &Path) -> Vec<String> {
    vec![
        "--fs-root".to_owned(),
        root.to_str().unwrap().to_owned(),
        "--fs-fsync".to_owned(),
        "false".to_owned(),
    ]
}
