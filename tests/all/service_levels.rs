//! Service levels in business terms: a transactional source that falls quiet
//! past its `sla.freshness` opens an `sla-breach/1` record on
//! `plexus.sla.<connector>` and sets `plexus_sla_breached`; the next record
//! resolves it. Bad SLA settings are refused with the connector named.

use std::time::Instant;

use crate::support::*;

fn breaches(messages: &[async_nats::jetstream::Message]) -> Vec<serde_json::Value> {
    messages
        .iter()
        .map(|m| {
            assert_eq!(header(m, "Plexus-Schema").as_deref(), Some("sla-breach/1"));
            serde_json::from_slice(&m.payload).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_source_breaches_its_freshness_and_recovers_with_the_next_record() {
    let bus = TestBus::start().await;
    let feed = connector(
        "lab",
        "source",
        "mllp",
        "listen = \"http\"\nto = \"raw.lab\"\nsla = { freshness = \"2s\", class = \"transactional\" }",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &feed);
    let host = start_host(&file).await;
    let addr = host.http_addr();
    let breached = || {
        metric(
            &scrape(addr),
            "plexus_sla_breached{connector=\"lab\",kind=\"freshness\"}",
        )
    };

    let (status, _) = http_post(addr, "/ingest/lab", HL7).await;
    assert_eq!(status, 202);
    let quiet_from = Instant::now();
    bus.wait_for_count("plexus.sla.lab", 1).await;
    assert!(
        quiet_from.elapsed().as_secs_f64() >= 2.0,
        "not before the freshness target"
    );
    let open = breaches(&bus.messages("plexus.sla.lab").await);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["status"], "open");
    assert_eq!(open[0]["breach_id"], "lab:freshness");
    assert_eq!(open[0]["kind"], "freshness");
    assert_eq!(open[0]["class"], "transactional");
    assert_eq!(open[0]["target"], "2s");
    assert!(open[0].get("resolved_at").is_none());
    assert_eq!(breached(), 1.0);
    assert!(
        admin_get(addr, "/").contains("lab:freshness"),
        "the dashboard shows it"
    );

    let (status, _) = http_post(addr, "/ingest/lab", &HL7.replace("REQ-1", "REQ-2")).await;
    assert_eq!(status, 202);
    bus.wait_for_count("plexus.sla.lab", 2).await;
    let all = breaches(&bus.messages("plexus.sla.lab").await);
    assert_eq!(all[1]["status"], "resolved");
    assert_eq!(all[1]["opened_at"], all[0]["opened_at"]);
    assert!(all[1]["resolved_at"].as_str().unwrap() >= all[0]["opened_at"].as_str().unwrap());
    assert_eq!(breached(), 0.0);
    assert_eq!(
        metric(
            &scrape(addr),
            "plexus_sla_breaches_total{connector=\"lab\",kind=\"freshness\"}"
        ),
        1.0
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sla_settings_are_refused_with_the_connector_named() {
    let bus = TestBus::start().await;
    for (sla, reason) in [
        (
            "sla = { class = \"transactional\" }",
            "sla needs `freshness` or `latency_p99`",
        ),
        ("sla = { freshness = \"soon\" }", "sla.freshness \"soon\""),
        (
            "sla = { freshness = \"5m\", class = \"informational\" }",
            "an informational one is expected to fall quiet",
        ),
        ("sla = { latency = \"2s\" }", "unknown field `latency`"),
    ] {
        let feed = connector(
            "lab",
            "source",
            "mllp",
            &format!("listen = \"http\"\nto = \"raw.lab\"\n{sla}"),
        );
        let file = write_config(bus.dir.path(), Some(bus.url()), &feed);
        let out = plexus_with_config(&["check"], &file).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sla}: {stderr}");
        assert!(
            stderr.contains("lab") && stderr.contains(reason),
            "{sla}: {stderr}"
        );
    }
}
