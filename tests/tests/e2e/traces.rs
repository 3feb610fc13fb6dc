//! OpenTelemetry traces, when the standard `OTEL_*` variables ask for them: an OTLP/HTTP
//! collector in the test decodes what the server exports, and finds a span per request with
//! the storage calls as its children, under the trace id the JSON access log names.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use stowage_e2e::Stowage;

/// Spans received, with the `service.name` of their resource.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

async fn collector() -> (Received, String) {
    let received: Received = Arc::default();
    let state = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let state = Arc::clone(&state);
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            state.lock().unwrap().push((service.clone(), span));
                        }
                    }
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (received, url)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_is_a_span_with_its_storage_calls_as_children() {
    let dir = tempfile::tempdir().unwrap();
    let (received, endpoint) = collector().await;
    let registry = Stowage::start_with_env(
        &dir.path().join("data"),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "stowage-e2e"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let http = stowage_e2e::http();
    let blob = b"{}";
    let digest = stowage_e2e::sha256(blob);
    let pushed = http
        .post(registry.url(&format!("/v2/traced/app/blobs/uploads/?digest={digest}")))
        .body(&blob[..])
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    let pulled = http
        .get(registry.url(&format!("/v2/traced/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(15);
    let (request, children) = loop {
        let spans = received.lock().unwrap().clone();
        let request = spans.iter().find(|(_, s)| s.name == "GET blob").cloned();
        if let Some((service, request)) = request {
            let children: Vec<Span> = spans
                .iter()
                .map(|(_, s)| s.clone())
                .filter(|s| s.parent_span_id == request.span_id && s.trace_id == request.trace_id)
                .collect();
            if !children.is_empty() {
                assert!(service.contains("stowage-e2e"), "{service}");
                break (request, children);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no request span with children: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let operations: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    assert!(
        !operations.is_empty(),
        "storage calls under the request: {operations:?}"
    );
    assert!(
        request
            .attributes
            .iter()
            .any(|a| a.key == "http.response.status_code")
    );

    // The access log line of that request names its trace.
    let trace = hex(&request.trace_id);
    let logged = registry
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .any(|line| {
            line["target"] == "stowage::access"
                && line["trace_id"] == trace.as_str()
                && line["method"] == "GET"
        });
    assert!(
        logged,
        "no access log line with trace id {trace}:\n{}",
        registry.logs()
    );
}
