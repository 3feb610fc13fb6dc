//! The pull-through cache with real upstreams: CNCF Distribution 2.8.2 with htpasswd (Basic)
//! and a second Stowage with the token flow, pulled through by skopeo and plain HTTP. The
//! upstreams' own access logs count what the cache asked of them.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use stowage_e2e::layout::{self, Layout};
use stowage_e2e::{Distribution, Stowage, skopeo, stowage_copied, stowage_copy};

const ACCEPT: &str =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";

/// A Stowage whose config file lists `upstreams` (`[[proxy.upstreams]]` tables), on `root`.
fn mirror(dir: &Path, root: &Path, upstreams: &str) -> Stowage {
    mirror_with(dir, root, upstreams, &[])
}

/// As [`mirror`], with more flags.
fn mirror_with(dir: &Path, root: &Path, upstreams: &str, flags: &[&str]) -> Stowage {
    let config = dir.join(format!("proxy-{:08x}.toml", rand::random::<u32>()));
    std::fs::write(&config, upstreams).unwrap();
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend(flags);
    Stowage::start(root, &all)
}

/// Pushes `reference` (a layout image) to `target` with `creds`.
fn push(cache: &Path, reference: &str, target: &str, creds: Option<&str>) {
    let mut args = vec!["--dest-tls-verify=false", reference, target];
    if let Some(creds) = creds {
        args.extend(["--dest-creds", creds]);
    }
    stowage_copied(cache, &args);
}

