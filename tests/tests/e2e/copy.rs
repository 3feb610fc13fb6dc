//! `stowage copy` against real registries and real tools: umoci builds the layouts and unpacks
//! what comes back, skopeo writes and reads the other side, CNCF Distribution is a destination
//! and a source, and the destinations' own access logs and metrics count what was sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stowage_e2e::layout::{self, Layout, OCI_INDEX, OCI_MANIFEST};
use stowage_e2e::{
    Distribution, Stowage, free_port, require, run, skopeo, stowage_bin, stowage_copied,
    stowage_copy,
};

const HTTP: [&str; 2] = ["--src-tls-verify=false", "--dest-tls-verify=false"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = HTTP.to_vec();
    all.extend(extra);
    all
}

/// A two-platform image built by umoci (each platform its own file), tied together by an
/// index named `multi`, with umoci's leftovers collected; returns the index digest.
fn umoci_multi_platform(dir: &Path) -> String {
    let umoci = require("umoci");
    let layout = dir.to_str().unwrap();
    run(Command::new(&umoci).args(["init", "--layout", layout]));
    let mut platforms = Vec::new();
    for (arch, size) in [("amd64", 3 << 20), ("arm64", 1 << 20)] {
        let image = format!("{layout}:{arch}");
        run(Command::new(&umoci).args(["new", "--image", &image]));
        let file = dir.with_extension(format!("{arch}.bin"));
        std::fs::write(&file, layout::filler(size, size as u64)).unwrap();
        run(Command::new(&umoci).args([
            "insert",
            "--image",
            &image,
            file.to_str().unwrap(),
            &format!("/opt/{arch}.bin"),
        ]));
        run(Command::new(&umoci).args([
            "config",
            "--image",
            &image,
            "--architecture",
            arch,
            "--os",
            "linux",
        ]));
        platforms.push((arch, layout::tagged_digest(dir, arch)));
    }
    let manifests: Vec<Value> = platforms
        .iter()
        .map(|(arch, digest)| {
            let size = std::fs::metadata(blob(dir, digest)).unwrap().len();
            json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                   "platform": {"os": "linux", "architecture": arch}})
        })
        .collect();
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    )
    .unwrap();
    let digest = stowage_e2e::sha256(&index);
    std::fs::write(blob(dir, &digest), &index).unwrap();
    let mut top: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    top["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": OCI_INDEX, "digest": digest, "size": index.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}));
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    run(Command::new(&umoci).args(["gc", "--layout", layout]));
    digest
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Every file under `dir` with its content, to compare trees.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(
                    path.strip_prefix(dir).unwrap().to_owned(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    files
}

/// The blob files of a layout, by name and content.
fn blobs_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    tree(dir)
        .into_iter()
        .filter(|(path, _)| path.starts_with("blobs"))
        .collect()
}

fn requests(registry: &Stowage) -> Vec<(String, String)> {
    registry.requests()
}

fn count(requests: &[(String, String)], method: &str, path_part: &str) -> usize {
    requests
        .iter()
        .filter(|(m, p)| m == method && p.contains(path_part))
        .count()
}

