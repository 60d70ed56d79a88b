//! System benchmarks on a real nats-server, each measured side by side in one
//! run so that ratios hold on a noisy machine:
//!
//! - throughput of the host against a native ceiling — a hand-written
//!   JetStream consumer on its own connection running the *same transform
//!   crate compiled natively*, with the same pulls, publish ids, publish acks
//!   and input acks — for a JSON filter and the X12 850 mapping at 1 KB and 4 KB;
//! - clean throughput with 1% poison records against none (both of these as
//!   medians of alternating runs);
//! - open-loop end-to-end latency at fixed rates against a plain NATS round
//!   trip, and a healthy connector's latency beside hostile plugins (medians
//!   of alternating rounds, each round's p99 shown for the noise between them);
//! - hot swap under load, start-up and memory with 100 connectors;
//! - an edge host (`[bus].leaf`) draining a backlog to the hub after an outage;
//! - a fleet of three `plexus up --bus` processes: apply-to-running, and one
//!   transform's throughput on one host and on three sharing its consumer.
//!
//! Run with `just bench`; `bench/report.py` turns the output into
//! `bench/RESULTS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use plexus_host::bus::embedded::{EmbeddedNats, find_binary};
use plexus_host::config::Config;
use plexus_host::host::Host;
use tokio::sync::Semaphore;

mod fixtures;
mod fleet;

const RECORDS: usize = 20_000;
/// Runs of each side per throughput flow; the median is reported.
const ROUNDS: usize = 5;
/// Records in flight, as the host allows itself per connector (its IN_FLIGHT).
const IN_FLIGHT: usize = 256;

/// A transform measured natively and as a plugin.
#[derive(Clone, Copy)]
enum Flow {
    /// json-filter with a keep rule on 1 KiB purchase orders.
    JsonFilter,
    /// x12 inbound: an 850 interchange of `size` bytes to `purchase-order/1`.
    X12 { size: usize },
}

impl Flow {
    fn label(self) -> String {
        match self {
            Flow::JsonFilter => "JSON field filter, 1 KB".into(),
            Flow::X12 { size } => format!("X12 850 → canonical, {} KB", size / 1024),
        }
    }

    fn tag(self) -> String {
        match self {
            Flow::JsonFilter => "json".into(),
            Flow::X12 { size } => format!("x12k{}", size / 1024),
        }
    }

    fn payload(self, i: usize) -> String {
        match self {
            Flow::JsonFilter => fixtures::json_order(i, 1024),
            Flow::X12 { size } => fixtures::purchase_order_850_of_size(&format!("PO-{i}"), size),
        }
    }

    fn connector(self, name: &str, from: &str, to: &str) -> String {
        match self {
            Flow::JsonFilter => connector(
                name,
                "json_filter",
                from,
                to,
                "config = { keep = \"status == approved\" }\n[connector.limits]\nconcurrency = 4",
            ),
            Flow::X12 { .. } => {
                connector(name, "x12", from, to, "[connector.limits]\nconcurrency = 4")
            }
        }
    }
}

/// The transform itself, natively: `(topic, payload)` per output.
struct Native {
    rules: json_filter::Rules,
}

impl Native {
    fn new() -> Native {
        let keep = [("keep".to_owned(), "status == approved".to_owned())];
        Native {
            rules: json_filter::Rules::from_config(&keep).unwrap(),
        }
    }

    fn run(&self, flow: Flow, payload: &[u8]) -> Vec<(Option<String>, bytes::Bytes)> {
        match flow {
            Flow::JsonFilter => {
                let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
                match self.rules.decide(&value) {
                    None => vec![],
                    Some(topic) => vec![(
                        topic.map(str::to_owned),
                        bytes::Bytes::copy_from_slice(payload),
                    )],
                }
            }
            Flow::X12 { .. } => x12::inbound(payload, None, &plexus_sdk::clock::now_rfc3339())
                .unwrap()
                .into_iter()
                .map(|r| (r.topic, r.payload.into()))
                .collect(),
        }
    }
}

