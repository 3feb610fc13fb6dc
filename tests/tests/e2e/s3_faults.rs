//! S3 going away under load: requests fail fast with 503 and `Retry-After`, `/readyz` reports not
//! ready, nothing partial becomes visible, and the registry recovers by itself when S3 returns.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use stowage_e2e::garage::Garage;
use stowage_e2e::{Stowage, sha256};

/// Pushes small blobs in a loop until told to stop; returns (digest, status, time, bytes) of
/// every attempt.
async fn push_loop(
    http: reqwest::Client,
    base: String,
    stop: Arc<AtomicBool>,
) -> Vec<(String, u16, Duration, Vec<u8>)> {
    let mut outcomes = Vec::new();
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let data = format!("blob number {i} pushed during the outage test").into_bytes();
        let digest = sha256(&data);
        let started = Instant::now();
        let status = match http
            .post(format!("{base}/v2/faults/blobs/uploads/?digest={digest}"))
            .body(data.clone())
            .send()
            .await
        {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        };
        outcomes.push((digest, status, started.elapsed(), data));
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_fails_fast_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut garage = Garage::start(&dir.path().join("garage"));
    let registry = Stowage::start_args(&garage.endpoint.stowage_flags("faults"));
    let http = stowage_e2e::http_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let before = b"pushed before the outage".to_vec();
    let before_digest = sha256(&before);
    let pushed = http
        .post(registry.url(&format!("/v2/faults/blobs/uploads/?digest={before_digest}")))
        .body(before.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::CREATED);

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(push_loop(http.clone(), registry.url(""), Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(300)).await;

    garage.stop();
    // The failing pushes open the breaker, or the next probe finds S3 gone.
    assert!(
        stowage_e2e::eventually_answers(
            &http,
            &registry.url("/readyz"),
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(3)
        )
        .await,
        "still ready with S3 gone"
    );
    for request in [
        http.get(registry.url(&format!("/v2/faults/blobs/{before_digest}"))),
        http.post(registry.url("/v2/faults/blobs/uploads/")),
        http.get(registry.url("/v2/faults/tags/list")),
    ] {
        let started = Instant::now();
        let response = request.send().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let _garage = tokio::task::spawn_blocking(move || {
        garage.resume();
        garage
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http
        .get(registry.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(
            Instant::now() < deadline,
            "the registry did not become ready again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.await.unwrap();

    // Only successes and 503s, never a 500, and every failure was quick.
    let mut counts = BTreeMap::new();
    for (_, status, took, _) in &outcomes {
        *counts.entry(*status).or_insert(0) += 1;
        assert!(*took < Duration::from_secs(5), "a request took {took:?}");
    }
    assert!(counts.keys().all(|s| *s == 201 || *s == 503), "{counts:?}");
    assert!(
        counts.get(&503).is_some_and(|n| *n > 0),
        "no request hit the outage: {counts:?}"
    );
    assert!(counts.get(&201).is_some_and(|n| *n > 0), "{counts:?}");
    // What succeeded is readable. What failed is either not there or there whole: S3 may have
    // completed a write whose answer the outage cut off, and a retry then finds the blob; never
    // anything partial.
    for (digest, status, _, data) in &outcomes {
        let response = http
            .get(registry.url(&format!("/v2/faults/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        let found = response.status();
        if *status == 201 {
            assert_eq!(found, StatusCode::OK, "{digest} was pushed");
        } else {
            assert!(
                found == StatusCode::NOT_FOUND || found == StatusCode::OK,
                "{digest} answered {status} when pushed, then {found}"
            );
        }
        if found == StatusCode::OK {
            assert_eq!(
                &response.bytes().await.unwrap()[..],
                &data[..],
                "{digest} is whole"
            );
        }
    }
    let pulled = http
        .get(registry.url(&format!("/v2/faults/blobs/{before_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.bytes().await.unwrap(), before);
}
