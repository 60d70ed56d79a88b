//! OpenTelemetry spans per hop, exported over OTLP/HTTP (protobuf) when
//! `[observe] otlp = "http://collector:4318/v1/traces"` is set; without it no
//! exporter exists and a hop costs one `Option` check.
//!
//! Every hop of one record — the source taking it in, each transform, the
//! sink, a dead letter — is a span in the trace its `Plexus-Trace` names
//! (widened to OpenTelemetry's 128 bits), under one root span id derived
//! from it, so a tracing backend shows a record's journey as one trace.
//! Spans are batched on the SDK's own thread: exporting never waits on the
//! record path, and a collector that is down costs dropped spans, not records.

use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use sha2::{Digest as _, Sha256};

/// The exporter and the tracer hops are recorded with.
#[derive(Debug)]
pub struct Spans {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// One hop to record.
#[derive(Debug)]
pub struct HopSpan<'a> {
    /// The record's `Plexus-Trace`.
    pub trace: &'a str,
    /// The connector.
    pub connector: &'a str,
    /// `source`, `transform` or `sink`.
    pub kind: &'a str,
    /// The plugin's version (digest prefix).
    pub plugin: &'a str,
    /// The record's identity.
    pub record: &'a str,
    /// `published`, `delivered` or `dead-lettered`.
    pub outcome: &'a str,
    /// When the hop took the record.
    pub start: SystemTime,
}

impl Spans {
    /// An exporter to `endpoint` (the collector's full `/v1/traces` URL).
    /// Must be called inside the tokio runtime.
    pub fn start(endpoint: &str, service: &str) -> anyhow::Result<Spans> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the OTLP exporter for {endpoint}: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("plexus");
        Ok(Spans { provider, tracer })
    }

    /// Record one hop, ending now.
    pub fn hop(&self, hop: &HopSpan<'_>) {
        let trace_id = trace_id(hop.trace);
        let root = SpanContext::new(
            trace_id,
            root_span_id(hop.trace),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let parent = Context::new().with_remote_span_context(root);
        let kind = match hop.kind {
            "source" => SpanKind::Producer,
            _ => SpanKind::Consumer,
        };
        let mut span = self.tracer.build_with_context(
            self.tracer
                .span_builder(format!("{} {}", hop.kind, hop.connector))
                .with_kind(kind)
                .with_start_time(hop.start)
                .with_attributes([
                    KeyValue::new("plexus.connector", hop.connector.to_owned()),
                    KeyValue::new("plexus.plugin", hop.plugin.to_owned()),
                    KeyValue::new("plexus.record", hop.record.to_owned()),
                    KeyValue::new("plexus.outcome", hop.outcome.to_owned()),
                    KeyValue::new("plexus.trace", hop.trace.to_owned()),
                ]),
            &parent,
        );
        if hop.outcome == "dead-lettered" {
            span.set_status(Status::error("dead-lettered"));
        }
        span.end_with_timestamp(SystemTime::now());
    }

    /// Send what is batched and stop; blocks up to the export timeout, so
    /// it runs off the runtime's workers.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = done {
            tracing::warn!(%error, "Spans not exported at shutdown.");
        }
    }
}

/// OpenTelemetry's 128-bit trace id for a `Plexus-Trace`: its hex when it
/// is 32 digits, else its own 16 hex digits widened, else a digest of it.
pub fn trace_id(trace: &str) -> TraceId {
    let hex = |t: &str| t.len() <= 32 && t.bytes().all(|b| b.is_ascii_hexdigit());
    let id = if hex(trace) && !trace.is_empty() {
        TraceId::from_hex(&format!("{trace:0>32}")).unwrap_or(TraceId::INVALID)
    } else {
        TraceId::INVALID
    };
    if id != TraceId::INVALID {
        return id;
    }
    let digest = Sha256::digest(trace.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    TraceId::from_bytes(bytes)
}

/// The span every hop of a trace hangs under.
fn root_span_id(trace: &str) -> SpanId {
    let digest = Sha256::digest(format!("root:{trace}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    SpanId::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plexus_traces_map_to_valid_otel_ids() {
        assert_eq!(
            trace_id("0123456789abcdef").to_string(),
            "00000000000000000123456789abcdef"
        );
        let full = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_id(full).to_string(), full);
        for odd in ["", "not hex", "00000000000000000000000000000000"] {
            assert_ne!(trace_id(odd), TraceId::INVALID, "{odd:?}");
        }
        assert_eq!(trace_id("x"), trace_id("x"), "stable");
        assert_ne!(root_span_id("a"), SpanId::INVALID);
    }
}
