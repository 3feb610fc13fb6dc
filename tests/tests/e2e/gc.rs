//! `stowage gc` as operators run it: against Distribution's own garbage collector on the same
//! folder, and online, while replicas keep taking pushes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use stowage_e2e::emulators::{AzureEndpoint, GcsEndpoint};
use stowage_e2e::{Stowage, require, run, sha256, stowage_bin};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pushes an image of `layers` tagged `tag` over plain HTTP; the manifest PUT's status.
pub(crate) async fn push_image(
    http: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[Vec<u8>],
) -> StatusCode {
    let mut descriptors = Vec::new();
    for blob in std::iter::once(config).chain(layers.iter().map(Vec::as_slice)) {
        let digest = sha256(blob);
        let pushed = upload(http, base, repo, blob).await;
        assert_eq!(pushed, StatusCode::CREATED);
        descriptors.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": blob.len()}));
    }
    let mut config_descriptor = descriptors.remove(0);
    config_descriptor["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": descriptors});
    http.put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.to_string())
        .send()
        .await
        .unwrap()
        .status()
}

/// Uploads `blob` to `repo` in one request where the registry takes that (Stowage), else in a
/// session: a POST, then a PUT with the bytes (Distribution). The final status.
async fn upload(http: &reqwest::Client, base: &str, repo: &str, blob: &[u8]) -> StatusCode {
    let digest = sha256(blob);
    let started = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    if started.status() != StatusCode::ACCEPTED {
        return started.status();
    }
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    http.put(format!("{location}{separator}digest={digest}"))
        .body(blob.to_vec())
        .send()
        .await
        .unwrap()
        .status()
}

/// Runs `stowage gc` and returns its JSON report, after checking that the `--report-file`
/// summary (what the operator reads from a Job) agrees with it.
fn stowage_gc(root: &Path, flags: &[&str]) -> Value {
    stowage_gc_on(&["--fs-root".to_owned(), root.display().to_string()], flags)
}

/// As `stowage_gc`, on the storage `storage` (its flags) names.
pub(crate) fn stowage_gc_on(storage: &[String], flags: &[&str]) -> Value {
    let summary_dir = tempfile::tempdir().unwrap();
    let summary_path = summary_dir.path().join("termination-log");
    let output = run(Command::new(stowage_bin())
        .args([
            "gc",
            "--output",
            "json",
            "--grace-period",
            "0s",
            "--report-file",
            summary_path.to_str().unwrap(),
        ])
        .args(storage)
        .args(flags));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    for count in [
        "blobs_deleted",
        "manifests_deleted",
        "bytes_freed",
        "dry_run",
    ] {
        assert_eq!(summary[count], report[count], "{count} in the summary");
    }
    assert!(
        summary.get("deleted").is_none(),
        "the summary leaves out the item list"
    );
    report
}

/// `(blobs, manifests)` that Distribution's `garbage-collect --dry-run` would delete.
fn distribution_would_delete(
    root: &Path,
    delete_untagged: bool,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            root.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(require("docker-registry"));
    command.args(["garbage-collect", "--dry-run"]);
    if delete_untagged {
        command.arg("--delete-untagged");
    }
    let output = run(command.arg(&config));
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let mut blobs = BTreeSet::new();
    let mut manifests = BTreeSet::new();
    for line in text.lines() {
        let Some((kind, rest)) = line.split_once(" eligible for deletion: ") else {
            continue;
        };
        let digest = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        if kind.ends_with("blob") {
            blobs.insert(digest);
        } else if kind.ends_with("manifest") {
            manifests.insert(digest);
        }
    }
    (blobs, manifests)
}

fn ours(report: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut blobs = BTreeSet::new();
    let mut manifests = BTreeSet::new();
    for item in report["deleted"].as_array().unwrap() {
        let item = item.as_str().unwrap();
        if let Some(digest) = item.strip_prefix("blob ") {
            blobs.insert(digest.to_owned());
        } else if let Some((_, digest)) = item
            .strip_prefix("manifest ")
            .and_then(|m| m.split_once('@'))
        {
            manifests.insert(digest.to_owned());
        }
    }
    (blobs, manifests)
}

