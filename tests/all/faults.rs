//! Hostile plugins are contained: an infinite loop is interrupted at its
//! timeout and paused between calls, one at a time whatever its concurrency,
//! without starving its neighbours, and stopping it releases its waiting
//! records to the fixed version; a memory hog
//! is stopped at its cap, a panicking instance is replaced while later records
//! flow, and deep recursion and outputs too large for the bus are
//! dead-lettered, not retried.

use futures::StreamExt as _;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_interrupted_and_neighbours_keep_flowing() {
    let bus = TestBus::start().await;
    bus.stream("SPIN", "in.spin").await;
    bus.stream("CALM", "in.calm").await;
    bus.publish_range("in.spin", 0..6, |i| format!("spin {i}"))
        .await;
    bus.publish_range("in.calm", 0..2000, |i| format!("calm {i}"))
        .await;
    let connectors = [
        testkit(
            "spinner",
            "in.spin",
            "out.spin",
            "config = { mode = \"loop\" }\n[connector.limits]\ntimeout = \"300ms\"\nconcurrency = 1",
        ),
        testkit("calm", "in.calm", "out.calm", ""),
    ]
    .concat();
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let started = std::time::Instant::now();
    let host = start_host(&file).await;

    // Six looping records, one at a time, keep the spinner busy for about
    // five seconds (300 ms each, and a pause after each that doubles from
    // 100 ms); the calm connector must finish its 2000 records meanwhile.
    bus.wait_drained("in.calm", "calm").await;
    let spun_out_so_far = bus.count("dlq.spinner").await;
    assert!(
        spun_out_so_far < 6,
        "the neighbour finished only after every loop was interrupted ({spun_out_so_far} of 6)"
    );
    assert_eq!(bus.count("out.calm").await, 2000);

    bus.wait_drained("in.spin", "spinner").await;
    // 6 × 300 ms of looping, and pauses of 100 + 200 + 400 + 800 + 1600 ms
    // before the second to sixth calls: a runaway connector is slowed down.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(6 * 300 + 3100),
        "the spinner was paused between runaway calls ({:?})",
        started.elapsed()
    );
    let dead = bus.messages("dlq.spinner").await;
    assert_eq!(dead.len(), 6);
    for msg in &dead {
        let error = header(msg, "Plexus-Error").unwrap();
        assert_eq!(error, "timeout: interrupted at limits.timeout of 300ms");
    }
    let metrics = scrape(host.http_addr());
    assert_eq!(
        metric(
            &metrics,
            "plexus_errors_total{connector=\"spinner\",kind=\"timeout\"}"
        ),
        6.0
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_on_probation_makes_one_call_at_a_time_whatever_its_concurrency() {
    let bus = TestBus::start().await;
    bus.stream("SPIN", "in.spin").await;
    bus.publish_range("in.spin", 0..6, |i| format!("spin {i}"))
        .await;
    let client = bus.js.client();
    let mut dead_letters = client.subscribe("dlq.spinner").await.expect("subscribe");
    client.flush().await.expect("flush");
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit(
            "spinner",
            "in.spin",
            "out.spin",
            "config = { mode = \"loop\" }\n[connector.limits]\ntimeout = \"300ms\"\nconcurrency = 4",
        ),
    );
    let host = start_host(&file).await;
    let mut arrivals = Vec::new();
    while arrivals.len() < 6 {
        tokio::time::timeout(PATIENCE, dead_letters.next())
            .await
            .expect("a dead letter in time")
            .expect("subscription open");
        arrivals.push(std::time::Instant::now());
    }
    // Four records loop at once and time out together. The connector is then
    // on probation: the fifth waits at least 100 ms and loops 300 ms; the sixth
    // may start only when the fifth is done, after a pause of 1.6 s (five
    // faults in a row), and loops 300 ms. Run side by side, as four permits
    // would allow, the last two would end within about 1.1 s of the first four.
    let gap = arrivals[5] - arrivals[0];
    assert!(
        gap >= std::time::Duration::from_millis(1900),
        "the last two runaway calls did not run one after the other ({gap:?})"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_paused_runaway_releases_its_records_to_the_fixed_version() {
    let bus = TestBus::start().await;
    bus.stream("SPIN", "in.spin").await;
    bus.publish_range("in.spin", 0..20, |i| format!("spin {i}"))
        .await;
    let spinner = |mode: &str| {
        testkit(
            "spinner",
            "in.spin",
            "out.spin",
            &format!(
                "config = {{ mode = \"{mode}\" }}\n[connector.limits]\ntimeout = \"100ms\"\nconcurrency = 1"
            ),
        )
    };
    let file = write_config(bus.dir.path(), Some(bus.url()), &spinner("loop"));
    let host = start_host(&file).await;
    // Two timeouts in a row: the connector now pauses before each call.
    bus.wait_for_count("dlq.spinner", 2).await;
    host.shutdown().await;
    let dead = bus.count("dlq.spinner").await;
    assert!(
        dead < 20,
        "the stop released the records still waiting, it did not run them all ({dead} dead-lettered)"
    );

    // The fixed version gets every record the runaway one did not fail.
    let file = write_config(bus.dir.path(), Some(bus.url()), &spinner("echo"));
    let host = start_host(&file).await;
    bus.wait_drained("in.spin", "spinner").await;
    assert_eq!(bus.count("out.spin").await, 20 - dead);
    assert_eq!(bus.count("dlq.spinner").await, dead);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_stopped_at_its_cap() {
    let bus = TestBus::start().await;
    bus.stream("HOG", "in.hog").await;
    bus.publish_range("in.hog", 0..3, |i| format!("hog {i}"))
        .await;
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit(
            "hog",
            "in.hog",
            "out.hog",
            "config = { mode = \"grow\" }\n[connector.limits]\nmemory = \"32MiB\"\ntimeout = \"10s\"",
        ),
    );
    let host = start_host(&file).await;
    bus.wait_drained("in.hog", "hog").await;

    let dead = bus.messages("dlq.hog").await;
    assert_eq!(dead.len(), 3);
    for msg in &dead {
        let error = header(msg, "Plexus-Error").unwrap();
        assert!(
            error.starts_with("memory: memory limit of 32 MiB reached"),
            "{error}"
        );
    }
    let metrics = scrape(host.http_addr());
    assert_eq!(
        metric(
            &metrics,
            "plexus_errors_total{connector=\"hog\",kind=\"memory\"}"
        ),
        3.0
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_instance_is_replaced() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.mixed").await;
    bus.publish_range("in.mixed", 0..300, |i| {
        if i % 100 == 50 {
            "please panic".into()
        } else {
            format!("fine {i}")
        }
    })
    .await;
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit(
            "brittle",
            "in.mixed",
            "out.mixed",
            "config = { mode = \"panic\" }\n[connector.limits]\nconcurrency = 1",
        ),
    );
    let host = start_host(&file).await;
    bus.wait_drained("in.mixed", "brittle").await;

    assert_eq!(
        bus.count("out.mixed").await,
        297,
        "records after each panic still flow"
    );
    let dead = bus.messages("dlq.brittle").await;
    assert_eq!(dead.len(), 3);
    for msg in &dead {
        assert_eq!(msg.payload, "please panic".as_bytes());
        assert_eq!(
            header(msg, "Plexus-Error").unwrap(),
            "trap: the plugin panicked (wasm `unreachable` executed)"
        );
    }
    let metrics = scrape(host.http_addr());
    assert_eq!(
        metric(
            &metrics,
            "plexus_errors_total{connector=\"brittle\",kind=\"trap\"}"
        ),
        3.0
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_and_oversized_outputs_are_dead_lettered_not_retried() {
    let bus = TestBus::start().await;
    bus.stream("DEEP", "in.deep").await;
    bus.stream("HUGE", "in.huge").await;
    bus.publish_range("in.deep", 0..2, |i| format!("deep {i}"))
        .await;
    bus.publish_range("in.huge", 0..2, |i| format!("huge {i}"))
        .await;
    let connectors = [
        testkit(
            "deep",
            "in.deep",
            "out.deep",
            "config = { mode = \"recurse\" }",
        ),
        testkit(
            "huge",
            "in.huge",
            "out.huge",
            "config = { mode = \"huge\", bytes = \"4000000\" }",
        ),
    ]
    .concat();
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let host = start_host(&file).await;
    bus.wait_drained("in.deep", "deep").await;
    bus.wait_drained("in.huge", "huge").await;

    for msg in bus.messages("dlq.deep").await {
        assert_eq!(
            header(&msg, "Plexus-Error").unwrap(),
            "trap: wasm trap: call stack exhausted"
        );
    }
    assert_eq!(bus.count("dlq.deep").await, 2);
    let huge = bus.messages("dlq.huge").await;
    assert_eq!(huge.len(), 2);
    assert_eq!(
        header(&huge[0], "Plexus-Error").unwrap(),
        "output 0 is 4000000 bytes, more than the bus's maximum message size"
    );
    assert_eq!(
        header(&huge[0], "Plexus-Deliveries").as_deref(),
        Some("1"),
        "not retried"
    );
    host.shutdown().await;
}
