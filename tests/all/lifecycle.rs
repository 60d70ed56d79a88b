//! The host process: a crash (kill -9) mid-stream and a restart still give
//! exactly-once output; SIGTERM finishes and acknowledges in-flight records;
//! the embedded bus starts and stops with the host.

use async_nats::jetstream::consumer::PullConsumer;

use crate::support::*;

const SLOW_ECHO: &str = "config = { delay_ms = \"1\" }\n[connector.delivery]\nack_wait = \"3s\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_is_still_exactly_once() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.crash").await;
    bus.publish_range("in.crash", 0..10_000, |i| format!("payment {i}"))
        .await;
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit("ledger", "in.crash", "out.crash", SLOW_ECHO),
    );
    let config = file.to_str().unwrap();

    let mut first = HostProcess::spawn(&["up", "-c", config], bus.dir.path());
    first.wait_line("plexus: up");
    bus.wait_for_count("out.crash", 1000).await;
    first.kill9();
    let at_crash = bus.count("out.crash").await;
    assert!(
        at_crash < 10_000,
        "the crash happened mid-stream ({at_crash} done)"
    );

    let mut second = HostProcess::spawn(&["up", "-c", config], bus.dir.path());
    second.wait_line("plexus: up");
    bus.wait_drained("in.crash", "ledger").await;
    second.signal("TERM");
    assert!(second.child.wait().unwrap().success());

    bus.assert_exactly_once("out.crash", 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_records_and_exits_zero() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.term").await;
    bus.publish_range("in.term", 0..3000, |i| format!("order {i}"))
        .await;
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit("orders", "in.term", "out.term", SLOW_ECHO),
    );
    let mut host = HostProcess::spawn(&["up", "-c", file.to_str().unwrap()], bus.dir.path());
    host.wait_line("plexus: up");
    bus.wait_for_count("out.term", 300).await;
    host.signal("TERM");
    let status = host.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");

    let mut consumer: PullConsumer = bus
        .js
        .get_consumer_from_stream("plexus-orders", "IN")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        info.num_ack_pending, 0,
        "every record taken was finished and acknowledged"
    );
    assert_eq!(
        bus.count("out.term").await,
        3000 - info.num_pending,
        "every acknowledged record was published once"
    );
    assert!(info.num_pending > 0, "the stop happened mid-stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_bus_lives_and_dies_with_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        None,
        &testkit("echo", "in.local", "out.local", ""),
    );
    let mut host = HostProcess::spawn(&["up", "-c", file.to_str().unwrap()], dir.path());
    let line = host.wait_line("plexus: up");
    let url = line
        .rsplit("embedded bus at ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        url.starts_with("nats://127.0.0.1:") && !url.ends_with(":4222"),
        "{line}"
    );

    let store = dir.path().join("data/nats");
    assert!(
        async_nats::connect(&url).await.is_err(),
        "the embedded bus refuses a client without its credentials"
    );
    let auth =
        plexus_host::bus::embedded::stored_auth(&store).expect("credentials kept in the store");
    let bus = plexus_host::bus::Bus::connect_with(&url, &auth, None, Default::default())
        .await
        .unwrap();
    let client = bus.client.clone();
    let js = bus.js.clone();
    js.publish("in.local", "hello".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut out: PullConsumer = js
        .create_consumer_on_stream(
            async_nats::jetstream::consumer::pull::Config {
                filter_subject: "out.local".into(),
                ..Default::default()
            },
            js.stream_by_subject("out.local").await.unwrap(),
        )
        .await
        .unwrap();
    let msg = futures::StreamExt::next(&mut out.messages().await.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, "hello".as_bytes());
    assert!(out.info().await.is_ok());
    drop(client);
    drop(js);
    drop(bus);

    host.signal("TERM");
    assert!(host.child.wait().unwrap().success());
    assert!(
        plexus_host::bus::Bus::connect_with(&url, &auth, None, Default::default())
            .await
            .is_err(),
        "the embedded nats-server stopped with the host"
    );
    assert!(
        dir.path().join("data/nats/jetstream").is_dir(),
        "its store is under data_dir"
    );
}
