//! OTLP trace export (feature `otel`): a `tracing` layer that ships the gateway's spans (one per
//! pipeline step, each carrying the correlation id) to an OpenTelemetry collector over
//! HTTP/protobuf.
//!
//! ```ignore
//! use tracing_subscriber::prelude::*;
//! let (layer, provider) = gateway_server::otel::otlp_layer("agent-gateway", None)?;
//! tracing_subscriber::registry().with(layer).with(tracing_subscriber::fmt::layer()).init();
//! // … serve …
//! provider.shutdown()?; // flushes the last spans
//! ```

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing_opentelemetry::OpenTelemetryLayer;

pub use opentelemetry_otlp::ExporterBuildError;

/// A `tracing` layer exporting spans over OTLP/HTTP, and its provider (keep it; call
/// `shutdown` on exit to flush). `endpoint` defaults to `OTEL_EXPORTER_OTLP_ENDPOINT`, then to
/// `http://localhost:4318/v1/traces`.
pub fn otlp_layer<S>(
    service_name: &str,
    endpoint: Option<&str>,
) -> Result<(OpenTelemetryLayer<S, Tracer>, SdkTracerProvider), ExporterBuildError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let mut builder = SpanExporter::builder().with_http();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let exporter = builder.build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("agent-gateway");
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn builds_a_layer_without_a_collector() {
        // Building must not need a reachable collector; export failures happen later, in the
        // background, and never reach the request path.
        let (_layer, provider) = super::otlp_layer::<tracing_subscriber::Registry>(
            "test",
            Some("http://127.0.0.1:9/v1/traces"),
        )
        .unwrap();
        let _ = provider.shutdown();
    }
}
