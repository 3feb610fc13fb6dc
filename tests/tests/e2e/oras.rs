use std::path::Path;
use std::process::Command;

use stowage_e2e::layout::Layout;
use stowage_e2e::{Stowage, run, skopeo};

/// The oras Python SDK pushes a typed artifact in chunks, pulls it, attaches a referrer to an
/// image, and the referrers API lists it.
#[test]
fn artifacts_and_referrers_with_the_oras_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image("amd64", &[&[("hello", b"world")]]);
    source.tag("v1", &image);
    let registry = Stowage::start(&dir.path().join("data"), &[]);
    skopeo(&[
        "copy",
        &source.reference("v1"),
        &format!("docker://{}/e2e/oras:v1", registry.address),
    ]);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/oras_flow.py");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let output = run(Command::new("python3").arg(script).args([
        "--registry",
        &registry.address,
        "--repository",
        "e2e/oras",
        "--subject",
        "v1",
        "--workdir",
        work.to_str().unwrap(),
    ]));
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(
        seen["artifact_manifest"]["artifactType"],
        "application/vnd.stowage.test.bundle"
    );
    assert_eq!(seen["pulled_files"], serde_json::json!(["bundle.bin"]));
    assert_eq!(seen["subject"], image.digest);
    assert_eq!(seen["oci_subject_header"], image.digest);
    let referrers = seen["referrers"]["manifests"].as_array().unwrap();
    assert_eq!(referrers.len(), 1, "{seen}");
    assert_eq!(
        referrers[0]["artifactType"],
        "application/vnd.stowage.test.signature"
    );
    assert_eq!(seen["filters_applied"], "artifactType");
    assert_eq!(
        seen["filtered"]["manifests"],
        seen["referrers"]["manifests"]
    );
}