#[test]
fn a_umoci_index_goes_through_stowage_and_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let index = umoci_multi_platform(&source);
    let registry = Stowage::start(&dir.path().join("data"), &[]);
    let remote = format!("docker://{}/team/app:multi", registry.address);
    let cache = dir.path();

    let pushed = stowage_copied(
        cache,
        &args(&[&format!("oci:{}:multi", source.display()), &remote]),
    );
    assert_eq!(
        pushed["manifests"], 3,
        "an index and both platforms: {pushed}"
    );

    // skopeo reads what was pushed: the index itself, and each platform through it.
    let raw = skopeo(&["inspect", "--raw", &remote]);
    assert_eq!(stowage_e2e::sha256(&raw.stdout), index);
    let through_skopeo = dir.path().join("skopeo");
    skopeo(&[
        "copy",
        "--all",
        &remote,
        &format!("oci:{}:multi", through_skopeo.display()),
    ]);
    assert_eq!(layout::tagged_digest(&through_skopeo, "multi"), index);

    // Back into a layout: every blob byte-identical to the source, nothing else.
    let back = dir.path().join("back");
    stowage_copied(
        cache,
        &args(&[&remote, &format!("oci:{}:multi", back.display())]),
    );
    assert_eq!(layout::tagged_digest(&back, "multi"), index);
    assert_eq!(blobs_of(&back), blobs_of(&source));
    assert!(
        tree(&back)
            .keys()
            .all(|p| !p.to_string_lossy().contains(".stowage-copy")),
        "no staging left"
    );

    // One platform, unpacked by umoci.
    let arm = stowage_copied(
        cache,
        &args(&[
            "--platform",
            "linux/arm64",
            &remote,
            &format!("oci:{}:arm64", back.display()),
        ]),
    );
    assert_eq!(
        arm["blobs_present"], 2,
        "the arm64 blobs are already there: {arm}"
    );
    let bundle = dir.path().join("bundle");
    run(Command::new(require("umoci")).args([
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:arm64", back.display()),
        bundle.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(bundle.join("rootfs/opt/arm64.bin")).unwrap(),
        layout::filler(1 << 20, 1 << 20)
    );
    assert!(!bundle.join("rootfs/opt/amd64.bin").exists());
    let missing = stowage_copy(
        cache,
        &args(&[
            "--platform",
            "linux/s390x",
            &remote,
            &format!("oci:{}:s390x", back.display()),
        ]),
    );
    assert_eq!(
        missing.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn stowage_to_distribution_and_back_with_skopeo_layouts_on_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut built = Layout::new(&dir.path().join("built"));
    let image = built.image(
        "amd64",
        &[
            &[("etc/motd", b"hello")],
            &[("bin/app", &layout::filler(600_000, 7))],
        ],
    );
    built.tag("v1", &image);
    // skopeo writes the layout that is copied.
    let written = dir.path().join("skopeo-written");
    skopeo(&[
        "copy",
        &built.reference("v1"),
        &format!("oci:{}:v1", written.display()),
    ]);

    let stowage = Stowage::start(&dir.path().join("data"), &[]);
    let distribution = Distribution::start(&dir.path().join("distribution"));
    let cache = dir.path();
    let in_stowage = format!("docker://{}/app/one:v1", stowage.address);
    let in_distribution = format!("docker://{}/app/one:v1", distribution.address);
    stowage_copied(
        cache,
        &args(&[&format!("oci:{}:v1", written.display()), &in_stowage]),
    );
    let across = stowage_copied(cache, &args(&[&in_stowage, &in_distribution]));
    assert_eq!(across["blobs_sent"], 3, "{across}");
    let back = dir.path().join("back");
    stowage_copied(
        cache,
        &args(&[&in_distribution, &format!("oci:{}:v1", back.display())]),
    );
    assert_eq!(layout::tagged_digest(&back, "v1"), image.digest);

    // skopeo reads the layout written, and the images in both registries.
    let inspect = skopeo(&["inspect", &format!("oci:{}:v1", back.display())]);
    let inspect: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect["Digest"], image.digest);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    for remote in [&in_stowage, &in_distribution] {
        let raw = skopeo(&["inspect", "--raw", remote]);
        assert_eq!(stowage_e2e::sha256(&raw.stdout), image.digest);
    }
    // A whole repository: every tag, from Stowage into Distribution and into a layout.
    let other = built.image("arm64", &[&[("etc/motd", b"v2")]]);
    built.tag("v2", &other);
    skopeo(&[
        "copy",
        &built.reference("v2"),
        &in_stowage.replace(":v1", ":v2"),
    ]);
    let repository = in_stowage.trim_end_matches(":v1");
    let all = stowage_copied(
        cache,
        &args(&[
            "--all-tags",
            repository,
            &format!("docker://{}/app/all", distribution.address),
        ]),
    );
    assert_eq!(all["images"].as_array().unwrap().len(), 2, "{all}");
    let tags = skopeo(&[
        "list-tags",
        &format!("docker://{}/app/all", distribution.address),
    ]);
    let tags: Value = serde_json::from_slice(&tags.stdout).unwrap();
    assert_eq!(tags["Tags"], json!(["v1", "v2"]));
    let every = dir.path().join("every");
    stowage_copied(
        cache,
        &args(&[
            "--all-tags",
            repository,
            &format!("oci:{}", every.display()),
        ]),
    );
    assert_eq!(layout::tagged_digest(&every, "v1"), image.digest);
    assert_eq!(layout::tagged_digest(&every, "v2"), other.digest);

    let again = dir.path().join("skopeo-read");
    skopeo(&[
        "copy",
        &in_distribution,
        &format!("oci:{}:v1", again.display()),
    ]);
    assert_eq!(layout::blob_digests(&again), layout::blob_digests(&back));
}

#[test]
fn a_second_copy_sends_no_blob_and_another_repository_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image(
        "amd64",
        &[
            &[("a", b"one")],
            &[("b", &layout::filler(300_000, 3))],
            &[("c", b"three")],
        ],
    );
    source.tag("v1", &image);
    let registry = Stowage::start(&dir.path().join("data"), &[]);
    let cache = dir.path();
    let target = format!("docker://{}/team/app:v1", registry.address);

    let first = stowage_copied(cache, &args(&[&source.reference("v1"), &target]));
    assert_eq!(
        (
            first["blobs_sent"].as_u64(),
            first["blobs_present"].as_u64()
        ),
        (Some(4), Some(0))
    );
    let before = requests(&registry).len();
    let second = stowage_copied(cache, &args(&[&source.reference("v1"), &target]));
    assert_eq!(
        (
            second["blobs_sent"].as_u64(),
            second["blobs_present"].as_u64()
        ),
        (Some(0), Some(4))
    );
    let during = requests(&registry)[before..].to_vec();
    assert_eq!(count(&during, "HEAD", "/blobs/"), 4, "{during:?}");
    for method in ["POST", "PATCH", "PUT"] {
        assert_eq!(
            count(&during, method, "/blobs/uploads"),
            0,
            "{method}: {during:?}"
        );
    }

    let before = requests(&registry).len();
    let other = format!("docker://{}/other/app:v1", registry.address);
    let mounted = stowage_copied(cache, &args(&[&target, &other]));
    assert_eq!(
        (
            mounted["blobs_mounted"].as_u64(),
            mounted["blobs_sent"].as_u64()
        ),
        (Some(4), Some(0)),
        "{mounted}"
    );
    let during = requests(&registry)[before..].to_vec();
    assert_eq!(
        count(&during, "POST", "/v2/other/app/blobs/uploads"),
        4,
        "one mount request a blob"
    );
    assert_eq!(count(&during, "PATCH", "/blobs/uploads"), 0);
    assert_eq!(count(&during, "PUT", "/blobs/uploads"), 0);
    assert_eq!(
        count(&during, "GET", "/blobs/"),
        0,
        "no blob was read to be sent again"
    );
    let raw = skopeo(&["inspect", "--raw", &other]);
    assert_eq!(stowage_e2e::sha256(&raw.stdout), image.digest);
}

