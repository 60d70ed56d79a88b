//! `plexus dlq`: an operator lists a connector's dead letters and replays them
//! once the cause is fixed. Proves that a replay reaches only the connector
//! that dead-lettered the record (not its neighbours on the same subject),
//! keeps the record's identity (so outputs carry the ids and lineage they
//! would have had: exactly once overall), is dead-lettered again — not
//! dropped as a duplicate — if the cause is not fixed, and that the command
//! finds the bus of a running host with an embedded server by itself.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_to_their_connector_alone() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.replay").await;
    bus.publish_range("in.replay", 1..21, |i| format!("record {i}"))
        .await;
    let bystander = testkit("bystander", "in.replay", "out.bystander", "");
    let broken = testkit(
        "picky",
        "in.replay",
        "out.replay",
        "config = { mode = \"fail-every-nth\", n = \"10\" }",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &(broken + &bystander));
    let host = start_host(&file).await;
    bus.wait_drained("in.replay", "picky").await;
    bus.wait_drained("in.replay", "bystander").await;
    assert_eq!(bus.count("out.replay").await, 18);
    assert_eq!(bus.count("dlq.picky").await, 2);

    let listed = cli_stdout(&plexus_with_config(&["dlq", "ls", "picky"], &file).await);
    assert!(
        listed.starts_with("picky: 2 dead letters on dlq.picky\n"),
        "{listed}"
    );
    for n in [10, 20] {
        assert!(
            listed.contains(&format!("in-{n}  from in.replay  after 1 delivery")),
            "{listed}"
        );
        assert!(
            listed.contains(&format!("record {n} is a multiple of 10")),
            "{listed}"
        );
    }
    let all = cli_stdout(&plexus_with_config(&["dlq", "ls"], &file).await);
    assert!(
        all.contains("bystander: 0 dead letters on dlq.bystander"),
        "{all}"
    );

    // Replayed while the cause is still there: dead-lettered again, not lost
    // as a duplicate of the first dead letter.
    let replayed = cli_stdout(&plexus_with_config(&["dlq", "replay", "picky"], &file).await);
    assert_eq!(replayed, "picky: replayed 2 dead letters from dlq.picky\n");
    bus.wait_for_count("dlq.picky", 2).await;
    bus.wait_drained("in.replay", "picky").await;
    bus.wait_drained("in.replay", "bystander").await;
    assert_eq!(bus.count("out.replay").await, 18);
    let metrics = scrape(host.http_addr());
    assert_eq!(
        metric(&metrics, "plexus_records_in_total{connector=\"bystander\"}"),
        20.0,
        "the neighbour on the same subject skips the replays unseen"
    );
    let again = cli_stdout(&plexus_with_config(&["dlq", "ls", "picky"], &file).await);
    assert!(again.starts_with("picky: 2 dead letters"), "{again}");
    assert!(
        !again.contains("#1 ") && !again.contains("#2 "),
        "the first dead letters are gone: {again}"
    );
    host.shutdown().await;

    // The cause is fixed: the connector now passes every record.
    let fixed = testkit("picky", "in.replay", "out.replay", "");
    let file = write_config(bus.dir.path(), Some(bus.url()), &(fixed + &bystander));
    let host = start_host(&file).await;
    let missing = plexus_with_config(&["dlq", "replay", "picky", "--seq", "999"], &file).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no dead letter #999 on dlq.picky"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let replayed = cli_stdout(&plexus_with_config(&["dlq", "replay", "picky"], &file).await);
    assert_eq!(replayed, "picky: replayed 2 dead letters from dlq.picky\n");
    bus.wait_drained("in.replay", "picky").await;
    bus.wait_drained("in.replay", "bystander").await;

    bus.assert_exactly_once("out.replay", 20).await;
    let sources: std::collections::HashSet<String> = bus
        .messages("out.replay")
        .await
        .iter()
        .map(|m| header(m, "Plexus-Source").unwrap())
        .collect();
    let expected = (1..21).map(|i| format!("in-{i}")).collect();
    assert_eq!(sources, expected, "replayed records keep their identity");
    assert_eq!(bus.count("dlq.picky").await, 0);
    assert_eq!(bus.count("out.bystander").await, 20);
    let metrics = scrape(host.http_addr());
    assert_eq!(
        metric(&metrics, "plexus_records_in_total{connector=\"picky\"}"),
        2.0
    );
    assert_eq!(
        metric(&metrics, "plexus_records_in_total{connector=\"bystander\"}"),
        0.0
    );
    let empty = cli_stdout(&plexus_with_config(&["dlq", "ls", "picky"], &file).await);
    assert_eq!(empty, "picky: 0 dead letters on dlq.picky\n");
    host.shutdown().await;

    let unknown = plexus_with_config(&["dlq", "ls", "nobody"], &file).await;
    assert_eq!(unknown.status.code(), Some(2));
    let error = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        error.contains(&format!(
            "{}: no connector named \"nobody\" (it has: picky, bystander)",
            file.display()
        )),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_finds_the_embedded_bus_of_a_running_host() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), None, &testkit("echo", "in.e", "out.e", ""));

    let nobody = plexus_with_config(&["dlq", "ls"], &file).await;
    assert_eq!(nobody.status.code(), Some(1));
    let error = String::from_utf8_lossy(&nobody.stderr);
    assert!(
        error.contains("no host with this config is running"),
        "{error}"
    );

    let mut host = HostProcess::spawn(&["up", "-c", file.to_str().unwrap()], dir.path());
    host.wait_line("plexus: up");
    let listed = cli_stdout(&plexus_with_config(&["dlq", "ls"], &file).await);
    assert_eq!(listed, "echo: 0 dead letters on dlq.echo\n");
    host.signal("TERM");
    assert!(host.child.wait().unwrap().success());
}
