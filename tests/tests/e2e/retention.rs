//! `stowage retention` with skopeo, on the filesystem and on S3 (Garage): a dry run lists what
//! goes and why and deletes nothing; the real run deletes exactly that; an image in use (as the
//! operator hands it over) and repositories no rule covers survive; gc then reclaims the bytes.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use stowage_e2e::garage::S3Endpoint;
use stowage_e2e::layout::Layout;
use stowage_e2e::{Stowage, require, run, skopeo, stowage_bin};

const POLICIES: &str = r#"
[[policies.retention]]
name = "newest-two"
repositories = ["team/**"]
most-recently-pushed = 2
"#;

/// `stowage retention` on `storage` with `flags`; its JSON report.
fn retention(storage: &[String], flags: &[&str]) -> Value {
    let output = run(Command::new(stowage_bin())
        .args(["retention", "--output", "json"])
        .args(storage)
        .args(flags));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Pushes `count` releases of team/app with skopeo (`v0` oldest), `pause` apart; their digests.
fn push_releases(
    layout: &mut Layout,
    stowage: &Stowage,
    count: usize,
    pause: Duration,
) -> Vec<String> {
    (0..count)
        .map(|n| {
            let content = format!("release {n}");
            let image = layout.image("amd64", &[&[("release.txt", content.as_bytes())]]);
            let tag = format!("v{n}");
            layout.tag(&tag, &image);
            skopeo(&[
                "copy",
                "--dest-tls-verify=false",
                &layout.reference(&tag),
                &format!("docker://{}/team/app:{tag}", stowage.address),
            ]);
            std::thread::sleep(pause);
            image.digest
        })
        .collect()
}

/// Whether skopeo finds `reference`.
fn exists(reference: &str) -> bool {
    Command::new(require("skopeo"))
        .args(["inspect", "--raw", "--tls-verify=false", reference])
        .output()
        .unwrap()
        .status
        .success()
}

fn deleted(report: &Value) -> BTreeSet<String> {
    report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["what"].as_str().unwrap().to_owned())
        .collect()
}

/// Pushes four releases of team/app (v0 oldest) and one image outside the rules, then applies
/// the rules with v1 in use, on the storage `storage` names.
fn retention_keeps_the_newest_and_what_runs(storage: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stowage.toml");
    std::fs::write(&config, POLICIES).unwrap();
    let config = config.to_str().unwrap().to_owned();
    let mut flags = storage.to_vec();
    flags.extend(["--config".to_owned(), config]);
    let stowage = Stowage::start_args(&flags);

    let mut layout = Layout::new(&dir.path().join("layout"));
    // Push times are told apart to the second on S3.
    let digests = push_releases(&mut layout, &stowage, 4, Duration::from_millis(1100));
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &layout.reference("v3"),
        &format!("docker://{}/other/app:old", stowage.address),
    ]);
    let in_use = dir.path().join("in-use");
    std::fs::write(
        &in_use,
        format!(
            "# what pods run\nregistry.example/team/app@{}\n",
            digests[1]
        ),
    )
    .unwrap();
    let in_use = in_use.to_str().unwrap().to_owned();

    let goes = BTreeSet::from([
        "tag team/app:v0".to_owned(),
        format!("manifest team/app@{}", digests[0]),
    ]);
    let dry = retention(&flags, &["--dry-run", "--in-use-file", &in_use]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(deleted(&dry), goes, "{dry}");
    assert!(
        dry["deleted"][0]["why"]
            .as_str()
            .unwrap()
            .contains("newest-two"),
        "the reason names the rule: {dry}"
    );
    let address = &stowage.address;
    assert!(
        exists(&format!("docker://{address}/team/app:v0")),
        "a dry run deletes nothing"
    );

    let done = retention(&flags, &["--in-use-file", &in_use]);
    assert_eq!(deleted(&done), goes, "{done}");
    assert_eq!(
        (
            done["tags_deleted"].as_u64(),
            done["manifests_deleted"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert!(!exists(&format!("docker://{address}/team/app:v0")));
    assert!(!exists(&format!(
        "docker://{address}/team/app@{}",
        digests[0]
    )));
    for tag in ["v1", "v2", "v3"] {
        assert!(
            exists(&format!("docker://{address}/team/app:{tag}")),
            "{tag} stays"
        );
    }
    assert!(
        exists(&format!("docker://{address}/other/app:old")),
        "no rule covers other/app"
    );

    // Another run finds nothing more to do.
    let again = retention(&flags, &["--in-use-file", &in_use]);
    assert_eq!(again["tags_deleted"], 0, "{again}");

    // gc reclaims v0's bytes, and nothing an image kept needs.
    let gc = crate::gc::stowage_gc_on(&flags, &["--sweep-wait", "10s"]);
    assert!(gc["bytes_freed"].as_u64().unwrap() > 0, "{gc}");
    let gone = gc["deleted"].to_string();
    assert!(
        gone.contains(&digests[0]),
        "v0's manifest blob is reclaimed: {gone}"
    );
    for tag in ["v1", "v2", "v3"] {
        let back = dir.path().join(format!("back-{tag}"));
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{address}/team/app:{tag}"),
            &format!("oci:{}:{tag}", back.display()),
        ]);
    }
}

#[test]
fn retention_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    retention_keeps_the_newest_and_what_runs(&[
        "--fs-root".to_owned(),
        dir.path().join("data").to_str().unwrap().to_owned(),
    ]);
}

#[test]
fn retention_on_s3() {
    let s3 = S3Endpoint::from_env();
    retention_keeps_the_newest_and_what_runs(&s3.stowage_flags(&crate::s3::unique("retention")));
}

/// Retention's deletions reach the webhooks, as an API delete's do, named as retention's.
#[tokio::test(flavor = "multi_thread")]
async fn retention_deletions_reach_the_webhooks() {
    let (receiver, url) = crate::events::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let events = crate::events::config(dir.path(), &url, "1h");
    let config = dir.path().join("stowage.toml");
    std::fs::write(
        &config,
        format!("{}\n{POLICIES}", std::fs::read_to_string(&events).unwrap()),
    )
    .unwrap();
    let flags = vec![
        "--fs-root".to_owned(),
        dir.path().join("data").to_str().unwrap().to_owned(),
        "--config".to_owned(),
        config.to_str().unwrap().to_owned(),
    ];
    let stowage = Stowage::start_args(&flags);
    let mut layout = Layout::new(&dir.path().join("layout"));
    let oldest = push_releases(&mut layout, &stowage, 3, Duration::from_millis(20)).remove(0);

    let report = tokio::task::spawn_blocking(move || retention(&flags, &[]))
        .await
        .unwrap();
    assert_eq!(report["tags_deleted"], 1, "{report}");
    let by_retention = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["action"] == "delete" && e["actor"]["name"] == "stowage-retention")
            .map(|e| e["target"].clone())
            .collect()
    };
    let events = receiver
        .until(Duration::from_secs(20), |events| {
            by_retention(events).len() >= 2
        })
        .await;
    let targets = by_retention(&events);
    assert!(
        targets
            .iter()
            .any(|t| t["repository"] == "team/app" && t["tag"] == "v0"),
        "{targets:?}"
    );
    assert!(
        targets
            .iter()
            .any(|t| t["repository"] == "team/app" && t["digest"] == oldest.as_str()),
        "{targets:?}"
    );
    assert_eq!(targets.len(), 2, "nothing else was deleted: {targets:?}");
}
