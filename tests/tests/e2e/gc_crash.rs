//! Crash safety of the index and of gc: replicas and collections SIGKILLed at random moments
//! while pushes (that reuse older blobs) and deletes go on. Nothing a tag references is ever
//! deleted, and a full run afterwards finds the index lacking nothing (every crash left at most
//! entries too many, which it prunes).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use stowage_e2e::{Stowage, sha256, stowage_bin};

use crate::gc::{every_tag_pulls_whole, stowage_gc_on};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Collections killed at least (when they had not finished yet), each with a replica.
const ROUNDS: usize = 8;
/// What must have been pushed during the rounds, for the checks to mean something. A killed
/// collection's announcement holds pushes naming its candidates up only until its lease lapses,
/// so they keep landing between the kills.
const ENOUGH_PUSHES: usize = 30;
/// Rounds go on past [`ROUNDS`] until enough was pushed and deleted, up to this many.
const MAX_ROUNDS: usize = 16;

/// Pushes an image as [`crate::gc::push_image`] does, but takes a replica dying mid-way (a
/// connection error) for an answer: `Err` then.
async fn push(
    http: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    blobs: &[Vec<u8>],
) -> Result<(StatusCode, String), reqwest::Error> {
    let mut descriptors = Vec::new();
    for blob in blobs {
        let digest = sha256(blob);
        let pushed = http
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
            .body(blob.clone())
            .send()
            .await?;
        if pushed.status() != StatusCode::CREATED {
            return Ok((pushed.status(), String::new()));
        }
        descriptors.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": blob.len()}));
    }
    let mut config = descriptors.remove(0);
    config["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": descriptors}).to_string();
    let status = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await?
        .status();
    Ok((status, sha256(manifest.as_bytes())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_and_gc_killed_at_random_lose_nothing_and_leave_no_entry_missing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = vec![
        "--fs-root".to_owned(),
        dir.path().join("data").display().to_string(),
        "--fs-fsync".to_owned(),
        "false".to_owned(),
    ];
    let mut flags = storage.clone();
    flags.extend([
        "--upload-secret".to_owned(),
        "an upload key both replicas of this test share".to_owned(),
    ]);
    let mut replicas = [Stowage::start_args(&flags), Stowage::start_args(&flags)];
    let bases: Vec<String> = replicas
        .iter()
        .map(|r| format!("http://{}", r.address))
        .collect();
    let repos: Vec<String> = (0..3).map(|task| format!("crash/p{task}")).collect();
    let http = stowage_e2e::http();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (pushed, deleted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));

    let pushers: Vec<_> = (0..3usize)
        .map(|task| {
            let (http, bases, stop, failed) = (
                http.clone(),
                bases.clone(),
                Arc::clone(&stop),
                Arc::clone(&failed),
            );
            let (pushed, deleted) = (Arc::clone(&pushed), Arc::clone(&deleted));
            let refused = Arc::clone(&refused);
            let repo = repos[task].clone();
            tokio::spawn(async move {
                let mut kept: Vec<String> = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let base = &bases[i % bases.len()];
                    // A moving tag cycling through pooled layers (each garbage once the tag
                    // moves on, needed again later), and now and then an image kept by a tag.
                    let (tag, layer) = if i.is_multiple_of(3) {
                        (format!("keep-{i}"), format!("kept layer {i} of {task}"))
                    } else {
                        (
                            "moving".to_owned(),
                            format!("pooled layer {} of {task}", i % 4),
                        )
                    };
                    let blobs = [
                        format!("config {i} of {task}").into_bytes(),
                        b"shared base".to_vec(),
                        layer.into_bytes(),
                    ];
                    match push(&http, base, &repo, &tag, &blobs).await {
                        Ok((StatusCode::CREATED, digest)) => {
                            pushed.fetch_add(1, Ordering::Relaxed);
                            if tag.starts_with("keep") {
                                kept.push(digest);
                            }
                        }
                        // Refused (a blob collected between its upload and the manifest,
                        // with no grace period): pushed again.
                        Ok(_) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        // A replica killed mid-push: pushed again.
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                    // Every fourth kept image is deleted again, by digest, as a user would.
                    if i.is_multiple_of(4) && kept.len() > 1 {
                        let digest = kept.remove(0);
                        let response = http
                            .delete(format!("{base}/v2/{repo}/manifests/{digest}"))
                            .send()
                            .await;
                        if response.is_ok_and(|r| r.status() == StatusCode::ACCEPTED) {
                            deleted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();

    let mut gc_killed = 0;
    let mut rounds = 0;
    let enough =
        || pushed.load(Ordering::Relaxed) >= ENOUGH_PUSHES && deleted.load(Ordering::Relaxed) > 0;
    while rounds < ROUNDS || (!enough() && rounds < MAX_ROUNDS) {
        let mut gc = Command::new(stowage_bin())
            .args([
                "gc",
                "--delete-untagged",
                "--grace-period",
                "0s",
                "--sweep-wait",
                "10s",
            ])
            .args(&storage)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Anywhere from judging, through the announcement and the wait, to the sweep.
        let moment = Duration::from_millis(rand::random_range(200..12_500));
        tokio::time::sleep(moment).await;
        if gc.try_wait().unwrap().is_none() {
            gc_killed += 1;
        }
        let _ = gc.kill();
        let _ = gc.wait();
        // A replica dies too, whatever it was doing, and comes back.
        tokio::task::block_in_place(|| replicas[rounds % 2].restart());
        rounds += 1;
    }
    let enough = enough();
    stop.store(true, Ordering::Relaxed);
    for pusher in pushers {
        pusher.await.unwrap();
    }
    let (pushed, deleted) = (
        pushed.load(Ordering::Relaxed),
        deleted.load(Ordering::Relaxed),
    );
    eprintln!(
        "{pushed} images pushed, {deleted} deleted, {} pushes cut off and {} refused, each sent \
         again; {gc_killed} of {rounds} collections killed",
        failed.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    assert!(
        enough,
        "too little happened in {rounds} rounds of killed collections"
    );
    assert!(gc_killed > 0, "no collection was killed");

    let checked = every_tag_pulls_whole(&http, &bases, &repos).await;
    assert!(checked >= 6, "only {checked} tags");

    // Whatever the crashes left, the index lacks nothing: at worst entries too many.
    let audit = tokio::task::spawn_blocking({
        let storage = storage.clone();
        move || {
            stowage_gc_on(
                &storage,
                &["--full", "--delete-untagged", "--sweep-wait", "10s"],
            )
        }
    })
    .await
    .unwrap();
    eprintln!(
        "the audit pruned {} stale entries, deleted {} blobs",
        audit["index_entries_pruned"], audit["blobs_deleted"]
    );
    assert_eq!(audit["mode"], "full");
    assert_eq!(audit["index_entries_added"], 0, "{audit}");
    assert_eq!(
        every_tag_pulls_whole(&http, &bases[1..], &repos).await,
        checked
    );

    // And the incremental runs after it keep everything a tag needs.
    let incremental = tokio::task::spawn_blocking({
        let storage = storage.clone();
        move || stowage_gc_on(&storage, &["--delete-untagged", "--sweep-wait", "10s"])
    })
    .await
    .unwrap();
    assert_eq!(incremental["mode"], "incremental");
    assert_eq!(every_tag_pulls_whole(&http, &bases, &repos).await, checked);
}
