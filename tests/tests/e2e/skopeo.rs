use std::process::Command;

use stowage_e2e::layout::{self, Layout};
use stowage_e2e::{Stowage, require, skopeo};

#[test]
fn push_inspect_list_copy_back_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image(
        "amd64",
        &[
            &[("etc/os-release", b"ID=stowage\n")],
            &[
                ("app/run.sh", b"#!/bin/sh\necho hi\n"),
                ("app/big", &vec![7u8; 300_000]),
            ],
        ],
    );
    source.tag("v1", &image);
    let registry = Stowage::start(&dir.path().join("data"), &[]);
    let remote = format!("docker://{}/e2e/skopeo", registry.address);

    skopeo(&["copy", &source.reference("v1"), &format!("{remote}:v1")]);
    skopeo(&["copy", &source.reference("v1"), &format!("{remote}:latest")]);

    let inspect = skopeo(&["inspect", &format!("{remote}:v1")]);
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect["Digest"], image.digest);
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);

    let tags = skopeo(&["list-tags", &remote]);
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["latest", "v1"]));

    // Back into a layout, bit for bit: same manifest digest, same blobs.
    let back = dir.path().join("back");
    skopeo(&[
        "copy",
        &format!("{remote}:v1"),
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_eq!(layout::tagged_digest(&back, "v1"), image.digest);
    assert_eq!(
        layout::blob_digests(&back),
        layout::blob_digests(&source.dir)
    );

    skopeo(&["delete", &format!("{remote}:v1")]);
    // Deleting by digest untags every tag of that manifest.
    let gone = Command::new(require("skopeo"))
        .args(["inspect", "--tls-verify=false", &format!("{remote}:latest")])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the manifest should be gone");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("manifest unknown"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

#[test]
fn multi_architecture_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let amd64 = source.image("amd64", &[&[("arch", b"amd64")]]);
    let arm64 = source.image("arm64", &[&[("arch", b"arm64")]]);
    let index = source.index(&[("amd64", &amd64), ("arm64", &arm64)]);
    source.tag("multi", &index);
    let registry = Stowage::start(&dir.path().join("data"), &[]);
    let remote = format!("docker://{}/e2e/multi:multi", registry.address);

    skopeo(&["copy", "--all", &source.reference("multi"), &remote]);
    let raw = skopeo(&["inspect", "--raw", &remote]);
    assert_eq!(stowage_e2e::sha256(&raw.stdout), index.digest);
    let back = dir.path().join("back");
    skopeo(&[
        "copy",
        "--all",
        &remote,
        &format!("oci:{}:multi", back.display()),
    ]);
    assert_eq!(layout::tagged_digest(&back, "multi"), index.digest);
    assert_eq!(
        layout::blob_digests(&back),
        layout::blob_digests(&source.dir)
    );
}
