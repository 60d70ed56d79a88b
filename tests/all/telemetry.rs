//! OpenTelemetry: with `[observe] otlp` set, every hop of a record is a span
//! exported over OTLP/HTTP, all in the one trace its `Plexus-Trace` names.
//! The collector here is a small HTTP server decoding what it receives.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_s_hops_reach_the_collector_as_spans_of_one_trace() {
    let received: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
    let collector = {
        let received = received.clone();
        axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| r.attributes.iter())
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default();
                        for scope in resource.scope_spans {
                            for span in scope.spans {
                                received.lock().unwrap().push((service.clone(), span));
                            }
                        }
                    }
                    ""
                }
            }),
        )
    };
    let collector = serve(collector).await;

    let bus = TestBus::start().await;
    let connectors = format!(
        "{}{}\n[observe]\notlp = \"http://{collector}/v1/traces\"\nservice_name = \"plexus-test\"\n",
        connector(
            "lab",
            "source",
            "mllp",
            "listen = \"http\"\nto = \"raw.lab\""
        ),
        testkit("relay", "raw.lab", "out.lab", ""),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let host = start_host(&file).await;
    let (status, _) = http_post(host.http_addr(), "/ingest/lab", HL7).await;
    assert_eq!(status, 202);
    bus.wait_for_count("out.lab", 1).await;
    let out = &bus.messages("out.lab").await[0];
    let trace = header(out, "Plexus-Trace").unwrap();
    // Stopping the host sends what is batched.
    host.shutdown().await;
    wait_until("two spans at the collector", || {
        received.lock().unwrap().len() >= 2
    })
    .await;

    let spans = received.lock().unwrap().clone();
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.contains(&"source lab") && names.contains(&"transform relay"),
        "{names:?}"
    );
    let want = hex(&format!("{trace:0>32}"));
    for (service, span) in &spans {
        assert_eq!(span.trace_id, want, "every hop in the record's trace");
        assert!(service.contains("plexus-test"), "{service}");
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        assert_eq!(span.parent_span_id.len(), 8, "under the trace's root");
    }
    assert_eq!(spans[0].1.parent_span_id, spans[1].1.parent_span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_url_that_is_not_plain_http_is_refused() {
    let bus = TestBus::start().await;
    for (url, reason) in [
        ("https://collector:4318/v1/traces", "must be an http:// URL"),
        (
            "http://collector:4318",
            "must name a host and the traces path",
        ),
    ] {
        let text = format!(
            "{}\n[observe]\notlp = \"{url}\"\n",
            testkit("relay", "raw.lab", "out.lab", "")
        );
        let file = write_config(bus.dir.path(), Some(bus.url()), &text);
        let out = plexus_with_config(&["check"], &file).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(reason), "{url}: {stderr}");
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
