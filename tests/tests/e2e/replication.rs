//! Replication to CNCF Distribution 2.8.2 and to another Stowage: images, tag moves, referrers
//! and deletes pushed here with skopeo arrive there bit-identical within seconds; a destination
//! down for a minute during 50 pushes gets everything once it is back, each blob sent once; a
//! replica killed mid-image is finished by another that resumes its upload where it stopped; a
//! rule's bandwidth limit holds within ten percent; and `stowage replicate --once` repairs a
//! destination that lost tags and a blob.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::blob_cache::push_blob;
use crate::copy::referrers;
use serde_json::{Value, json};
use stowage_e2e::layout::{Layout, Written};
use stowage_e2e::{Distribution, Stowage, run, skopeo, stowage_bin};

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
const SIGNATURE_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM_TYPE: &str = "application/spdx+json";

/// A source registry on the filesystem at `dir/source` with these `[[replication]]` tables.
fn source(dir: &Path, rules: &str) -> (Stowage, String) {
    let config = dir.join("source.toml");
    std::fs::write(&config, rules).unwrap();
    let config = config.to_str().unwrap().to_owned();
    let stowage = Stowage::start(&dir.join("source"), &["--config", &config]);
    (stowage, config)
}

fn rule(name: &str, address: &str, extra: &str) -> String {
    format!(
        "[[replication]]\nname = \"{name}\"\nurl = \"http://{address}\"\ndeletes = true\n\
         takeover-after = \"5s\"\n{extra}\n"
    )
}

/// The digest `reference` names in `repository` at `address`, and its bytes.
async fn manifest(address: &str, repository: &str, reference: &str) -> Option<(String, Vec<u8>)> {
    let response = stowage_e2e::http()
        .get(format!(
            "http://{address}/v2/{repository}/manifests/{reference}"
        ))
        .header("accept", ACCEPT)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let bytes = response.bytes().await.ok()?.to_vec();
    Some((stowage_e2e::sha256(&bytes), bytes))
}

