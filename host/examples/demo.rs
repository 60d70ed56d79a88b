//! `just demo`: start a host with its embedded bus and the reference
//! connectors (file drops, a filter, an ERP sink, an MLLP listener, and the
//! X12 and HL7 v2 mappings to the canonical model), push sample data
//! through, and print what flowed.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer};
use axum::extract::State;
use axum::http::HeaderMap;
use futures::StreamExt as _;
use plexus_host::config::Config;
use plexus_host::host::Host;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the mock ERP received: (idempotency key, body).
type Received = Arc<Mutex<Vec<(String, String)>>>;

const HL7: [&str; 4] = [
    "MSH|^~\\&|LAB|ST-MARYS|PLEXUS|HQ|20260522083000||OMS^O05^OMS_O05|REQ-5001|P|2.5\rORC|NW|REQ-5001|||||||202605220830||||||||||||ST MARYS LAB\rRQD|1|4471^Sterile gauze 4x4^LAB|||20|BX\rRQ1|6.25||||\r",
    "MSH|^~\\&|LAB|ST-MARYS|PLEXUS|HQ|20260522083100||OMS^O05^OMS_O05|REQ-5002|P|2.5\rORC|NW|REQ-5002|||||||202605220830||||||||||||ST MARYS LAB\rRQD|1|8812^Nitrile gloves M^LAB|||40|BX\r",
    "MSH|^~\\&|MMIS|ST-MARYS|PLEXUS|HQ|20260522091500||MFN^M16^MFN_M16|ITEM-77|P|2.6\rMFE|MAD|1|20260522|4471\rITM|4471|Sterile gauze 4x4|A||42311505^Gauze^UNSPSC||||MDS1955||Y\rPKG|1|EA||1\rPKG|2|BX||50\r",
    "this line is not HL7",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = Config::load(&root.join("demo/plexus.toml"))?;
    // A fresh store each run, so the counts below are this run's.
    let _ = std::fs::remove_dir_all(config.data_dir.join("nats"));

    let received = Received::default();
    let erp = axum::Router::new()
        .route("/orders", axum::routing::post(erp_orders))
        .with_state(received.clone());
    let erp_listener = tokio::net::TcpListener::bind("127.0.0.1:17701")
        .await
        .context("the mock ERP needs 127.0.0.1:17701")?;
    tokio::spawn(async move { axum::serve(erp_listener, erp).await });

    println!("Plexus demo");
    let host = Host::start(config).await?;
    let url = host
        .bus_url()
        .context("the demo config uses the embedded bus")?
        .to_owned();
    println!("  bus        embedded nats-server at {url}");
    println!("  metrics    http://{}/metrics", host.http_addr());
    println!("  connectors st-marys-outbox (file-drop)  demo/outbox/*.jsonl -> raw.demo.po");
    println!("             po-router (json-filter)      raw.demo.po -> demo.po.{{large,standard}}");
    println!(
        "             erp-large-orders (http-post) demo.po.large -> http://127.0.0.1:17701/orders"
    );
    println!("             lab-hl7 (mllp)               mllp://127.0.0.1:12575 -> raw.demo.hl7");
    println!("             hl7-canonical (hl7v2)        raw.demo.hl7 -> canon.<entity>");
    println!("             edi-inbox (file-drop)        demo/edi/*.x12 -> raw.demo.x12");
    println!("             edi-canonical (x12)          raw.demo.x12 -> canon.<entity>");
    println!("             dock-fhir (fhir)             raw.demo.fhir -> canon.<entity>");
    println!(
        "             three-way-match              canon.> -> exceptions.<code>, exceptions.accrual"
    );

    let js = host.bus().js.clone();
    wait_for(&js, "raw.demo.po", 8).await?;
    wait_drained(&js, "raw.demo.po", "po-router").await?;
    wait_drained(&js, "demo.po.large", "erp-large-orders").await?;

    println!("\n1. the outbox file's 8 orders were picked up and routed:");
    for msg in read_all(&js, "demo.po.>").await? {
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
    println!(
        "  drafts and cancellations were filtered out; one line that is not JSON was dead-lettered:"
    );
    for msg in read_all(&js, "dlq.po-router").await? {
        println!(
            "  dlq.po-router      {:?}\n                     reason: {}",
            String::from_utf8_lossy(&msg.payload),
            header(&msg, "Plexus-Error")
        );
    }

    println!("\n2. the large orders were POSTed to the ERP, each with an Idempotency-Key:");
    for (key, body) in received.lock().map(|r| r.clone()).unwrap_or_default() {
        let order: serde_json::Value = serde_json::from_str(&body)?;
        println!(
            "  ERP got {}  Idempotency-Key {key}",
            order["po_number"].as_str().unwrap_or("?")
        );
    }

    println!("\n3. HL7 v2 over MLLP; the ACK comes only once the message is stored:");
    let mut lab = tokio::net::TcpStream::connect("127.0.0.1:12575").await?;
    for message in HL7 {
        lab.write_all(&[&[0x0b], message.as_bytes(), &[0x1c, 0x0d]].concat())
            .await?;
        let ack = read_frame(&mut lab).await?;
        let msa = ack
            .split('\r')
            .find(|s| s.starts_with("MSA"))
            .unwrap_or_default()
            .to_owned();
        println!(
            "  sent {:<38} ack {msa}",
            message
                .split('\r')
                .next()
                .unwrap_or_default()
                .chars()
                .take(38)
                .collect::<String>()
        );
    }
    for msg in read_all(&js, "raw.demo.hl7").await? {
        println!(
            "  raw.demo.hl7       {} ({})",
            header(&msg, "Plexus-Key"),
            header(&msg, "HL7-Message-Type")
        );
    }

    wait_for(&js, "raw.demo.x12", 2).await?;
    wait_drained(&js, "raw.demo.x12", "edi-canonical").await?;
    wait_drained(&js, "raw.demo.hl7", "hl7-canonical").await?;
    println!(
        "\n4. X12 (850, 855, 856, 810) and HL7 v2 became canonical records, each checked against its schema:"
    );
    for msg in read_all(&js, "canon.>").await? {
        let record: serde_json::Value = serde_json::from_slice(&msg.payload)?;
        println!(
            "  {:<24} {:<22} {:<20} from {}",
            msg.subject.as_str(),
            header(&msg, "Plexus-Key"),
            header(&msg, "Plexus-Schema"),
            record["provenance"]["source_system"]
                .as_str()
                .unwrap_or("?")
        );
    }
    if let Some(invoice) = read_all(&js, "canon.invoice").await?.first() {
        let record: serde_json::Value = serde_json::from_slice(&invoice.payload)?;
        println!(
            "  the invoice, as finance sees it:\n{}",
            indent(&serde_json::to_string_pretty(&record)?)
        );
    }

    wait_drained(&js, "canon.>", "three-way-match").await?;
    println!("\n5. the three-way matcher's open exceptions (money at risk, tied to the facility):");
    print_exceptions(&js, "open").await?;

    // Late documents: the supplier credits the back-ordered gloves it had
    // invoiced (X12 810), and the dock's inventory system reports the
    // delivery (a FHIR SupplyDelivery).
    let before = resolved(&js).await?;
    publish_file(
        &js,
        &root,
        "raw.demo.x12",
        "demo/late/credit-memo-005010.x12",
    )
    .await?;
    wait_for(&js, "raw.demo.x12", 3).await?;
    wait_drained(&js, "raw.demo.x12", "edi-canonical").await?;
    publish_file(
        &js,
        &root,
        "raw.demo.fhir",
        "demo/late/dock-delivery-r5.json",
    )
    .await?;
    wait_for(&js, "raw.demo.fhir", 1).await?;
    wait_drained(&js, "raw.demo.fhir", "dock-fhir").await?;
    wait_drained(&js, "canon.>", "three-way-match").await?;
    println!(
        "\n6. late documents arrive: a credit memo for the 2 back-ordered boxes (demo/late/credit-memo-005010.x12)\n   and the dock's receipt (demo/late/dock-delivery-r5.json, FHIR). What they resolved:"
    );
    for (id, e) in resolved(&js).await? {
        if !before.contains_key(&id) {
            println!(
                "  {id:<34} resolved by {:<12} {}",
                e["resolution"].as_str().unwrap_or("?"),
                e["resolved_at"].as_str().unwrap_or("?")
            );
        }
    }
    println!("  still open:");
    print_exceptions(&js, "open").await?;

    println!(
        "\n7. what finance accrues (received, not invoiced), per order line (the latest record of each):"
    );
    let mut accruals = std::collections::BTreeMap::new();
    for msg in read_all(&js, "exceptions.accrual").await? {
        let a: serde_json::Value = serde_json::from_slice(&msg.payload)?;
        accruals.insert(a["accrual_id"].as_str().unwrap_or("?").to_owned(), a);
    }
    for (id, a) in &accruals {
        println!(
            "  {id:<14} ordered {:>4} received {:>4} invoiced {:>4} accrued {:>4} = {:>9} {}",
            a["quantity_ordered"].as_str().unwrap_or("?"),
            a["quantity_received"].as_str().unwrap_or("?"),
            a["quantity_invoiced"].as_str().unwrap_or("?"),
            a["quantity_accrued"].as_str().unwrap_or("?"),
            a["amount_accrued"]["amount"].as_str().unwrap_or("?"),
            a["amount_accrued"]["currency"].as_str().unwrap_or("?"),
        );
    }

    let metrics = host.metrics().encode();
    println!("\nmetrics (records in / out / dead-lettered):");
    for name in [
        "st-marys-outbox",
        "po-router",
        "erp-large-orders",
        "lab-hl7",
        "hl7-canonical",
        "edi-inbox",
        "edi-canonical",
        "dock-fhir",
        "three-way-match",
    ] {
        let sample = |metric: &str| {
            let prefix = format!("{metric}{{connector=\"{name}\"}} ");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or("0")
                .to_owned()
        };
        println!(
            "  {name:<18} {} / {} / {}",
            sample("plexus_records_in_total"),
            sample("plexus_records_out_total"),
            sample("plexus_dlq_total")
        );
    }
    println!(
        "\nlook further: `plexus trace <exception id> -c demo/plexus.toml` while it runs shows a record's hops;"
    );
    println!("              `plexus up -c demo/plexus.toml` runs the same host until Ctrl-C.");
    let dashboard = format!("http://{}/", host.http_addr());
    println!(
        "\ndashboard: {dashboard}  (exceptions: {dashboard}exceptions, dead letters: {dashboard}dead-letters)"
    );
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        println!("the host keeps running for the dashboard; Ctrl-C stops it.");
        tokio::signal::ctrl_c().await?;
    }
    host.shutdown().await;
    Ok(())
}

