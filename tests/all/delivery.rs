//! Delivery invariants: every input produces its outputs exactly once, with the
//! contract headers, and failing records go to the dead-letter subject with
//! their reason while the rest keep flowing.

use std::collections::HashSet;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_in_exactly_ten_thousand_out() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.orders").await;
    bus.publish_range("in.orders", 0..10_000, |i| format!("{{\"n\":{i}}}"))
        .await;
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit("echo", "in.orders", "out.orders", ""),
    );
    let host = start_host(&file).await;

    bus.wait_drained("in.orders", "echo").await;
    assert_eq!(bus.count("out.orders").await, 10_000);
    let out = bus.messages("out.orders").await;
    let ids: HashSet<_> = out
        .iter()
        .map(|m| header(m, "Nats-Msg-Id").expect("Nats-Msg-Id"))
        .collect();
    assert_eq!(ids.len(), 10_000, "output ids are unique");
    let sources: HashSet<_> = out
        .iter()
        .map(|m| header(m, "Plexus-Source").expect("Plexus-Source"))
        .collect();
    let expected: HashSet<_> = (0..10_000).map(|i| format!("in-{i}")).collect();
    assert_eq!(
        sources, expected,
        "each input appears exactly once as a source"
    );
    let first = &out[0];
    assert!(
        header(first, "Plexus-Hops")
            .expect("hops")
            .starts_with("echo@")
    );
    assert_eq!(header(first, "Plexus-Trace").expect("trace").len(), 16);
    let key = header(first, "Plexus-Key").expect("key");
    assert_eq!(first.payload, format!("{{\"n\":{key}}}").as_bytes());

    let metrics = scrape(host.http_addr());
    assert_eq!(
        metric(&metrics, "plexus_records_in_total{connector=\"echo\"}"),
        10_000.0
    );
    assert_eq!(
        metric(&metrics, "plexus_records_out_total{connector=\"echo\"}"),
        10_000.0
    );
    assert!(
        metrics.contains("plexus_plugin_call_seconds_count{connector=\"echo\"} 10000"),
        "{metrics}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dlq_while_the_rest_flow() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.poison").await;
    bus.publish_range("in.poison", 1..1001, |i| format!("record {i}"))
        .await;
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit(
            "picky",
            "in.poison",
            "out.poison",
            "config = { mode = \"fail-every-nth\", n = \"10\" }",
        ),
    );
    let host = start_host(&file).await;
    bus.wait_drained("in.poison", "picky").await;

    assert_eq!(bus.count("out.poison").await, 900);
    assert_eq!(bus.count("dlq.picky").await, 100);
    let dead = bus.messages("dlq.picky").await;
    for msg in &dead {
        let key: u64 = header(msg, "Plexus-Key")
            .expect("key")
            .parse()
            .expect("numeric key");
        assert_eq!(key % 10, 0);
        assert_eq!(
            header(msg, "Plexus-Error").expect("error"),
            format!("record {key} is a multiple of 10")
        );
        assert_eq!(header(msg, "Plexus-Deliveries").as_deref(), Some("1"));
        assert_eq!(
            header(msg, "Plexus-Original-Subject").as_deref(),
            Some("in.poison")
        );
        assert_eq!(
            msg.payload,
            format!("record {key}").as_bytes(),
            "the original record is kept"
        );
    }
    let metrics = scrape(host.http_addr());
    assert_eq!(
        metric(&metrics, "plexus_dlq_total{connector=\"picky\"}"),
        100.0
    );
    assert_eq!(
        metric(
            &metrics,
            "plexus_errors_total{connector=\"picky\",kind=\"permanent\"}"
        ),
        100.0
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_are_retried_then_dead_lettered() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.flaky").await;
    bus.publish_range("in.flaky", 0..5, |i| format!("r{i}"))
        .await;
    let connector = testkit(
        "flaky",
        "in.flaky",
        "out.flaky",
        "config = { mode = \"fail\", retryable = \"true\" }\n[connector.delivery]\nmax_deliver = 3\nbackoff = [\"50ms\", \"100ms\"]",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connector);
    let host = start_host(&file).await;
    bus.wait_drained("in.flaky", "flaky").await;

    assert_eq!(bus.count("out.flaky").await, 0);
    let dead = bus.messages("dlq.flaky").await;
    assert_eq!(dead.len(), 5);
    for msg in &dead {
        assert_eq!(header(msg, "Plexus-Deliveries").as_deref(), Some("3"));
        let error = header(msg, "Plexus-Error").expect("error");
        assert!(
            error.starts_with("gave up after 3 deliveries: testkit refuses record"),
            "{error}"
        );
    }
    let metrics = scrape(host.http_addr());
    assert_eq!(
        metric(
            &metrics,
            "plexus_errors_total{connector=\"flaky\",kind=\"retryable\"}"
        ),
        15.0
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_keep_state_in_their_kv_bucket() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.count").await;
    let mut acks = Vec::new();
    for i in 0..6 {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("c{i}").as_str());
        h.insert("Plexus-Key", if i % 2 == 0 { "even" } else { "odd" });
        acks.push(
            bus.js
                .publish_with_headers("in.count", h, "x".into())
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit(
            "counter",
            "in.count",
            "out.count",
            "config = { mode = \"kv-count\" }",
        ),
    );
    let host = start_host(&file).await;
    bus.wait_drained("in.count", "counter").await;

    let mut counts: Vec<(String, String)> = bus
        .messages("out.count")
        .await
        .iter()
        .map(|m| {
            (
                header(m, "Plexus-Key").unwrap(),
                String::from_utf8(m.payload.to_vec()).unwrap(),
            )
        })
        .collect();
    counts.sort();
    let expected: Vec<(String, String)> = ["even", "odd"]
        .iter()
        .flat_map(|k| (1..=3).map(move |n| (k.to_string(), n.to_string())))
        .collect();
    assert_eq!(
        counts, expected,
        "compare-and-swap hands out each count once per key"
    );
    let kv = bus
        .js
        .get_key_value("plexus-kv-counter")
        .await
        .expect("bucket exists");
    assert_eq!(kv.get("even").await.unwrap().as_deref(), Some(&b"3"[..]));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_connector_takes_records_in_stream_order() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.ordered").await;
    bus.publish_range("in.ordered", 0..500, |i| format!("{{\"n\":{i}}}"))
        .await;
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit(
            "sequencer",
            "in.ordered",
            "out.ordered",
            "[connector.delivery]\nordered = true",
        ),
    );
    let host = start_host(&file).await;
    bus.wait_drained("in.ordered", "sequencer").await;

    let keys: Vec<usize> = bus
        .messages("out.ordered")
        .await
        .iter()
        .map(|m| header(m, "Plexus-Key").unwrap().parse().unwrap())
        .collect();
    assert_eq!(keys, (0..500).collect::<Vec<_>>());
    host.shutdown().await;
}