/// Waits up to `within` for `wanted` to hold of what `reference` names there.
async fn until(
    within: Duration,
    address: &str,
    repository: &str,
    reference: &str,
    wanted: impl Fn(Option<&str>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let now = manifest(address, repository, reference).await;
        if wanted(now.as_ref().map(|(digest, _)| digest.as_str())) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{repository}:{reference} at {address} is {:?} after {within:?}",
            now.map(|(digest, _)| digest)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pushes `tag` of `layout` to `repository` on `address` with skopeo.
fn push(layout: &Layout, tag: &str, address: &str, repository: &str) {
    skopeo(&[
        "copy",
        &layout.reference(tag),
        &format!("docker://{address}/{repository}:{tag}"),
    ]);
}

/// Pushes `written` by digest over HTTP, with the blobs it names, as `oras attach` does.
async fn push_by_digest(address: &str, repository: &str, layout: &Layout, written: &Written) {
    push_over_http(address, repository, layout, written, &written.digest).await;
}

/// Pushes `written` as `reference` (a tag or its digest) over HTTP, with the blobs it names
/// first, each in one request: the bytes stay exactly the layout's.
async fn push_over_http(
    address: &str,
    repository: &str,
    layout: &Layout,
    written: &Written,
    reference: &str,
) {
    let base = format!("http://{address}");
    let manifest: Value = serde_json::from_slice(&layout.read(&written.digest)).unwrap();
    let blobs = std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap());
    for blob in blobs {
        push_blob(
            &base,
            repository,
            &layout.read(blob["digest"].as_str().unwrap()),
        )
        .await;
    }
    let stored = stowage_e2e::http()
        .put(format!("{base}/v2/{repository}/manifests/{reference}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(layout.read(&written.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 201);
}

/// The digests of the referrers of `subject` that `address` lists, sorted.
async fn sorted_referrers(address: &str, repository: &str, subject: &str) -> Vec<String> {
    let mut digests = referrers(address, repository, subject).await;
    digests.sort();
    digests
}

/// Every blob `digest`'s manifest names, fetched from `address`: each whole and as digested.
async fn blobs_are_whole(address: &str, repository: &str, digest: &str) {
    let (_, bytes) = manifest(address, repository, digest).await.expect("there");
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let blobs = std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap());
    for blob in blobs {
        let wanted = blob["digest"].as_str().unwrap();
        let fetched = stowage_e2e::http()
            .get(format!("http://{address}/v2/{repository}/blobs/{wanted}"))
            .send()
            .await
            .unwrap();
        assert_eq!(fetched.status(), 200, "{wanted} at {address}");
        let body = fetched.bytes().await.unwrap();
        assert_eq!(stowage_e2e::sha256(&body), wanted);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_tag_moves_referrers_and_deletes_reach_distribution_and_stowage() {
    let dir = tempfile::tempdir().unwrap();
    let distribution = Distribution::start(&dir.path().join("distribution"));
    let other = Stowage::start(&dir.path().join("other"), &[]);
    let rules = format!(
        "{}{}",
        rule("to-distribution", &distribution.address, ""),
        rule("to-stowage", &other.address, "prefix = \"mirror/\"")
    );
    let (source, _) = source(dir.path(), &rules);
    let ends = [
        (distribution.address.as_str(), "team/app"),
        (other.address.as_str(), "mirror/team/app"),
    ];

    // An image and its signature, pushed as cosign does (a tag naming the image's digest).
    let mut layout = Layout::new(&dir.path().join("layout"));
    let app = layout.image(
        "amd64",
        &[
            &[("app/run.sh", b"#!/bin/sh\necho v1\n")],
            &[("app/data", b"data")],
        ],
    );
    layout.tag("v1", &app);
    let signature = layout.referrer(&app, SIGNATURE_TYPE, br#"{"critical":{"image":{}}}"#);
    let signature_tag = format!("sha256-{}.sig", app.digest.trim_start_matches("sha256:"));
    layout.tag(&signature_tag, &signature);
    push(&layout, "v1", &source.address, "team/app");
    push(&layout, &signature_tag, &source.address, "team/app");
    let (_, pushed) = manifest(&source.address, "team/app", "v1").await.unwrap();

    for (address, repository) in ends {
        let took = until(Duration::from_secs(20), address, repository, "v1", |d| {
            d == Some(app.digest.as_str())
        })
        .await;
        eprintln!("v1 reached {address} in {took:?}");
        let (_, there) = manifest(address, repository, "v1").await.unwrap();
        assert_eq!(there, pushed, "bit-identical at {address}");
        blobs_are_whole(address, repository, &app.digest).await;
        until(
            Duration::from_secs(20),
            address,
            repository,
            &signature_tag,
            |d| d == Some(signature.digest.as_str()),
        )
        .await;
    }
    assert_eq!(
        sorted_referrers(&other.address, "mirror/team/app", &app.digest).await,
        std::slice::from_ref(&signature.digest),
        "the signature is a referrer there too"
    );

    // An SBOM attached later, by digest only: it follows its subject.
    let sbom = layout.referrer(&app, SBOM_TYPE, br#"{"spdxVersion":"SPDX-2.3"}"#);
    push_by_digest(&source.address, "team/app", &layout, &sbom).await;
    for (address, repository) in ends {
        until(
            Duration::from_secs(20),
            address,
            repository,
            &sbom.digest,
            |d| d == Some(sbom.digest.as_str()),
        )
        .await;
    }
    let mut both = vec![signature.digest.clone(), sbom.digest.clone()];
    both.sort();
    assert_eq!(
        sorted_referrers(&other.address, "mirror/team/app", &app.digest).await,
        both
    );

    // v1 moved here moves there.
    let moved = layout.image("amd64", &[&[("app/run.sh", b"#!/bin/sh\necho v1.1\n")]]);
    layout.tag("v1", &moved);
    push(&layout, "v1", &source.address, "team/app");
    for (address, repository) in ends {
        until(Duration::from_secs(20), address, repository, "v1", |d| {
            d == Some(moved.digest.as_str())
        })
        .await;
        blobs_are_whole(address, repository, &moved.digest).await;
    }

    // Deleted here, deleted there: Distribution deletes the manifest (it deletes no tags).
    let deleted = stowage_e2e::http()
        .delete(source.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    for (address, repository) in ends {
        until(Duration::from_secs(20), address, repository, "v1", |d| {
            d.is_none()
        })
        .await;
        assert!(
            manifest(address, repository, &app.digest).await.is_some(),
            "the first image stays at {address}: a signature tag still names it here"
        );
    }
    let destination_logs = other.logs();
    assert!(
        !destination_logs.contains("\"level\":\"ERROR\""),
        "{destination_logs}"
    );
    assert!(
        !source.logs().contains("refused a replication"),
        "{}",
        source.logs()
    );
}

/// 50 pushes of images sharing a base layer while the destination is down for a minute: all
/// arrive once it is back, and no blob is uploaded twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_destination_down_for_a_minute_gets_every_push_and_each_blob_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut distribution = Distribution::start(&dir.path().join("distribution"));
    let (source, _) = source(
        dir.path(),
        &rule("dr", &distribution.address, "backoff = \"1s\""),
    );
    let mut layout = Layout::new(&dir.path().join("layout"));
    let base = stowage_e2e::layout::filler(2 << 20, 7);

    distribution.stop();
    let down = Instant::now();
    let mut pushed = HashMap::new();
    for n in 0..50 {
        let own = format!("build {n}");
        let image = layout.raw_image(&[&base, own.as_bytes()]);
        let tag = format!("b{n}");
        layout.tag(&tag, &image);
        push(&layout, &tag, &source.address, "team/app");
        // skopeo compresses the layers on the way: the registry's digest is the one to find.
        let (digest, _) = manifest(&source.address, "team/app", &tag).await.unwrap();
        pushed.insert(tag, digest);
    }
    let (_, first) = manifest(&source.address, "team/app", "b0").await.unwrap();
    let first: Value = serde_json::from_slice(&first).unwrap();
    let base_digest = first["layers"][0]["digest"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(down.elapsed())).await;
    distribution.restart();

    for (tag, digest) in &pushed {
        until(
            Duration::from_secs(90),
            &distribution.address,
            "team/app",
            tag,
            |d| d == Some(digest.as_str()),
        )
        .await;
    }
    let mut uploads: HashMap<String, usize> = HashMap::new();
    for (method, path) in distribution.requests() {
        if method == "PUT"
            && let Some((_, digest)) = path.split_once("digest=")
        {
            let digest = digest.split('&').next().unwrap().replace("%3A", ":");
            *uploads.entry(digest).or_default() += 1;
        }
    }
    assert_eq!(
        uploads.get(&base_digest),
        Some(&1),
        "the shared layer went once"
    );
    let twice: Vec<_> = uploads.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "blobs uploaded twice: {twice:?}");
}

/// The upload sessions Distribution took chunks into (`PATCH …/blobs/uploads/<id>`), with how
/// many chunks each.
fn chunked_uploads(distribution: &Distribution) -> HashMap<String, usize> {
    let mut sessions: HashMap<String, usize> = HashMap::new();
    for (method, path) in distribution.requests() {
        if method == "PATCH"
            && let Some((_, rest)) = path.split_once("/blobs/uploads/")
        {
            let session = rest.split('?').next().unwrap().to_owned();
            *sessions.entry(session).or_default() += 1;
        }
    }
    sessions
}

/// A replica SIGKILLed while it replicates a 200 MiB image: the other replica of the same
/// storage takes the event over once the first one's claim lapses, and finishes the image by
/// resuming the upload the first one recorded, not by starting it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_image_is_finished_by_another_resuming_its_upload() {
    const SIZE: usize = 200 << 20;
    const CHUNK: usize = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let distribution = Distribution::start(&dir.path().join("distribution"));
    let rules = rule(
        "dr",
        &distribution.address,
        "bandwidth = \"40MiB\"\nchunk-size = \"8MiB\"\nbackoff = \"1s\"",
    );
    let config = dir.path().join("source.toml");
    std::fs::write(&config, rules).unwrap();
    let config = config.to_str().unwrap();
    let root = dir.path().join("source");
    let mut first = Stowage::start(&root, &["--config", config]);
    let second = Stowage::start(&root, &["--config", config]);

    let mut layout = Layout::new(&dir.path().join("layout"));
    let image = layout.raw_image(&[&stowage_e2e::layout::filler(SIZE, 29)]);
    layout.tag("v1", &image);
    push_over_http(&first.address, "team/big", &layout, &image, "v1").await;

    // Once a few chunks are in, the replica sending them dies.
    let started = Instant::now();
    while chunked_uploads(&distribution).values().sum::<usize>() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the upload did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    let before: usize = chunked_uploads(&distribution).values().sum();
    assert!(
        before < SIZE / CHUNK,
        "killed before the end: {before} chunks"
    );

    until(
        Duration::from_secs(120),
        &distribution.address,
        "team/big",
        "v1",
        |d| d == Some(image.digest.as_str()),
    )
    .await;
    blobs_are_whole(&distribution.address, "team/big", &image.digest).await;
    let sessions = chunked_uploads(&distribution);
    assert_eq!(
        sessions.len(),
        1,
        "one upload session, resumed by the second replica: {sessions:?}"
    );
    let chunks: usize = sessions.values().sum();
    // Every chunk once, give or take the one in flight when the first replica died.
    assert!(
        chunks <= SIZE / CHUNK + 1,
        "{chunks} chunks for {} (killed after {before})",
        SIZE / CHUNK
    );
    drop(second);
}

/// A rule's bandwidth limit holds within 10%, also for the first image after the rule was idle.
#[tokio::test(flavor = "multi_thread")]
async fn the_bandwidth_limit_holds_within_ten_percent() {
    const SIZE: usize = 80 << 20;
    let dir = tempfile::tempdir().unwrap();
    let distribution = Distribution::start(&dir.path().join("distribution"));
    let (source, _) = source(
        dir.path(),
        &rule("dr", &distribution.address, "bandwidth = \"8MiB\""),
    );
    let mut layout = Layout::new(&dir.path().join("layout"));
    let image = layout.raw_image(&[&stowage_e2e::layout::filler(SIZE, 31)]);
    layout.tag("v1", &image);
    // Idle first: time without sending earns no burst.
    tokio::time::sleep(Duration::from_secs(3)).await;
    push_over_http(&source.address, "team/paced", &layout, &image, "v1").await;
    let took = until(
        Duration::from_secs(30),
        &distribution.address,
        "team/paced",
        "v1",
        |d| d == Some(image.digest.as_str()),
    )
    .await;
    let expected = Duration::from_secs_f64(SIZE as f64 / f64::from(8 << 20));
    eprintln!("{SIZE} bytes at 8 MiB/s: {took:?}");
    assert!(
        took >= expected.mul_f64(0.9) && took <= expected.mul_f64(1.1),
        "{SIZE} bytes at 8 MiB/s took {took:?}, not {expected:?} ± 10%"
    );
}

/// `stowage replicate --once` with `storage` and `config`: its JSON report.
fn replicate_once(source_root: &Path, config: &str, flags: &[&str]) -> Value {
    let output = run(Command::new(stowage_bin())
        .args(["replicate", "--once", "--output", "json"])
        .args(["--fs-fsync", "false", "--fs-root"])
        .arg(source_root)
        .args(["--config", config])
        .args(flags));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn images(report: &Value, field: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = report["rules"][0][field]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["image"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reconciliation_repairs_a_destination_that_lost_tags_and_a_blob() {
    let dir = tempfile::tempdir().unwrap();
    let other_root = dir.path().join("other");
    let mut other = Stowage::start(&other_root, &[]);
    let (source, config) = source(dir.path(), &rule("dr", &other.address, ""));
    let mut layout = Layout::new(&dir.path().join("layout"));
    let mut digests = HashMap::new();
    for tag in ["t1", "t2", "t3"] {
        let image = layout.image("amd64", &[&[("tag.txt", tag.as_bytes())]]);
        layout.tag(tag, &image);
        push(&layout, tag, &source.address, "team/app");
        digests.insert(tag, image);
    }
    for (tag, image) in &digests {
        until(
            Duration::from_secs(20),
            &other.address,
            "team/app",
            tag,
            |d| d == Some(image.digest.as_str()),
        )
        .await;
    }

    // Drift: t1 deleted there by hand, and t2's layer lost from its disk.
    let deleted = stowage_e2e::http()
        .delete(other.url("/v2/team/app/manifests/t1"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    let (_, t2) = manifest(&other.address, "team/app", "t2").await.unwrap();
    let t2: Value = serde_json::from_slice(&t2).unwrap();
    let lost = t2["layers"][0]["digest"].as_str().unwrap().to_owned();
    let hex = lost.trim_start_matches("sha256:");
    let data = other_root.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}",
        &hex[..2]
    ));
    std::fs::remove_dir_all(&data).unwrap();
    other.restart();

    let dry = replicate_once(&dir.path().join("source"), &config, &["--dry-run"]);
    assert_eq!(dry["dryRun"], json!(true));
    let would = images(&dry, "copied");
    assert_eq!(
        would,
        [
            (
                "team/app:t1".to_owned(),
                "missing at the destination".to_owned()
            ),
            (
                "team/app:t2".to_owned(),
                format!("blob sha256:{} missing at the destination", &hex[..12])
            ),
        ]
    );
    assert!(
        manifest(&other.address, "team/app", "t1").await.is_none(),
        "a dry run sends nothing"
    );

    let done = replicate_once(&dir.path().join("source"), &config, &[]);
    assert_eq!(images(&done, "copied"), would);
    assert_eq!(done["rules"][0]["tagsChecked"], json!(3));
    for (tag, image) in &digests {
        let (digest, _) = manifest(&other.address, "team/app", tag).await.unwrap();
        assert_eq!(&digest, &image.digest, "{tag}");
        blobs_are_whole(&other.address, "team/app", &image.digest).await;
    }
    let again = replicate_once(&dir.path().join("source"), &config, &[]);
    assert!(images(&again, "copied").is_empty(), "{again}");
    drop(source);
}
