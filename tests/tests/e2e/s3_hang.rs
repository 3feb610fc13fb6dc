//! S3 that hangs instead of refusing: a frozen server (SIGSTOP), an endpoint that accepts
//! connections and never answers, and one that answers, slowly. A request that needs storage
//! answers within the storage timeout, then at once while the circuit breaker is open;
//! `/readyz` answers at once; the registry recovers by itself; slow storage just works.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use stowage_e2e::garage::Garage;
use stowage_e2e::{Stowage, sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The documented ceiling: the default storage timeout (6s, retries included) and a margin for
/// a loaded test machine.
pub(crate) const CEILING: Duration = Duration::from_secs(9);

pub(crate) fn client() -> reqwest::Client {
    stowage_e2e::http_builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Sends `request`, and checks it answers 503 UNAVAILABLE with `Retry-After` within the ceiling.
pub(crate) async fn fails_fast(what: &str, request: reqwest::RequestBuilder) -> Duration {
    let started = Instant::now();
    let response = request.send().await.unwrap();
    let took = started.elapsed();
    assert!(took <= CEILING, "{what} took {took:?}");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert!(response.headers().contains_key("retry-after"), "{what}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{what}");
    took
}

/// `/readyz` answers `expected` within `within`, every answer coming in under a second.
pub(crate) async fn readiness_becomes(
    http: &reqwest::Client,
    registry: &Stowage,
    expected: StatusCode,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let asked = Instant::now();
        let response = http.get(registry.url("/readyz")).send().await.unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "/readyz took {:?}",
            asked.elapsed()
        );
        if response.status() == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz: {}",
            response.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `/readyz` says.
pub(crate) async fn readiness(http: &reqwest::Client, registry: &Stowage) -> String {
    let response = http.get(registry.url("/readyz")).send().await.unwrap();
    response.text().await.unwrap()
}

/// What a storage outage must look like from outside: a push of `blob` and a manifest `GET` in
/// `repo` answer 503 within the ceiling, and `/readyz` turns 503, each answer under a second.
pub(crate) async fn outage_is_answered_fast(
    http: &reqwest::Client,
    registry: &Stowage,
    repo: &str,
    blob: &[u8],
) {
    fails_fast(
        &format!("a push of {} bytes", blob.len()),
        http.post(registry.url(&format!(
            "/v2/{repo}/blobs/uploads/?digest={}",
            sha256(blob)
        )))
        .body(blob.to_vec()),
    )
    .await;
    fails_fast(
        "a manifest GET",
        http.get(registry.url(&format!("/v2/{repo}/manifests/v1"))),
    )
    .await;
    readiness_becomes(
        http,
        registry,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(15),
    )
    .await;
}

pub(crate) async fn push(
    http: &reqwest::Client,
    registry: &Stowage,
    repo: &str,
    data: &[u8],
) -> StatusCode {
    http.post(registry.url(&format!(
        "/v2/{repo}/blobs/uploads/?digest={}",
        sha256(data)
    )))
    .body(data.to_vec())
    .send()
    .await
    .unwrap()
    .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_s3_fails_fast_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(&dir.path().join("garage"));
    let registry = Stowage::start_args(&garage.endpoint.stowage_flags("hang"));
    let http = client();
    readiness_becomes(&http, &registry, StatusCode::OK, Duration::from_secs(10)).await;

    // Before the outage: an image's config blob and manifest, and an upload left half-way.
    let config = b"{}".to_vec();
    assert_eq!(
        push(&http, &registry, "hang/app", &config).await,
        StatusCode::CREATED
    );
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": []
    }))
    .unwrap();
    let put = http
        .put(registry.url("/v2/hang/app/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let half: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let started = http
        .post(registry.url("/v2/hang/upload/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let patched = http
        .patch(registry.url(&location))
        .body(half.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::ACCEPTED);
    let location = patched.headers()["location"].to_str().unwrap().to_owned();

    garage.freeze();
    // The replica leaves its Service while a probe still waits on storage, long before the
    // probe's own 7 s limit, and says why.
    readiness_becomes(
        &http,
        &registry,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(6),
    )
    .await;
    let said = readiness(&http, &registry).await;
    assert!(said.contains("storage has not answered for"), "{said}");
    let lost: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let lost_digest = sha256(&lost);
    outage_is_answered_fast(&http, &registry, "hang/app", &lost).await;
    // Requests that need no storage keep answering.
    let base = http.get(registry.url("/v2/")).send().await.unwrap();
    assert_eq!(base.status(), StatusCode::OK);

    // 200 at once: every one answers within the ceiling, the breaker open, and the replica's
    // connections and memory stay bounded.
    let requests: Vec<_> = (0..200)
        .map(|i| {
            let request = match i % 3 {
                0 => http.get(registry.url("/v2/hang/app/manifests/v1")),
                1 => http.head(registry.url(&format!("/v2/hang/app/blobs/{}", sha256(&config)))),
                _ => http
                    .post(registry.url(&format!(
                        "/v2/hang/app/blobs/uploads/?digest={}",
                        sha256(&[i as u8])
                    )))
                    .body(vec![i as u8]),
            };
            tokio::spawn(async move {
                let started = Instant::now();
                let status = request.send().await.map(|r| r.status());
                (status, started.elapsed())
            })
        })
        .collect();
    let (fds, rss) = registry.footprint();
    for request in requests {
        let (status, took) = request.await.unwrap();
        assert_eq!(status.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(took <= CEILING, "a request took {took:?}");
    }
    assert!(fds < 400, "{fds} open files during the outage");
    assert!(rss < 200 * 1024, "{rss} KiB resident during the outage");
    let logs = registry.logs();
    assert_eq!(
        logs.matches("failing requests that need it at once")
            .count(),
        1,
        "one line when the breaker opens, not one per request:\n{logs}"
    );

    // When the probe gives up, it says so in words, not in the SDK's structures.
    let deadline = Instant::now() + Duration::from_secs(15);
    let failed = loop {
        let said = readiness(&http, &registry).await;
        if !said.contains("has not answered for") {
            break said;
        }
        assert!(Instant::now() < deadline, "{said}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failed.starts_with("storage unavailable: "), "{failed}");
    assert!(
        !failed.contains('{') && !failed.contains("Error("),
        "plain words: {failed}"
    );

    garage.thaw();
    readiness_becomes(&http, &registry, StatusCode::OK, Duration::from_secs(15)).await;
    assert_eq!(
        push(&http, &registry, "hang/app", b"after the outage").await,
        StatusCode::CREATED
    );
    assert!(registry.logs().contains("storage answers again"));
    // Nothing partial is visible.
    let missing = http
        .head(registry.url(&format!("/v2/hang/app/blobs/{lost_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // The upload from before the outage resumes where it was.
    let status = http.get(registry.url(&location)).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(status.headers()["range"], format!("0-{}", half.len() - 1));
    let rest = b"and the rest of it".to_vec();
    let whole = [half, rest.clone()].concat();
    let resumed = status.headers()["location"].to_str().unwrap().to_owned();
    let finished = http
        .put(registry.url(&format!("{resumed}&digest={}", sha256(&whole))))
        .body(rest)
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), StatusCode::CREATED);
    let pulled = http
        .get(registry.url(&format!("/v2/hang/upload/blobs/{}", sha256(&whole))))
        .send()
        .await
        .unwrap();
    assert!(pulled.bytes().await.unwrap() == whole);
    let manifest_back = http
        .get(registry.url("/v2/hang/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(manifest_back.bytes().await.unwrap(), manifest);
}

/// An `http://` endpoint that accepts every connection, reads nothing and answers nothing, as a
/// black-holed network does.
pub(crate) fn never_answering_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_answers_fails_fast() {
    let endpoint = never_answering_endpoint();
    let registry = Stowage::start_args(
        &[
            "--storage",
            "s3",
            "--s3-endpoint",
            &endpoint,
            "--s3-bucket",
            "void",
            "--s3-path-style",
            "true",
            "--s3-access-key-id",
            "key",
            "--s3-secret-access-key",
            "secret",
        ]
        .map(str::to_owned),
    );
    let http = client();
    outage_is_answered_fast(&http, &registry, "void", b"x").await;
    let took = fails_fast(
        "a request with the breaker open",
        http.get(registry.url("/v2/void/tags/list")),
    )
    .await;
    assert!(took < Duration::from_secs(1), "not at once: {took:?}");
}

/// A TCP proxy to `upstream` that holds back the start of every response for `delay`.
async fn slow_proxy(upstream: String, delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut buffer = vec![0; 64 * 1024];
                let mut last = Instant::now() - delay;
                loop {
                    let Ok(n) = server_read.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    // A quiet spell before these bytes: a new response starts.
                    if last.elapsed() > Duration::from_millis(200) {
                        tokio::time::sleep(delay).await;
                    }
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                    last = Instant::now();
                }
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_but_alive_s3_keeps_working_without_tripping_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(&dir.path().join("garage"));
    let upstream = garage
        .endpoint
        .endpoint
        .trim_start_matches("http://")
        .to_owned();
    let proxy = slow_proxy(upstream, Duration::from_secs(2)).await;
    let mut flags = garage.endpoint.stowage_flags("slow");
    let endpoint = flags.iter().position(|f| f == "--s3-endpoint").unwrap() + 1;
    flags[endpoint] = format!("http://{proxy}");
    let registry = Stowage::start_args(&flags);
    let http = client();
    readiness_becomes(&http, &registry, StatusCode::OK, Duration::from_secs(15)).await;

    let data = b"pushed through a slow S3".to_vec();
    let started = Instant::now();
    assert_eq!(
        push(&http, &registry, "slow/app", &data).await,
        StatusCode::CREATED
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the proxy really delays"
    );
    let pulled = http
        .get(registry.url(&format!("/v2/slow/app/blobs/{}", sha256(&data))))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), StatusCode::OK);
    assert_eq!(pulled.bytes().await.unwrap(), data);
    let ready = http.get(registry.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let logs = registry.logs();
    assert!(
        !logs.contains("failing requests that need it at once"),
        "the breaker tripped on slow storage:\n{logs}"
    );
}
