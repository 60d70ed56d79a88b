//! `just demo`: start a host with its embedded bus and the json-filter
//! reference plugin, push sample purchase orders through, print what flowed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use plexus_host::config::Config;
use plexus_host::host::Host;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = Config::load(&root.join("demo/plexus.toml"))?;
    let connector = config.connectors[0].clone();
    let (from, to) = (
        connector.from.clone().unwrap_or_default(),
        connector.to.clone().unwrap_or_default(),
    );
    // A fresh store each run, so the counts below are this run's.
    let _ = std::fs::remove_dir_all(config.data_dir.join("nats"));

    println!("Plexus demo");
    let host = Host::start(config).await?;
    let url = host
        .bus_url()
        .context("the demo config uses the embedded bus")?
        .to_owned();
    println!("  bus        embedded nats-server at {url}");
    println!(
        "  connector  {} (json-filter): {from} -> {to}.{{large,standard}}",
        connector.name
    );
    println!("  metrics    http://{}/metrics", host.http_addr());

    let js = jetstream::new(async_nats::connect(&url).await?);
    let orders = std::fs::read_to_string(root.join("demo/orders.jsonl"))?;
    let mut published = 0;
    for (i, line) in orders.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("demo-order-{i}").as_str());
        js.publish_with_headers(from.clone(), headers, line.to_owned().into())
            .await?
            .await?;
        published += 1;
    }
    println!("\npublished {published} purchase orders to {from}");

    wait_drained(&js, &from, &connector.name).await?;
    println!("\nrouted records:");
    for msg in read_all(&js, &format!("{to}.>")).await? {
        let order: serde_json::Value = serde_json::from_slice(&msg.payload)?;
        println!(
            "  {:<18} {}  {:>10} {}  ({})",
            msg.subject.as_str(),
            order["po_number"].as_str().unwrap_or("?"),
            order["total"]["amount"].as_str().unwrap_or("?"),
            order["total"]["currency"].as_str().unwrap_or(""),
            order["supplier"].as_str().unwrap_or("?"),
        );
    }
    let dlq = &connector.delivery.dlq;
    println!("\ndead letters on {dlq}:");
    for msg in read_all(&js, dlq).await? {
        let error = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Plexus-Error"))
            .map(|v| v.as_str().to_owned());
        println!(
            "  {:?}\n    reason: {}",
            String::from_utf8_lossy(&msg.payload),
            error.unwrap_or_default()
        );
    }

    let metrics = host.metrics().encode();
    let sample = |name: &str| {
        let prefix = format!("{name}{{connector=\"{}\"}} ", connector.name);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or("0")
            .to_owned()
    };
    println!(
        "\nmetrics: records in {}, out {}, dead-lettered {} (drafts and cancellations were filtered out)",
        sample("plexus_records_in_total"),
        sample("plexus_records_out_total"),
        sample("plexus_dlq_total")
    );
    println!("look further: `plexus up -c demo/plexus.toml` runs the same host until Ctrl-C;");
    println!("              its /metrics and the streams PLEXUS_* on the bus show the flow.");
    host.shutdown().await;
    Ok(())
}

/// Wait until the connector has processed and acknowledged everything.
async fn wait_drained(js: &jetstream::Context, from: &str, name: &str) -> anyhow::Result<()> {
    let stream = js.stream_by_subject(from).await?;
    let mut consumer: consumer::PullConsumer = js
        .get_consumer_from_stream(format!("plexus-{name}"), stream)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = consumer.info().await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the connector did not finish within 30s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message stored under `subject`.
async fn read_all(
    js: &jetstream::Context,
    subject: &str,
) -> anyhow::Result<Vec<jetstream::Message>> {
    let stream = js.get_stream(js.stream_by_subject(subject).await?).await?;
    let reader = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: subject.to_owned(),
            ..Default::default()
        })
        .await?;
    let mut out = Vec::new();
    let mut batch = reader.fetch().max_messages(1000).messages().await?;
    while let Some(msg) = batch.next().await {
        out.push(msg.map_err(|e| anyhow::anyhow!(e))?);
    }
    Ok(out)
}
