//! Garbage collection and upload purging on the suite's storage (filesystem, and S3 in the
//! second run).

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::json;
use stowage::gc::{self, Options, PurgeOptions};
use stowage::oci::Digest;
use stowage::storage::layout;

use crate::common::{CONFIG, LAYER, OCI_INDEX, OCI_MANIFEST, Server, expect_error};

fn options(delete_untagged: bool, dry_run: bool) -> Options {
    Options {
        dry_run,
        delete_untagged,
        grace_period: Duration::ZERO,
        // The server keeps serving, its blob cache on: only a sweep announced this long ahead
        // is sure to be seen (a shorter one would let the cache answer for deleted blobs).
        sweep_wait: gc::MIN_SWEEP_WAIT,
        mirror_retention: None,
    }
}

async fn blob_exists(server: &Server, repo: &str, digest: &Digest) -> bool {
    let response = server
        .http
        .head(server.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    response.status() == StatusCode::OK
}

async fn manifest_exists(server: &Server, repo: &str, reference: &str) -> bool {
    let response = server
        .http
        .head(server.url(&format!("/v2/{repo}/manifests/{reference}")))
        .send()
        .await
        .unwrap();
    response.status() == StatusCode::OK
}

fn deleted_blobs(report: &gc::Report) -> BTreeSet<String> {
    report
        .deleted
        .iter()
        .filter_map(|d| d.strip_prefix("blob "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn collects_what_nothing_kept_references() {
    let server = Server::start().await;
    // Kept: a tagged image, an index and its children, a referrer of a kept image, shared layers.
    let (_, kept) = server.push_image("gc/app", "v1", b"layer of v1").await;
    let (child_a, child_a_digest) = server.push_image("gc/app", "tmp-a", b"arm layer").await;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child_a_digest.to_string(), "size": child_a.len()}]});
    let response = server
        .put_manifest("gc/app", "multi", OCI_INDEX, index.to_string().as_bytes())
        .await;
    assert_eq!(response.status(), 201);
    let delete = server
        .http
        .delete(server.url("/v2/gc/app/manifests/tmp-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 202);
    let signature_layer = server.push_blob("gc/app", b"signature").await;
    let empty = server.push_blob("gc/app", b"{}").await;
    let referrer = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": LAYER, "digest": signature_layer.to_string(), "size": 9}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": kept.to_string(), "size": 1}});
    let referrer_body = referrer.to_string();
    let referrer_digest = Digest::sha256_of(referrer_body.as_bytes());
    let response = server
        .put_manifest(
            "gc/app",
            &referrer_digest.to_string(),
            OCI_MANIFEST,
            referrer_body.as_bytes(),
        )
        .await;
    assert_eq!(response.status(), 201);
    // Garbage: an image whose only tag was deleted, and a blob nothing references.
    let (_, untagged) = server
        .push_image("gc/app", "old", b"layer only old uses")
        .await;
    // It was pulled once, so a record of the pull goes with it.
    let pulled = server.http.get(server.url("/v2/gc/app/manifests/old"));
    assert_eq!(pulled.send().await.unwrap().status(), 200);
    let pull_record = format!("_pulls/sha256/{}", untagged.hex());
    crate::pulls::eventually_stored(&server, &pull_record).await;
    let delete = server
        .http
        .delete(server.url("/v2/gc/app/manifests/old"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 202);
    let old_layer = Digest::sha256_of(b"layer only old uses");
    let orphan = server
        .push_blob("gc/app", b"pushed but never referenced")
        .await;

    // Without --delete-untagged every manifest is kept, so only the orphan goes.
    let report = gc::run_once(server.store(), &options(false, true))
        .await
        .unwrap();
    assert_eq!(deleted_blobs(&report), BTreeSet::from([orphan.to_string()]));
    assert_eq!(report.manifests_deleted, 0);

    // Dry run with --delete-untagged: lists, deletes nothing.
    let dry = gc::run_once(server.store(), &options(true, true))
        .await
        .unwrap();
    assert_eq!(
        dry.deleted,
        [
            format!("blob {old_layer}"),
            format!("blob {orphan}"),
            format!("blob {untagged}"),
            format!("manifest gc/app@{untagged}"),
        ]
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    assert!(blob_exists(&server, "gc/app", &orphan).await);
    assert!(manifest_exists(&server, "gc/app", &untagged.to_string()).await);

    // Manifests written within a second of a run count as written during it; let a second pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = gc::run_once(server.store(), &options(true, false))
        .await
        .unwrap();
    assert_eq!(report.deleted, dry.deleted);
    assert_eq!((report.manifests_deleted, report.blobs_deleted), (1, 3));
    assert!(report.bytes_freed > 0 && report.storage_requests > 0);
    assert!(!manifest_exists(&server, "gc/app", &untagged.to_string()).await);
    assert!(!blob_exists(&server, "gc/app", &orphan).await);
    assert!(!blob_exists(&server, "gc/app", &old_layer).await);
    // Everything kept is whole.
    for reference in [
        "v1".to_owned(),
        "multi".to_owned(),
        child_a_digest.to_string(),
        referrer_digest.to_string(),
    ] {
        assert!(
            manifest_exists(&server, "gc/app", &reference).await,
            "{reference}"
        );
    }
    for blob in [
        signature_layer,
        empty,
        Digest::sha256_of(b"layer of v1"),
        Digest::sha256_of(b"arm layer"),
    ] {
        assert!(blob_exists(&server, "gc/app", &blob).await, "{blob}");
    }
    assert!(server.stored_keys(&pull_record).await.is_empty());
    // The dangling links of deleted blobs went too, and a second run finds nothing.
    assert!(
        server
            .stored_keys(&format!("_layers/sha256/{}", orphan.hex()))
            .await
            .is_empty()
    );
    let again = gc::run_once(server.store(), &options(true, false))
        .await
        .unwrap();
    assert!(again.deleted.is_empty(), "{:?}", again.deleted);
    assert!(
        server.stored_keys("gc-sweep").await.is_empty(),
        "the sweep marker stayed"
    );
}

/// A blob linked again while gc runs (an upload that found it already stored) is kept.
#[tokio::test]
async fn blobs_linked_during_a_run_are_kept() {
    let server = Server::start().await;
    let orphan = server
        .push_blob("relinked", b"garbage until pushed again")
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let store = server.store();
    let options = Options {
        sweep_wait: Duration::from_millis(1500),
        ..options(true, false)
    };
    let run = tokio::spawn(async move { gc::run_once(store, &options).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The sweep is announced now; the same blob is pushed again, to another repository.
    server
        .push_blob("relinked/again", b"garbage until pushed again")
        .await;
    let report = run.await.unwrap();
    assert!(report.deleted.is_empty(), "{:?}", report.deleted);
    assert!(blob_exists(&server, "relinked/again", &orphan).await);
}

#[tokio::test]
async fn the_grace_period_protects_young_content() {
    let server = Server::start().await;
    let orphan = server.push_blob("young", b"just pushed").await;
    let options = Options {
        grace_period: Duration::from_secs(3600),
        ..options(true, false)
    };
    let report = gc::run_once(server.store(), &options).await.unwrap();
    assert!(report.deleted.is_empty(), "{:?}", report.deleted);
    assert!(blob_exists(&server, "young", &orphan).await);
}

/// While a sweep is announced, a manifest that needs one of its candidates is refused cleanly.
#[tokio::test]
async fn manifests_needing_announced_candidates_are_refused() {
    let server = Server::start().await;
    let manifest = server.image_manifest("racing", b"doomed layer", None).await;
    let doomed = Digest::sha256_of(b"doomed layer");
    let pending = gc::Pending {
        announced: 0,
        digests: BTreeSet::from([doomed.clone()]),
    };
    let marker = Bytes::from(serde_json::to_vec(&pending).unwrap());
    server
        .store()
        .put(&layout::gc_marker(), marker)
        .await
        .unwrap();
    let response = server
        .put_manifest("racing", "v1", OCI_MANIFEST, &manifest)
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    // Unrelated manifests still go through, and once the sweep is over so does this one.
    server
        .push_image("racing", "other", b"unrelated layer")
        .await;
    server.store().delete(&layout::gc_marker()).await.unwrap();
    let response = server
        .put_manifest("racing", "v1", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(response.status(), 201);
    let _ = CONFIG;
}

#[tokio::test]
async fn purge_removes_only_old_upload_sessions() {
    let server = Server::start().await;
    let start = |repo: &'static str| {
        let http = server.http.clone();
        let url = server.url(&format!("/v2/{repo}/blobs/uploads/"));
        async move {
            http.post(url).send().await.unwrap().headers()["docker-upload-uuid"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let old = start("purge/old").await;
    let young = start("purge/young").await;
    let patched = server
        .http
        .post(server.url("/v2/purge/old/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let _ = patched;
    // Make one session look eight days old, as Distribution records it.
    let name = "purge/old".parse().unwrap();
    let eight_days = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    let started = humantime::format_rfc3339(eight_days).to_string();
    server
        .store()
        .put(&layout::upload_started_at(&name, &old), started.into())
        .await
        .unwrap();

    let options = PurgeOptions {
        dry_run: true,
        older_than: Duration::from_secs(168 * 3600),
    };
    let dry = gc::purge_uploads(server.store(), &options).await.unwrap();
    assert_eq!(dry.deleted, [format!("upload purge/old/{old}")]);
    assert!(
        !server
            .stored_keys(&format!("_uploads/{old}"))
            .await
            .is_empty()
    );

    let report = gc::purge_uploads(
        server.store(),
        &PurgeOptions {
            dry_run: false,
            ..options
        },
    )
    .await
    .unwrap();
    assert_eq!(report.uploads_deleted, 1);
    assert!(
        server
            .stored_keys(&format!("_uploads/{old}"))
            .await
            .is_empty()
    );
    assert!(
        !server
            .stored_keys(&format!("_uploads/{young}"))
            .await
            .is_empty()
    );
}