async fn erp_orders(
    State(received): State<Received>,
    headers: HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut received) = received.lock() {
        received.push((key, body));
    }
    axum::http::StatusCode::CREATED
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each exception's latest record, by id.
async fn exceptions(
    js: &jetstream::Context,
) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let mut latest = std::collections::BTreeMap::new();
    for msg in read_all(js, "exceptions.>").await? {
        if msg.subject.as_str() == "exceptions.accrual" {
            continue;
        }
        let e: serde_json::Value = serde_json::from_slice(&msg.payload)?;
        latest.insert(e["exception_id"].as_str().unwrap_or("?").to_owned(), e);
    }
    Ok(latest)
}

/// The exceptions that stand resolved.
async fn resolved(
    js: &jetstream::Context,
) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let mut all = exceptions(js).await?;
    all.retain(|_, e| e["status"] == "resolved");
    Ok(all)
}

/// Publish a file of the demo to `subject`, as an upstream system would.
async fn publish_file(
    js: &jetstream::Context,
    root: &Path,
    subject: &str,
    file: &str,
) -> anyhow::Result<()> {
    let body = std::fs::read(root.join(file)).with_context(|| format!("cannot read {file}"))?;
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("demo:{file}").as_str());
    js.publish_with_headers(subject.to_owned(), h, body.into())
        .await?
        .await?;
    Ok(())
}

/// The exceptions with `status`: money at risk, facility, detail.
async fn print_exceptions(js: &jetstream::Context, status: &str) -> anyhow::Result<()> {
    for (id, e) in exceptions(js).await? {
        if e["status"] != status {
            continue;
        }
        println!(
            "  {id:<34} {:>9} {}  {}  {}",
            e["exposure"]["amount"].as_str().unwrap_or("?"),
            e["exposure"]["currency"].as_str().unwrap_or("?"),
            e["facility"]["name"].as_str().unwrap_or("?"),
            e["detail"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

fn header(msg: &jetstream::Message, name: &str) -> String {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

async fn read_frame(stream: &mut tokio::net::TcpStream) -> anyhow::Result<String> {
    let mut frame = Vec::new();
    let mut byte = [0u8; 1];
    while !frame.ends_with(&[0x1c, 0x0d]) {
        stream.read_exact(&mut byte).await?;
        frame.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&frame).into_owned())
}

/// Wait until `subject` holds `n` records.
async fn wait_for(js: &jetstream::Context, subject: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_all(js, subject).await.map(|m| m.len()).unwrap_or(0) < n {
        if Instant::now() > deadline {
            bail!("{subject} did not reach {n} records within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
            bail!("connector {name} did not finish within 30s");
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