/// The server's count of request body bytes received.
async fn received_bytes(metrics: &str) -> f64 {
    stowage_e2e::metric(metrics, "stowage_http_received_bytes_total")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_killed_mid_blob_resumes_from_the_registry_offset() {
    const SIZE: usize = 48 << 20;
    const KILLED_AFTER: u64 = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.raw_image(&[&layout::filler(SIZE, 11)]);
    source.tag("v1", &image);
    let metrics = format!("127.0.0.1:{}", free_port());
    let registry = Stowage::start(&dir.path().join("data"), &["--metrics-listen", &metrics]);
    let resume = dir.path().join("resume");
    let target = format!("docker://{}/big/app:v1", registry.address);
    let resume_flag = format!("--resume-dir={}", resume.display());
    let common = args(&["--chunk-size", "1MiB", "--jobs", "1", &resume_flag]);

    // Paced so it is still sending when it is killed.
    let mut first = Command::new(stowage_bin())
        .arg("copy")
        .args(&common)
        .args([
            "--limit-rate",
            "12MiB",
            "-q",
            &source.reference("v1"),
            &target,
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let recorded = loop {
        let offset = std::fs::read_dir(&resume)
            .into_iter()
            .flatten()
            .filter_map(|entry| std::fs::read(entry.unwrap().path()).ok())
            .filter_map(|text| serde_json::from_slice::<Value>(&text).ok())
            .filter_map(|saved| saved["offset"].as_u64())
            .max();
        if let Some(offset) = offset.filter(|o| *o >= KILLED_AFTER) {
            break offset;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the copy ended before it was killed"
        );
        assert!(Instant::now() < deadline, "no upload progress was recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.kill().unwrap();
    first.wait().unwrap();
    assert!((recorded as usize) < SIZE);

    let http = stowage_e2e::http();
    let before = received_bytes(&metrics).await;
    let mut second_args = common.clone();
    let reference = source.reference("v1");
    second_args.extend([reference.as_str(), target.as_str()]);
    let second = stowage_copied(dir.path(), &second_args);
    let received = received_bytes(&metrics).await - before;
    let sent = second["bytes_sent"].as_u64().unwrap();
    // At most what was left when the last offset was recorded (less if a chunk landed after it),
    // plus the small config blob and the manifest.
    let left = SIZE as u64 - recorded;
    assert!(
        sent <= left + 1024 && sent + (2 << 20) >= left,
        "sent {sent}, {left} were left"
    );
    assert!(
        received <= (left + 4096) as f64,
        "the registry received {received}, {left} were left"
    );
    assert!(
        std::fs::read_dir(&resume).unwrap().next().is_none(),
        "the record is gone once done"
    );

    let layer = blob(
        &source.dir,
        &layout::blob_digests(&source.dir)
            .into_iter()
            .find(|d| std::fs::metadata(blob(&source.dir, d)).unwrap().len() == SIZE as u64)
            .unwrap(),
    );
    let digest = stowage_e2e::sha256(&std::fs::read(&layer).unwrap());
    let pulled = http
        .get(registry.url(&format!("/v2/big/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), 200);
    assert_eq!(stowage_e2e::sha256(&pulled.bytes().await.unwrap()), digest);
    let raw = skopeo(&["inspect", "--raw", &target]);
    assert_eq!(stowage_e2e::sha256(&raw.stdout), image.digest);
}

/// What a copy into a layout has staged: the files in its hidden staging directories.
fn staged(layout: &Path) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(layout)
        .into_iter()
        .flatten()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".stowage-copy-")
        })
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten())
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sha256-")
        })
        .map(|path| {
            let size = std::fs::metadata(&path).unwrap().len();
            (path, size)
        })
        .collect()
}

/// Starts a paced copy into `destination`, kills it once it has staged `at_least` bytes of
/// a blob, and returns that partial file.
async fn kill_mid_blob(source: &str, destination: &Path, at_least: u64) -> PathBuf {
    let mut copy = Command::new(stowage_bin())
        .arg("copy")
        .args(args(&["--limit-rate", "8MiB", "-q", source]))
        .arg(format!("oci:{}:big", destination.display()))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((path, _)) = staged(destination)
            .into_iter()
            .find(|(_, size)| *size >= at_least)
        {
            copy.kill().unwrap();
            copy.wait().unwrap();
            return path;
        }
        assert!(
            copy.try_wait().unwrap().is_none(),
            "the copy ended before it was killed"
        );
        assert!(Instant::now() < deadline, "nothing was staged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_into_a_layout_killed_mid_blob_is_resumed_and_leaves_nothing_behind() {
    const SIZE: usize = 40 << 20;
    const KILLED_AFTER: u64 = 12 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut origin = Layout::new(&dir.path().join("origin"));
    let image = origin.raw_image(&[&layout::filler(SIZE, 21)]);
    origin.tag("v1", &image);
    let registry = Stowage::start(&dir.path().join("data"), &[]);
    let source = format!("docker://{}/big:v1", registry.address);
    stowage_copied(dir.path(), &args(&[&origin.reference("v1"), &source]));

    // Killed, then run again: the second run fetches only what the first did not stage.
    let layout = dir.path().join("layout");
    let partial = kill_mid_blob(&source, &layout, KILLED_AFTER).await;
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(!layout.join("index.json").exists(), "nothing was committed");
    let destination = format!("oci:{}:big", layout.display());
    let second = stowage_copied(dir.path(), &args(&[&source, &destination]));
    let sent = second["bytes_sent"].as_u64().unwrap();
    assert!(
        sent <= SIZE as u64 - kept + 4096,
        "resumed after the {kept} staged bytes, yet {sent} were fetched"
    );
    assert_eq!(layout::tagged_digest(&layout, "big"), image.digest);
    assert_eq!(blobs_of(&layout), blobs_of(&origin.dir), "bit for bit");
    assert!(
        staged(&layout).is_empty(),
        "no staging is left: {:?}",
        staged(&layout)
    );
    let hidden: Vec<_> = std::fs::read_dir(&layout)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // A staged part that is not the blob's beginning is not trusted: the blob starts over.
    let other = dir.path().join("other");
    let partial = kill_mid_blob(&source, &other, KILLED_AFTER).await;
    let mut bytes = std::fs::read(&partial).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&partial, &bytes).unwrap();
    let destination = format!("oci:{}:big", other.display());
    let again = stowage_copied(dir.path(), &args(&[&source, &destination]));
    assert!(again["bytes_sent"].as_u64().unwrap() >= SIZE as u64);
    assert_eq!(blobs_of(&other), blobs_of(&origin.dir));
    assert!(staged(&other).is_empty());
}

#[test]
fn memory_stays_bounded_with_a_blob_larger_than_the_limit() {
    const SIZE: usize = 128 << 20;
    const LIMIT: usize = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.raw_image(&[&layout::filler(SIZE, 5)]);
    source.tag("v1", &image);
    let registry = Stowage::start(&dir.path().join("data"), &[]);
    let limited = |extra: &[&str], target: &str| {
        Command::new(require("prlimit"))
            .arg(format!("--data={LIMIT}"))
            .arg(stowage_bin())
            .arg("copy")
            .args(HTTP)
            .args(extra)
            .args(["-q", &source.reference("v1"), target])
            .env("XDG_CACHE_HOME", dir.path())
            .output()
            .unwrap()
    };
    let streamed = limited(
        &["--chunk-size", "8MiB", "--jobs", "2"],
        &format!("docker://{}/mem/app:v1", registry.address),
    );
    assert!(
        streamed.status.success(),
        "{}",
        String::from_utf8_lossy(&streamed.stderr)
    );
    let to_layout = limited(
        &[],
        &format!("oci:{}:v1", dir.path().join("copy").display()),
    );
    assert!(
        to_layout.status.success(),
        "{}",
        String::from_utf8_lossy(&to_layout.stderr)
    );
    assert_eq!(
        layout::tagged_digest(&dir.path().join("copy"), "v1"),
        image.digest
    );
    // The limit is real: a chunk as large as the blob means holding it all, which it refuses.
    let buffered = limited(
        &["--chunk-size", "256MiB"],
        &format!("docker://{}/mem/whole:v1", registry.address),
    );
    assert!(
        !buffered.status.success(),
        "a whole-blob buffer fit under the limit"
    );
}

async fn status_of(url: &str) -> u16 {
    stowage_e2e::http()
        .head(url)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_source_blob_fails_the_copy_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image(
        "amd64",
        &[&[("a", b"fine")], &[("b", &layout::filler(3 << 20, 9))]],
    );
    source.tag("v1", &image);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(&source.dir, &image.digest)).unwrap()).unwrap();
    let corrupt = manifest["layers"][1]["digest"].as_str().unwrap().to_owned();
    let path = blob(&source.dir, &corrupt);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    // Into an existing layout: not a file changes, nothing staged is left.
    let mut existing = Layout::new(&dir.path().join("existing"));
    let other = existing.image("arm64", &[&[("x", b"y")]]);
    existing.tag("old", &other);
    let before = tree(&existing.dir);
    let cache = dir.path();
    for chunked in [false, true] {
        let chunk: &[&str] = if chunked {
            &["--chunk-size", "1MiB"]
        } else {
            &[]
        };
        let failed = stowage_copy(
            cache,
            &[
                chunk,
                &[&source.reference("v1"), &existing.reference("new")],
            ]
            .concat(),
        );
        assert_eq!(failed.status.code(), Some(6));
        let message = String::from_utf8_lossy(&failed.stderr);
        assert!(
            message.contains(&corrupt) && message.contains("corrupt"),
            "{message}"
        );
        assert_eq!(tree(&existing.dir), before);
    }

    // Into a registry, in one PUT and in chunks: no manifest, no tag, no corrupt blob.
    let registry = Stowage::start(&dir.path().join("data"), &[]);
    for (repo, chunk) in [("one", "64MiB"), ("chunked", "1MiB")] {
        let target = format!("docker://{}/bad/{repo}:v1", registry.address);
        let failed = stowage_copy(
            cache,
            &args(&["--chunk-size", chunk, &source.reference("v1"), &target]),
        );
        assert_eq!(
            failed.status.code(),
            Some(6),
            "{}",
            String::from_utf8_lossy(&failed.stderr)
        );
        assert_eq!(
            status_of(&registry.url(&format!("/v2/bad/{repo}/blobs/{corrupt}"))).await,
            404
        );
        assert_eq!(
            status_of(&registry.url(&format!("/v2/bad/{repo}/manifests/v1"))).await,
            404
        );
    }
    // Into a new layout: the directory is not even created.
    let fresh = dir.path().join("fresh");
    let failed = stowage_copy(
        cache,
        &[
            &source.reference("v1"),
            &format!("oci:{}:v1", fresh.display()),
        ],
    );
    assert_eq!(failed.status.code(), Some(6));
    assert!(!fresh.exists());
}

