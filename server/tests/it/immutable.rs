//! Immutable tags (`[[policies.immutable-tags]]`): a push that would move one, and a delete that
//! would remove one, get `403 DENIED` naming the rule; the same manifest again is no move.

use reqwest::StatusCode;

use crate::common::{OCI_MANIFEST, Server, data, error_of};

const POLICIES: &str = r#"
[[policies.immutable-tags]]
name = "releases"
repositories = ["team/**"]
tags = ["v*"]
"#;

async fn server() -> (Server, tempfile::TempDir) {
    Server::start_with_config(POLICIES).await
}

#[tokio::test]
async fn an_immutable_tag_keeps_its_manifest() {
    let (server, _dir) = server().await;
    let (first, digest) = server.push_image("team/app", "v1", &data(1, 10)).await;
    // The same manifest again is no move.
    let again = server
        .put_manifest("team/app", "v1", OCI_MANIFEST, &first)
        .await;
    assert_eq!(again.status(), StatusCode::CREATED);

    let other = server.image_manifest("team/app", &data(2, 10), None).await;
    let (status, code, message) = error_of(
        server
            .put_manifest("team/app", "v1", OCI_MANIFEST, &other)
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    assert!(
        message.contains("immutable (rule \"releases\")"),
        "{message}"
    );
    assert!(message.contains(&digest.to_string()), "{message}");
    let current = server.get_json("/v2/team/app/tags/list").await;
    assert_eq!(current["tags"], serde_json::json!(["v1"]));
    let (_, still) = server.push_image("team/app", "v2", &data(1, 10)).await;
    assert_eq!(still, digest, "v1 still names the first manifest");

    // Tags outside the rule move as always.
    let moved = server
        .put_manifest("team/app", "latest", OCI_MANIFEST, &other)
        .await;
    assert_eq!(moved.status(), StatusCode::CREATED);
    let moved = server
        .put_manifest("team/app", "latest", OCI_MANIFEST, &first)
        .await;
    assert_eq!(moved.status(), StatusCode::CREATED);
    server.push_image("other/app", "v1", &data(1, 10)).await;
    server.push_image("other/app", "v1", &data(2, 10)).await;
}

#[tokio::test]
async fn an_immutable_tag_cannot_be_deleted_alone_or_with_its_manifest() {
    let (server, _dir) = server().await;
    let (_, digest) = server.push_image("team/app", "v1", &data(3, 10)).await;
    let (_, loose) = server.push_image("team/app", "latest", &data(4, 10)).await;
    let delete = |reference: String| {
        let url = server.url(&format!("/v2/team/app/manifests/{reference}"));
        let http = server.http.clone();
        async move { http.delete(url).send().await.unwrap() }
    };
    let (status, code, message) = error_of(delete("v1".to_owned()).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    assert!(message.contains("cannot be deleted"), "{message}");
    let (status, _, message) = error_of(delete(digest.to_string()).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message.contains("with the manifest it names"), "{message}");
    // Nothing went: the tag and its manifest are both there.
    let tags = server.get_json("/v2/team/app/tags/list").await;
    assert_eq!(tags["tags"], serde_json::json!(["latest", "v1"]));
    // What no immutable tag names is deleted as always.
    assert_eq!(
        delete("latest".to_owned()).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        delete(loose.to_string()).await.status(),
        StatusCode::ACCEPTED
    );
}
