//! Pull-through caches in a chain, as teams build them (a cluster's cache in front of a site's,
//! in front of CNCF Distribution 2.8.2): what a client sees of a blob no cache holds yet, and
//! how fast the chain answers when the origin is down or hangs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stowage_e2e::layout::{self, Layout};
use stowage_e2e::{Distribution, Stowage, stowage_copied};

/// A cache on `root` mirroring `upstream` below `prefix`, with the upstream's `timeout`.
fn cache(dir: &Path, root: &str, prefix: &str, upstream: &str, timeout: &str) -> Stowage {
    let config = dir.join(format!("{root}.toml"));
    std::fs::write(
        &config,
        format!(
            "[[proxy.upstreams]]\nprefix = \"{prefix}\"\nurl = \"http://{upstream}\"\ntimeout = \"{timeout}\"\n"
        ),
    )
    .unwrap();
    Stowage::start(&dir.join(root), &["--config", config.to_str().unwrap()])
}

/// `Content-Length` as sent: reqwest reports a `HEAD`'s empty body instead.
fn length(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("content-length")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_of_a_blob_no_cache_holds_answers_the_upstreams_length_through_two_caches() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Distribution::start(&dir.path().join("origin"));
    let mut source = Layout::new(&dir.path().join("source"));
    let data = layout::filler(101_571, 9);
    let layer = stowage_e2e::sha256(&data);
    let image = source.raw_image(&[&data]);
    source.tag("v1", &image);
    stowage_copied(
        dir.path(),
        &[
            "--dest-tls-verify=false",
            &source.reference("v1"),
            &format!("docker://{}/team/app:v1", origin.address),
        ],
    );
    let site = cache(dir.path(), "site", "dist", &origin.address, "10s");
    let cluster = cache(dir.path(), "cluster", "site", &site.address, "10s");
    let http = stowage_e2e::http();
    let through = [(&site, "dist/team/app"), (&cluster, "site/dist/team/app")];

    for (registry, repository) in through {
        let head = http
            .head(registry.url(&format!("/v2/{repository}/blobs/{layer}")))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200, "{repository}");
        assert_eq!(
            length(&head),
            Some(101_571),
            "the upstream's length, not 0, through {repository}"
        );
        assert_eq!(header(&head, "docker-content-digest"), layer);
        assert_eq!(header(&head, "content-type"), "application/octet-stream");
    }
    let origin_gets = origin
        .requests()
        .into_iter()
        .filter(|(method, path)| method == "GET" && path.contains("/blobs/"))
        .count();
    assert_eq!(origin_gets, 0, "a HEAD fetches nothing");

    // Pulled once through both caches, the blob is whole, and a HEAD of the cached copy agrees.
    let pulled = http
        .get(cluster.url(&format!("/v2/site/dist/team/app/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), 200);
    assert_eq!(stowage_e2e::sha256(&pulled.bytes().await.unwrap()), layer);
    for (registry, repository) in through {
        let head = http
            .head(registry.url(&format!("/v2/{repository}/blobs/{layer}")))
            .send()
            .await
            .unwrap();
        assert_eq!(length(&head), Some(101_571), "cached, through {repository}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_of_caches_answers_within_its_timeout_when_the_origin_is_down_or_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let mut origin = Distribution::start(&dir.path().join("origin"));
    let site = cache(dir.path(), "site", "dist", &origin.address, "10s");
    let cluster = cache(dir.path(), "cluster", "site", &site.address, "3s");
    let http = stowage_e2e::http();
    let tag = cluster.url("/v2/site/dist/team/app/manifests/v1");

    // The origin is down: each cache says so at once, and the cluster's does not ask again
    // when the site's answers 502.
    origin.stop();
    let started = Instant::now();
    let answer = http.get(&tag).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(answer.status(), 502);
    assert!(
        took < Duration::from_secs(3),
        "within the cluster cache's 3 s timeout, retries included: {took:?}"
    );
    let asked = site
        .requests()
        .into_iter()
        .filter(|(_, path)| path == "/v2/dist/team/app/manifests/v1")
        .count();
    assert_eq!(asked, 1, "a 502 from the site's cache is not retried");

    // The site's cache hangs: the cluster's answers when its timeout runs out, not later.
    let pid = site.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let answer = http
        .get(cluster.url("/v2/site/dist/team/other/manifests/v1"))
        .send()
        .await;
    let took = started.elapsed();
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let answer = answer.unwrap();
    assert_eq!(answer.status(), 502);
    let message = answer.text().await.unwrap();
    assert!(
        message.contains(&site.address),
        "names the upstream: {message}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(4500),
        "the deadline is the 3 s timeout: {took:?}, answered {message:?}"
    );
}
