//! Immutable tags with skopeo: pushing a changed image to a protected tag fails with the rule's
//! message, the same image again succeeds, a delete is refused, and the tag keeps its image.

use std::process::{Command, Output};

use stowage_e2e::layout::{Layout, tagged_digest};
use stowage_e2e::{Stowage, require, skopeo};

const POLICIES: &str = r#"
[[policies.immutable-tags]]
name = "releases"
repositories = ["team/**"]
tags = ["v*"]
"#;

/// skopeo, whether or not it succeeds.
fn try_skopeo(args: &[&str]) -> Output {
    let tls: &[&str] = match args[0] {
        "copy" => &["--dest-tls-verify=false"],
        _ => &["--tls-verify=false"],
    };
    Command::new(require("skopeo"))
        .arg("--insecure-policy")
        .arg(args[0])
        .args(tls)
        .args(&args[1..])
        .output()
        .unwrap()
}

#[test]
fn skopeo_cannot_move_or_delete_an_immutable_tag() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stowage.toml");
    std::fs::write(&config, POLICIES).unwrap();
    let stowage = Stowage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let mut layout = Layout::new(&dir.path().join("layout"));
    let first = layout.image("amd64", &[&[("release.txt", b"1.0")]]);
    let changed = layout.image("amd64", &[&[("release.txt", b"1.0, rebuilt")]]);
    layout.tag("first", &first);
    layout.tag("changed", &changed);
    let v1 = format!("docker://{}/team/app:v1", stowage.address);

    skopeo(&["copy", &layout.reference("first"), &v1]);
    let again = try_skopeo(&["copy", &layout.reference("first"), &v1]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let moved = try_skopeo(&["copy", &layout.reference("changed"), &v1]);
    let stderr = String::from_utf8_lossy(&moved.stderr);
    assert!(!moved.status.success(), "a changed image moved the tag");
    // skopeo quotes the registry's message, so the rule's name shows as \"releases\".
    assert!(
        stderr.contains("denied: tag team/app:v1 is immutable (rule"),
        "{stderr}"
    );
    assert!(stderr.contains("releases"), "{stderr}");

    let deleted = try_skopeo(&["delete", &v1]);
    let stderr = String::from_utf8_lossy(&deleted.stderr);
    assert!(!deleted.status.success(), "the tag was deleted");
    assert!(stderr.contains("cannot be deleted"), "{stderr}");

    // The tag still names the first image, which still pulls.
    let back = dir.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &v1,
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_eq!(tagged_digest(&back, "v1"), first.digest);
    // A tag outside the rule moves as always.
    let latest = format!("docker://{}/team/app:latest", stowage.address);
    skopeo(&["copy", &layout.reference("first"), &latest]);
    skopeo(&["copy", &layout.reference("changed"), &latest]);
}