#[tokio::test]
async fn deletes_nothing_distribution_would_keep() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let registry = Stowage::start(&root, &[]);
    let http = stowage_e2e::http();
    let base = format!("http://{}", registry.address);
    let shared = b"a base layer every image shares".to_vec();
    for (tag, unique) in [("v1", "one"), ("v2", "two"), ("v3", "three")] {
        let status = push_image(
            &http,
            &base,
            "compat/app",
            tag,
            format!("config {tag}").as_bytes(),
            &[shared.clone(), unique.as_bytes().to_vec()],
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // v2 moves to a new image, v3 is untagged, and one blob was never referenced.
    let status = push_image(
        &http,
        &base,
        "compat/app",
        "v2",
        b"config v2 again",
        &[shared.clone(), b"two again".to_vec()],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        http.delete(format!("{base}/v2/compat/app/manifests/v3"))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    let orphan = sha256(b"never referenced");
    http.post(format!(
        "{base}/v2/compat/app/blobs/uploads/?digest={orphan}"
    ))
    .body("never referenced")
    .send()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    for delete_untagged in [false, true] {
        let flags: &[&str] = if delete_untagged {
            &["--dry-run", "--delete-untagged"]
        } else {
            &["--dry-run"]
        };
        let report = stowage_gc(&root, flags);
        let (our_blobs, our_manifests) = ours(&report);
        let (their_blobs, their_manifests) = distribution_would_delete(&root, delete_untagged);
        assert!(
            our_blobs.is_subset(&their_blobs),
            "we would delete blobs Distribution keeps: {:?}",
            our_blobs.difference(&their_blobs).collect::<Vec<_>>()
        );
        assert!(
            our_manifests.is_subset(&their_manifests),
            "{our_manifests:?} vs {their_manifests:?}"
        );
        assert!(our_blobs.contains(&orphan));
        if delete_untagged {
            assert!(our_blobs.contains(&sha256(b"three")) && our_blobs.contains(&sha256(b"two")));
            assert_eq!(our_manifests.len(), 2, "{report}");
        } else {
            assert_eq!(our_blobs.len(), 1, "{report}");
        }
    }

    // For real: then Distribution itself still serves every tag, whole.
    let report = stowage_gc(&root, &["--delete-untagged", "--sweep-wait", "10s"]);
    assert_eq!(report["manifests_deleted"], 2, "{report}");
    let distribution = stowage_e2e::Distribution::start(&root);
    for tag in ["v1", "v2"] {
        let back = dir.path().join(format!("back-{tag}"));
        stowage_e2e::skopeo(&[
            "copy",
            &format!("docker://{}/compat/app:{tag}", distribution.address),
            &format!("oci:{}:{tag}", back.display()),
        ]);
    }
    let (left_blobs, left_manifests) = distribution_would_delete(&root, true);
    assert!(
        left_blobs.is_empty() && left_manifests.is_empty(),
        "{left_blobs:?} {left_manifests:?}"
    );
}

/// Pushes through two replicas never stop while `stowage gc --delete-untagged` runs again and
/// again, and keep needing layers that have just become garbage. Pushes that race a sweep wait
/// it out and go through: none is refused, and afterwards every tag pulls completely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_runs_while_pushes_continue() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    gc_runs_while_pushes_continue_on(
        &[
            "--fs-root".to_owned(),
            root.display().to_string(),
            "--fs-fsync".to_owned(),
            "false".to_owned(),
        ],
        2,
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_runs_while_pushes_continue_on_azurite() {
    let prefix = format!("gc-{:016x}", rand::random::<u64>());
    gc_runs_while_pushes_continue_on(&AzureEndpoint::from_env().stowage_flags(&prefix), 2, true)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_runs_while_pushes_continue_on_fake_gcs_server() {
    let prefix = format!("gc-{:016x}", rand::random::<u64>());
    gc_runs_while_pushes_continue_on(&GcsEndpoint::from_env().stowage_flags(&prefix), 2, true)
        .await;
}

/// Three replicas on S3 (Garage), as the operator runs them behind an autoscaler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_runs_while_pushes_continue_on_three_replicas_on_garage() {
    let prefix = format!("gc-{:016x}", rand::random::<u64>());
    let s3 = stowage_e2e::garage::S3Endpoint::from_env();
    gc_runs_while_pushes_continue_on(&s3.stowage_flags(&prefix), 3, false).await;
}

/// `replicas` replicas on `storage` take pushes that reuse older blobs while gc runs three
/// times: nothing any tag needs is lost, and no push is refused.
/// With `must_race`, at least one push must have waited a sweep out (on Garage, whose pushes
/// are quick, few land in a sweep's window: one in about 300, so it is not asked for there).
async fn gc_runs_while_pushes_continue_on(storage: &[String], replicas: usize, must_race: bool) {
    let key = "an upload key shared by both replicas of this test";
    let mut flags = storage.to_vec();
    flags.extend(["--upload-secret".to_owned(), key.to_owned()]);
    let replicas: Vec<Stowage> = (0..replicas).map(|_| Stowage::start_args(&flags)).collect();
    let bases: Vec<String> = replicas
        .iter()
        .map(|r| format!("http://{}", r.address))
        .collect();
    let http = stowage_e2e::http();
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let waited = Arc::new(AtomicUsize::new(0));

    let pushers: Vec<_> = (0..3usize)
        .map(|task| {
            let (http, bases, stop, refused, waited) = (
                http.clone(),
                bases.clone(),
                Arc::clone(&stop),
                Arc::clone(&refused),
                Arc::clone(&waited),
            );
            tokio::spawn(async move {
                let mut pushed = 0;
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let base = &bases[i % bases.len()];
                    let config = format!("config {i} of pusher {task}").into_bytes();
                    // The moving tag cycles through five layers: each one turns into garbage when
                    // the tag moves on, and is needed again four pushes later, mid-sweep or not.
                    let (tag, layer) = if i.is_multiple_of(4) {
                        (
                            format!("keep-{task}-{i}"),
                            format!("layer of kept image {i} of pusher {task}"),
                        )
                    } else {
                        (
                            format!("moving-{task}"),
                            format!("pooled layer {} of pusher {task}", i % 5),
                        )
                    };
                    let layer = layer.into_bytes();
                    let started = std::time::Instant::now();
                    let status = push_image(
                        &http,
                        base,
                        &format!("online/p{task}"),
                        &tag,
                        &config,
                        &[b"shared base".to_vec(), layer],
                    )
                    .await;
                    // A push needing what a sweep announced waits until it is over.
                    if started.elapsed() >= Duration::from_secs(2) {
                        waited.fetch_add(1, Ordering::Relaxed);
                    }
                    match status {
                        StatusCode::CREATED => pushed += 1,
                        StatusCode::BAD_REQUEST => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        other => panic!("push answered {other}"),
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                pushed
            })
        })
        .collect();

    let mut deleted = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let storage = storage.to_vec();
        let report = tokio::task::spawn_blocking(move || {
            stowage_gc_on(&storage, &["--delete-untagged", "--sweep-wait", "10s"])
        })
        .await
        .unwrap();
        deleted += report["manifests_deleted"].as_u64().unwrap()
            + report["blobs_deleted"].as_u64().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut pushed = 0;
    for pusher in pushers {
        pushed += pusher.await.unwrap();
    }
    let (refused, waited) = (
        refused.load(Ordering::Relaxed),
        waited.load(Ordering::Relaxed),
    );
    eprintln!(
        "pushed {pushed} images, {waited} waited a sweep out, {refused} refused; gc deleted \
         {deleted} objects"
    );
    assert!(deleted > 0, "gc found nothing to collect");
    assert_eq!(refused, 0, "pushes were refused because gc ran");
    assert!(waited > 0 || !must_race, "no push ever raced a sweep");

    // Every tag, through either replica, pulls whole: manifest, config and layers.
    let repos: Vec<String> = (0..3).map(|task| format!("online/p{task}")).collect();
    let checked = every_tag_pulls_whole(&http, &bases, &repos).await;
    assert!(checked >= 6, "only {checked} tags to check");
}

/// Every tag of `repos` pulls whole, through each of `bases` in turn: manifest, config and
/// layers, each blob matching its digest. How many tags there were.
pub(crate) async fn every_tag_pulls_whole(
    http: &reqwest::Client,
    bases: &[String],
    repos: &[String],
) -> usize {
    let mut checked = 0;
    for repo in repos {
        let tags: Value = http
            .get(format!("{}/v2/{repo}/tags/list", bases[0]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for tag in tags["tags"].as_array().into_iter().flatten() {
            let tag = tag.as_str().unwrap();
            let base = &bases[checked % bases.len()];
            let response = http
                .get(format!("{base}/v2/{repo}/manifests/{tag}"))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{repo}:{tag}");
            let manifest: Value = response.json().await.unwrap();
            let blobs =
                std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap());
            for descriptor in blobs {
                let digest = descriptor["digest"].as_str().unwrap();
                let blob = http
                    .get(format!("{base}/v2/{repo}/blobs/{digest}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(blob.status(), StatusCode::OK, "{repo}:{tag} lost {digest}");
                assert_eq!(sha256(&blob.bytes().await.unwrap()), digest);
            }
            checked += 1;
        }
    }
    checked
}

/// `serve --purge-uploads-interval` purges stale upload sessions by itself.
#[tokio::test]
async fn serve_purges_stale_uploads_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Stowage::start(
        &dir.path().join("data"),
        &[
            "--purge-uploads-interval",
            "1s",
            "--purge-uploads-older-than",
            "2s",
        ],
    );
    let http = stowage_e2e::http();
    let started = http
        .post(format!(
            "http://{}/v2/stale/blobs/uploads/",
            registry.address
        ))
        .send()
        .await
        .unwrap();
    let location = format!(
        "http://{}{}",
        registry.address,
        started.headers()["location"].to_str().unwrap()
    );
    assert_eq!(
        http.get(&location).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while http.get(&location).send().await.unwrap().status() != StatusCode::NOT_FOUND {
        assert!(
            std::time::Instant::now() < deadline,
            "the stale upload was never purged:\n{}",
            registry.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(registry.logs().contains("purged stale uploads"));
}

/// The blob digests and the `repository@digest` revisions stored under `root`.
fn stored(root: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let v2 = root.join("docker/registry/v2");
    let mut blobs = BTreeSet::new();
    for entry in walkdir(&v2.join("blobs")) {
        if entry.ends_with("/data") {
            let hex = entry.rsplit('/').nth(1).unwrap();
            blobs.insert(format!("sha256:{hex}"));
        }
    }
    let mut revisions = BTreeSet::new();
    let repositories = v2.join("repositories");
    for entry in walkdir(&repositories) {
        let relative = entry
            .strip_prefix(&format!("{}/", repositories.display()))
            .unwrap();
        if let Some((repository, rest)) = relative.split_once("/_manifests/revisions/sha256/")
            && let Some(hex) = rest.strip_suffix("/link")
        {
            revisions.insert(format!("{repository}@sha256:{hex}"));
        }
    }
    (blobs, revisions)
}

fn walkdir(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path.display().to_string());
            }
        }
    }
    files
}

/// Where Distribution filled the registry Stowage adopts.
enum Filled {
    Filesystem(std::path::PathBuf),
    /// Its `s3` driver, on the Garage `make test` runs, below a prefix.
    S3(stowage_e2e::garage::S3Endpoint, String),
}

impl Filled {
    fn distribution(&self) -> stowage_e2e::Distribution {
        match self {
            Self::Filesystem(root) => stowage_e2e::Distribution::start(root),
            Self::S3(s3, prefix) => stowage_e2e::Distribution::start_s3(s3, prefix),
        }
    }

    /// Stowage's flags for the same storage.
    fn flags(&self) -> Vec<String> {
        match self {
            Self::Filesystem(root) => vec!["--fs-root".to_owned(), root.display().to_string()],
            Self::S3(s3, prefix) => s3.stowage_flags(prefix),
        }
    }

    /// Every object, as files under `to`.
    async fn copy_to(&self, to: &Path) {
        match self {
            Self::Filesystem(root) => {
                run(Command::new("cp").arg("-a").arg(root).arg(to));
            }
            Self::S3(..) => {
                let store = crate::clouds_registry::open(&self.flags()).await;
                crate::clouds_registry::objects_to_folder(store.as_ref(), to).await;
            }
        }
    }
}

/// A registry Distribution filled on the filesystem is adopted while Stowage serves it: its
/// first collection runs in full and builds the index (a push in the meantime keeps its image),
/// and reclaims exactly what Distribution's own `garbage-collect --delete-untagged` reclaims
/// from a copy of the same data. The runs after it are incremental.
#[tokio::test]
async fn adopts_a_registry_distribution_filled_and_reclaims_what_distribution_would() {
    let dir = tempfile::tempdir().unwrap();
    adopts_and_reclaims_what_distribution_would(&Filled::Filesystem(dir.path().join("data"))).await;
}

/// As above, with Distribution's `s3` driver on Garage: Stowage adopts the bucket in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_a_bucket_distribution_filled_on_s3_and_reclaims_what_distribution_would() {
    let prefix = format!("adopt-{:016x}", rand::random::<u64>());
    let filled = Filled::S3(stowage_e2e::garage::S3Endpoint::from_env(), prefix);
    adopts_and_reclaims_what_distribution_would(&filled).await;
}

async fn adopts_and_reclaims_what_distribution_would(filled: &Filled) {
    let dir = tempfile::tempdir().unwrap();
    let http = stowage_e2e::http();
    {
        let distribution = filled.distribution();
        let base = format!("http://{}", distribution.address);
        let shared = b"a base layer Distribution stored".to_vec();
        for (repo, tag, unique) in [
            ("adopt/app", "v1", "one"),
            ("adopt/app", "v2", "two"),
            ("adopt/app", "v3", "three"),
            ("adopt/db", "v1", "db one"),
            // Moves v2 to a new image: the first v2 is left untagged.
            ("adopt/app", "v2", "two again"),
        ] {
            let status = push_image(
                &http,
                &base,
                repo,
                tag,
                format!("config {repo} {tag} {unique}").as_bytes(),
                &[shared.clone(), unique.as_bytes().to_vec()],
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
        }
        let uploaded = upload(&http, &base, "adopt/db", b"uploaded, never referenced").await;
        assert_eq!(uploaded, StatusCode::CREATED);
    }
    // Content written within a second of a run counts as written during it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let copy = dir.path().join("copy");
    filled.copy_to(&copy).await;

    // Distribution collects its copy.
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            copy.display()
        ),
    )
    .unwrap();
    run(Command::new(require("docker-registry"))
        .args(["garbage-collect", "--delete-untagged"])
        .arg(&config));
    let (their_blobs, their_revisions) = stored(&copy);

    // Stowage serves the original and collects it online; a push lands during the backfill.
    let storage = filled.flags();
    let registry = Stowage::start_args(&storage);
    let base = format!("http://{}", registry.address);
    let gc = tokio::task::spawn_blocking({
        let storage = storage.clone();
        move || stowage_gc_on(&storage, &["--delete-untagged", "--sweep-wait", "10s"])
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = push_image(
        &http,
        &base,
        "adopt/new",
        "v1",
        b"config pushed during the backfill",
        &[b"a layer pushed during the backfill".to_vec()],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let report = gc.await.unwrap();
    assert_eq!(report["mode"], "full", "{report}");
    assert!(
        report["index_entries_added"].as_u64().unwrap() > 0,
        "{report}"
    );

    let after = dir.path().join("after");
    filled.copy_to(&after).await;
    let (mut our_blobs, mut our_revisions) = stored(&after);
    for pushed in [
        sha256(b"config pushed during the backfill"),
        sha256(b"a layer pushed during the backfill"),
    ] {
        assert!(
            our_blobs.remove(&pushed),
            "the push during the backfill lost {pushed}"
        );
    }
    let new_revisions: Vec<String> = our_revisions
        .iter()
        .filter(|r| r.starts_with("adopt/new@"))
        .cloned()
        .collect();
    assert_eq!(new_revisions.len(), 1, "{our_revisions:?}");
    our_blobs.remove(new_revisions[0].split_once('@').unwrap().1);
    our_revisions.remove(&new_revisions[0]);
    assert_eq!(our_blobs, their_blobs, "blobs left");
    assert_eq!(our_revisions, their_revisions, "manifests left");

    // What `stowage usage` counts from the index is every byte left in the blob store (each
    // remaining blob is some repository's).
    let usage = run(Command::new(stowage_bin())
        .args(["usage", "--output", "json"])
        .args(&storage));
    let usage: Value = serde_json::from_slice(&usage.stdout).unwrap();
    assert_eq!(usage["complete"], true, "{usage}");
    let stored_bytes: u64 = walkdir(&after.join("docker/registry/v2/blobs"))
        .iter()
        .filter(|path| path.ends_with("/data"))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum();
    assert_eq!(usage["total_bytes"], stored_bytes, "{usage}");
    assert_eq!(
        usage["namespaces"]["adopt"], stored_bytes,
        "one namespace holds it all: {usage}"
    );

    // From here on, collections are incremental and see what the backfill recorded.
    let deleted = http
        .delete(format!("{base}/v2/adopt/db/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next = stowage_gc_on(&storage, &["--delete-untagged", "--sweep-wait", "10s"]);
    assert_eq!(next["mode"], "incremental", "{next}");
    assert_eq!(next["manifests_deleted"], 1, "{next}");
    assert!(
        ours(&next).0.contains(&sha256(b"db one")),
        "the deleted image's layer was not reclaimed: {next}"
    );
}
