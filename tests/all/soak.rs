//! Reliability under failure: the host killed -9 at random moments, and the
//! nats-server restarted mid-stream, still give every record exactly once.
//! `just test` runs a short form; `just soak` sets PLEXUS_SOAK=1 for the full
//! one (100,000 records, ten kills).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::*;

fn soak() -> bool {
    std::env::var_os("PLEXUS_SOAK").is_some()
}

/// A small xorshift generator; the seed is printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("PLEXUS_SOAK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("PLEXUS_SOAK_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let (records, kills) = if soak() { (100_000u64, 10) } else { (6_000, 3) };
    let mut rng = Rng::new();
    let bus = TestBus::start().await;
    bus.stream("IN", "in.soak").await;
    bus.publish_range("in.soak", 0..records as usize, |i| {
        format!("{{\"txn\":{i}}}")
    })
    .await;
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit(
            "ledger",
            "in.soak",
            "out.soak",
            "[connector.delivery]\nack_wait = \"3s\"",
        ),
    );
    let config = file.to_str().unwrap();

    for kill in 0..kills {
        let mut host = HostProcess::spawn(&["up", "-c", config], bus.dir.path());
        host.wait_line("plexus: up");
        // Let it get somewhere between 1% and 1/kills of the stream further.
        let done = bus.count("out.soak").await;
        let step = records / (kills as u64 + 1);
        let target = (done + 1 + rng.below(step)).min(records - 1);
        bus.wait_for_count("out.soak", target).await;
        host.kill9();
        eprintln!(
            "kill {} at {} of {records}",
            kill + 1,
            bus.count("out.soak").await
        );
    }
    let mut host = HostProcess::spawn(&["up", "-c", config], bus.dir.path());
    host.wait_line("plexus: up");
    bus.wait_drained("in.soak", "ledger").await;
    host.signal("TERM");
    assert!(host.child.wait().unwrap().success());

    bus.assert_exactly_once("out.soak", records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_stream_loses_nothing() {
    let records = if soak() { 50_000 } else { 5_000 };
    let mut bus = TestBus::start().await;
    bus.stream("IN", "in.restart").await;
    bus.publish_range("in.restart", 0..records, |i| format!("{{\"txn\":{i}}}"))
        .await;
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit(
            "ledger",
            "in.restart",
            "out.restart",
            "config = { delay_ms = \"1\" }\n[connector.delivery]\nack_wait = \"3s\"",
        ),
    );
    let host = start_host(&file).await;
    bus.wait_for_count("out.restart", records as u64 / 5).await;
    let before = bus.count("out.restart").await;
    bus.server.restart().unwrap();
    assert!(
        before < records as u64,
        "the restart happened mid-stream ({before} done)"
    );
    // The test's own client reconnects too; the host must do so by itself.
    bus.wait_drained("in.restart", "ledger").await;
    bus.assert_exactly_once("out.restart", records as u64).await;
    host.shutdown().await;
}