fn blob_gets(requests: &[(String, String)], repository: &str) -> usize {
    let prefix = format!("/v2/{repository}/blobs/sha256:");
    requests
        .iter()
        .filter(|(method, path)| method == "GET" && path.starts_with(&prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_pulls_through_two_upstreams_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path();
    let accounts = crate::auth::Accounts::write(dir.path());
    let distribution =
        Distribution::start_with_htpasswd(&dir.path().join("dist"), &accounts.htpasswd);
    let flags = accounts.flags("bearer");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let upstream = Stowage::start(&dir.path().join("upstream"), &flags);

    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image(
        "amd64",
        &[
            &[("etc/motd", b"through")],
            &[("bin/app", &layout::filler(700_000, 4))],
        ],
    );
    source.tag("v1", &image);
    push(
        cache,
        &source.reference("v1"),
        &format!("docker://{}/team/app:v1", distribution.address),
        Some("alice:alice-secret"),
    );
    push(
        cache,
        &source.reference("v1"),
        &format!("docker://{}/team/app:v1", upstream.address),
        Some("alice:alice-secret"),
    );

    // bob may only pull, on both upstreams: all a mirror needs. Distribution's credentials are
    // named file by file; the other upstream's come as a directory, as a mounted Secret.
    let password = dir.path().join("bob.password");
    std::fs::write(&password, "bob-secret\n").unwrap();
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("username"), "bob").unwrap();
    std::fs::write(secret.join("password"), "bob-secret").unwrap();
    let proxy = mirror(
        dir.path(),
        &dir.path().join("mirror"),
        &format!(
            "[[proxy.upstreams]]\nprefix = \"dist\"\nurl = \"http://{}\"\nusername = \"bob\"\npassword-file = \"{}\"\n\n\
             [[proxy.upstreams]]\nprefix = \"stow/**\"\nurl = \"http://{}\"\ncredentials-dir = \"{}\"\n",
            distribution.address,
            password.display(),
            upstream.address,
            secret.display()
        ),
    );

    for prefix in ["dist", "stow"] {
        let remote = format!("docker://{}/{prefix}/team/app:v1", proxy.address);
        let first = dir.path().join(format!("first-{prefix}"));
        skopeo(&["copy", &remote, &format!("oci:{}:v1", first.display())]);
        assert_eq!(layout::tagged_digest(&first, "v1"), image.digest);
        assert_eq!(
            layout::blob_digests(&first),
            layout::blob_digests(&source.dir),
            "bit for bit, by digest"
        );

        let upstream_requests = || match prefix {
            "dist" => distribution.requests(),
            _ => upstream.requests(),
        };
        let before = blob_gets(&upstream_requests(), "team/app");
        assert_eq!(
            before, 3,
            "each blob fetched once from {prefix}: config and two layers"
        );
        let second = dir.path().join(format!("second-{prefix}"));
        skopeo(&["copy", &remote, &format!("oci:{}:v1", second.display())]);
        assert_eq!(
            layout::blob_digests(&second),
            layout::blob_digests(&source.dir)
        );
        assert_eq!(
            blob_gets(&upstream_requests(), "team/app"),
            before,
            "the second pull asked {prefix} for no blob"
        );
    }

    // Mirrored repositories are read-only; others beside them are the team's own.
    let refused = stowage_copy(
        cache,
        &[
            "--dest-tls-verify=false",
            "-q",
            &source.reference("v1"),
            &format!("docker://{}/dist/team/mine:v1", proxy.address),
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("read-only"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    push(
        cache,
        &source.reference("v1"),
        &format!("docker://{}/team/local:v1", proxy.address),
        None,
    );
    let http = stowage_e2e::http();
    let tags: Value = http
        .get(proxy.url("/v2/dist/team/app/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        tags["tags"],
        serde_json::json!(["v1"]),
        "what is cached is listed"
    );
}

/// `GET` of a manifest by tag: status, digest and `Warning`.
async fn manifest(http: &reqwest::Client, registry: &Stowage, path: &str) -> (u16, String, String) {
    let response = http
        .get(registry.url(&format!("/v2/{path}")))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (digest, warning) = (header("docker-content-digest"), header("warning"));
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (status, if status == 200 { digest } else { body }, warning)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_after_its_ttl_and_a_stopped_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path();
    let mut upstream = Distribution::start(&dir.path().join("dist"));
    let mut source = Layout::new(&dir.path().join("source"));
    let first = source.image("amd64", &[&[("version", b"1")]]);
    let second = source.image("amd64", &[&[("version", b"2")]]);
    let never_pushed = source.image("amd64", &[&[("version", b"3")]]);
    source.tag("one", &first);
    source.tag("two", &second);
    let moving = format!("docker://{}/team/app:moving", upstream.address);
    push(cache, &source.reference("one"), &moving, None);
    let proxy = mirror(
        dir.path(),
        &dir.path().join("mirror"),
        &format!(
            "[[proxy.upstreams]]\nprefix = \"dist\"\nurl = \"http://{}\"\ntag-ttl = \"2s\"\ntimeout = \"5s\"\n",
            upstream.address
        ),
    );
    let http = stowage_e2e::http();

    let (status, digest, _) = manifest(&http, &proxy, "dist/team/app/manifests/moving").await;
    assert_eq!((status, digest.as_str()), (200, first.digest.as_str()));
    push(cache, &source.reference("two"), &moving, None);
    let (_, digest, _) = manifest(&http, &proxy, "dist/team/app/manifests/moving").await;
    assert_eq!(
        digest, first.digest,
        "fresh for its TTL: the upstream is not asked"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_, digest, warning) = manifest(&http, &proxy, "dist/team/app/manifests/moving").await;
    assert_eq!(
        digest, second.digest,
        "revalidated after the TTL: the new digest"
    );
    assert!(warning.is_empty());
    let config = serde_json::from_slice::<Value>(
        &std::fs::read(
            source
                .dir
                .join("blobs/sha256")
                .join(second.digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap()["config"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let cached_blob = http
        .get(proxy.url(&format!("/v2/dist/team/app/blobs/{config}")))
        .send()
        .await
        .unwrap();
    assert_eq!(cached_blob.status(), 200);
    let config_bytes = cached_blob.bytes().await.unwrap();

    // The upstream goes down: what is cached still pulls, with a warning; the rest fails fast.
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, digest, warning) = manifest(&http, &proxy, "dist/team/app/manifests/moving").await;
    assert_eq!((status, digest.as_str()), (200, second.digest.as_str()));
    assert!(
        warning.contains("Stale"),
        "a stale tag is flagged: {warning:?}"
    );
    let (status, _, _) = manifest(
        &http,
        &proxy,
        &format!("dist/team/app/manifests/{}", second.digest),
    )
    .await;
    assert_eq!(status, 200, "content by digest needs no upstream");
    let again = http
        .get(proxy.url(&format!("/v2/dist/team/app/blobs/{config}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.bytes().await.unwrap(), config_bytes);
    let started = Instant::now();
    let (status, message, _) = manifest(&http, &proxy, "dist/team/other/manifests/v1").await;
    assert_eq!(status, 502, "{message}");
    assert!(
        message.contains(&upstream.address),
        "the error names the upstream: {message}"
    );
    let (status, _, _) = manifest(
        &http,
        &proxy,
        &format!("dist/team/app/manifests/{}", never_pushed.digest),
    )
    .await;
    assert_eq!(status, 502, "an uncached digest cannot be served");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failures come fast, not after a hang"
    );
}

/// A reverse proxy to `upstream` that flips a byte in the middle of every blob it serves.
async fn corrupting(upstream: String) -> String {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::Response;
    let http = stowage_e2e::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let forward = move |request: Request| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let mut headers = parts.headers.clone();
            headers.remove("host");
            let response = http
                .request(
                    parts.method.clone(),
                    format!("http://{upstream}{}", parts.uri),
                )
                .headers(headers)
                .body(body)
                .send()
                .await
                .unwrap();
            let mut builder = Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let mut bytes = response.bytes().await.unwrap().to_vec();
            if parts.method == "GET"
                && parts.uri.path().contains("/blobs/sha256:")
                && !bytes.is_empty()
            {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x01;
            }
            builder.body(Body::from(bytes)).unwrap()
        }
    };
    let app = axum::Router::new().fallback(forward);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupting_upstream_fails_the_pull_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Distribution::start(&dir.path().join("dist"));
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image("amd64", &[&[("data", &layout::filler(2 << 20, 8))]]);
    source.tag("v1", &image);
    push(
        dir.path(),
        &source.reference("v1"),
        &format!("docker://{}/team/app:v1", upstream.address),
        None,
    );
    let flipper = corrupting(upstream.address.clone()).await;
    let root = dir.path().join("mirror");
    let proxy = mirror(
        dir.path(),
        &root,
        &format!("[[proxy.upstreams]]\nprefix = \"dist\"\nurl = \"http://{flipper}\"\n"),
    );
    let http = stowage_e2e::http();

    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            source
                .dir
                .join("blobs/sha256")
                .join(image.digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let pulled = http
        .get(proxy.url(&format!("/v2/dist/team/app/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    let body = pulled.bytes().await;
    assert!(
        body.is_err(),
        "the client must not get a whole corrupt blob"
    );

    // skopeo's pull fails too, and nothing of the blob is stored.
    let failed = std::process::Command::new(stowage_e2e::require("skopeo"))
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/dist/team/app:v1", proxy.address))
        .arg(format!("oci:{}:v1", dir.path().join("out").display()))
        .output()
        .unwrap();
    assert!(!failed.status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hex = layer.trim_start_matches("sha256:");
    let data = root
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    assert!(!data.exists(), "no corrupt blob in storage");
    let repository = root.join("docker/registry/v2/repositories/dist/team/app");
    assert!(!repository.join("_layers/sha256").join(hex).exists());
    let uploads = repository.join("_uploads");
    assert!(
        !uploads.exists() || std::fs::read_dir(&uploads).unwrap().next().is_none(),
        "no upload left behind"
    );
    let again = http
        .get(proxy.url(&format!("/v2/dist/team/app/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert!(
        again.bytes().await.is_err(),
        "nothing corrupt was cached to serve later"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_through_two_replicas_fetch_once_each() {
    const LAYER: usize = 100 << 20;
    let dir = tempfile::tempdir().unwrap();
    let upstream = Distribution::start(&dir.path().join("dist"));
    let mut source = Layout::new(&dir.path().join("source"));
    let layers = [layout::filler(LAYER, 31), layout::filler(LAYER, 32)];
    let image = source.raw_image(&[&layers[0], &layers[1]]);
    source.tag("v1", &image);
    let digests: Vec<String> = layers.iter().map(|l| stowage_e2e::sha256(l)).collect();
    drop(layers);
    push(
        dir.path(),
        &source.reference("v1"),
        &format!("docker://{}/team/big:v1", upstream.address),
        None,
    );

    let config = format!(
        "[[proxy.upstreams]]\nprefix = \"dist\"\nurl = \"http://{}\"\n",
        upstream.address
    );
    let shared = dir.path().join("shared");
    let replicas = [
        mirror(dir.path(), &shared, &config),
        mirror(dir.path(), &shared, &config),
    ];
    let http = stowage_e2e::http();
    let pulls = (0..20).map(|i| {
        let (http, base) = (http.clone(), replicas[i % 2].url(""));
        let digests = digests.clone();
        tokio::spawn(async move {
            let manifest = http
                .get(format!("{base}/v2/dist/team/big/manifests/v1"))
                .header("accept", ACCEPT)
                .send()
                .await
                .unwrap();
            assert_eq!(manifest.status(), 200);
            for digest in &digests {
                let response = http
                    .get(format!("{base}/v2/dist/team/big/blobs/{digest}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
                let mut body = response.bytes_stream();
                while let Some(chunk) = body.next().await {
                    sha2::Digest::update(&mut hasher, chunk.unwrap());
                }
                let got = format!(
                    "sha256:{}",
                    sha2::Digest::finalize(hasher)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                );
                assert_eq!(&got, digest, "every pull is bit-identical");
            }
        })
    });
    for pull in futures::future::join_all(pulls).await {
        pull.unwrap();
    }
    let requests = upstream.requests();
    for digest in &digests {
        let fetched = requests
            .iter()
            .filter(|(m, p)| m == "GET" && p.ends_with(digest.as_str()))
            .count();
        assert!(
            (1..=2).contains(&fetched),
            "{digest} fetched {fetched} times for 20 pulls on 2 replicas"
        );
    }
    for replica in &replicas {
        let peak = replica.peak_rss_kib() / 1024;
        assert!(
            peak < 96,
            "a replica peaked at {peak} MiB streaming 100 MiB blobs"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_drops_mirrors_nobody_pulled_within_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Distribution::start(&dir.path().join("dist"));
    let mut source = Layout::new(&dir.path().join("source"));
    let old = source.image("amd64", &[&[("old", b"pulled long ago")]]);
    let new = source.image("amd64", &[&[("new", b"pulled just now")]]);
    source.tag("old", &old);
    source.tag("new", &new);
    for (tag, repository) in [("old", "team/old"), ("new", "team/new")] {
        push(
            dir.path(),
            &source.reference(tag),
            &format!("docker://{}/{repository}:v1", upstream.address),
            None,
        );
    }
    let root = dir.path().join("mirror");
    let config = dir.path().join("retention.toml");
    std::fs::write(
        &config,
        format!("[proxy]\nretention = \"3s\"\n\n[[proxy.upstreams]]\nprefix = \"dist\"\nurl = \"http://{}\"\n", upstream.address),
    )
    .unwrap();
    let proxy = Stowage::start(&root, &["--config", config.to_str().unwrap()]);
    push(
        dir.path(),
        &source.reference("old"),
        &format!("docker://{}/team/local:v1", proxy.address),
        None,
    );
    let pull = |repository: &str| {
        skopeo(&[
            "inspect",
            "--raw",
            &format!("docker://{}/{repository}:v1", proxy.address),
        ]);
    };
    pull("dist/team/old");
    tokio::time::sleep(Duration::from_secs(4)).await;
    pull("dist/team/new");

    let gc = stowage_e2e::run(
        std::process::Command::new(stowage_e2e::stowage_bin())
            .args([
                "gc",
                "--fs-root",
                root.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ])
            .args([
                "--grace-period",
                "0s",
                "--sweep-wait",
                "10s",
                "--output",
                "json",
                "--log-level",
                "warn",
            ]),
    );
    let report: Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(report["mirrors_expired"], 1, "{report}");
    let repositories = root.join("docker/registry/v2/repositories");
    assert!(
        !repositories.join("dist/team/old").exists(),
        "the unused mirror is gone"
    );
    assert!(
        repositories.join("dist/team/new").exists(),
        "the recently pulled one stays"
    );
    assert!(
        repositories.join("team/local").exists(),
        "pushed repositories are never expired"
    );
    // The local repository shares the old image's blobs: they stay; the next pull of the
    // expired mirror simply fetches it again.
    skopeo(&[
        "inspect",
        "--raw",
        &format!("docker://{}/team/local:v1", proxy.address),
    ]);
    pull("dist/team/old");
}

/// The value of one `stowage_proxy_requests_total` series.
async fn proxy_count(metrics: &str, kind: &str, outcome: &str) -> f64 {
    let series = format!(
        "stowage_proxy_requests_total{{upstream=\"dist\",kind=\"{kind}\",outcome=\"{outcome}\"}}"
    );
    stowage_e2e::metric(metrics, &series).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_platform_of_an_index_is_all_that_is_cached_and_outcomes_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Distribution::start(&dir.path().join("dist"));
    let mut source = Layout::new(&dir.path().join("source"));
    let amd64 = source.image("amd64", &[&[("arch", b"amd64")]]);
    let arm64 = source.image("arm64", &[&[("arch", b"arm64")]]);
    let index = source.index(&[("amd64", &amd64), ("arm64", &arm64)]);
    source.tag("multi", &index);
    skopeo(&[
        "copy",
        "--all",
        &source.reference("multi"),
        &format!("docker://{}/team/multi:v1", upstream.address),
    ]);
    let metrics = format!("127.0.0.1:{}", stowage_e2e::free_port());
    let root = dir.path().join("mirror");
    let upstreams = format!(
        "[[proxy.upstreams]]\nprefix = \"dist\"\nurl = \"http://{}\"\n",
        upstream.address
    );
    let proxy = mirror_with(
        dir.path(),
        &root,
        &upstreams,
        &["--metrics-listen", &metrics],
    );

    // skopeo without --all takes the platform it runs on, amd64.
    let out = dir.path().join("out");
    skopeo(&[
        "copy",
        "--override-arch",
        "amd64",
        &format!("docker://{}/dist/team/multi:v1", proxy.address),
        &format!("oci:{}:v1", out.display()),
    ]);
    assert_eq!(layout::tagged_digest(&out, "v1"), amd64.digest);
    let revisions =
        root.join("docker/registry/v2/repositories/dist/team/multi/_manifests/revisions/sha256");
    let cached = |digest: &str| {
        revisions
            .join(digest.trim_start_matches("sha256:"))
            .exists()
    };
    assert!(
        cached(&index.digest) && cached(&amd64.digest),
        "the index and the platform pulled"
    );
    assert!(!cached(&arm64.digest), "not the other platform");

    assert_eq!(
        proxy_count(&metrics, "manifest", "miss").await,
        2.0,
        "the index by tag, amd64 by digest"
    );
    assert_eq!(
        proxy_count(&metrics, "blob", "miss").await,
        2.0,
        "config and layer"
    );
    skopeo(&[
        "copy",
        "--override-arch",
        "amd64",
        &format!("docker://{}/dist/team/multi:v1", proxy.address),
        &format!("oci:{}:again", out.display()),
    ]);
    assert!(
        proxy_count(&metrics, "manifest", "hit").await >= 1.0,
        "amd64 by digest from the cache"
    );
    assert!(proxy_count(&metrics, "blob", "hit").await >= 1.0);
    let http = stowage_e2e::http();
    let missing = http
        .get(proxy.url("/v2/dist/team/nothing/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        missing.status(),
        404,
        "a tag the upstream lacks is the spec's 404"
    );
}
