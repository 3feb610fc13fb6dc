//! No process memory between the requests of an upload: any replica takes any request, and a
//! replica dying mid-request loses nothing that a retry cannot recover.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use stowage_e2e::{Stowage, sha256};

const KEY: &str = "an upload key shared by every replica of this test";

fn chunk(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(17).wrapping_add(seed))
        .collect()
}

fn location(registry: &Stowage, response: &reqwest::Response) -> String {
    let location = response.headers()["location"].to_str().unwrap();
    registry.url(location)
}

/// Re-points an upload URL at another replica.
fn on(registry: &Stowage, url: &str) -> String {
    let path = &url[url.find("/v2/").unwrap()..];
    registry.url(path)
}

#[tokio::test]
async fn chunked_upload_alternates_between_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let replicas = [
        Stowage::start(&data, &["--upload-secret", KEY]),
        Stowage::start(&data, &["--upload-secret", KEY]),
    ];
    let http = stowage_e2e::http();

    let response = http
        .post(replicas[0].url("/v2/stateless/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mut url = location(&replicas[0], &response);
    let mut blob = Vec::new();
    for i in 0..6u8 {
        let replica = &replicas[usize::from(i % 2 == 0)];
        let part = chunk(i, 150_000 + usize::from(i) * 1000);
        let range = format!("{}-{}", blob.len(), blob.len() + part.len() - 1);
        let response = http
            .patch(on(replica, &url))
            .header("content-range", range)
            .body(part.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "chunk {i}");
        blob.extend_from_slice(&part);
        assert_eq!(response.headers()["range"], format!("0-{}", blob.len() - 1));
        url = location(replica, &response);
    }
    let digest = sha256(&blob);
    let response = http
        .put(format!("{}&digest={digest}", on(&replicas[1], &url)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    for replica in &replicas {
        let pulled = http
            .get(replica.url(&format!("/v2/stateless/app/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(pulled.bytes().await.unwrap(), blob);
    }
}

#[tokio::test]
async fn patch_retried_after_the_server_died_mid_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut doomed = Stowage::start(&data, &["--upload-secret", KEY]);
    let survivor = Stowage::start(&data, &["--upload-secret", KEY]);
    let http = stowage_e2e::http();

    let response = http
        .post(survivor.url("/v2/crash/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let first = chunk(1, 1 << 20);
    let response = http
        .patch(location(&survivor, &response))
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let token_before_crash = location(&survivor, &response);

    // Send half of the second chunk to the doomed replica, then kill it while it waits for more.
    // Half is 2 MiB: more than the server buffers before writing (512 KiB), so part of it is on
    // disk past the upload's offset when the replica dies.
    let second = chunk(2, 4 << 20);
    let half = Bytes::copy_from_slice(&second[..second.len() / 2]);
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(half) }).chain(
        futures::stream::once(async move {
            let _ = hold_rx.await;
            Err(std::io::Error::other("never sent"))
        }),
    );
    let in_flight = tokio::spawn(
        http.patch(on(&doomed, &token_before_crash))
            .header("content-length", second.len().to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    let upload_files = || {
        walk(&data)
            .into_iter()
            .filter(|p| {
                p.to_string_lossy().contains("_uploads")
                    && p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("data.")
            })
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while upload_files()
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .max()
        .unwrap_or(0)
        <= first.len() as u64
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the doomed replica never received the half chunk"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill();
    drop(hold_tx);
    let outcome = in_flight.await.unwrap();
    assert!(
        outcome.map_or(true, |r| !r.status().is_success()),
        "a request to a killed replica cannot have succeeded"
    );

    // The client retries the same chunk with the token it had, on the surviving replica.
    let response = http
        .patch(on(&survivor, &token_before_crash))
        .body(second.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "{}",
        response.text().await.unwrap()
    );
    let expected: Vec<u8> = [first, second].concat();
    let digest = sha256(&expected);
    let response = http
        .put(format!(
            "{}&digest={digest}",
            location(&survivor, &response)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let pulled = http
        .get(survivor.url(&format!("/v2/crash/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.bytes().await.unwrap(), expected);

    // The replica comes back and serves it too.
    let restarted = Stowage::start(&data, &["--upload-secret", KEY]);
    let pulled = http
        .get(restarted.url(&format!("/v2/crash/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.bytes().await.unwrap(), expected);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path)
            } else {
                out.push(path)
            }
        }
    }
    out
}
