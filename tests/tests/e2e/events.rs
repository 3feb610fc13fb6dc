//! Registry events at a real receiver: what skopeo's push, pull, a tag delete and a mount
//! produce, in Distribution's format and compared with CNCF Distribution 2.8.2's own events for
//! the same operations; a receiver that is down for a while, and a replica killed right after a
//! push, lose nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use stowage_e2e::layout::{self, Layout};
use stowage_e2e::{Distribution, Stowage, skopeo};

const SIGNING_KEY: &str = "an-e2e-webhook-key";

/// A webhook receiver: keeps every event it accepts, and answers 503 while `down`.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    events: Arc<Mutex<Vec<Value>>>,
    posts: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    down: Arc<AtomicBool>,
}

impl Receiver {
    pub(crate) async fn start() -> (Self, String) {
        let receiver = Self::default();
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    if state.down.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let envelope: Value = serde_json::from_slice(&body).unwrap();
                    let events = envelope["events"].as_array().unwrap().clone();
                    state.events.lock().unwrap().extend(events);
                    state.posts.lock().unwrap().push((headers, body));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `wanted` holds for the events received, up to `within`.
    pub(crate) async fn until(
        &self,
        within: Duration,
        wanted: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let events = self.events();
            if wanted(&events) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "events never arrived: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn find<'a>(events: &'a [Value], action: &str, test: impl Fn(&Value) -> bool) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["action"] == action && test(&e["target"]))
        .collect()
}

/// A config file sending events to `url`, signed; `takeover` for events other replicas left.
pub(crate) fn config(dir: &std::path::Path, url: &str, takeover: &str) -> std::path::PathBuf {
    let key = dir.join("signing.key");
    std::fs::write(&key, format!("{SIGNING_KEY}\n")).unwrap();
    let path = dir.join("events.toml");
    std::fs::write(
        &path,
        format!(
            "[notifications]\ntakeover-after = \"{takeover}\"\n\n[[notifications.endpoints]]\nname = \"e2e\"\n\
             url = \"{url}\"\nbackoff = \"200ms\"\nsigning-key-file = \"{}\"\nheaders = {{ \"X-Team\" = \"platform\" }}\n",
            key.display()
        ),
    )
    .unwrap();
    path
}

fn image(dir: &std::path::Path) -> (Layout, layout::Written) {
    let mut source = Layout::new(&dir.join("source"));
    let image = source.image(
        "amd64",
        &[
            &[("etc/motd", b"events")],
            &[("bin/app", &layout::filler(50_000, 2))],
        ],
    );
    source.tag("v1", &image);
    (source, image)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_pull_tag_delete_and_mount_reach_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start().await;
    let accounts = crate::auth::Accounts::write(dir.path());
    let mut flags = accounts.flags("basic");
    let config = config(dir.path(), &url, "30s");
    flags.extend(["--config".to_owned(), config.to_str().unwrap().to_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let registry = Stowage::start(&dir.path().join("data"), &flags);
    let (source, image) = image(dir.path());
    let remote = format!("docker://{}/team/app:v1", registry.address);
    skopeo(&[
        "copy",
        "--dest-creds",
        "alice:alice-secret",
        &source.reference("v1"),
        &remote,
    ]);
    skopeo(&["inspect", "--creds", "bob:bob-secret", "--raw", &remote]);
    let copied = stowage_e2e::stowage_copied(
        dir.path(),
        &[
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-creds",
            "alice:alice-secret",
            "--dest-creds",
            "alice:alice-secret",
            &remote,
            &format!("docker://{}/team/other:v1", registry.address),
        ],
    );
    assert_eq!(copied["blobs_mounted"], 3);
    let deleted = stowage_e2e::http()
        .delete(registry.url("/v2/team/app/manifests/v1"))
        .basic_auth("alice", Some("alice-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);

    let events = receiver
        .until(Duration::from_secs(15), |events| {
            !find(events, "delete", |_| true).is_empty()
                && find(events, "mount", |_| true).len() == 3
        })
        .await;
    let manifest_push = find(&events, "push", |t| {
        t["digest"] == image.digest.as_str() && t["repository"] == "team/app"
    });
    assert_eq!(manifest_push.len(), 1, "{events:#?}");
    let push = manifest_push[0];
    assert_eq!(push["target"]["tag"], "v1");
    assert_eq!(push["target"]["mediaType"], layout::OCI_MANIFEST);
    assert_eq!(push["target"]["size"], image.size);
    assert_eq!(
        push["target"]["url"],
        format!(
            "http://{}/v2/team/app/manifests/{}",
            registry.address, image.digest
        )
    );
    assert_eq!(push["actor"]["name"], "alice");
    assert_eq!(push["request"]["method"], "PUT");
    assert!(
        push["request"]["useragent"]
            .as_str()
            .unwrap()
            .contains("skopeo"),
        "{push}"
    );
    assert!(!push["source"]["instanceID"].as_str().unwrap().is_empty());
    let blob_pushes = find(&events, "push", |t| {
        t["mediaType"] == "application/octet-stream"
    });
    assert_eq!(blob_pushes.len(), 3, "config and two layers");
    // skopeo's inspect (bob) and the copy's read of its source (alice).
    let pulls = find(&events, "pull", |t| {
        t["repository"] == "team/app" && t["tag"] == "v1"
    });
    let mut pullers: Vec<&str> = pulls
        .iter()
        .map(|e| e["actor"]["name"].as_str().unwrap())
        .collect();
    pullers.sort_unstable();
    assert_eq!(pullers, ["alice", "bob"]);
    let mounts = find(&events, "mount", |t| {
        t["fromRepository"] == "team/app" && t["repository"] == "team/other"
    });
    assert_eq!(mounts.len(), 3);
    let delete = find(&events, "delete", |t| {
        t["tag"] == "v1" && t["repository"] == "team/app"
    });
    assert_eq!(delete.len(), 1);

    // Every body carries the headers asked for and a signature of itself.
    for (headers, body) in receiver.posts.lock().unwrap().iter() {
        assert_eq!(
            headers["content-type"],
            "application/vnd.docker.distribution.events.v1+json"
        );
        assert_eq!(headers["x-team"], "platform");
        let signature = headers["x-stowage-signature"].to_str().unwrap();
        assert_eq!(
            signature,
            stowage::events::signature(SIGNING_KEY.as_bytes(), body)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_was_down_gets_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let config = config(dir.path(), &url, "30s");
    let metrics = format!("127.0.0.1:{}", stowage_e2e::free_port());
    let registry = Stowage::start(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--metrics-listen",
            &metrics,
        ],
    );
    let (source, _) = image(dir.path());
    for tag in ["a", "b", "c"] {
        skopeo(&[
            "copy",
            &source.reference("v1"),
            &format!("docker://{}/team/app:{tag}", registry.address),
        ]);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.events().is_empty());
    let failed = stowage_e2e::metric(
        &metrics,
        "stowage_event_deliveries_failed_total{endpoint=\"e2e\"}",
    )
    .await;
    assert!(failed.unwrap() >= 1.0, "failed deliveries are counted");
    let pending = stowage_e2e::metric(&metrics, "stowage_events_pending{endpoint=\"e2e\"}").await;
    assert!(pending.unwrap() >= 1.0, "pending events are counted");

    receiver.down.store(false, Ordering::SeqCst);
    let events = receiver
        .until(Duration::from_secs(20), |events| {
            find(events, "push", |t| t["tag"].is_string()).len() == 3
        })
        .await;
    // Three blobs pushed once (skopeo skips them after), three manifest pushes with their tags.
    let ids: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "each event once, here");
    let tags: std::collections::BTreeSet<&str> = find(&events, "push", |t| t["tag"].is_string())
        .iter()
        .map(|e| e["target"]["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["a", "b", "c"].into_iter().collect());
}

#[tokio::test(flavor = "multi_thread")]
async fn events_of_a_replica_killed_after_a_push_are_still_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let config = config(dir.path(), &url, "2s");
    let root = dir.path().join("data");
    let mut first = Stowage::start(&root, &["--config", config.to_str().unwrap()]);
    let (source, image) = image(dir.path());
    skopeo(&[
        "copy",
        &source.reference("v1"),
        &format!("docker://{}/team/app:v1", first.address),
    ]);
    first.kill();
    receiver.down.store(false, Ordering::SeqCst);
    // Another replica on the same storage takes the dead one's events over.
    let _second = Stowage::start(&root, &["--config", config.to_str().unwrap()]);
    let events = receiver
        .until(Duration::from_secs(20), |events| {
            !find(events, "push", |t| t["tag"] == "v1").is_empty()
        })
        .await;
    let push = find(&events, "push", |t| t["tag"] == "v1")[0];
    assert_eq!(push["target"]["digest"], image.digest.as_str());
    assert_eq!(
        find(&events, "push", |t| t["mediaType"]
            == "application/octet-stream")
        .len(),
        3
    );
}

/// Picks events by their target.
type TargetTest = fn(&Value) -> bool;

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn events_match_distributions_for_the_same_operations() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, our_url) = Receiver::start().await;
    let (theirs, their_url) = Receiver::start().await;
    let config = config(dir.path(), &our_url, "30s");
    let stowage = Stowage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let distribution = Distribution::start_with_notifications(&dir.path().join("dist"), &their_url);
    let (source, image) = image(dir.path());
    for (address, receiver) in [(&stowage.address, &ours), (&distribution.address, &theirs)] {
        let remote = format!("docker://{address}/team/app:v1");
        skopeo(&["copy", &source.reference("v1"), &remote]);
        skopeo(&["inspect", "--raw", &remote]);
        // A cross-repository mount of every blob, then a manifest delete by digest.
        stowage_e2e::stowage_copied(
            dir.path(),
            &[
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                &remote,
                &format!("docker://{address}/team/other:v1"),
            ],
        );
        let deleted = stowage_e2e::http()
            .delete(format!(
                "http://{address}/v2/team/other/manifests/{}",
                image.digest
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 202);
        receiver
            .until(Duration::from_secs(15), |events| {
                !find(events, "pull", |t| t["digest"] == image.digest.as_str()).is_empty()
                    && !find(events, "push", |t| t["digest"] == image.digest.as_str()).is_empty()
                    && find(events, "mount", |_| true).len() == 3
                    && find(events, "delete", |_| true).len() == 2
            })
            .await;
    }
    let (ours, theirs) = (ours.events(), theirs.events());
    for (action, what) in [
        ("push", image.digest.as_str()),
        ("pull", image.digest.as_str()),
    ] {
        let a = find(&ours, action, |t| t["digest"] == what)[0];
        let b = find(&theirs, action, |t| t["digest"] == what)[0];
        assert_eq!(keys(a), keys(b), "{action}: the same fields");
        assert_eq!(keys(&a["request"]), keys(&b["request"]));
        assert_eq!(keys(&a["source"]), keys(&b["source"]));
        for field in ["mediaType", "digest", "size", "length", "repository", "tag"] {
            assert_eq!(
                a["target"][field], b["target"][field],
                "{action}: target.{field}"
            );
        }
        assert_eq!(a["request"]["method"], b["request"]["method"]);
        assert_eq!(a["request"]["useragent"], b["request"]["useragent"]);
        let path = |event: &Value| {
            event["target"]["url"]
                .as_str()
                .unwrap()
                .split_once("/v2/")
                .unwrap()
                .1
                .to_owned()
        };
        assert_eq!(path(a), path(b), "{action}: the same URL path");
    }
    // A mount; the delete of the manifest; the delete of the tag it untagged.
    let kinds: [(&str, TargetTest); 3] = [
        ("mount", |_| true),
        ("delete", |t| t["digest"].is_string()),
        ("delete", |t| t["tag"].is_string()),
    ];
    for (action, which) in kinds {
        let pick = |events: &[Value]| -> Value {
            let mut all: Vec<&Value> = find(events, action, which);
            all.sort_by_key(|e| {
                e["target"]["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            });
            (*all
                .first()
                .unwrap_or_else(|| panic!("no {action} event: {events:#?}")))
            .clone()
        };
        let (a, b) = (pick(&ours), pick(&theirs));
        assert_eq!(keys(&a), keys(&b), "{action}: the same fields");
        assert_eq!(
            keys(&a["target"]),
            keys(&b["target"]),
            "{action}: the same target fields\n{a:#}\n{b:#}"
        );
        for field in [
            "mediaType",
            "digest",
            "size",
            "length",
            "repository",
            "fromRepository",
            "tag",
        ] {
            assert_eq!(
                a["target"][field], b["target"][field],
                "{action}: target.{field}"
            );
        }
    }
    // Blob pushes, as Distribution reports them.
    let blob = |events: &[Value]| -> Vec<String> {
        let mut digests: Vec<String> = find(events, "push", |t| {
            t["mediaType"] == "application/octet-stream"
        })
        .iter()
        .map(|e| e["target"]["digest"].as_str().unwrap().to_owned())
        .collect();
        digests.sort();
        digests
    };
    assert_eq!(blob(&ours), blob(&theirs));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_told_to_stop_delivers_its_events_in_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    // No other replica, and no takeover within the test: only the stopping one can deliver.
    let config = config(dir.path(), &url, "1h");
    let mut registry = Stowage::start(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--shutdown-grace",
            "20s",
        ],
    );
    let (source, image) = image(dir.path());
    skopeo(&[
        "copy",
        &source.reference("v1"),
        &format!("docker://{}/team/app:v1", registry.address),
    ]);
    registry.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        registry.wait_exit(Duration::ZERO).is_none(),
        "it waits to deliver"
    );
    receiver.down.store(false, Ordering::SeqCst);
    let events = receiver
        .until(Duration::from_secs(15), |events| {
            !find(events, "push", |t| t["tag"] == "v1").is_empty()
        })
        .await;
    assert_eq!(
        find(&events, "push", |t| t["tag"] == "v1")[0]["target"]["digest"],
        image.digest.as_str()
    );
    let status = registry
        .wait_exit(Duration::from_secs(10))
        .expect("it exits once delivered");
    assert!(status.success(), "{status}");
}
