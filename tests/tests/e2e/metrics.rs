//! `/metrics` on its own listener: parsed with a Prometheus text-format parser, its counters
//! move by exactly what a known sequence of requests should move them by.

use base64::Engine;
use stowage_e2e::{Stowage, free_port, sha256};

/// The samples of one scrape, by metric name and labels.
pub(crate) struct Scrape(Vec<prometheus_parse::Sample>);

impl Scrape {
    pub(crate) async fn take(http: &reqwest::Client, address: &str) -> Self {
        let text = http
            .get(format!("http://{address}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format");
        Self(parsed.samples)
    }

    /// The value of `name` with exactly these labels (0 when absent).
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.total(name, |s| s.labels.len() == labels.len() && has(s, labels))
    }

    /// The sum of `name` over every label set whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.total(name, |s| has(s, labels))
    }

    fn total(&self, name: &str, keep: impl Fn(&prometheus_parse::Sample) -> bool) -> f64 {
        self.0
            .iter()
            .filter(|s| s.metric == name && keep(s))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }
}

/// Whether `sample` carries every one of `labels`.
fn has(sample: &prometheus_parse::Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| sample.labels.get(k).is_some_and(|found| found == *v))
}

#[tokio::test]
async fn counters_move_by_what_the_requests_did() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("ci:{}\n", bcrypt::hash("ci-pw", 4).unwrap()),
    )
    .unwrap();
    let metrics_address = format!("127.0.0.1:{}", free_port());
    let registry = Stowage::start(
        &dir.path().join("data"),
        &[
            "--metrics-listen",
            &metrics_address,
            "--htpasswd",
            htpasswd.to_str().unwrap(),
        ],
    );
    let http = stowage_e2e::http();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ci:ci-pw")
    );
    let before = Scrape::take(&http, &metrics_address).await;
    assert_eq!(
        before.value(
            "stowage_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(before.value("stowage_storage_available", &[]), 1.0);

    // A blob pushed whole, and one in a session of two requests.
    let whole = vec![7u8; 1000];
    let response = http
        .post(registry.url(&format!(
            "/v2/m/app/blobs/uploads/?digest={}",
            sha256(&whole)
        )))
        .header("authorization", &basic)
        .body(whole.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let started = http
        .post(registry.url("/v2/m/app/blobs/uploads/"))
        .header("authorization", &basic)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = registry.url(started.headers()["location"].to_str().unwrap());
    let chunk = vec![9u8; 500];
    let patched = http
        .patch(&location)
        .header("authorization", &basic)
        .body(chunk.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 202);
    let location = registry.url(patched.headers()["location"].to_str().unwrap());
    let finished = http
        .put(format!("{location}&digest={}", sha256(&chunk)))
        .header("authorization", &basic)
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), 201);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&whole), "size": 1000},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&chunk), "size": 500}],
    })
    .to_string();
    let put = http
        .put(registry.url("/v2/m/app/manifests/v1"))
        .header("authorization", &basic)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    for _ in 0..3 {
        let got = http
            .get(registry.url("/v2/m/app/manifests/v1"))
            .header("authorization", &basic)
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        assert_eq!(got.bytes().await.unwrap().len(), manifest.len());
    }
    let missing = http
        .get(registry.url(&format!("/v2/m/app/blobs/{}", sha256(b"absent"))))
        .header("authorization", &basic)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let anonymous = http
        .get(registry.url("/v2/m/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // A method a client makes up is counted as `other`, so it cannot add series.
    let made_up = http
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            registry.url("/v2/m/app/manifests/v1"),
        )
        .header("authorization", &basic)
        .send()
        .await
        .unwrap();
    assert_eq!(made_up.status(), 405);

    let after = Scrape::take(&http, &metrics_address).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let requests = "stowage_http_requests_total";
    assert_eq!(
        moved(
            requests,
            &[("route", "uploads"), ("method", "POST"), ("status", "2xx")]
        ),
        2.0
    );
    assert_eq!(
        moved(
            requests,
            &[("route", "upload"), ("method", "PATCH"), ("status", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            requests,
            &[("route", "upload"), ("method", "PUT"), ("status", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            requests,
            &[("route", "manifest"), ("method", "PUT"), ("status", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            requests,
            &[("route", "manifest"), ("method", "GET"), ("status", "2xx")]
        ),
        3.0
    );
    assert_eq!(
        moved(
            requests,
            &[("route", "blob"), ("method", "GET"), ("status", "4xx")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            requests,
            &[("route", "manifest"), ("method", "GET"), ("status", "4xx")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            requests,
            &[
                ("route", "manifest"),
                ("method", "other"),
                ("status", "4xx")
            ]
        ),
        1.0
    );
    assert!(
        after
            .0
            .iter()
            .all(|s| s.labels.get("method") != Some("BREW"))
    );
    assert_eq!(moved("stowage_uploads_started_total", &[]), 2.0);
    assert_eq!(moved("stowage_uploads_finished_total", &[]), 2.0);
    assert_eq!(after.value("stowage_uploads_in_flight", &[]), 0.0);
    assert_eq!(
        moved("stowage_http_received_bytes_total", &[]),
        (1000 + 500 + manifest.len()) as f64
    );
    assert!(moved("stowage_http_sent_bytes_total", &[]) >= (3 * manifest.len()) as f64);
    assert_eq!(
        moved("stowage_auth_failures_total", &[("reason", "unauthorized")]),
        1.0
    );
    assert_eq!(
        moved(
            "stowage_http_request_duration_seconds_count",
            &[("route", "manifest"), ("method", "GET")]
        ),
        4.0
    );
    // Storage calls, by operation and outcome: the missing blob was a not-found answer.
    assert!(after.sum("stowage_storage_operations_total", &[("outcome", "ok")]) > 0.0);
    assert!(
        after.sum(
            "stowage_storage_operations_total",
            &[("outcome", "not_found")]
        ) >= 1.0
    );
    assert_eq!(
        after.sum("stowage_storage_operations_total", &[("outcome", "error")]),
        0.0
    );
    // No route label is ever a repository name.
    assert!(
        after
            .0
            .iter()
            .all(|s| s.labels.get("route").is_none_or(|r| !r.contains('/')))
    );
    dashboard_queries_only_what_exists(&after);
}

/// Every metric the Grafana dashboard queries is one the server exports.
fn dashboard_queries_only_what_exists(scrape: &Scrape) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/stowage.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut exported: std::collections::BTreeSet<String> =
        scrape.0.iter().map(|s| s.metric.clone()).collect();
    // Histograms: the parser names their buckets by the histogram.
    let histograms: Vec<String> = exported
        .iter()
        .filter_map(|name| name.strip_suffix("_count").map(str::to_owned))
        .collect();
    exported.extend(histograms.iter().map(|base| format!("{base}_bucket")));
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                queried += 1;
                assert!(
                    exported.contains(&name),
                    "panel {:?} queries {name}, which the server does not export",
                    panel["title"]
                );
            }
        }
    }
    assert!(queried >= 10, "the dashboard queries the server's metrics");
}

/// The `stowage_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("stowage_") {
        let name: String = rest[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[start + name.len()..];
        names.push(name);
    }
    names
}