/// Pushes a signature-like artifact whose subject is `subject`; returns its digest.
async fn attach_signature(registry: &str, repository: &str, subject: &Value) -> String {
    let http = stowage_e2e::http();
    let put_blob = |data: &'static [u8]| {
        let http = http.clone();
        async move {
            let digest = stowage_e2e::sha256(data);
            let url = format!("http://{registry}/v2/{repository}/blobs/uploads/?digest={digest}");
            let started = http.post(&url).body(data).send().await.unwrap();
            assert_eq!(started.status(), 201);
            json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest, "size": data.len()})
        }
    };
    let config = put_blob(b"{}").await;
    let mut layer = put_blob(b"signature bytes").await;
    layer["mediaType"] = json!("application/vnd.dev.cosign.simplesigning.v1+json");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": config, "layers": [layer], "subject": subject,
        "annotations": {"org.example.signed-by": "e2e"}}))
    .unwrap();
    let digest = stowage_e2e::sha256(&manifest);
    let stored = http
        .put(format!(
            "http://{registry}/v2/{repository}/manifests/{digest}"
        ))
        .header("content-type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 201);
    digest
}

pub(crate) async fn referrers(registry: &str, repository: &str, digest: &str) -> Vec<String> {
    let index: Value = stowage_e2e::http()
        .get(format!(
            "http://{registry}/v2/{repository}/referrers/{digest}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn referrers_travel_with_their_subject() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image("amd64", &[&[("app", b"signed")]]);
    source.tag("v1", &image);
    let origin = Stowage::start(&dir.path().join("origin"), &[]);
    let mirror = Stowage::start(&dir.path().join("mirror"), &[]);
    let distribution = Distribution::start(&dir.path().join("distribution"));
    let cache = dir.path();
    let signed = format!("docker://{}/app/signed:v1", origin.address);
    stowage_copied(cache, &args(&[&source.reference("v1"), &signed]));
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": image.digest, "size": image.size});
    let signature = attach_signature(&origin.address, "app/signed", &subject).await;

    // Without --referrers, the image alone.
    let plain = stowage_copied(
        cache,
        &args(&[
            &signed,
            &format!("docker://{}/app/plain:v1", mirror.address),
        ]),
    );
    assert_eq!(plain["manifests"], 1);
    assert!(
        referrers(&mirror.address, "app/plain", &image.digest)
            .await
            .is_empty()
    );

    // Into a registry with the referrers API, into one without (the fallback tag), and into a
    // layout (listed in index.json), and from that layout onwards again.
    let copied = stowage_copied(
        cache,
        &args(&[
            "--referrers",
            &signed,
            &format!("docker://{}/app/signed:v1", mirror.address),
        ]),
    );
    assert_eq!(copied["manifests"], 2, "{copied}");
    assert_eq!(
        referrers(&mirror.address, "app/signed", &image.digest).await,
        vec![signature.clone()]
    );

    stowage_copied(
        cache,
        &args(&[
            "--referrers",
            &signed,
            &format!("docker://{}/app/signed:v1", distribution.address),
        ]),
    );
    let fallback = skopeo(&[
        "inspect",
        "--raw",
        &format!(
            "docker://{}/app/signed:{}",
            distribution.address,
            image.digest.replace(':', "-")
        ),
    ]);
    let fallback: Value = serde_json::from_slice(&fallback.stdout).unwrap();
    assert_eq!(fallback["manifests"][0]["digest"], signature.as_str());
    assert_eq!(
        fallback["manifests"][0]["artifactType"],
        "application/vnd.dev.cosign.artifact.sig.v1+json"
    );

    let exported = dir.path().join("exported");
    stowage_copied(
        cache,
        &args(&[
            "--referrers",
            &signed,
            &format!("oci:{}:v1", exported.display()),
        ]),
    );
    assert!(layout::blob_digests(&exported).contains(&signature));
    let third = Stowage::start(&dir.path().join("third"), &[]);
    stowage_copied(
        cache,
        &args(&[
            "--referrers",
            &format!("oci:{}:v1", exported.display()),
            &format!("docker://{}/from/layout:v1", third.address),
        ]),
    );
    assert_eq!(
        referrers(&third.address, "from/layout", &image.digest).await,
        vec![signature]
    );
}

/// A Stowage in `dir` where alice may push and bob may pull, through the token flow.
fn with_accounts(dir: &Path) -> (Stowage, crate::auth::Accounts) {
    let accounts = crate::auth::Accounts::write(dir);
    let flags = accounts.flags("bearer");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    (Stowage::start(&dir.join("data"), &flags), accounts)
}

/// As a Kubernetes Job pushes with only the stowage image: the password (or projected service
/// account token) in a mounted file, no shell to turn it into `--dest-creds`.
#[test]
fn passwords_and_tokens_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image("amd64", &[&[("from", b"a file")]]);
    source.tag("v1", &image);
    let (registry, _accounts) = with_accounts(dir.path());
    let target = format!("docker://{}/team/app:v1", registry.address);
    let cache = dir.path();
    let secret = |name: &str, password: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, format!("{password}\n")).unwrap();
        file.to_str().unwrap().to_owned()
    };
    let (alice, bob, wrong) = (
        secret("alice.token", "alice-secret"),
        secret("bob.token", "bob-secret"),
        secret("wrong.token", "not-it"),
    );

    stowage_copied(
        cache,
        &args(&[
            "--dest-username",
            "alice",
            "--dest-password-file",
            &alice,
            &source.reference("v1"),
            &target,
        ]),
    );
    let back = dir.path().join("back");
    stowage_copied(
        cache,
        &args(&[
            "--src-username",
            "bob",
            "--src-password-file",
            &bob,
            &target,
            &format!("oci:{}:v1", back.display()),
        ]),
    );
    assert_eq!(layout::tagged_digest(&back, "v1"), image.digest);

    let exit = |extra: &[&str]| {
        let output = stowage_copy(cache, &args(&[&["-q"], extra].concat()));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), stderr)
    };
    let (code, message) = exit(&[
        "--dest-username",
        "alice",
        "--dest-password-file",
        &wrong,
        &source.reference("v1"),
        &target,
    ]);
    assert_eq!(code, Some(4), "{message}");
    assert!(
        !message.contains("not-it"),
        "the password is never printed: {message}"
    );
    let (code, message) = exit(&[
        "--dest-password-file",
        &alice,
        &source.reference("v1"),
        &target,
    ]);
    assert_eq!(code, Some(2), "a password needs its user: {message}");
    let (code, message) = exit(&[
        "--dest-username",
        "alice",
        "--dest-password-file",
        &alice,
        "--dest-creds",
        "alice:alice-secret",
        &source.reference("v1"),
        &target,
    ]);
    assert_eq!(code, Some(2), "one way to say it: {message}");
    let missing = dir.path().join("missing.token");
    let (code, message) = exit(&[
        "--dest-username",
        "alice",
        "--dest-password-file",
        missing.to_str().unwrap(),
        &source.reference("v1"),
        &target,
    ]);
    assert_eq!(code, Some(2), "{message}");
    assert!(
        message.contains("missing.token"),
        "names the file: {message}"
    );
}

