//! The web interface on S3 (a Garage started here), release build: time to first byte of the
//! repository list with 1,000 repositories (the first view walks the catalog; later ones, even
//! past its 10 s time to live, do not wait for a walk), a search, and a repository's tags page with 1,000 tags (50 a page),
//! beside the API's own listings of the same. Printed, not asserted.
//! `STOWAGE_BENCH_UI_REPOSITORIES` and `STOWAGE_BENCH_UI_TAGS` change the sizes.

// A benchmark reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use stowage_e2e::Stowage;
use stowage_e2e::garage::Garage;

const VIEWS: usize = 20;
const PUSHES_AT_ONCE: usize = 16;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pushes one blob to `repository`, returning its digest.
async fn push_blob(http: &reqwest::Client, base: &str, repository: &str, data: &[u8]) -> String {
    let digest = stowage_e2e::sha256(data);
    let response = http
        .post(format!(
            "{base}/v2/{repository}/blobs/uploads/?digest={digest}"
        ))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    digest
}

async fn put_manifest(http: &reqwest::Client, base: &str, repository: &str, tag: &str, body: &str) {
    let response = http
        .put(format!("{base}/v2/{repository}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

/// A manifest over the config and layer, made distinct by `n`.
fn manifest(config: &str, layer: &str, n: usize) -> String {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 5}],
        "annotations": {"n": n.to_string()},
    })
    .to_string()
}

/// Time to the response's headers (the pages are rendered whole before the first byte), over
/// `VIEWS` views: the first, and the median of the rest.
async fn ttfb(http: &reqwest::Client, url: &str) -> (Duration, Duration) {
    let mut times = Vec::new();
    for _ in 0..VIEWS {
        let started = Instant::now();
        let response = http.get(url).send().await.unwrap();
        times.push(started.elapsed());
        assert_eq!(response.status(), 200, "{url}");
        response.bytes().await.unwrap();
    }
    let first = times[0];
    let mut rest = times[1..].to_vec();
    rest.sort();
    (first, rest[rest.len() / 2])
}

#[tokio::main]
async fn main() {
    let repositories = size("STOWAGE_BENCH_UI_REPOSITORIES", 1000);
    let tags = size("STOWAGE_BENCH_UI_TAGS", 1000);
    let scratch = tempfile::Builder::new()
        .prefix("stowage-bench-ui")
        .tempdir_in(std::env::current_dir().unwrap())
        .unwrap();
    let garage = Garage::start(&scratch.path().join("garage"));
    let binary = stowage_e2e::build_dir().join("stowage");
    assert!(
        binary.exists(),
        "build the server first: cargo build --release -p stowage"
    );
    let mut args = garage.endpoint.stowage_flags("ui-bench");
    args.extend(["--ui".to_owned(), "true".to_owned()]);
    let registry = Stowage::start_with_binary(&binary, &args);
    let base = format!("http://{}", registry.address);
    let http = stowage_e2e::http();

    let started = Instant::now();
    let config = push_blob(&http, &base, "big", b"{}").await;
    let layer = push_blob(&http, &base, "big", b"layer").await;
    futures::stream::iter(0..tags)
        .map(|n| {
            let (http, base) = (http.clone(), base.clone());
            let body = manifest(&config, &layer, n);
            async move { put_manifest(&http, &base, "big", &format!("v{n}"), &body).await }
        })
        .buffer_unordered(PUSHES_AT_ONCE)
        .collect::<Vec<()>>()
        .await;
    futures::stream::iter(0..repositories)
        .map(|n| {
            let (http, base) = (http.clone(), base.clone());
            let body = manifest(&config, &layer, n);
            async move {
                let repository = format!("team-{:02}/app-{n:04}", n % 20);
                push_blob(&http, &base, &repository, b"{}").await;
                push_blob(&http, &base, &repository, b"layer").await;
                put_manifest(&http, &base, &repository, "latest", &body).await;
            }
        })
        .buffer_unordered(PUSHES_AT_ONCE)
        .collect::<Vec<()>>()
        .await;
    println!(
        "web interface on S3 (Garage): {repositories} repositories and a repository of {tags} tags, \
         filled in {:.1} s; time to first byte, first view / median of the next {}",
        started.elapsed().as_secs_f64(),
        VIEWS - 1
    );
    let pages = [
        ("repositories, page 1", "/ui/".to_owned()),
        ("repositories, 10 s later", "/ui/".to_owned()),
        (
            "repositories, last page",
            format!("/ui/?page={}", repositories.div_ceil(50)),
        ),
        ("search (50 matches)", "/ui/?q=team-07".to_owned()),
        ("tags, page 1 of 1,000", "/ui/r/big".to_owned()),
        ("tags, page 10", "/ui/r/big?page=10".to_owned()),
        (
            "an image",
            format!(
                "/ui/r/big/-/m/{}?tag=v1",
                stowage_e2e::sha256(manifest(&config, &layer, 1).as_bytes())
            ),
        ),
        ("API: catalog, all", "/v2/_catalog".to_owned()),
        ("API: tags list, all", "/v2/big/tags/list".to_owned()),
    ];
    for (what, path) in pages {
        if what.ends_with("later") {
            // Past the catalog's time to live: the view is served the list it has while a walk
            // replaces it.
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        let (first, median) = ttfb(&http, &format!("{base}{path}")).await;
        println!(
            "  {what:<26} {:>8.1} ms  {:>8.1} ms",
            first.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3
        );
    }
    drop(registry);
    drop(garage);
}
