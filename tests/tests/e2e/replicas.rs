//! Three stateless replicas on one bucket behind a round-robin load balancer: images pushed with
//! skopeo and concurrent chunked uploads survive a replica being killed and restarted mid-way.

use std::time::Duration;

use reqwest::StatusCode;
use stowage_e2e::garage::S3Endpoint;
use stowage_e2e::layout::{self, Layout};
use stowage_e2e::{HaProxy, Stowage, sha256, skopeo};

const KEY: &str = "the upload key every replica of this cluster shares";
const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 12;

fn blob(seed: u8) -> Vec<u8> {
    (0..CHUNK * CHUNKS)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// What a request through the balancer came back with: an answer, or none (its replica died).
type Sent = Result<reqwest::Response, reqwest::Error>;

/// Whether `sent` is an answer with `status`; anything else is a failure worth retrying.
fn answered(sent: &Sent, status: StatusCode) -> bool {
    sent.as_ref().is_ok_and(|r| r.status() == status)
}

fn location_of(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// Where an upload stands, asked as the spec says a client should after a failed request: the
/// next offset and a location to continue at, or `None` when the upload is gone (the client
/// then starts the blob again). Retries while the request itself fails.
async fn upload_status(
    http: &reqwest::Client,
    lb: &str,
    location: &str,
) -> Option<(usize, String)> {
    for _ in 0..20 {
        let sent = http.get(format!("http://{lb}{location}")).send().await;
        match sent {
            Ok(r) if r.status() == StatusCode::NO_CONTENT => {
                let range = r.headers()["range"].to_str().unwrap();
                let last: usize = range.trim_start_matches("0-").parse().unwrap();
                // "0-0" is both "nothing yet" and "one byte": the token's size tells, and a
                // one-byte upload never happens here.
                let next = if last == 0 { 0 } else { last + 1 };
                return Some((next, location_of(&r)));
            }
            Ok(r) if r.status() == StatusCode::NOT_FOUND => return None,
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    panic!("the status of {location} could not be had");
}

/// A chunked upload through `lb` as a careful client does it. Every request may fail when its
/// replica dies: a failed start is sent again; after a failed chunk the client asks the upload's
/// status and continues from the offset the registry reports (the dead replica may have stored
/// the chunk before dying); a failed finish is checked against the blob. Returns the digest.
async fn chunked_upload(http: reqwest::Client, lb: String, repo: String, data: Vec<u8>) -> String {
    let digest = sha256(&data);
    let mut failures = 0;
    let mut failed = |what: &str, sent: &Sent| {
        failures += 1;
        assert!(failures < 30, "{repo}: {what} kept failing: {sent:?}");
    };
    'upload: loop {
        let started = http
            .post(format!("http://{lb}/v2/{repo}/blobs/uploads/"))
            .send()
            .await;
        if !answered(&started, StatusCode::ACCEPTED) {
            failed("starting", &started);
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue 'upload;
        }
        let mut location = location_of(&started.unwrap());
        let mut offset = 0;
        while offset < data.len() {
            let end = (offset + CHUNK).min(data.len());
            let sent = http
                .patch(format!("http://{lb}{location}"))
                .header("content-range", format!("{offset}-{}", end - 1))
                .body(data[offset..end].to_vec())
                .send()
                .await;
            if answered(&sent, StatusCode::ACCEPTED) {
                location = location_of(&sent.unwrap());
                offset = end;
            } else {
                failed("a chunk", &sent);
                tokio::time::sleep(Duration::from_millis(300)).await;
                match upload_status(&http, &lb, &location).await {
                    Some((next, at)) => (offset, location) = (next, at),
                    None => {
                        eprintln!("{repo}: the upload is gone; starting over");
                        continue 'upload;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        loop {
            let finished = http
                .put(format!("http://{lb}{location}&digest={digest}"))
                .send()
                .await;
            if answered(&finished, StatusCode::CREATED) {
                return digest;
            }
            failed("finishing", &finished);
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The answer may be all that was lost.
            let blob = http
                .head(format!("http://{lb}/v2/{repo}/blobs/{digest}"))
                .send()
                .await;
            if answered(&blob, StatusCode::OK) {
                return digest;
            }
            match upload_status(&http, &lb, &location).await {
                Some((next, at)) if next == data.len() => location = at,
                _ => continue 'upload,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_a_load_balancer_survive_a_restart() {
    let s3 = S3Endpoint::from_env();
    let prefix = format!("replicas-{:016x}", rand::random::<u64>());
    let mut flags = s3.stowage_flags(&prefix);
    flags.extend(["--upload-secret".to_owned(), KEY.to_owned()]);
    let mut replicas: Vec<Stowage> = (0..3).map(|_| Stowage::start_args(&flags)).collect();
    let backends: Vec<&str> = replicas.iter().map(|r| r.address.as_str()).collect();
    let lb = HaProxy::start(&backends);
    let http = stowage_e2e::http();

    let dir = tempfile::tempdir().unwrap();
    let mut source = Layout::new(&dir.path().join("source"));
    let images: Vec<_> = (0..3u8)
        .map(|i| {
            source.image(
                "amd64",
                &[
                    &[("app/data", &vec![i; 3 * CHUNK][..])],
                    &[("app/id", &[i][..])],
                ],
            )
        })
        .collect();
    for (i, image) in images.iter().enumerate() {
        source.tag(&format!("v{i}"), image);
    }

    // Concurrent chunked uploads, and skopeo pushes, while one replica dies and comes back.
    let uploads: Vec<_> = (0..4u8)
        .map(|i| {
            let data = blob(i);
            let expected = sha256(&data);
            let task = tokio::spawn(chunked_upload(
                http.clone(),
                lb.address.clone(),
                format!("cluster/upload{i}"),
                data,
            ));
            (expected, task)
        })
        .collect();
    // A push whose request died with its replica fails, and is run again, as a pipeline would.
    let pushes = {
        let (source_dir, lb) = (source.dir.clone(), lb.address.clone());
        tokio::task::spawn_blocking(move || {
            let skopeo_bin = stowage_e2e::require("skopeo");
            let mut reruns = 0;
            for i in 0..3 {
                let copy = |bin: &std::path::Path| {
                    std::process::Command::new(bin)
                        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
                        .arg(format!("oci:{}:v{i}", source_dir.display()))
                        .arg(format!("docker://{lb}/cluster/app:v{i}"))
                        .output()
                        .unwrap()
                };
                let mut output = copy(&skopeo_bin);
                while !output.status.success() {
                    reruns += 1;
                    assert!(
                        reruns <= 3,
                        "push kept failing: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                    std::thread::sleep(Duration::from_millis(500));
                    output = copy(&skopeo_bin);
                }
            }
            reruns
        })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    replicas[1].kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut restarted = replicas.remove(1);
    tokio::task::spawn_blocking(move || {
        restarted.restart();
        restarted
    })
    .await
    .map(|r| replicas.insert(1, r))
    .unwrap();

    for (expected, task) in uploads {
        assert_eq!(task.await.unwrap(), expected);
    }
    let reruns = pushes.await.unwrap();
    eprintln!("skopeo pushes re-run after the replica died: {reruns}");

    // Every blob from every replica, bit for bit; every image back through the balancer.
    for i in 0..4u8 {
        let digest = sha256(&blob(i));
        for replica in &replicas {
            let pulled = http
                .get(replica.url(&format!("/v2/cluster/upload{i}/blobs/{digest}")))
                .send()
                .await
                .unwrap();
            assert_eq!(pulled.status(), StatusCode::OK);
            assert_eq!(sha256(&pulled.bytes().await.unwrap()), digest);
        }
    }
    let back = dir.path().join("back");
    for (i, image) in images.iter().enumerate() {
        skopeo(&[
            "copy",
            &format!("docker://{}/cluster/app:v{i}", lb.address),
            &format!("oci:{}:v{i}", back.display()),
        ]);
        assert_eq!(layout::tagged_digest(&back, &format!("v{i}")), image.digest);
    }
    assert_eq!(
        layout::blob_digests(&back),
        layout::blob_digests(&source.dir)
    );

    // The balancer really spread the uploads: every replica took PATCH requests.
    let patched = replicas
        .iter()
        .filter(|r| r.logs().contains("\"method\":\"PATCH\""))
        .count();
    assert!(patched >= 2, "uploads were not spread over the replicas");

    // A replica with another key refuses this cluster's tokens cleanly and writes nothing.
    let stranger = Stowage::start_args(&{
        let mut f = s3.stowage_flags(&prefix);
        f.extend([
            "--upload-secret".to_owned(),
            "a different key, not this cluster's own".to_owned(),
        ]);
        f
    });
    let started = http
        .post(format!(
            "http://{}/v2/cluster/foreign/blobs/uploads/",
            lb.address
        ))
        .send()
        .await
        .unwrap();
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let refused = http
        .patch(stranger.url(&location))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_INVALID");
    let accepted = http
        .patch(format!("http://{}{location}", lb.address))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    assert_eq!(accepted.headers()["range"], "0-0");
}
