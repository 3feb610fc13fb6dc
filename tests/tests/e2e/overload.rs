//! Slow and hostile clients, and more load than a replica takes: connections that never send
//! their headers are closed, a stalled upload is cut off and can be resumed, a slow but steady
//! push succeeds, connections and requests beyond the limits are refused fast and politely, a
//! client over its rate is told to slow down, and the replica serves normally afterwards.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use stowage_e2e::{Stowage, sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// Reads until the server closes the connection; `None` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| received)
}

/// Pushes a small blob and pulls it back; true when both worked.
async fn push_and_pull(http: &reqwest::Client, registry: &Stowage, i: u32) -> bool {
    let blob = format!("blob {i} pushed while under pressure").into_bytes();
    let digest = sha256(&blob);
    let pushed = http
        .post(registry.url(&format!("/v2/pressure/blobs/uploads/?digest={digest}")))
        .body(blob.clone())
        .send()
        .await;
    if !pushed.is_ok_and(|r| r.status() == StatusCode::CREATED) {
        return false;
    }
    let pulled = http
        .get(registry.url(&format!("/v2/pressure/blobs/{digest}")))
        .send()
        .await;
    match pulled {
        Ok(r) if r.status() == StatusCode::OK => r.bytes().await.is_ok_and(|b| b == blob),
        _ => false,
    }
}

