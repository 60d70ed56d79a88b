//! System benchmarks on a real nats-server: throughput of the host against a
//! native ceiling (a hand-written JetStream consumer doing the same work with
//! the same acks and headers), and end-to-end latency at fixed rates against
//! a plain NATS round trip. Run with `just bench`; results go to
//! `bench/RESULTS.md`. Numbers are ratios measured side by side in one run,
//! so they hold on a noisy machine better than absolute values.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use plexus_host::bus::embedded::{EmbeddedNats, find_binary};
use plexus_host::config::Config;
use plexus_host::host::Host;
use tokio::sync::Semaphore;

const RECORDS: usize = 20_000;

fn payload(i: usize, size: usize) -> String {
    let pad = size.saturating_sub(96);
    format!(
        r#"{{"po_number":"PO-{i}","status":"approved","total":{{"amount":"{}.00","currency":"USD"}},"note":"{}"}}"#,
        i % 50_000,
        "x".repeat(pad)
    )
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

async fn publish_all(js: &jetstream::Context, subject: &str, size: usize) {
    let mut acks = Vec::new();
    for i in 0..RECORDS {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("in-{i}").as_str());
        acks.push(
            js.publish_with_headers(subject.to_owned(), h, payload(i, size).into())
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

/// The native ceiling: the same pull, filter, publish-with-id, await-ack, ack.
async fn native(js: &jetstream::Context, size: usize) -> f64 {
    stream(js, "NATIVE_IN", &["native.in"]).await;
    stream(js, "NATIVE_OUT", &["native.out"]).await;
    publish_all(js, "native.in", size).await;
    let consumer: consumer::PullConsumer = js
        .create_consumer_on_stream(
            consumer::pull::Config {
                durable_name: Some("native".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
            "NATIVE_IN",
        )
        .await
        .unwrap();
    let started = Instant::now();
    // As many records in flight as the host allows itself (its IN_FLIGHT).
    let permits = Arc::new(Semaphore::new(256));
    let mut seen = 0;
    while seen < RECORDS {
        let mut batch = consumer
            .batch()
            .max_messages(256)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        while let Some(msg) = batch.next().await {
            let msg = msg.unwrap();
            seen += 1;
            let permit = permits.clone().acquire_owned().await.unwrap();
            let js = js.clone();
            tokio::spawn(async move {
                let value: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
                if value["status"] == "approved" {
                    let id = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.as_str().to_owned())
                        .unwrap();
                    let mut h = HeaderMap::new();
                    h.insert("Nats-Msg-Id", format!("native:{id}").as_str());
                    h.insert("Plexus-Source", id.as_str());
                    h.insert("Plexus-Hops", "native@0");
                    js.publish_with_headers("native.out", h, msg.payload.clone())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                }
                msg.ack().await.unwrap();
                drop(permit);
            });
        }
    }
    wait_stored(js, "NATIVE_OUT", RECORDS as u64).await;
    RECORDS as f64 / started.elapsed().as_secs_f64()
}

fn testkit_config(
    dir: &std::path::Path,
    url: &str,
    connectors: &[(String, String, String, String)],
) -> Config {
    let plugin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release/testkit.wasm");
    let mut text = format!(
        "[bus]\nurl = \"{url}\"\n[host]\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:0\"\n",
        dir.join("data").display()
    );
    for (name, from, to, tag) in connectors {
        text.push_str(&format!(
            "[[connector]]\nname = \"{name}\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"{from}\"\nto = \"{to}\"\nconfig = {{ tag = \"{tag}\" }}\n",
            plugin.display()
        ));
    }
    Config::parse(&dir.join("plexus.toml"), &text).unwrap()
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
        testkit_config(
            dir,
            url,
            &[(
                "swap".into(),
                "swap.in".into(),
                "swap.out".into(),
                tag.into(),
            )],
        )
    };
    let mut host = Host::start(spec("v1")).await.unwrap();
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
    host.reload(spec("v2")).await.unwrap();
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
    let consumer: consumer::PullConsumer = js
        .get_consumer_from_stream("plexus-swap", "SWAP_IN")
        .await
        .unwrap();
    let mut consumer = consumer;
    loop {
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = stored(js, &out_stream).await as i64;
    host.shutdown().await;
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
    let connectors: Vec<_> = (0..n)
        .map(|i| {
            (
                format!("c{i}"),
                format!("d.in.{i}"),
                format!("d.out.{i}"),
                "x".to_owned(),
            )
        })
        .collect();
    let one = testkit_config(dir, url, &connectors[..1]);
    let host = Host::start(one).await.unwrap();
    host.shutdown().await;
    let cold_dir = dir.join("cold");
    std::fs::create_dir_all(&cold_dir).unwrap();
    let before = rss_kib();
    let started = Instant::now();
    let host = Host::start(testkit_config(&cold_dir, url, &connectors))
        .await
        .unwrap();
    let cold = started.elapsed();
    let after = rss_kib();
    host.shutdown().await;
    let started = Instant::now();
    let host = Host::start(testkit_config(&cold_dir, url, &connectors))
        .await
        .unwrap();
    let warm = started.elapsed();
    host.shutdown().await;
    (
        cold,
        warm,
        after.saturating_sub(before) as f64 / 1024.0 / n as f64,
    )
}

fn config(dir: &std::path::Path, url: &str, name: &str, from: &str, to: &str) -> Config {
    let plugin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release/json_filter.wasm");
    let text = format!(
        "[bus]\nurl = \"{url}\"\n[host]\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:0\"\n\
         [[connector]]\nname = \"{name}\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"{from}\"\nto = \"{to}\"\n\
         config = {{ keep = \"status == approved\" }}\n[connector.limits]\nconcurrency = 4\n",
        dir.join("data").display(),
        plugin.display()
    );
    Config::parse(&dir.join("plexus.toml"), &text).unwrap()
}

/// The same flow through the host with the json-filter plugin.
async fn plexus(js: &jetstream::Context, dir: &std::path::Path, url: &str, size: usize) -> f64 {
    stream(js, "PLEXUS_IN", &["plexus.in"]).await;
    publish_all(js, "plexus.in", size).await;
    let started = Instant::now();
    let host = Host::start(config(dir, url, "bench", "plexus.in", "plexus.out"))
        .await
        .unwrap();
    let out = js.stream_by_subject("plexus.out").await.unwrap();
    wait_stored(js, &out, RECORDS as u64).await;
    let rate = RECORDS as f64 / started.elapsed().as_secs_f64();
    host.shutdown().await;
    rate
}

/// Open-loop latency at `rate` records/s for `seconds`: publish time to the
/// output arriving at a subscriber, through the host.
async fn latency(
    client: &async_nats::Client,
    js: &jetstream::Context,
    dir: &std::path::Path,
    url: &str,
    rate: u64,
    seconds: u64,
) -> Histogram<u64> {
    let (from, to) = (format!("lat{rate}.in"), format!("lat{rate}.out"));
    stream(js, &format!("LAT{rate}_IN"), &[from.as_str()]).await;
    let host = Host::start(config(dir, url, &format!("lat{rate}"), &from, &to))
        .await
        .unwrap();
    let mut sub = client.subscribe(to.clone()).await.unwrap();
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
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros();
            hist.record((now.saturating_sub(sent)).max(1) as u64)
                .unwrap();
            n += 1;
        }
        hist
    });
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    for i in 0..total {
        // Open loop: send on schedule whatever the host is doing.
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("l{rate}-{i}").as_str());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        h.insert("Sent-At", now.to_string().as_str());
        let js = js.clone();
        let from = from.clone();
        tokio::spawn(async move {
            let _ = js
                .publish_with_headers(from, h, payload(i as usize, 1024).into())
                .await;
        });
    }
    let hist = collector.await.unwrap();
    host.shutdown().await;
    hist
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probing: nothing to list
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = find_binary(None).expect("nats-server: run `just setup`");
    let server = EmbeddedNats::start(&binary, &dir.path().join("nats"), None).unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());

    println!(
        "## Throughput: host vs native ceiling ({RECORDS} records, 1 KiB JSON, json-filter keep rule)\n"
    );
    println!("| flow | records/s | ratio |");
    println!("|---|---|---|");
    let ceiling = native(&js, 1024).await;
    let host = plexus(&js, dir.path(), server.url(), 1024).await;
    println!("| native Rust consumer (ceiling) | {ceiling:.0} | 1.00 |");
    println!(
        "| Plexus host, wasm plugin | {host:.0} | {:.2} |",
        host / ceiling
    );

    println!("\n## End-to-end latency (publish → output received), open loop, 10 s per rate\n");
    println!("| load | p50 | p99 | p99.9 |");
    println!("|---|---|---|---|");
    let f = floor(&client).await;
    println!(
        "| plain NATS round trip (floor) | {} µs | {} µs | {} µs |",
        f.value_at_quantile(0.5),
        f.value_at_quantile(0.99),
        f.value_at_quantile(0.999)
    );
    for rate in [1_000, 5_000, 10_000] {
        let h = latency(&client, &js, dir.path(), server.url(), rate, 10).await;
        println!(
            "| {rate} records/s ({} received) | {} µs | {} µs | {} µs |",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        );
    }

    let (swap, lost, duplicated) = hot_swap(&js, dir.path(), server.url()).await;
    println!("\n## Hot swap under 2,000 records/s\n");
    println!("| reload → first record of the new version | lost | duplicated |");
    println!("|---|---|---|");
    println!("| {} ms | {lost} | {duplicated} |", swap.as_millis());

    let n = 100;
    let (cold, warm, per) = density(dir.path(), server.url(), n).await;
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
