//! Reliability under failure, each checked record by record:
//! - the host killed -9 at random moments and restarted: every record's output
//!   exactly once;
//! - the nats-server restarted mid-stream: the host reconnects by itself and
//!   nothing is lost;
//! - a sink's endpoint flapping — connections refused, cut mid-request, 503s —
//!   for a minute while records keep coming: every record applied exactly once
//!   by its idempotency key;
//! - poison records at 1% of traffic: every one dead-lettered with its reason,
//!   every other one delivered once.
//!
//! `just test` runs a short form; `just soak` sets PLEXUS_SOAK=1 for the full
//! one (100,000 records, ten kills, a minute of flapping) and
//! PLEXUS_SOAK_REPORT to a directory where each passing test leaves its row of
//! the reliability table in `bench/RESULTS.md`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::support::*;

fn soak() -> bool {
    std::env::var_os("PLEXUS_SOAK").is_some()
}

/// Leave this test's row of the reliability table where `just soak` collects
/// them; called only once every assertion has held.
fn report(test: &str, scenario: String, outcome: String) {
    let Some(dir) = std::env::var_os("PLEXUS_SOAK_REPORT") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("soak report directory");
    std::fs::write(
        dir.join(format!("{test}.md")),
        format!("| {scenario} | {outcome} |\n"),
    )
    .expect("soak report");
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
    report(
        "kill",
        format!("{records} records through a transform, host killed -9 at {kills} random moments"),
        format!("{records} outputs: 0 missing, 0 duplicated"),
    );
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
    report(
        "restart",
        format!("{records} records, nats-server restarted after {before}"),
        "host reconnected by itself; 0 missing, 0 duplicated".into(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_at_one_percent_is_all_dead_lettered_with_reasons() {
    let records = if soak() { 100_000 } else { 10_000 };
    let bus = TestBus::start().await;
    bus.stream("IN", "in.mixed").await;
    bus.publish_range("in.mixed", 1..records + 1, |i| format!("{{\"txn\":{i}}}"))
        .await;
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit(
            "ledger",
            "in.mixed",
            "out.mixed",
            "config = { mode = \"fail-every-nth\", n = \"100\" }",
        ),
    );
    let host = start_host(&file).await;
    bus.wait_drained("in.mixed", "ledger").await;

    let poison = records as u64 / 100;
    bus.assert_exactly_once("out.mixed", records as u64 - poison)
        .await;
    let dead = bus.messages("dlq.ledger").await;
    let mut keys: Vec<u64> = dead
        .iter()
        .map(|msg| {
            let key: u64 = header(msg, "Plexus-Key").unwrap().parse().unwrap();
            assert_eq!(
                header(msg, "Plexus-Error").unwrap(),
                format!("record {key} is a multiple of 100")
            );
            key
        })
        .collect();
    keys.sort_unstable();
    let expected: Vec<u64> = (1..=poison).map(|k| k * 100).collect();
    assert_eq!(keys, expected, "every poison record dead-lettered once");
    host.shutdown().await;
    report(
        "poison",
        format!("{records} records, every 100th poison"),
        format!(
            "{poison} dead-lettered once each with its reason; {} delivered once",
            records as u64 - poison
        ),
    );
}

/// An ERP that applies each idempotency key once and answers a repeated key
/// as already done, as a real one would; what it applied is kept per key.
#[derive(Default)]
struct Ledger {
    applied: Mutex<HashMap<String, String>>,
    repeats: AtomicU64,
    unavailable: AtomicBool,
    refusals: AtomicU64,
}

async fn ledger_post(
    State(ledger): State<Arc<Ledger>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    if ledger.unavailable.load(Ordering::SeqCst) {
        ledger.refusals.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut applied = ledger.applied.lock().unwrap();
    if applied.contains_key(key) {
        ledger.repeats.fetch_add(1, Ordering::SeqCst);
        return StatusCode::OK;
    }
    applied.insert(key.to_owned(), body);
    StatusCode::CREATED
}

/// How the endpoint misbehaves between up phases.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// The port is closed: connections are refused and open ones cut.
    Refused,
    /// The server answers 503.
    Unavailable,
}

/// A TCP front on a fixed port for `backend` that flaps until `until`, then
/// stays up: up phases forward connections, outages take turns refusing them
/// and having the ledger answer 503; `rng` picks how long each phase lasts.
/// Returns its address and the outages.
async fn flapping_front(
    backend: SocketAddr,
    ledger: Arc<Ledger>,
    until: Instant,
    mut rng: Rng,
) -> (SocketAddr, Arc<Mutex<Vec<Outage>>>) {
    let mut listener = Some(outside_ephemeral_range(&mut rng).await);
    let addr = listener.as_ref().unwrap().local_addr().unwrap();
    let outages = Arc::new(Mutex::new(Vec::new()));
    let log = outages.clone();
    tokio::spawn(async move {
        loop {
            let front = match listener.take() {
                Some(front) => front,
                None => rebind(addr).await,
            };
            let mut connections = JoinSet::new();
            let up_until = Instant::now() + Duration::from_millis(300 + rng.below(1200));
            // The last up phase lasts for good.
            let up_until = (up_until < until).then_some(up_until);
            forward(&front, backend, &mut connections, up_until).await;
            let down_for = Duration::from_millis(200 + rng.below(800));
            let refuse = log.lock().unwrap().len() % 2 == 0;
            if refuse {
                log.lock().unwrap().push(Outage::Refused);
                drop(front);
                connections.abort_all();
                tokio::time::sleep(down_for).await;
            } else {
                log.lock().unwrap().push(Outage::Unavailable);
                ledger.unavailable.store(true, Ordering::SeqCst);
                let down_until = Instant::now() + down_for;
                forward(&front, backend, &mut connections, Some(down_until)).await;
                ledger.unavailable.store(false, Ordering::SeqCst);
                listener = Some(front);
            }
        }
    });
    (addr, outages)
}

/// Forward connections accepted on `front` to `backend` until `phase_end`,
/// or for good.
async fn forward(
    front: &TcpListener,
    backend: SocketAddr,
    connections: &mut JoinSet<()>,
    phase_end: Option<Instant>,
) {
    let forever = phase_end.is_none();
    let stop = tokio::time::sleep_until(phase_end.unwrap_or_else(Instant::now).into());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop, if !forever => return,
            accepted = front.accept() => {
                let Ok((mut inbound, _)) = accepted else { continue };
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }
    }
}

/// A listener on a port the kernel never hands out to outgoing connections,
/// so that while it is closed no client socket can take it and it can be
/// bound again.
async fn outside_ephemeral_range(rng: &mut Rng) -> TcpListener {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let lowest = range
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(32768);
    assert!(lowest > 2048, "the ephemeral port range starts at {lowest}");
    loop {
        let port = 1024 + rng.below(lowest - 1024);
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)).await {
            return listener;
        }
    }
}