async fn wait_for_log(registry: &Stowage, line: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !registry.logs().contains(line) {
        assert!(
            Instant::now() < deadline,
            "no {line:?} in the log:\n{}",
            registry.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_their_headers_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Stowage::start(&dir.path().join("data"), &["--header-read-timeout", "2s"]);
    let mut idle = Vec::new();
    for _ in 0..2000 {
        let mut stream = TcpStream::connect(&registry.address).await.unwrap();
        // A request line and one header, and then nothing.
        stream
            .write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n")
            .await
            .unwrap();
        idle.push(stream);
    }
    let opened = Instant::now();

    // Real clients are served meanwhile.
    let http = stowage_e2e::http();
    for i in 0..20 {
        assert!(push_and_pull(&http, &registry, i).await, "push/pull {i}");
    }

    // Every one of the 2000 is closed by the server within the header timeout (and slack for
    // a loaded machine).
    let mut still_open = 0;
    for stream in &mut idle {
        let left = Duration::from_secs(8).saturating_sub(opened.elapsed());
        if closed_within(stream, left.max(Duration::from_millis(10)))
            .await
            .is_none()
        {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "connections still open after the header timeout"
    );
    assert!(push_and_pull(&http, &registry, 99).await);
    wait_for_log(
        &registry,
        "header read timeouts in the last interval",
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_cut_off_and_resumes_from_the_registry_offset() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Stowage::start(&dir.path().join("data"), &["--body-idle-timeout", "2s"]);
    let http = stowage_e2e::http();
    let blob = data(3, 1_000_000);
    let started = http
        .post(registry.url("/v2/stall/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let first = http
        .patch(registry.url(&location))
        .header("content-range", "0-99999")
        .body(blob[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let location = first.headers()["location"].to_str().unwrap().to_owned();

    // The next chunk declares the rest, sends 1000 bytes and stops.
    let mut stalled = TcpStream::connect(&registry.address).await.unwrap();
    let rest = blob.len() - 100_000;
    stalled
        .write_all(
            format!(
                "PATCH {location} HTTP/1.1\r\nHost: registry\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {rest}\r\nContent-Range: 100000-{}\r\n\r\n",
                blob.len() - 1
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stalled.write_all(&blob[100_000..101_000]).await.unwrap();
    let sent = Instant::now();
    let answer = closed_within(&mut stalled, Duration::from_secs(10))
        .await
        .expect("the server cuts the stalled request off");
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "not before the timeout"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // The upload stands where it was committed; the client resumes from there.
    let status = http.get(registry.url(&location)).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(status.headers()["range"], "0-99999");
    let location = status.headers()["location"].to_str().unwrap().to_owned();
    let digest = sha256(&blob);
    let finished = http
        .put(registry.url(&format!("{location}&digest={digest}")))
        .header("content-range", format!("100000-{}", blob.len() - 1))
        .body(blob[100_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), StatusCode::CREATED);
    let pulled = http
        .get(registry.url(&format!("/v2/stall/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert!(pulled.bytes().await.unwrap() == blob, "bit-identical");
    wait_for_log(
        &registry,
        "body idle timeouts in the last interval",
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_push_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    // A body idle timeout well below the push's duration: only silence counts.
    let registry = Stowage::start(&dir.path().join("data"), &["--body-idle-timeout", "5s"]);
    let http = stowage_e2e::http();
    let chunk = Bytes::from(data(9, 64 * 1024));
    let seconds = 60;
    let body = futures::stream::iter(0..seconds).then(move |i| {
        let chunk = chunk.clone();
        async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok::<_, std::io::Error>(chunk)
        }
    });
    let whole: Vec<u8> = (0..seconds).flat_map(|_| data(9, 64 * 1024)).collect();
    let digest = sha256(&whole);
    let started = Instant::now();
    let pushed = http
        .post(registry.url(&format!("/v2/steady/app/blobs/uploads/?digest={digest}")))
        .header("content-length", whole.len().to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::CREATED);
    assert!(started.elapsed() >= Duration::from_secs(55), "it was slow");
    let pulled = http
        .get(registry.url(&format!("/v2/steady/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert!(pulled.bytes().await.unwrap() == whole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_fast_and_the_replica_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Stowage::start(
        &dir.path().join("data"),
        &["--max-concurrent-requests", "16"],
    );
    let http = stowage_e2e::http();
    // 300 uploads, then a chunk for each at once, each body taking about a second to arrive.
    let mut locations = Vec::new();
    for _ in 0..300 {
        let started = http
            .post(registry.url("/v2/load/app/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), StatusCode::ACCEPTED);
        locations.push(started.headers()["location"].to_str().unwrap().to_owned());
    }
    let requests: Vec<_> = locations
        .into_iter()
        .map(|location| {
            let http = http.clone();
            let url = registry.url(&location);
            tokio::spawn(async move {
                let body = futures::stream::iter(0..10).then(|_| async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 4096]))
                });
                let started = Instant::now();
                let response = http
                    .patch(url)
                    .header("content-length", (10 * 4096).to_string())
                    .body(reqwest::Body::wrap_stream(body))
                    .send()
                    .await;
                let retry_after = response
                    .as_ref()
                    .ok()
                    .is_some_and(|r| r.headers().contains_key("retry-after"));
                (response.map(|r| r.status()), retry_after, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds, rss) = registry.footprint();

    let (mut admitted, mut shed) = (Vec::new(), Vec::new());
    for request in requests {
        let (status, retry_after, took) = request.await.unwrap();
        match status {
            Ok(StatusCode::ACCEPTED) => admitted.push(took),
            Ok(StatusCode::SERVICE_UNAVAILABLE) => {
                assert!(retry_after, "a shed request says when to come back");
                shed.push(took);
            }
            // A shed request's connection is closed before its body is sent: the client may
            // see its write fail instead of the 503.
            Err(error) => {
                assert!(error.is_request() || error.is_body(), "{error}");
                shed.push(took);
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        admitted.len() >= 16,
        "at least the limit was served: {admitted:?}"
    );
    assert!(
        shed.len() >= 200,
        "the excess was shed: {} shed",
        shed.len()
    );
    shed.sort();
    admitted.sort();
    let p99 = |sorted: &[Duration]| sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    eprintln!(
        "admitted {} (p99 {:?}), shed {} (p99 {:?}); {fds} open files, {rss} KiB",
        admitted.len(),
        p99(&admitted),
        shed.len(),
        p99(&shed)
    );
    assert!(
        p99(&shed) < Duration::from_millis(900),
        "shedding is fast: p99 {:?}",
        p99(&shed)
    );
    assert!(
        p99(&admitted) < Duration::from_secs(5),
        "admitted requests stay fast: p99 {:?}",
        p99(&admitted)
    );
    assert!(fds < 800, "{fds} open files under load");
    assert!(rss < 300 * 1024, "{rss} KiB resident under load");

    // As soon as the load stops, the replica serves normally.
    for i in 0..10 {
        assert!(push_and_pull(&http, &registry, i).await);
    }
    wait_for_log(
        &registry,
        "requests shed in the last interval",
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_politely() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Stowage::start(&dir.path().join("data"), &["--max-connections", "50"]);
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(TcpStream::connect(&registry.address).await.unwrap());
    }
    // Let the server take all 50 before asking for more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        let mut extra = TcpStream::connect(&registry.address).await.unwrap();
        let answer = closed_within(&mut extra, Duration::from_secs(3))
            .await
            .expect("refused and closed at once");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 1"), "{answer}");
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = stowage_e2e::http();
    assert!(push_and_pull(&http, &registry, 1).await);
    wait_for_log(
        &registry,
        "connections refused in the last interval",
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_is_told_to_slow_down() {
    let dir = tempfile::tempdir().unwrap();
    // The test connects from 127.0.0.1, which plays the trusted proxy.
    let registry = Stowage::start(
        &dir.path().join("data"),
        &[
            "--rate-limit",
            "5",
            "--rate-limit-burst",
            "5",
            "--trusted-proxies",
            "127.0.0.1/32",
        ],
    );
    let http = stowage_e2e::http();
    let get = |client: &'static str| {
        http.get(registry.url("/v2/"))
            .header("x-forwarded-for", client)
            .send()
    };
    let mut limited = 0;
    for _ in 0..20 {
        let response = get("198.51.100.7").await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            assert!(response.headers().contains_key("retry-after"));
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
        }
    }
    assert!(limited >= 10, "only {limited} of 20 were limited");
    // Another client behind the same proxy has its own allowance.
    assert_eq!(get("198.51.100.8").await.unwrap().status(), StatusCode::OK);
    // Probes are never rate limited.
    for _ in 0..20 {
        let ready = http.get(registry.url("/healthz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::OK);
    }
}