async fn stream(js: &jetstream::Context, name: &str, subjects: &[&str]) {
    js.get_or_create_stream(stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Publish `RECORDS` inputs, each with an id and a numeric key.
async fn publish_all(js: &jetstream::Context, subject: &str, payload: impl Fn(usize) -> String) {
    let mut acks = Vec::new();
    for i in 0..RECORDS {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("{subject}-{i}").as_str());
        h.insert("Plexus-Key", i.to_string().as_str());
        acks.push(
            js.publish_with_headers(subject.to_owned(), h, payload(i).into())
                .await
                .unwrap(),
        );
        if acks.len() == 1000 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

async fn stored(js: &jetstream::Context, stream_name: &str) -> u64 {
    js.get_stream(stream_name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

async fn wait_stored(js: &jetstream::Context, stream_name: &str, n: u64) {
    while stored(js, stream_name).await < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Counts outputs on `subject` and `subject.>` as they arrive; `rate` is
/// outputs per second between the first and the last, so neither side's
/// start-up (the host's compile, the native consumer's setup) is counted.
struct Arrivals {
    task: tokio::task::JoinHandle<(Instant, Instant)>,
}

impl Arrivals {
    async fn watch(client: &async_nats::Client, subject: &str, expected: usize) -> Arrivals {
        let exact = client.subscribe(subject.to_owned()).await.unwrap();
        let children = client.subscribe(format!("{subject}.>")).await.unwrap();
        let mut both = futures::stream::select(exact, children);
        client.flush().await.unwrap();
        let task = tokio::spawn(async move {
            both.next().await.unwrap();
            let first = Instant::now();
            for _ in 1..expected {
                both.next().await.unwrap();
            }
            (first, Instant::now())
        });
        Arrivals { task }
    }

    async fn rate(self, counted: usize) -> f64 {
        let (first, last) = self.task.await.unwrap();
        (counted - 1) as f64 / (last - first).as_secs_f64()
    }
}

/// The native ceiling: its own connection; the same pull, transform,
/// publish-with-id, await-ack, ack.
async fn native(url: &str, js: &jetstream::Context, flow: Flow, round: usize) -> f64 {
    let tag = format!("{}r{round}", flow.tag());
    let (from, to) = (format!("native.{tag}.in"), format!("native.{tag}.out"));
    stream(js, &format!("NATIVE_{tag}_IN"), &[from.as_str()]).await;
    stream(
        js,
        &format!("NATIVE_{tag}_OUT"),
        &[to.as_str(), format!("{to}.>").as_str()],
    )
    .await;
    publish_all(js, &from, |i| flow.payload(i)).await;
    let arrivals = Arrivals::watch(&js.client(), &to, RECORDS).await;

    under_test(consume_natively(url.to_owned(), tag, to, flow)).await;
    arrivals.rate(RECORDS).await
}

/// The ceiling's consumer: pull, transform, publish every output with its id,
/// await the publish acks, ack the input; until `RECORDS` are taken.
async fn consume_natively(url: String, tag: String, to: String, flow: Flow) {
    let own = plexus_host::bus::Bus::connect(url.as_str())
        .await
        .unwrap()
        .js;
    let consumer: consumer::PullConsumer = own
        .create_consumer_on_stream(
            consumer::pull::Config {
                durable_name: Some(format!("native-{tag}")),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
            format!("NATIVE_{tag}_IN"),
        )
        .await
        .unwrap();
    let transform = Arc::new(Native::new());
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut seen = 0;
    while seen < RECORDS {
        let mut batch = consumer
            .batch()
            .max_messages(IN_FLIGHT)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        while let Some(msg) = batch.next().await {
            let msg = msg.unwrap();
            seen += 1;
            let permit = permits.clone().acquire_owned().await.unwrap();
            let (js, transform, to) = (own.clone(), transform.clone(), to.clone());
            tokio::spawn(async move {
                let h = msg.headers.as_ref().unwrap();
                let id = h.get("Nats-Msg-Id").unwrap().as_str().to_owned();
                let key = h.get("Plexus-Key").unwrap().as_str().to_owned();
                let mut acks = Vec::new();
                for (n, (topic, payload)) in
                    transform.run(flow, &msg.payload).into_iter().enumerate()
                {
                    let mut h = HeaderMap::new();
                    h.insert("Nats-Msg-Id", format!("native:{id}:{n}").as_str());
                    h.insert("Plexus-Key", key.as_str());
                    h.insert("Plexus-Source", id.as_str());
                    h.insert("Plexus-Hops", "native@0");
                    let subject = match topic {
                        Some(topic) => format!("{to}.{topic}"),
                        None => to.clone(),
                    };
                    acks.push(js.publish_with_headers(subject, h, payload).await.unwrap());
                }
                for ack in acks {
                    ack.await.unwrap();
                }
                msg.ack().await.unwrap();
                drop(permit);
            });
        }
    }
}

fn plugin_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../plugins/target/wasm32-wasip2/release/{name}.wasm"
    ))
}

/// One `[[connector]]` table for a transform.
fn connector(name: &str, plugin: &str, from: &str, to: &str, extra: &str) -> String {
    format!(
        "[[connector]]\nname = \"{name}\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"{from}\"\nto = \"{to}\"\n{extra}\n",
        plugin_path(plugin).display()
    )
}

/// Run `work` on the threads of the system under test — the host, or the
/// native ceiling — two workers of its own, as it has in a process of its own.
/// Load generators and collectors run on the benchmark's runtime, so they never
/// queue behind the measured tasks on a shared worker, nor those behind theirs;
/// only the OS shares the cores between them.
fn under_test<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = T> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("under-test")
            .enable_all()
            .build()
            .unwrap()
    });
    let task = runtime.spawn(work);
    async move { task.await.unwrap() }
}

fn host_config(dir: &std::path::Path, url: &str, connectors: &str) -> Config {
    let text = format!(
        "[bus]\nurl = \"{url}\"\n[host]\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:0\"\n{connectors}",
        dir.join("data").display()
    );
    Config::parse(&dir.join("plexus.toml"), &text).unwrap()
}

/// The same flow through the host, the transform a plugin.
async fn plexus(
    js: &jetstream::Context,
    dir: &std::path::Path,
    url: &str,
    flow: Flow,
    round: usize,
) -> f64 {
    let tag = format!("{}r{round}", flow.tag());
    let (from, to) = (format!("host.{tag}.in"), format!("host.{tag}.out"));
    stream(js, &format!("HOST_{tag}_IN"), &[from.as_str()]).await;
    publish_all(js, &from, |i| flow.payload(i)).await;
    let arrivals = Arrivals::watch(&js.client(), &to, RECORDS).await;
    let host = under_test(Host::start(host_config(
        dir,
        url,
        &flow.connector(&tag, &from, &to),
    )))
    .await
    .unwrap();
    let rate = arrivals.rate(RECORDS).await;
    under_test(host.shutdown()).await;
    rate
}

/// Throughput of the records that pass when every `poison_every`-th one is
/// poison (a permanent error, dead-lettered); 0 for none.
async fn poisoned(
    js: &jetstream::Context,
    dir: &std::path::Path,
    url: &str,
    poison_every: usize,
    round: usize,
) -> (f64, u64) {
    let name = format!("poison{poison_every}r{round}");
    let (from, to) = (format!("{name}.in"), format!("{name}.out"));
    stream(js, &format!("{name}_IN"), &[from.as_str()]).await;
    publish_all(js, &from, |i| fixtures::json_order(i, 1024)).await;
    let poison = if poison_every == 0 {
        0
    } else {
        RECORDS.div_ceil(poison_every)
    };
    let clean = RECORDS - poison;
    let arrivals = Arrivals::watch(&js.client(), &to, clean).await;
    let mode = if poison_every == 0 {
        "config = { mode = \"echo\" }".to_owned()
    } else {
        format!("config = {{ mode = \"fail-every-nth\", n = \"{poison_every}\" }}")
    };
    let host = under_test(Host::start(host_config(
        dir,
        url,
        &connector(&name, "testkit", &from, &to, &mode),
    )))
    .await
    .unwrap();
    let rate = arrivals.rate(clean).await;
    let dead = if poison == 0 {
        0
    } else {
        let dlq = js.stream_by_subject(format!("dlq.{name}")).await.unwrap();
        wait_stored(js, &dlq, poison as u64).await;
        stored(js, &dlq).await
    };
    under_test(host.shutdown()).await;
    (rate, dead)
}

/// Upgrade a transform under 2,000 records/s: time from the reload to the
/// first record of the new version, and what was lost or duplicated.
async fn hot_swap(
    js: &jetstream::Context,
    dir: &std::path::Path,
    url: &str,
) -> (Duration, i64, i64) {
    stream(js, "SWAP_IN", &["swap.in"]).await;
    let spec = |tag: &str| {
        host_config(
            dir,
            url,
            &connector(
                "swap",
                "testkit",
                "swap.in",
                "swap.out",
                &format!("config = {{ tag = \"{tag}\" }}"),
            ),
        )
    };
    let mut host = under_test(Host::start(spec("v1"))).await.unwrap();
    let out_stream = js.stream_by_subject("swap.out").await.unwrap();
    let client = js.client();
    let mut sub = client.subscribe("swap.out").await.unwrap();
    let total = 8_000u64;
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            for i in 0..total {
                tokio::time::sleep_until((start + Duration::from_micros(500) * i as u32).into())
                    .await;
                let mut h = HeaderMap::new();
                h.insert("Nats-Msg-Id", format!("swap-{i}").as_str());
                js.publish_with_headers("swap.in", h, "x".into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        })
    };
    wait_stored(js, &out_stream, 2_000).await;
    let reloaded = Instant::now();
    let v2 = spec("v2");
    host = under_test(async move {
        host.reload(v2).await.unwrap();
        host
    })
    .await;
    let mut first_v2 = None;
    while first_v2.is_none() {
        let msg = sub.next().await.unwrap();
        if msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Testkit-Tag"))
            .map(|v| v.as_str() == "v2")
            == Some(true)
        {
            first_v2 = Some(reloaded.elapsed());
        }
    }
    publisher.await.unwrap();
    let mut consumer: consumer::PullConsumer = js
        .get_consumer_from_stream("plexus-swap", "SWAP_IN")
        .await
        .unwrap();
    loop {
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = stored(js, &out_stream).await as i64;
    under_test(host.shutdown()).await;
    let lost = (total as i64 - out).max(0);
    let duplicated = (out - total as i64).max(0);
    (first_v2.unwrap_or_default(), lost, duplicated)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

/// Start-up time with `n` connectors, and resident memory per idle connector.
async fn density(dir: &std::path::Path, url: &str, n: usize) -> (Duration, Duration, f64) {
    let connectors = |count: usize| -> String {
        (0..count)
            .map(|i| {
                connector(
                    &format!("c{i}"),
                    "testkit",
                    &format!("d.in.{i}"),
                    &format!("d.out.{i}"),
                    "",
                )
            })
            .collect()
    };
    // Streams and the runtime exist before the measurement.
    let host = under_test(Host::start(host_config(dir, url, &connectors(1))))
        .await
        .unwrap();
    under_test(host.shutdown()).await;
    let cold_dir = dir.join("cold");
    std::fs::create_dir_all(&cold_dir).unwrap();
    let before = rss_kib();
    let started = Instant::now();
    let host = under_test(Host::start(host_config(&cold_dir, url, &connectors(n))))
        .await
        .unwrap();
    let cold = started.elapsed();
    let after = rss_kib();
    under_test(host.shutdown()).await;
    let started = Instant::now();
    let host = under_test(Host::start(host_config(&cold_dir, url, &connectors(n))))
        .await
        .unwrap();
    let warm = started.elapsed();
    under_test(host.shutdown()).await;
    (
        cold,
        warm,
        after.saturating_sub(before) as f64 / 1024.0 / n as f64,
    )
}

/// Hostile testkit connectors, each fed a trickle of records while measured.
const HOSTILE: [(&str, &str); 4] = [
    (
        "loop",
        "config = { mode = \"loop\" }\n[connector.limits]\ntimeout = \"100ms\"\nconcurrency = 1",
    ),
    (
        "grow",
        "config = { mode = \"grow\" }\n[connector.limits]\nmemory = \"32MiB\"\nconcurrency = 1",
    ),
    (
        "recurse",
        "config = { mode = \"recurse\" }\n[connector.limits]\nconcurrency = 1",
    ),
    (
        "huge",
        "config = { mode = \"huge\", bytes = \"2097152\" }\n[connector.limits]\nconcurrency = 1",
    ),
];
/// Records per second each hostile connector receives.
const HOSTILE_RATE: u64 = 10;
/// Rounds of the hostile-neighbour runs; the median of each quantile is reported.
const HOSTILE_ROUNDS: usize = 3;

/// Open-loop latency at `rate` records/s for `seconds` of the json-filter
/// connector: publish time to the output arriving at a subscriber. The
/// `hostile` plugins (modes from [`HOSTILE`]) run beside it in the same host.
async fn latency(
    client: &async_nats::Client,
    js: &jetstream::Context,
    dir: &std::path::Path,
    url: &str,
    rate: u64,
    seconds: u64,
    hostile: &[&str],
) -> Histogram<u64> {
    // Unique per run: a repeated run must not meet the last one's streams or ids.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("lat{run}x{rate}{}", hostile.concat());
    let (from, to) = (format!("{name}.in"), format!("{name}.out"));
    stream(js, &format!("{name}_IN"), &[from.as_str()]).await;
    let mut connectors = Flow::JsonFilter.connector(&name, &from, &to);
    let mut feeds = Vec::new();
    for (mode, extra) in HOSTILE {
        if hostile.contains(&mode) {
            let hostile_in = format!("{name}.{mode}.in");
            stream(js, &format!("{name}_{mode}_IN"), &[hostile_in.as_str()]).await;
            connectors.push_str(&connector(
                &format!("{name}-{mode}"),
                "testkit",
                &hostile_in,
                &format!("{name}.{mode}.out"),
                extra,
            ));
            feeds.push(hostile_in);
        }
    }
    let host = under_test(Host::start(host_config(dir, url, &connectors)))
        .await
        .unwrap();
    let mut sub = client.subscribe(to.clone()).await.unwrap();
    client.flush().await.unwrap();
    let total = rate * seconds;
    let collector = tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut n = 0;
        while n < total {
            let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(30), sub.next()).await
            else {
                break;
            };
            let sent: u128 = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("Sent-At"))
                .and_then(|v| v.as_str().parse().ok())
                .unwrap_or(0);
            hist.record((now_micros().saturating_sub(sent)).max(1) as u64)
                .unwrap();
            n += 1;
        }
        hist
    });
    let hostile_feed = {
        let js = js.clone();
        tokio::spawn(async move {
            let interval = Duration::from_nanos(1_000_000_000 / HOSTILE_RATE);
            let start = Instant::now();
            for i in 0..HOSTILE_RATE * seconds {
                tokio::time::sleep_until((start + interval * i as u32).into()).await;
                for subject in &feeds {
                    let _ = js.publish(subject.clone(), "hostile".into()).await;
                }
            }
        })
    };
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    for i in 0..total {
        // Open loop: send on schedule whatever the host is doing.
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("{name}-{i}").as_str());
        h.insert("Sent-At", now_micros().to_string().as_str());
        let js = js.clone();
        let from = from.clone();
        tokio::spawn(async move {
            let _ = js
                .publish_with_headers(from, h, fixtures::json_order(i as usize, 1024).into())
                .await;
        });
    }
    let hist = collector.await.unwrap();
    hostile_feed.await.unwrap();
    under_test(host.shutdown()).await;
    hist
}

