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

/// Polls `/readyz` until it answers `expected` (each answer must come at once: readiness is
/// read from memory, never from storage), failing after `within`.
async fn wait_for_readiness(server: &Server, expected: StatusCode, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let asked = std::time::Instant::now();
        let response = server.http.get(server.url("/readyz")).send().await.unwrap();
        assert!(
            asked.elapsed() < std::time::Duration::from_millis(500),
            "/readyz took {:?}",
            asked.elapsed()
        );
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(
            body.contains("checked") || body.contains("not checked yet"),
            "{body}"
        );
        if status == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz still answers {status}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
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
    wait_for_readiness(&server, StatusCode::OK, std::time::Duration::from_secs(2)).await;
    // Storage gone: not ready by the next probe (every 2s), while liveness stays.
    std::fs::remove_dir_all(&server.root).unwrap();
    wait_for_readiness(
        &server,
        StatusCode::SERVICE_UNAVAILABLE,
        std::time::Duration::from_secs(5),
    )
    .await;
    let live = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
}
