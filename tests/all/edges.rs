//! Records and settings at and past every edge, each a fault an attacker's
//! review found: one oversized record no longer blocks a source's every
//! poll; a record near the bus's size limit is dead-lettered whole; two
//! busy connectors share the instance pool; outputs per call are capped;
//! subjects that read alike get streams of their own; every stream and
//! bucket the host creates has limits; an existing stream with a shorter
//! duplicate window is raised or refused; a reload that cannot bind its
//! MLLP listener puts the old one back.

use async_nats::jetstream::stream::DiscardPolicy;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

/// The body of a dead letter kept in the body store.
async fn stored_body(bus: &TestBus, name: &str) -> Vec<u8> {
    let store = bus
        .js
        .get_object_store(plexus_host::bus::dead_letters::BODIES)
        .await
        .expect("the body store exists");
    let mut object = store.get(name).await.expect("the body is kept");
    let mut body = Vec::new();
    object.read_to_end(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_is_dead_lettered_and_the_rest_of_the_poll_flows() {
    let bus = TestBus::start().await;
    let outbox = bus.dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    std::fs::write(outbox.join("a-small.json"), "{\"ok\":1}").unwrap();
    let huge = vec![b'x'; 2 << 20];
    std::fs::write(outbox.join("b-huge.json"), &huge).unwrap();
    std::fs::write(outbox.join("c-small.json"), "{\"ok\":2}").unwrap();
    let source = connector(
        "drops",
        "source",
        "file-drop",
        &format!(
            "schedule = \"200ms\"\nto = \"raw.drops\"\nconfig = {{ dir = \"{}\", settle = \"0\" }}\ngrants = {{ files = [\"{}:ro\"] }}",
            outbox.display(),
            outbox.display()
        ),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &source);
    let host = start_host(&file).await;
    bus.wait_for_count("raw.drops", 2).await;
    bus.wait_for_count("dlq.drops", 1).await;

    // Later files keep flowing, and the huge one is not tried again.
    std::fs::write(outbox.join("d-small.json"), "{\"ok\":3}").unwrap();
    bus.wait_for_count("raw.drops", 3).await;
    assert_eq!(
        bus.count("dlq.drops").await,
        1,
        "dead-lettered once, the cursor moved on"
    );
    let letter = &bus.messages("dlq.drops").await[0];
    let reason = header(letter, "Plexus-Error").unwrap();
    assert!(
        reason.contains("more than the bus's maximum message size"),
        "{reason}"
    );
    assert!(letter.payload.is_empty(), "the body is kept aside");
    let body = stored_body(&bus, &header(letter, "Plexus-Body").unwrap()).await;
    assert_eq!(body, huge, "nothing of it is lost");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_near_the_size_limit_is_dead_lettered_whole() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.near").await;
    // Under the bus's 1 MiB by 250 bytes: less than its dead letter's
    // headers take (about 265: the reason names the key, which is long),
    // more than an output's (about 235: id, key, source, hops, trace,
    // origin time), so the replayed record passes through the fixed connector.
    let near = "y".repeat((1 << 20) - 250);
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "in-0");
    h.insert("Plexus-Key", "near-limit-record-0001");
    bus.js
        .publish_with_headers("in.near", h, near.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let picky = testkit(
        "picky",
        "in.near",
        "out.near",
        "config = { mode = \"fail\" }",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &picky);
    let host = start_host(&file).await;
    bus.wait_for_count("dlq.picky", 1).await;
    bus.wait_drained("in.near", "picky").await;
    let letter = &bus.messages("dlq.picky").await[0];
    let body = stored_body(&bus, &header(letter, "Plexus-Body").unwrap()).await;
    assert_eq!(body, near.as_bytes());
    host.shutdown().await;

    // Replayed, it is whole again.
    let fixed = testkit("picky", "in.near", "out.near", "");
    let file = write_config(bus.dir.path(), Some(bus.url()), &fixed);
    let host = start_host(&file).await;
    cli_stdout(&plexus_with_config(&["dlq", "replay", "picky"], &file).await);
    bus.wait_for_count("out.near", 1).await;
    assert_eq!(bus.messages("out.near").await[0].payload.len(), near.len());
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connectors_share_the_instance_pool_without_losing_records() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.busy.*").await;
    bus.publish_range("in.busy.a", 0..600, |i| format!("a{i}"))
        .await;
    bus.publish_range("in.busy.b", 600..1200, |i| format!("b{i}"))
        .await;
    let slow =
        "config = { delay_ms = \"300\" }\n[connector.limits]\nconcurrency = 200\ntimeout = \"5s\"";
    let connectors = [
        testkit("busy-a", "in.busy.a", "out.busy.a", slow),
        testkit("busy-b", "in.busy.b", "out.busy.b", slow),
    ]
    .concat();
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let host = start_host(&file).await;
    bus.wait_drained("in.busy.a", "busy-a").await;
    bus.wait_drained("in.busy.b", "busy-b").await;
    bus.assert_exactly_once("out.busy.a", 600).await;
    bus.assert_exactly_once("out.busy.b", 600).await;
    let metrics = scrape(host.http_addr());
    for name in ["busy-a", "busy-b"] {
        assert_eq!(
            metric(
                &metrics,
                &format!("plexus_dlq_total{{connector=\"{name}\"}}")
            ),
            0.0
        );
        assert_eq!(
            metric(
                &metrics,
                &format!("plexus_errors_total{{connector=\"{name}\",kind=\"instantiate\"}}")
            ),
            0.0
        );
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_past_the_limit_dead_letter_their_input() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.fan").await;
    bus.publish_range("in.fan", 0..2, |i| format!("r{i}")).await;
    let fan = testkit(
        "fan",
        "in.fan",
        "out.fan",
        "config = { copies = \"50\" }\n[connector.limits]\noutputs = 10",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &fan);
    let host = start_host(&file).await;
    bus.wait_for_count("dlq.fan", 2).await;
    bus.wait_drained("in.fan", "fan").await;
    assert_eq!(
        bus.count("out.fan").await,
        0,
        "nothing of an over-limit call is published"
    );
    let reason = header(&bus.messages("dlq.fan").await[0], "Plexus-Error").unwrap();
    assert!(
        reason.contains("returned 50 records, more than limits.outputs (10)"),
        "{reason}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_that_read_alike_get_streams_of_their_own_with_limits() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.alike").await;
    bus.publish_range("in.alike", 0..5, |i| format!("r{i}"))
        .await;
    let connectors = [
        testkit("dots", "in.alike", "feed.x", ""),
        testkit("underscore", "in.alike", "feed_x", ""),
    ]
    .concat();
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let host = start_host(&file).await;
    bus.wait_for_count("feed.x", 5).await;
    bus.wait_for_count("feed_x", 5).await;
    let a = bus.js.stream_by_subject("feed.x").await.unwrap();
    let b = bus.js.stream_by_subject("feed_x").await.unwrap();
    assert_ne!(a, b);

    for name in [a, b] {
        let mut stream = bus.js.get_stream(&name).await.unwrap();
        let config = &stream.info().await.unwrap().config;
        assert_eq!(config.max_bytes, 1 << 30, "{name}");
        assert_eq!(
            config.max_age,
            std::time::Duration::from_secs(30 * 86_400),
            "{name}"
        );
        assert_eq!(
            config.discard,
            DiscardPolicy::New,
            "a full stream refuses, never drops: {name}"
        );
    }
    let mut names = bus.js.stream_names();
    while let Some(name) = names.next().await {
        let name = name.unwrap();
        if name.starts_with("KV_plexus") {
            let mut stream = bus.js.get_stream(&name).await.unwrap();
            assert_eq!(
                stream.info().await.unwrap().config.max_bytes,
                64 << 20,
                "{name}"
            );
        }
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_forgets_ids_too_soon_is_raised_or_refused() {
    let bus = TestBus::start().await;
    // Someone else's stream, remembering ids for 10 s only.
    bus.js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "UPSTREAM".into(),
            subjects: vec!["out.short".into()],
            duplicate_window: std::time::Duration::from_secs(10),
            ..Default::default()
        })
        .await
        .unwrap();
    bus.stream("IN", "in.short").await;
    let echo = testkit("echo", "in.short", "out.short", "");
    let file = write_config(bus.dir.path(), Some(bus.url()), &echo);
    let out = plexus_with_config(&["up"], &file).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "stream UPSTREAM remembers message ids for 10s, less than [bus].duplicate_window (2m)"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_start_its_listener_keeps_the_old_one() {
    let bus = TestBus::start().await;
    let port = free_port();
    let mllp = |extra: &str| {
        connector(
            "lab",
            "source",
            "mllp",
            &format!("listen = \"mllp://127.0.0.1:{port}\"\nto = \"raw.hl7\"\n{extra}"),
        )
    };
    let file = write_config(bus.dir.path(), Some(bus.url()), &mllp(""));
    let mut host = start_host(&file).await;

    // The new version's TLS files are not certificates: it cannot start.
    let bogus = bus.dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let broken = connector(
        "lab",
        "source",
        "mllp",
        &format!(
            "listen = \"mllp+tls://127.0.0.1:{port}\"\nto = \"raw.hl7\"\n[connector.tls]\ncert = \"{}\"\nkey = \"{}\"",
            bogus.display(),
            bogus.display()
        ),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &broken);
    let config = plexus_host::config::Config::load(&file).unwrap();
    assert!(host.reload(config).await.is_err());

    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the old listener is back on its port");
    client.write_all(&framed(HL7)).await.unwrap();
    assert_eq!(read_ack(&mut client).await, "MSA|AA|REQ-1|");
    assert_eq!(host.connectors().collect::<Vec<_>>(), ["lab"]);
    host.shutdown().await;
}
