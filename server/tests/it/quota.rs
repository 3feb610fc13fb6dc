//! Quotas (`[[policies.quota]]`): a blob upload, mount or manifest push that would take a
//! repository or namespace over its quota gets `403 DENIED` naming the quota and the usage, and
//! leaves nothing behind; what is stored already always goes in again.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{OCI_MANIFEST, Server, data, error_of};
use stowage::oci::Digest;

const POLICIES: &str = r#"
[[policies.quota]]
name = "apps"
repositories = ["team/**"]
bytes = "1000"

[[policies.quota]]
name = "sandboxes"
namespaces = ["sandbox"]
bytes = "1500"
"#;

async fn server() -> (Server, tempfile::TempDir) {
    Server::start_with_config(POLICIES).await
}

/// Uploads `bytes` in a session (POST, PATCH, PUT); the PUT's outcome and the session's URL.
async fn upload(server: &Server, repo: &str, bytes: &[u8]) -> (reqwest::Response, String) {
    let started = server
        .http
        .post(server.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let session = server.location(&started);
    let patched = server
        .http
        .patch(&session)
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::ACCEPTED);
    let session = server.location(&patched);
    let separator = if session.contains('?') { '&' } else { '?' };
    let digest = Digest::sha256_of(bytes);
    let finished = server
        .http
        .put(format!("{session}{separator}digest={digest}"))
        .send()
        .await
        .unwrap();
    (finished, session)
}

async fn blob_status(server: &Server, repo: &str, digest: &Digest) -> StatusCode {
    server
        .http
        .head(server.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_blob_over_a_repository_quota_is_refused_and_leaves_nothing_behind() {
    let (server, _dir) = server().await;
    let first = data(1, 600);
    let (done, _) = upload(&server, "team/app", &first).await;
    assert_eq!(done.status(), StatusCode::CREATED);

    let over = data(2, 500);
    let (refused, session) = upload(&server, "team/app", &over).await;
    let (status, code, message) = error_of(refused).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    for part in [
        "quota \"apps\"",
        "repository team/app",
        "1.00 kB",
        "stores 600 B",
        "adds 500 B",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    // Nothing of it stays: not the blob, not its bytes, not the session.
    let digest = Digest::sha256_of(&over);
    assert_eq!(
        blob_status(&server, "team/app", &digest).await,
        StatusCode::NOT_FOUND
    );
    assert!(server.stored_keys(digest.hex()).await.is_empty());
    assert!(server.stored_keys("_uploads").await.is_empty());
    let gone = server.http.get(&session).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);

    // What the repository stores goes in again, even at its quota; other repositories count
    // on their own.
    let (again, _) = upload(&server, "team/app", &first).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    let (elsewhere, _) = upload(&server, "team/web", &over).await;
    assert_eq!(elsewhere.status(), StatusCode::CREATED);

    // A mount counts as an upload would.
    let mount = server
        .http
        .post(server.url(&format!(
            "/v2/team/app/blobs/uploads/?mount={digest}&from=team/web"
        )))
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(mount).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    assert!(message.contains("adds 500 B"), "{message}");
    assert_eq!(
        blob_status(&server, "team/app", &digest).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_manifest_over_a_quota_is_refused_and_no_tag_names_it() {
    let (server, _dir) = server().await;
    // 37 bytes of config and 700 of layer: the manifest's few hundred bytes do not fit.
    let manifest = server
        .image_manifest("team/full", &data(3, 700), None)
        .await;
    let (status, code, message) = error_of(
        server
            .put_manifest("team/full", "v1", OCI_MANIFEST, &manifest)
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    assert!(message.contains("stores 737 B"), "{message}");
    assert!(
        message.contains(&format!("adds {} B", manifest.len())),
        "{message}"
    );
    let digest = Digest::sha256_of(&manifest);
    let head = server
        .http
        .head(server.url(&format!("/v2/team/full/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    let tags = server
        .http
        .get(server.url("/v2/team/full/tags/list"))
        .send()
        .await
        .unwrap();
    let listed: Value = tags.json().await.unwrap_or_default();
    assert!(
        listed["tags"].as_array().is_none_or(Vec::is_empty),
        "{listed}"
    );

    // A smaller image fits.
    server.push_image("team/small", "v1", &data(4, 100)).await;
}

#[tokio::test]
async fn a_namespace_counts_each_blob_once_and_frees_what_is_deleted() {
    let (server, _dir) = server().await;
    let shared = data(5, 1000);
    for repo in ["sandbox/a", "sandbox/b"] {
        let (done, _) = upload(&server, repo, &shared).await;
        assert_eq!(done.status(), StatusCode::CREATED, "{repo}: counted once");
    }
    let more = data(6, 600);
    let (refused, _) = upload(&server, "sandbox/c", &more).await;
    let (status, _, message) = error_of(refused).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message.contains("namespace sandbox"), "{message}");
    assert!(message.contains("stores 1.00 kB"), "{message}");

    // Deleting the shared blob from both repositories frees its bytes at once.
    let digest = Digest::sha256_of(&shared);
    for repo in ["sandbox/a", "sandbox/b"] {
        let deleted = server
            .http
            .delete(server.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::ACCEPTED, "{repo}");
    }
    let (fits, _) = upload(&server, "sandbox/c", &more).await;
    assert_eq!(fits.status(), StatusCode::CREATED);
    // Other namespaces are under no quota.
    let (free, _) = upload(&server, "elsewhere/app", &data(7, 5000)).await;
    assert_eq!(free.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_full_collection_reports_each_quota_s_usage_fullest_first() {
    let (server, _dir) = server().await;
    for (repo, size) in [("team/app", 900), ("team/web", 100), ("sandbox/a", 300)] {
        let (done, _) = upload(&server, repo, &data(8, size)).await;
        assert_eq!(done.status(), StatusCode::CREATED, "{repo}");
    }
    let quotas = [
        stowage::policies::Quota::new(
            "apps",
            stowage::policies::QuotaScope::Repository,
            &["team/**".to_owned()],
            1000,
        )
        .unwrap(),
        stowage::policies::Quota::new(
            "sandboxes",
            stowage::policies::QuotaScope::Namespace,
            &["sandbox".to_owned()],
            1500,
        )
        .unwrap(),
    ];
    let options = stowage::gc::Options {
        dry_run: true,
        full: true,
        full_every: None,
        delete_untagged: false,
        grace_period: std::time::Duration::from_secs(3600),
        sweep_wait: stowage::gc::MIN_SWEEP_WAIT,
        mirror_retention: None,
        quotas: quotas.to_vec(),
    };
    let report = stowage::gc::run_once(server.store(), &options)
        .await
        .unwrap();
    let reported: Vec<(&str, &str, u64, u64)> = report
        .quotas
        .iter()
        .map(|q| {
            (
                q.quota.as_str(),
                q.name.as_str(),
                q.used_bytes,
                q.limit_bytes,
            )
        })
        .collect();
    assert_eq!(
        reported,
        [
            ("apps", "team/app", 900, 1000),
            ("sandboxes", "sandbox", 300, 1500),
            ("apps", "team/web", 100, 1000),
        ]
    );
}
