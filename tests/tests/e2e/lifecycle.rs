//! The process as an operator runs it: graceful shutdown, config file, logs.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use stowage_e2e::Stowage;

/// SIGTERM lets an upload in flight finish, then the process exits cleanly.
#[tokio::test]
async fn sigterm_finishes_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Stowage::start(&dir.path().join("data"), &[]);
    let http = stowage_e2e::http();
    let response = http
        .post(registry.url("/v2/graceful/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let url = registry.url(response.headers()["location"].to_str().unwrap());

    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let body =
        futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 1000])) })
            .chain(futures::stream::once(async move {
                let _ = release_rx.await;
                Ok(Bytes::from(vec![2u8; 1000]))
            }));
    let in_flight = tokio::spawn(
        http.patch(url)
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    registry.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        registry.wait_exit(Duration::ZERO).is_none(),
        "exited with a request in flight"
    );
    release_tx.send(()).unwrap();

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["range"], "0-1999");
    let status = tokio::task::spawn_blocking(move || {
        let status = registry.wait_exit(Duration::from_secs(10));
        (status, registry.logs())
    })
    .await
    .unwrap();
    let (status, logs) = status;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}\n{logs}"
    );
    assert!(logs.contains("shutting down"), "{logs}");
}

/// Settings from a TOML file, JSON logs with one access line per request, and a warning when no
/// upload key is configured.
#[tokio::test]
async fn config_file_and_structured_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stowage.toml");
    std::fs::write(
        &config,
        format!(
            "fs-root = {:?}\nread-only = true\n",
            dir.path().join("data").to_str().unwrap()
        ),
    )
    .unwrap();
    let registry = Stowage::start_args(&["--config".into(), config.to_str().unwrap().into()]);
    let http = stowage_e2e::http();
    let refused = http
        .post(registry.url("/v2/ro/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        stowage_e2e::eventually_answers(
            &http,
            &registry.url("/readyz"),
            StatusCode::OK,
            Duration::from_secs(3)
        )
        .await
    );

    let logs = registry.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN"
                && l["message"].as_str().unwrap().contains("no upload key")),
        "{logs}"
    );
    let access: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == "stowage::access")
        .collect();
    assert!(
        access.iter().any(|l| l["method"] == "POST"
            && l["status"] == 405
            && l["path"] == "/v2/ro/blobs/uploads/"),
        "{logs}"
    );
    assert!(
        access
            .iter()
            .any(|l| l["path"] == "/readyz" && l["status"] == 200),
        "{logs}"
    );
}