#[test]
fn each_failure_has_its_own_exit_code_and_credentials_come_from_auth_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image("amd64", &[&[("a", b"b")]]);
    source.tag("v1", &image);
    let (registry, accounts) = with_accounts(dir.path());
    let target = format!("docker://{}/team/app:v1", registry.address);
    let cache = dir.path();
    let exit = |extra: &[&str]| {
        let output = stowage_copy(cache, &args(&[&["-q"], extra].concat()));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        (output.status.code(), stderr)
    };

    let (code, message) = exit(&[&source.reference("v2"), &target]);
    assert_eq!(code, Some(3), "a missing tag: {message}");
    let (code, message) = exit(&[
        "--dest-creds",
        "alice:wrong",
        &source.reference("v1"),
        &target,
    ]);
    assert_eq!(code, Some(4), "{message}");
    assert!(
        message.contains("authentication failed") && !message.contains("wrong"),
        "{message}"
    );
    let (code, message) = exit(&["--dest-no-creds", &source.reference("v1"), &target]);
    assert_eq!(code, Some(4), "no credentials: {message}");
    let (code, message) = exit(&[
        "--dest-creds",
        "bob:bob-secret",
        &source.reference("v1"),
        &target,
    ]);
    assert_eq!(code, Some(4), "bob may only pull: {message}");
    let closed = format!("docker://127.0.0.1:{}/x/y:v1", free_port());
    let (code, message) = exit(&["--timeout", "5s", &source.reference("v1"), &closed]);
    assert_eq!(code, Some(5), "nothing listens: {message}");
    let (code, message) = exit(&[&source.reference("v1"), "docker://127.0.0.1:1/UPPER"]);
    assert_eq!(code, Some(2), "{message}");

    // Credentials as podman and docker store them; the token flow does the rest.
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "alice:alice-secret",
    );
    let authfile = dir.path().join("auth.json");
    std::fs::write(
        &authfile,
        json!({"auths": {registry.address.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let output = Command::new(stowage_bin())
        .args([
            "copy",
            "--dest-tls-verify=false",
            "-q",
            &source.reference("v1"),
            &target,
        ])
        .env("REGISTRY_AUTH_FILE", &authfile)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let docker_config = dir.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::copy(&authfile, docker_config.join("config.json")).unwrap();
    let back = dir.path().join("back");
    let output = Command::new(stowage_bin())
        .args([
            "copy",
            "--src-tls-verify=false",
            "-q",
            &target,
            &format!("oci:{}:v1", back.display()),
        ])
        .env("DOCKER_CONFIG", &docker_config)
        .env("HOME", dir.path())
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(layout::tagged_digest(&back, "v1"), image.digest);

    // Basic, as CNCF Distribution with htpasswd asks for it.
    let distribution =
        Distribution::start_with_htpasswd(&dir.path().join("distribution"), &accounts.htpasswd);
    let basic = format!("docker://{}/team/app:v1", distribution.address);
    let (code, message) = exit(&["--dest-creds", "alice:nope", &target, &basic]);
    assert_eq!(code, Some(4), "{message}");
    let across = stowage_copied(
        cache,
        &args(&[
            "--src-creds",
            "bob:bob-secret",
            "--dest-creds",
            "alice:alice-secret",
            &target,
            &basic,
        ]),
    );
    assert_eq!(across["blobs_sent"], 2, "{across}");
}

#[test]
fn progress_bars_on_a_terminal_and_lines_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.raw_image(&[&layout::filler(6 << 20, 21)]);
    source.tag("v1", &image);
    // On a terminal (script gives the copy one), paced so the bar is drawn a few times.
    let command = format!(
        "{} copy --limit-rate 3MiB {} oci:{}:v1",
        stowage_bin().display(),
        source.reference("v1"),
        dir.path().join("tty").display()
    );
    let output = run(Command::new(require("script"))
        .args(["-qec", &command, "/dev/null"])
        .env("XDG_CACHE_HOME", dir.path()));
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(
        screen.contains("ETA") && screen.contains("MiB/s"),
        "no progress bar: {screen}"
    );
    assert!(screen.contains("Copied "), "{screen}");

    // Elsewhere: one plain line a blob, and the summary on standard output.
    let output = stowage_copy(
        dir.path(),
        &[
            &source.reference("v1"),
            &format!("oci:{}:v1", dir.path().join("plain").display()),
        ],
    );
    assert!(output.status.success());
    let lines = String::from_utf8_lossy(&output.stderr);
    assert!(!lines.contains('\u{1b}'), "no terminal codes: {lines:?}");
    let sent: Vec<&str> = lines
        .lines()
        .filter(|l| l.starts_with("blob sha256:") && l.contains(": sent"))
        .collect();
    assert_eq!(sent.len(), 2, "{lines}");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.starts_with("Copied ") && summary.contains("2 blob(s) sent"),
        "{summary}"
    );
}
