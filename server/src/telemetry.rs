//! Logging: human-readable text by default, JSON lines for clusters. And, when the standard
//! `OTEL_*` variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, `OTEL_SDK_DISABLED` not `true`), OpenTelemetry traces
//! over OTLP/HTTP: a span per request, with each storage call as a child.

use std::io::IsTerminal;

use clap::ValueEnum;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the trace exporter alive; dropping it sends the spans still buffered.
#[must_use = "traces stop being exported when this is dropped"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(traces) = self.traces.take()
            && let Err(err) = traces.shutdown()
        {
            eprintln!("stowage: flushing traces failed: {err}");
        }
    }
}

/// Installs the global subscriber. `filter` uses `EnvFilter` syntax (`info,stowage=debug`).
pub fn init(
    format: LogFormat,
    filter: &str,
) -> Result<Telemetry, Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_new(filter)?;
    let traces = tracer_provider()?;
    let spans = traces
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("stowage")));
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let subscriber = tracing_subscriber::registry().with(filter).with(spans);
    match format {
        LogFormat::Text => subscriber.with(logs).try_init()?,
        LogFormat::Json => subscriber
            .with(
                logs.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .try_init()?,
    }
    Ok(Telemetry { traces })
}

/// The OTLP exporter the environment configures, if it asks for one.
fn tracer_provider() -> Result<Option<SdkTracerProvider>, Box<dyn std::error::Error + Send + Sync>>
{
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none");
    let endpoint =
        env("OTEL_EXPORTER_OTLP_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
    if disabled || endpoint.is_none() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| "stowage".to_owned());
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service).build())
            .build(),
    ))
}

/// The trace id of `span` when traces are exported, for log lines.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}
