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

use crate::common::{LAYER, OCI_INDEX, OCI_MANIFEST, Server};

fn options(delete_untagged: bool, dry_run: bool) -> Options {
    Options {
        dry_run,
        full: false,
        full_every: None,
        delete_untagged,
        grace_period: Duration::ZERO,
        // The server keeps serving, its blob cache on: only a sweep announced this long ahead
        // is sure to be seen (a shorter one would let the cache answer for deleted blobs).
        sweep_wait: gc::MIN_SWEEP_WAIT,
        mirror_retention: None,
        quotas: Vec::new(),
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

/// The suite's server starts on empty storage, so its index is whole and runs are incremental
/// unless asked to be full: both must come to the same verdicts.
#[tokio::test]
async fn an_incremental_run_collects_what_nothing_kept_references() {
    collects_what_nothing_kept_references(false).await;
}

#[tokio::test]
async fn a_full_run_collects_what_nothing_kept_references() {
    collects_what_nothing_kept_references(true).await;
}

async fn collects_what_nothing_kept_references(full: bool) {
    let options = |delete_untagged, dry_run| Options {
        full,
        ..options(delete_untagged, dry_run)
    };
    let mode = if full {
        gc::Mode::Full
    } else {
        gc::Mode::Incremental
    };
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
    assert_eq!(report.mode, mode);

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
            .stored_keys(&format!("_layers/sha256/{}/link", orphan.hex()))
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
    // The index is whole after either: a full audit finds nothing to add.
    let audit = gc::run_once(
        server.store(),
        &Options {
            full: true,
            full_every: None,
            ..options(true, true)
        },
    )
    .await
    .unwrap();
    assert_eq!(audit.index_entries_added, 0, "{audit:?}");
    assert!(audit.deleted.is_empty(), "{:?}", audit.deleted);
}

/// A blob uploaded again while gc runs (to a repository where nothing references it yet) is
/// there afterwards: the upload waits the sweep out and writes it anew if it went.
#[tokio::test]
async fn a_blob_uploaded_again_during_a_run_survives_it() {
    let server = Server::start().await;
    let content = b"garbage until pushed again";
    let orphan = server.push_blob("relinked", content).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let store = server.store();
    let options = Options {
        sweep_wait: Duration::from_millis(1500),
        ..options(true, false)
    };
    let run = tokio::spawn(async move { gc::run_once(store, &options).await.unwrap() });
    while gc::pending(server.store().as_ref())
        .await
        .unwrap()
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The sweep is announced now; the same blob is pushed again, to another repository.
    server.push_blob("relinked/again", content).await;
    let report = run.await.unwrap();
    assert_eq!(report.blobs_deleted, 1, "{:?}", report.deleted);
    let pulled = server
        .http
        .get(server.url(&format!("/v2/relinked/again/blobs/{orphan}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), StatusCode::OK);
    assert_eq!(pulled.bytes().await.unwrap().as_ref(), content);
}

/// The work of an incremental run follows what changed: one tag deleted costs the same storage
/// requests beside 20 images as beside 60. (A blob many manifests share has its users checked
/// 16 at a time, so past 16 images the cost stands still.)
#[tokio::test]
async fn an_incremental_run_costs_what_changed_not_what_is_stored() {
    async fn requests_for_one_deletion(images: usize) -> (u64, gc::Report) {
        let server = Server::start().await;
        for n in 0..images {
            let layer = format!("layer of image {n}");
            server
                .push_image(&format!("cost/app{n}"), "v1", layer.as_bytes())
                .await;
        }
        // The pushes' own reviews are settled first.
        let settled = gc::run_once(server.store(), &options(true, false))
            .await
            .unwrap();
        assert!(settled.deleted.is_empty(), "{:?}", settled.deleted);
        let delete = server
            .http
            .delete(server.url("/v2/cost/app0/manifests/v1"))
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status(), 202);
        // Content written within a second of a run counts as written during it.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let report = gc::run_once(server.store(), &options(true, false))
            .await
            .unwrap();
        assert_eq!(report.mode, gc::Mode::Incremental);
        // The manifest, its config (shared by every image), its layer and the manifest blob.
        assert_eq!(
            (report.manifests_deleted, report.blobs_deleted),
            (1, 2),
            "{:?}",
            report.deleted
        );
        (report.storage_requests, report)
    }
    let (small, _) = requests_for_one_deletion(20).await;
    let (large, report) = requests_for_one_deletion(60).await;
    // Which users share a batch with the condemned manifest (which costs no check) varies.
    assert!(
        large.abs_diff(small) <= 1,
        "{large} requests beside 60 images, {small} beside 20: {report:?}"
    );
}

/// A registry whose index was never built (Distribution wrote it) is collected in full first,
/// which builds the index; the next runs are incremental and see what the first recorded.
#[tokio::test]
async fn a_registry_without_an_index_is_audited_then_collected_incrementally() {
    let server = Server::start().await;
    let (_, kept) = server.push_image("adopted/app", "v1", b"kept layer").await;
    let (_, dropped) = server
        .push_image("adopted/app", "v2", b"dropped layer")
        .await;
    // As Distribution leaves it: no index, no journal.
    for dir in [layout::index_root(), layout::journal_root()] {
        server.store().delete(&dir).await.unwrap();
    }
    let first = gc::run_once(server.store(), &options(true, false))
        .await
        .unwrap();
    assert_eq!(first.mode, gc::Mode::Full);
    assert!(first.index_entries_added > 0, "{first:?}");
    assert!(first.deleted.is_empty(), "{:?}", first.deleted);
    let delete = server
        .http
        .delete(server.url("/v2/adopted/app/manifests/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 202);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = gc::run_once(server.store(), &options(true, false))
        .await
        .unwrap();
    assert_eq!(second.mode, gc::Mode::Incremental);
    assert!(
        second
            .deleted
            .contains(&format!("manifest adopted/app@{dropped}")),
        "{:?}",
        second.deleted
    );
    assert!(
        second
            .deleted
            .contains(&format!("blob {}", Digest::sha256_of(b"dropped layer")))
    );
    assert!(manifest_exists(&server, "adopted/app", "v1").await);
    assert!(manifest_exists(&server, "adopted/app", &kept.to_string()).await);
    assert!(blob_exists(&server, "adopted/app", &Digest::sha256_of(b"kept layer")).await);
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

/// While a sweep is announced, a manifest that needs one of its candidates waits it out, and
/// goes through once the sweep is over; everything else goes through at once.
#[tokio::test]
async fn manifests_needing_announced_candidates_wait_the_sweep_out() {
    let server = Server::start().await;
    let manifest = server.image_manifest("racing", b"doomed layer", None).await;
    let doomed = Digest::sha256_of(b"doomed layer");
    let pending = gc::Pending {
        announced: 0,
        digests: BTreeSet::from([doomed.clone()]),
        lease: None,
    };
    let marker = Bytes::from(serde_json::to_vec(&pending).unwrap());
    server
        .store()
        .put(&layout::gc_marker(), marker)
        .await
        .unwrap();
    let waiting = server.put_manifest("racing", "v1", OCI_MANIFEST, &manifest);
    tokio::pin!(waiting);
    let unrelated = server.push_image("racing", "other", b"unrelated layer");
    tokio::select! {
        response = &mut waiting => panic!("went through while announced: {}", response.status()),
        _ = unrelated => {}
    }
    tokio::select! {
        response = &mut waiting => panic!("went through while announced: {}", response.status()),
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    server.store().delete(&layout::gc_marker()).await.unwrap();
    assert_eq!(waiting.await.status(), 201);
}

/// A collection that died mid-sweep stops renewing its announcement: a manifest needing one of
/// its candidates waits only until the lease lapses (and the clock allowance after it), then
/// goes through, rather than until another collection replaces the announcement.
#[tokio::test]
async fn a_dead_collections_announcement_holds_writes_up_only_until_its_lease_lapses() {
    let server = Server::start().await;
    let manifest = server
        .image_manifest("orphaned", b"a dead sweep's layer", None)
        .await;
    let lease_left = Duration::from_secs(2);
    let holds_until = std::time::SystemTime::now() + lease_left;
    let lease = gc::Lease {
        sweep: "a collection that was killed".to_owned(),
        holds_until: holds_until
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .try_into()
            .unwrap(),
    };
    let pending = gc::Pending {
        announced: 0,
        digests: BTreeSet::from([Digest::sha256_of(b"a dead sweep's layer")]),
        lease: Some(lease),
    };
    let marker = Bytes::from(serde_json::to_vec(&pending).unwrap());
    server
        .store()
        .put(&layout::gc_marker(), marker)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let response = server
        .put_manifest("orphaned", "v1", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(response.status(), 201);
    let waited = started.elapsed();
    assert!(
        waited >= lease_left + gc::CLOCK_ALLOWANCE - Duration::from_millis(500),
        "went through while the lease held: after {waited:?}"
    );
    assert!(
        waited < lease_left + gc::CLOCK_ALLOWANCE + Duration::from_secs(5),
        "waited {waited:?}"
    );
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

/// One schedule runs both kinds: a run is full once the last audit is older than `full_every`.
#[tokio::test]
async fn a_run_is_full_when_the_last_audit_is_older_than_full_every() {
    let server = Server::start().await;
    server.push_image("cadence/app", "v1", b"layer").await;
    let every = |every| Options {
        full_every: Some(every),
        ..options(false, false)
    };
    let fresh = gc::run_once(server.store(), &every(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(fresh.mode, gc::Mode::Incremental);
    assert_eq!(fresh.usage, None);
    let overdue = gc::run_once(server.store(), &every(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(overdue.mode, gc::Mode::Full);
    assert!(overdue.usage.is_some_and(|u| u.total_bytes > 0));
    let after = gc::run_once(server.store(), &every(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(after.mode, gc::Mode::Incremental);
}

/// Time to reclaim: a deletion is reviewed by the first run once the grace period has passed
/// since it, so what it leaves is gone within the grace period plus one gc interval; a run
/// before that leaves it pending.
#[tokio::test]
async fn deleted_content_goes_with_the_first_run_after_the_grace_period() {
    let server = Server::start().await;
    let grace = Duration::from_secs(2);
    let with_grace = Options {
        grace_period: grace,
        ..options(true, false)
    };
    server
        .push_image("reclaim/app", "v1", b"layer to reclaim")
        .await;
    tokio::time::sleep(grace + Duration::from_millis(100)).await;
    let settled = gc::run_once(server.store(), &with_grace).await.unwrap();
    assert!(settled.deleted.is_empty(), "{:?}", settled.deleted);
    let delete = server
        .http
        .delete(server.url("/v2/reclaim/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 202);
    let early = gc::run_once(server.store(), &with_grace).await.unwrap();
    assert!(early.deleted.is_empty(), "{:?}", early.deleted);
    assert!(early.journal_pending >= 1, "{early:?}");
    tokio::time::sleep(grace + Duration::from_millis(100)).await;
    let due = gc::run_once(server.store(), &with_grace).await.unwrap();
    let layer = Digest::sha256_of(b"layer to reclaim");
    assert!(
        due.deleted.contains(&format!("blob {layer}")),
        "{:?}",
        due.deleted
    );
    assert!(!blob_exists(&server, "reclaim/app", &layer).await);
}