fn now_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// The floor: a plain NATS publish → subscribe on the same machine.
async fn floor(client: &async_nats::Client) -> Histogram<u64> {
    let mut sub = client.subscribe("floor").await.unwrap();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for _ in 0..2000 {
        let sent = Instant::now();
        client.publish("floor", "x".into()).await.unwrap();
        sub.next().await.unwrap();
        hist.record(sent.elapsed().as_micros().max(1) as u64)
            .unwrap();
    }
    hist
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn quantiles(h: &Histogram<u64>) -> String {
    format!(
        "{} µs | {} µs | {} µs",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999)
    )
}

/// Sections to run: all, or those named on the command line
/// (`cargo bench --bench system -- hostile swap`).
fn wanted(section: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    named.is_empty() || named.iter().any(|n| n == section)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probing: nothing to list
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = find_binary(None).expect("nats-server: run `just setup`");
    let server = EmbeddedNats::start(&binary, &dir.path().join("nats"), None, None).unwrap();
    let url = server.client_url();
    let url = url.as_str();
    let client = plexus_host::bus::Bus::connect(url).await.unwrap().client;
    let js = jetstream::new(client.clone());

    if wanted("throughput") {
        println!(
            "## Throughput: host vs native ceiling ({RECORDS} records per run, median of {ROUNDS} alternating runs)\n"
        );
        println!("| flow | native ceiling, records/s | Plexus host, records/s | ratio |");
        println!("|---|---|---|---|");
        for flow in [
            Flow::JsonFilter,
            Flow::X12 { size: 1024 },
            Flow::X12 { size: 4096 },
        ] {
            // Alternate the two, a few rounds each, and take each one's median:
            // one short run on a shared machine says little.
            let (mut ceilings, mut hosts) = (Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                ceilings.push(native(url, &js, flow, round).await);
                hosts.push(plexus(&js, dir.path(), url, flow, round).await);
            }
            let (ceiling, host) = (median(ceilings), median(hosts));
            println!(
                "| {} | {ceiling:.0} | {host:.0} | {:.2} |",
                flow.label(),
                host / ceiling
            );
        }
    }

    if wanted("poison") {
        let (mut cleans, mut dirties, mut dead) = (Vec::new(), Vec::new(), u64::MAX);
        for round in 0..ROUNDS {
            cleans.push(poisoned(&js, dir.path(), url, 0, round).await.0);
            let (rate, dead_letters) = poisoned(&js, dir.path(), url, 100, round).await;
            dirties.push(rate);
            dead = dead.min(dead_letters);
        }
        let (clean, dirty) = (median(cleans), median(dirties));
        println!(
            "\n## Poison records at 1% ({RECORDS} records, testkit echo, 1 KiB, median of {ROUNDS} alternating runs)\n"
        );
        println!(
            "| clean run, records/s | good records with 1% poison, records/s | ratio | dead-lettered, fewest in a round |"
        );
        println!("|---|---|---|---|");
        println!(
            "| {clean:.0} | {dirty:.0} | {:.2} | {dead} of {} |",
            dirty / clean,
            RECORDS / 100
        );
    }

    if wanted("latency") {
        println!("\n## End-to-end latency (publish → output received), open loop, 10 s per rate\n");
        println!("| load | p50 | p99 | p99.9 |");
        println!("|---|---|---|---|");
        let f = floor(&client).await;
        println!("| plain NATS round trip (floor) | {} |", quantiles(&f));
        for rate in [1_000, 5_000, 10_000] {
            let h = latency(&client, &js, dir.path(), url, rate, 10, &[]).await;
            println!(
                "| {rate} records/s ({} received) | {} |",
                h.len(),
                quantiles(&h)
            );
        }
    }

    if wanted("hostile") {
        println!(
            "\n## A healthy connector beside hostile plugins (2,000 records/s, 10 s; \
             each hostile plugin gets {HOSTILE_RATE} records/s; median of {HOSTILE_ROUNDS} \
             alternating rounds)\n"
        );
        println!("| healthy connector | p50 | p99 | p99.9 | p99 by round |");
        println!("|---|---|---|---|---|");
        let all: Vec<&str> = HOSTILE.iter().map(|(mode, _)| *mode).collect();
        let setups: Vec<&[&str]> = [&[][..]]
            .into_iter()
            .chain(all.iter().map(std::slice::from_ref))
            .chain([all.as_slice()])
            .collect();
        // Every setup once a round, in turn: a slow spell of the machine then
        // lands on all of them rather than on one.
        let mut runs = vec![Vec::new(); setups.len()];
        for _ in 0..HOSTILE_ROUNDS {
            for (setup, modes) in setups.iter().enumerate() {
                let h = latency(&client, &js, dir.path(), url, 2_000, 10, modes).await;
                runs[setup].push([0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q)));
            }
        }
        for (modes, runs) in setups.iter().zip(runs) {
            let label = if modes.is_empty() {
                "alone".to_owned()
            } else {
                format!("beside {}", modes.join(" + "))
            };
            let at = |q: usize| median(runs.iter().map(|r| r[q] as f64).collect());
            let by_round: Vec<String> = runs.iter().map(|r| r[1].to_string()).collect();
            println!(
                "| {label} | {:.0} µs | {:.0} µs | {:.0} µs | {} µs |",
                at(0),
                at(1),
                at(2),
                by_round.join(", ")
            );
        }
    }

    if wanted("swap") {
        let (swap, lost, duplicated) = hot_swap(&js, dir.path(), url).await;
        println!("\n## Hot swap under 2,000 records/s\n");
        println!("| reload → first record of the new version | lost | duplicated |");
        println!("|---|---|---|");
        println!("| {} ms | {lost} | {duplicated} |", swap.as_millis());
    }

    if wanted("fleet") {
        let fleet_dir = tempfile::tempdir().unwrap();
        let mut hosts: Vec<fleet::FleetHost> = (1..=3)
            .map(|i| {
                let labels: &[&str] = if i == 1 { &["group=one"] } else { &[] };
                fleet::FleetHost::start(fleet_dir.path(), url, &format!("bench-{i}"), labels)
            })
            .collect();
        for plugin in ["testkit", "x12"] {
            let path = plugin_path(plugin).display().to_string();
            fleet::plexus(&[
                "deploy",
                &path,
                "--name",
                plugin,
                "--version",
                "1.0.0",
                "--bus",
                url,
            ]);
        }
        let (cold, warm) = fleet::apply_latency(fleet_dir.path(), url, &mut hosts, 5);
        println!("\n## Fleet: apply to running on 3 hosts\n");
        println!(
            "| `plexus apply` → running on all 3, plugin compiled on each | the same, plugin cached (median of 5) |"
        );
        println!("|---|---|");
        println!("| {} ms | {} ms |", cold.as_millis(), warm.as_millis());
        let payload = |i: usize| fixtures::purchase_order_850_of_size(&format!("PO-{i}"), 4096);
        let one = fleet::shared_throughput(
            fleet_dir.path(),
            url,
            &js,
            "scale1",
            "placement = { group = \"one\" }",
            payload,
        )
        .await;
        let three =
            fleet::shared_throughput(fleet_dir.path(), url, &js, "scale3", "", payload).await;
        let shares: Vec<String> = hosts
            .iter()
            .map(|h| h.records_in("scale3").to_string())
            .collect();
        println!(
            "\n## Fleet: one transform on 1 and on 3 hosts sharing its consumer (X12 850 → canonical, 4 KB, {RECORDS} records)\n"
        );
        println!(
            "| 1 host, records/s | 3 hosts, records/s | scaling | records taken by each of the 3 |"
        );
        println!("|---|---|---|---|");
        println!(
            "| {one:.0} | {three:.0} | {:.2}× | {} |",
            three / one,
            shares.join(" / ")
        );
        drop(hosts);
    }

    if wanted("fleet") || wanted("edge") {
        let edge_dir = tempfile::tempdir().unwrap();
        let backlog = 100_000;
        let (resume, rate, stored) = fleet::edge::forward_after_outage(
            edge_dir.path(),
            &binary,
            &plugin_path("mllp"),
            backlog,
        )
        .await;
        println!(
            "\n## Fleet: an edge forwarding a {backlog}-record backlog to the hub after an outage (HL7 requisitions, ~1 KB)\n"
        );
        println!(
            "| hub back → first forwarded record stored | draining, records/s | records at the hub |"
        );
        println!("|---|---|---|");
        println!(
            "| {} ms | {rate:.0} | {stored} of {backlog} |",
            resume.as_millis()
        );
    }

    if wanted("density") {
        let n = 100;
        let (cold, warm, per) = density(dir.path(), url, n).await;
        println!("\n## Start-up and density ({n} idle transform connectors)\n");
        println!(
            "| start, compile cache cold | start, cache warm | resident memory per idle connector |"
        );
        println!("|---|---|---|");
        println!(
            "| {} ms | {} ms | {per:.2} MiB |",
            cold.as_millis(),
            warm.as_millis()
        );
    }
}