/// Listen on `addr` again once the old socket has let go of it.
async fn rebind(addr: SocketAddr) -> TcpListener {
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_endpoint_flapping_for_a_minute_applies_every_record_once() {
    let (seconds, per_second) = if soak() { (60, 50) } else { (6, 50) };
    let ledger = Arc::new(Ledger::default());
    let backend = serve(
        axum::Router::new()
            .route("/ledger", post(ledger_post))
            .with_state(ledger.clone()),
    )
    .await;
    let flapping_until = Instant::now() + Duration::from_secs(seconds);
    let (front, outages) =
        flapping_front(backend, ledger.clone(), flapping_until, Rng::new()).await;

    let bus = TestBus::start().await;
    bus.stream("GL", "gl.journal").await;
    let sink = format!(
        "[[connector]]\nname = \"gl\"\nkind = \"sink\"\nplugin = \"{}\"\nfrom = \"gl.journal\"\n\
         config = {{ url = \"http://{front}/ledger\" }}\n[connector.grants]\nhttp = [\"http://{front}\"]\n\
         [connector.delivery]\nmax_deliver = 1000\nbackoff = [\"50ms\", \"200ms\"]\n",
        plugin("http-post").display()
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &sink);
    let host = start_host(&file).await;

    // Records keep arriving while the endpoint flaps.
    let records = (seconds * per_second) as usize;
    let tick = Duration::from_millis(100);
    let per_tick = per_second as usize / 10;
    let mut next = 0;
    let start = Instant::now();
    while next < records {
        bus.publish_range("gl.journal", next..next + per_tick, |i| {
            format!("{{\"journal\":\"JE-{i}\"}}")
        })
        .await;
        next += per_tick;
        tokio::time::sleep_until((start + tick * (next / per_tick) as u32).into()).await;
    }
    bus.wait_drained("gl.journal", "gl").await;

    let outages = outages.lock().unwrap().clone();
    assert!(
        outages.iter().any(|o| matches!(o, Outage::Refused))
            && outages.iter().any(|o| matches!(o, Outage::Unavailable)),
        "the endpoint refused connections and answered 503 at times: {outages:?}"
    );
    assert!(
        ledger.refusals.load(Ordering::SeqCst) > 0,
        "503s were answered"
    );
    assert_eq!(bus.count("dlq.gl").await, 0, "nothing dead-lettered");
    let applied = ledger.applied.lock().unwrap().clone();
    let mut journals: Vec<&str> = applied.values().map(String::as_str).collect();
    journals.sort_unstable();
    let mut expected: Vec<String> = (0..records)
        .map(|i| format!("{{\"journal\":\"JE-{i}\"}}"))
        .collect();
    expected.sort_unstable();
    assert_eq!(
        journals, expected,
        "every record applied, each under exactly one idempotency key"
    );
    host.shutdown().await;
    let refused = outages
        .iter()
        .filter(|o| matches!(o, Outage::Refused))
        .count();
    report(
        "flapping",
        format!(
            "{records} journal entries at {per_second}/s to an ERP endpoint flapping for {seconds} s \
             ({refused} times refusing connections, {} times answering 503)",
            outages.len() - refused
        ),
        format!(
            "all applied once by idempotency key ({} repeats answered as done, {} 503s retried), 0 dead-lettered",
            ledger.repeats.load(Ordering::SeqCst),
            ledger.refusals.load(Ordering::SeqCst)
        ),
    );
}
