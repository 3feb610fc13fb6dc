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

/// A chunked upload through `lb` as a careful client does it: a chunk that failed (its replica
/// died) is sent again with the last token that worked; a 416 means the dead replica had
/// committed the chunk but its answer was lost, so the upload starts over, as docker does.
/// Returns the blob's digest.
async fn chunked_upload(http: reqwest::Client, lb: String, repo: String, data: Vec<u8>) -> String {
    let digest = sha256(&data);
    'upload: for _restart in 0..3 {
        let started = http
            .post(format!("http://{lb}/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        let mut location = started.headers()["location"].to_str().unwrap().to_owned();
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            let start = i * CHUNK;
            let mut attempt = 0;
            loop {
                let sent = http
                    .patch(format!("http://{lb}{location}"))
                    .header(
                        "content-range",
                        format!("{start}-{}", start + chunk.len() - 1),
                    )
                    .body(chunk.to_vec())
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == StatusCode::ACCEPTED => {
                        location = response.headers()["location"].to_str().unwrap().to_owned();
                        break;
                    }
                    Ok(response) if response.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                        eprintln!("{repo}: chunk {i} answered 416 after a retry; starting over");
                        continue 'upload;
                    }
                    other => {
                        attempt += 1;
                        assert!(attempt < 10, "chunk {i} of {repo} kept failing: {other:?}");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let finished = http
            .put(format!("http://{lb}{location}&digest={digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            finished.status(),
            StatusCode::CREATED,
            "{}",
            finished.text().await.unwrap()
        );
        return digest;
    }
    panic!("{repo}: the upload had to start over too often");
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
    let http = reqwest::Client::new();

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
