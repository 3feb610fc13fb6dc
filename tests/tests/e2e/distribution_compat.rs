//! Stowage and CNCF Distribution 2.8.2 on one storage folder: whatever one pushes, the other
//! serves, every tag and every blob. This is what lets a team move over without copying data.

use std::collections::BTreeSet;
use std::path::Path;

use stowage_e2e::layout::{self, Layout, Written};
use stowage_e2e::{Distribution, Stowage, skopeo};

/// A layout with two single-arch images (one with a 6 MiB layer, more than an S3 part) and one
/// multi-arch index, tagged.
pub(crate) fn images(dir: &Path) -> (Layout, Vec<(&'static str, Written)>) {
    let mut source = Layout::new(dir);
    let base = [("etc/base", &b"base layer shared by both"[..])];
    let v1 = source.image("amd64", &[&base, &[("app/v1", b"version one")]]);
    let v2 = source.image(
        "amd64",
        &[&base, &[("app/v2", &vec![2u8; 6 * 1024 * 1024][..])]],
    );
    let arm = source.image("arm64", &[&[("app/arm", b"arm64 build")]]);
    let multi = source.index(&[("amd64", &v2), ("arm64", &arm)]);
    let tagged = vec![("v1", v1), ("v2", v2), ("multi", multi)];
    for (tag, written) in &tagged {
        source.tag(tag, written);
    }
    (source, tagged)
}

/// Pushes every tag of `source` to `registry/repo`.
pub(crate) fn push_all(source: &Layout, tagged: &[(&str, Written)], registry: &str, repo: &str) {
    for (tag, _) in tagged {
        skopeo(&[
            "copy",
            "--all",
            &source.reference(tag),
            &format!("docker://{registry}/{repo}:{tag}"),
        ]);
    }
}

/// Pulls every tag from `registry/repo` and checks digests and blobs against `source`.
pub(crate) fn pull_and_compare(
    source: &Layout,
    tagged: &[(&str, Written)],
    registry: &str,
    repo: &str,
    scratch: &Path,
) {
    let back = scratch.join(format!("pulled-{}", repo.replace('/', "-")));
    for (tag, written) in tagged {
        skopeo(&[
            "copy",
            "--all",
            &format!("docker://{registry}/{repo}:{tag}"),
            &format!("oci:{}:{tag}", back.display()),
        ]);
        assert_eq!(
            layout::tagged_digest(&back, tag),
            written.digest,
            "{tag} from {registry}"
        );
    }
    assert_eq!(
        layout::blob_digests(&back),
        layout::blob_digests(&source.dir)
    );
    let tags = skopeo(&["list-tags", &format!("docker://{registry}/{repo}")]);
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    let listed: BTreeSet<&str> = tags["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = tagged.iter().map(|(tag, _)| *tag).collect();
    assert_eq!(listed, expected, "tags from {registry}");
}

async fn catalog(registry: &str) -> serde_json::Value {
    stowage_e2e::http()
        .get(format!("http://{registry}/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_serves_what_the_other_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (source, tagged) = images(&dir.path().join("source"));
    let stowage = Stowage::start(&data, &[]);
    let distribution = Distribution::start(&data);

    push_all(&source, &tagged, &stowage.address, "moved/by-stowage");
    pull_and_compare(
        &source,
        &tagged,
        &distribution.address,
        "moved/by-stowage",
        dir.path(),
    );

    push_all(
        &source,
        &tagged,
        &distribution.address,
        "moved/by-distribution",
    );
    pull_and_compare(
        &source,
        &tagged,
        &stowage.address,
        "moved/by-distribution",
        dir.path(),
    );

    let expected = serde_json::json!(["moved/by-distribution", "moved/by-stowage"]);
    assert_eq!(catalog(&stowage.address).await["repositories"], expected);
    assert_eq!(
        catalog(&distribution.address).await["repositories"],
        expected
    );
}
