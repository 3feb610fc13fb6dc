use reqwest::StatusCode;

use crate::common::{Server, expect_error};

#[tokio::test]
async fn deletes_can_be_disabled() {
    let server = Server::start_with(&["--deletes-enabled", "false"]).await;
    let (_, digest) = server.push_image("kept", "v1", b"layer").await;
    for path in [
        "/v2/kept/manifests/v1".to_owned(),
        format!("/v2/kept/manifests/{digest}"),
    ] {
        let response = server.http.delete(server.url(&path)).send().await.unwrap();
        expect_error(response, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    }
    let still_there = server
        .http
        .get(server.url("/v2/kept/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(still_there.status(), StatusCode::OK);
}

#[tokio::test]
async fn read_only_mode_refuses_writes() {
    let server = Server::start_with(&["--read-only", "true"]).await;
    let response = server
        .http
        .post(server.url("/v2/any/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    let response = server
        .http
        .get(server.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_endpoints() {
    let server = Server::start_fs().await;
    assert_eq!(
        server
            .http
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        server
            .http
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Storage gone: not ready.
    std::fs::remove_dir_all(&server.root).unwrap();
    assert_eq!(
        server
            .http
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}
