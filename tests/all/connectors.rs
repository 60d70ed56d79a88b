//! Sources, sinks and listeners against real HTTP servers and MLLP clients
//! started here: each entry polled once across a crash between publish and
//! cursor commit; a flapping sink endpoint ends with every record delivered
//! once; grants refuse what was not granted; secrets never leak; MLLP senders
//! get AA only for stored messages and the listener survives bad traffic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use tokio::io::AsyncWriteExt as _;

use crate::support::*;

// ---------------------------------------------------------------- FHIR polling

/// A FHIR server with `resources` SupplyDeliveries, 4 per page, filtered by
/// `_lastUpdated=gt<instant>`.
#[derive(Default)]
struct Fhir {
    resources: Mutex<Vec<serde_json::Value>>,
    pages_served: Mutex<usize>,
}

fn delivery(n: usize) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "SupplyDelivery",
        "id": format!("sd-{n}"),
        "meta": { "versionId": "1", "lastUpdated": format!("2026-05-22T08:{:02}:00Z", n) },
        "status": "completed",
    })
}

async fn fhir_search(
    State(fhir): State<Arc<Fhir>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> axum::Json<serde_json::Value> {
    *fhir.pages_served.lock().unwrap() += 1;
    let host = headers.get("host").unwrap().to_str().unwrap().to_owned();
    let since = q
        .get("_lastUpdated")
        .and_then(|v| v.strip_prefix("gt"))
        .unwrap_or("")
        .to_owned();
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let matching: Vec<serde_json::Value> = fhir
        .resources
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r["meta"]["lastUpdated"].as_str().unwrap() > since.as_str())
        .cloned()
        .collect();
    let entries: Vec<_> = matching
        .iter()
        .skip(page * 4)
        .take(4)
        .map(|r| serde_json::json!({ "resource": r }))
        .collect();
    let mut links = vec![];
    if (page + 1) * 4 < matching.len() {
        let mut next = format!("http://{host}/fhir/SupplyDelivery?page={}", page + 1);
        if !since.is_empty() {
            next.push_str(&format!("&_lastUpdated=gt{since}"));
        }
        links.push(serde_json::json!({ "relation": "next", "url": next }));
    }
    axum::Json(
        serde_json::json!({ "resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_five_pages_yields_each_entry_once_across_a_crash_before_the_cursor_commit() {
    let fhir = Arc::new(Fhir::default());
    fhir.resources.lock().unwrap().extend((0..20).map(delivery));
    let addr = serve(
        Router::new()
            .route("/fhir/SupplyDelivery", get(fhir_search))
            .with_state(fhir.clone()),
    )
    .await;
    let bus = TestBus::start().await;
    // Cursor commits fail (values over 1 byte), as if the host died between
    // publishing a poll's records and committing its cursor, on every poll.
    bus.js
        .create_key_value(kv::Config {
            bucket: "plexus-cursors".into(),
            max_value_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let source = connector(
        "deliveries",
        "source",
        "http-poll",
        &format!(
            "schedule = \"200ms\"\nto = \"raw.fhir\"\nconfig = {{ url = \"http://{addr}/fhir/SupplyDelivery\" }}\n[connector.grants]\nhttp = [\"http://{addr}\"]\n[connector.delivery]\nmax_deliver = 1\nbackoff = [\"100ms\"]"
        ),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &source);
    let config = file.to_str().unwrap();

    let mut first = HostProcess::spawn(&["up", "-c", config], bus.dir.path());
    first.wait_line("plexus: up");
    bus.wait_for_count("raw.fhir", 20).await;
    wait_until("the endpoint is polled from the start again", || {
        *fhir.pages_served.lock().unwrap() >= 15
    })
    .await;
    first.kill9();
    assert_eq!(
        bus.count("raw.fhir").await,
        20,
        "re-polled entries were de-duplicated"
    );

    bus.js.delete_key_value("plexus-cursors").await.unwrap();
    let mut second = HostProcess::spawn(&["up", "-c", config], bus.dir.path());
    second.wait_line("plexus: up");
    let cursors = wait_for_bucket(&bus, "plexus-cursors").await;
    wait_for_key(&cursors, "deliveries", "2026-05-22T08:19:00Z").await;
    fhir.resources
        .lock()
        .unwrap()
        .extend((20..23).map(delivery));
    bus.wait_for_count("raw.fhir", 23).await;
    wait_for_key(&cursors, "deliveries", "2026-05-22T08:22:00Z").await;
    second.signal("TERM");
    assert!(second.child.wait().unwrap().success());

    let out = bus.messages("raw.fhir").await;
    assert_eq!(out.len(), 23, "each entry exactly once");
    let mut keys: Vec<String> = out
        .iter()
        .map(|m| header(m, "Plexus-Key").unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 23);
    assert!(keys.contains(&"SupplyDelivery/sd-22/_history/1".to_string()));
    // The source record's identity: its key and a digest of its content.
    let source = header(&out[0], "Plexus-Source").unwrap();
    let key = header(&out[0], "Plexus-Key").unwrap();
    let digest = source
        .strip_prefix(&format!("deliveries:{key}#"))
        .unwrap_or_else(|| panic!("{source}"));
    assert!(
        digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{source}"
    );
}

async fn wait_for_bucket(bus: &TestBus, name: &str) -> kv::Store {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(store) = bus.js.get_key_value(name).await {
            return store;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bucket {name} never appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn wait_for_key(store: &kv::Store, key: &str, value: &str) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if store.get(key).await.unwrap().as_deref() == Some(value.as_bytes()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{key} never became {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------ HTTP sink

/// An ERP endpoint that fails its first `failures` requests, then applies each
/// idempotency key once.
#[derive(Default)]
struct Erp {
    failures: Mutex<usize>,
    applied: Mutex<HashMap<String, usize>>,
    requests: Mutex<usize>,
    authorizations: Mutex<Vec<String>>,
}

async fn erp_post(
    State(erp): State<Arc<Erp>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    *erp.requests.lock().unwrap() += 1;
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    erp.authorizations.lock().unwrap().push(auth.clone());
    if body.contains("reject me") {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            [("retry-after", "0")],
            format!("invalid order; you sent {auth}"),
        );
    }
    {
        let mut failures = erp.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "0")],
                "down for maintenance".into(),
            );
        }
    }
    let key = headers
        .get("idempotency-key")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    *erp.applied.lock().unwrap().entry(key).or_default() += 1;
    (StatusCode::CREATED, [("retry-after", "0")], String::new())
}

/// A host config with one `erp` sink posting to `addr`, its token in a secrets file.
fn erp_config(bus: &TestBus, addr: SocketAddr) -> std::path::PathBuf {
    let secrets = secrets_file(bus.dir.path());
    let sink = erp_sink(
        "erp",
        &format!("http://{addr}/orders"),
        &format!("http://{addr}"),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &sink);
    with_secrets(&file, &secrets);
    file
}

/// An ERP endpoint on a free port that fails its first `failures` requests.
async fn erp_endpoint(failures: usize) -> (Arc<Erp>, SocketAddr) {
    let erp = Arc::new(Erp::default());
    *erp.failures.lock().unwrap() = failures;
    let addr = serve(
        Router::new()
            .route("/orders", post(erp_post))
            .with_state(erp.clone()),
    )
    .await;
    (erp, addr)
}

fn erp_sink(name: &str, url: &str, grant: &str) -> String {
    connector(
        name,
        "sink",
        "http-post",
        &format!(
            "from = \"erp.orders\"\nconfig = {{ url = \"{url}\", auth_secret = \"ERP_TOKEN\" }}\n[connector.grants]\nhttp = [\"{grant}\"]\nsecrets = [\"ERP_TOKEN\"]\n[connector.delivery]\nmax_deliver = 50\nbackoff = [\"20ms\", \"50ms\"]"
        ),
    )
}

const TOKEN: &str = "tok-9f8e7d6c5b4a";

fn secrets_file(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("secrets.toml");
    std::fs::write(&file, format!("ERP_TOKEN = \"{TOKEN}\"\n")).unwrap();
    file
}

fn with_secrets(config: &std::path::Path, secrets: &std::path::Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let text = text.replacen(
        "[host]\n",
        &format!("[host]\nsecrets_file = \"{}\"\n", secrets.display()),
        1,
    );
    std::fs::write(config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_sink_endpoint_ends_with_every_record_delivered_once() {
    let (erp, addr) = erp_endpoint(40).await;
    let bus = TestBus::start().await;
    bus.stream("ERP", "erp.orders").await;
    bus.publish_range("erp.orders", 0..60, |i| format!("{{\"po\":\"PO-{i}\"}}"))
        .await;
    let file = erp_config(&bus, addr);
    let host = start_host(&file).await;
    bus.wait_drained("erp.orders", "erp").await;

    let applied = erp.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 60, "every record delivered");
    assert!(
        applied.values().all(|&n| n == 1),
        "none applied twice: {applied:?}"
    );
    assert_eq!(
        *erp.failures.lock().unwrap(),
        0,
        "the endpoint was down for a while"
    );
    assert!(
        erp.authorizations
            .lock()
            .unwrap()
            .iter()
            .all(|a| a == &format!("Bearer {TOKEN}"))
    );
    assert_eq!(bus.count("dlq.erp").await, 0);
    let metrics = scrape(host.http_addr());
    assert_eq!(
        metric(&metrics, "plexus_records_out_total{connector=\"erp\"}"),
        60.0
    );
    assert_eq!(
        metric(
            &metrics,
            "plexus_errors_total{connector=\"erp\",kind=\"retryable\"}"
        ),
        40.0
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_metrics_or_dead_letters() {
    let (erp, addr) = erp_endpoint(0).await;
    let bus = TestBus::start().await;
    bus.stream("ERP", "erp.orders").await;
    bus.publish_range("erp.orders", 0..3, |i| {
        format!("{{\"po\":\"PO-{i}\",\"note\":\"reject me\"}}")
    })
    .await;
    let file = erp_config(&bus, addr);
    let mut host = HostProcess::spawn_with_env(
        &["up", "-c", file.to_str().unwrap()],
        bus.dir.path(),
        &[(
            "PLEXUS_LOG",
            "trace,cranelift=info,wasmtime=info,async_nats=info,hyper=info",
        )],
    );
    let line = host.wait_line("plexus: up");
    let metrics_addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    bus.wait_drained("erp.orders", "erp").await;

    assert_eq!(
        *erp.requests.lock().unwrap(),
        3,
        "the endpoint did see the token"
    );
    let dead = bus.messages("dlq.erp").await;
    assert_eq!(dead.len(), 3);
    for msg in &dead {
        let error = header(msg, "Plexus-Error").unwrap();
        assert!(
            error.contains("HTTP 422: invalid order; you sent Bearer [redacted]"),
            "{error}"
        );
        let everything = format!("{:?}{:?}", msg.headers, msg.payload);
        assert!(
            !everything.contains(TOKEN),
            "the token leaked into a dead letter: {everything}"
        );
    }
    let metrics = scrape(metrics_addr);
    host.signal("TERM");
    assert!(host.child.wait().unwrap().success());
    let logs = std::fs::read_to_string(&host.stderr_file).unwrap();
    assert!(
        logs.contains("Record dead-lettered."),
        "the log is the one we think it is"
    );
    assert!(!logs.contains(TOKEN), "the token leaked into the log");
    assert!(!metrics.contains(TOKEN));
}

// ---------------------------------------------------------------- grants

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_refuse_ungranted_hosts_internal_names_and_path_escapes() {
    let (erp, addr) = erp_endpoint(0).await;
    let bus = TestBus::start().await;
    bus.stream("ERP", "erp.orders").await;
    bus.publish_range("erp.orders", 0..2, |i| format!("{{\"po\":\"PO-{i}\"}}"))
        .await;

    let granted = bus.dir.path().join("granted");
    let outside = bus.dir.path().join("outside");
    std::fs::create_dir_all(&granted).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("payroll.csv"), "secret,salary\n").unwrap();
    std::os::unix::fs::symlink(outside.join("payroll.csv"), granted.join("payroll.csv")).unwrap();
    std::fs::write(granted.join("orders.csv"), "PO-1,10\n").unwrap();

    let secrets = secrets_file(bus.dir.path());
    let connectors = [
        // The request names an address that is not among the grants.
        erp_sink("ungranted", &format!("http://{addr}/orders"), "https://erp.example.org"),
        // A granted name that resolves to loopback.
        erp_sink("by-name", &format!("http://localhost:{}/orders", addr.port()), &format!("http://localhost:{}", addr.port())),
        connector(
            "escape",
            "source",
            "file-drop",
            &format!(
                "schedule = \"100ms\"\nto = \"raw.files\"\nconfig = {{ dir = \"{}/../outside\", settle = \"0\" }}\n[connector.grants]\nfiles = [\"{}:ro\"]",
                granted.display(),
                granted.display()
            ),
        ),
        connector(
            "symlinks",
            "source",
            "file-drop",
            &format!(
                "schedule = \"100ms\"\nto = \"raw.granted\"\nconfig = {{ dir = \"{}\", settle = \"0\" }}\n[connector.grants]\nfiles = [\"{}:ro\"]",
                granted.display(),
                granted.display()
            ),
        ),
    ]
    .concat();
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    with_secrets(&file, &secrets);
    let host = start_host(&file).await;

    bus.wait_drained("erp.orders", "ungranted").await;
    bus.wait_drained("erp.orders", "by-name").await;
    bus.wait_for_count("raw.granted", 1).await;
    let addr_metrics = host.http_addr();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let m = scrape(addr_metrics);
        if metric(
            &m,
            "plexus_errors_total{connector=\"escape\",kind=\"retryable\"}",
        ) >= 1.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the escaping source never failed:\n{m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    assert_eq!(
        *erp.requests.lock().unwrap(),
        0,
        "no refused request reached the server"
    );
    for name in ["ungranted", "by-name"] {
        let dead = bus.messages(&format!("dlq.{name}")).await;
        assert_eq!(dead.len(), 2, "{name}");
        assert!(
            header(&dead[0], "Plexus-Error")
                .unwrap()
                .contains("refused by the host's grants")
        );
    }
    // Every refusal is counted: at least one per record (a call that ran
    // past its timeout on a loaded machine is retried and refused again).
    let m = scrape(addr_metrics);
    for name in ["ungranted", "by-name"] {
        let denied = metric(
            &m,
            &format!("plexus_capability_denied_total{{connector=\"{name}\",capability=\"http\"}}"),
        );
        assert!(
            denied >= 2.0,
            "{name}: {denied} refusals counted for 2 records"
        );
    }
    assert_eq!(
        bus.count("raw.files").await,
        0,
        "nothing was read outside the grant"
    );
    let granted_records = bus.messages("raw.granted").await;
    assert_eq!(
        granted_records.len(),
        1,
        "the symlink out of the grant was not followed"
    );
    assert_eq!(granted_records[0].payload, "PO-1,10\n".as_bytes());
    host.shutdown().await;
}

// ---------------------------------------------------------------- file drops

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_drops_are_taken_once_and_never_while_being_written() {
    let bus = TestBus::start().await;
    let drop_dir = bus.dir.path().join("outbox");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let settled = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for (name, text) in [
        ("a.csv", "\u{feff}po,qty\r\nPO-1,10\r\nPO-2,20\r\n\r\n"),
        ("b.csv", "po,qty\nPO-3,30\n"),
        ("c.csv.part", "po,qty\nPO-9,90\n"),
    ] {
        let path = drop_dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(settled)
            .unwrap();
    }
    std::fs::write(drop_dir.join("d.csv"), "po,qty\nPO-4,40\n").unwrap(); // just written: not settled
    let source = connector(
        "outbox",
        "source",
        "file-drop",
        &format!(
            "schedule = \"100ms\"\nto = \"raw.outbox\"\nconfig = {{ dir = \"{}\", mode = \"lines\", suffix = \".csv\", skip_header = \"true\", settle = \"600\" }}\n[connector.grants]\nfiles = [\"{}:ro\"]",
            drop_dir.display(),
            drop_dir.display()
        ),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &source);
    let host = start_host(&file).await;
    bus.wait_for_count("raw.outbox", 3).await;
    let cursors = wait_for_bucket(&bus, "plexus-cursors").await;
    wait_for_key(&cursors, "outbox", "a.csv\nb.csv").await;

    // A file arriving later with an old timestamp (as `mv` keeps it) is still taken.
    let late = drop_dir.join("e.csv");
    std::fs::write(&late, "po,qty\nPO-5,50\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&late)
        .unwrap()
        .set_modified(settled)
        .unwrap();
    wait_for_key(&cursors, "outbox", "a.csv\nb.csv\ne.csv").await;

    let out = bus.messages("raw.outbox").await;
    let got: Vec<(String, String)> = out
        .iter()
        .map(|m| {
            (
                header(m, "Plexus-Key").unwrap(),
                String::from_utf8(m.payload.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a.csv:2", "PO-1,10"),
            ("a.csv:3", "PO-2,20"),
            ("b.csv:2", "PO-3,30"),
            ("e.csv:2", "PO-5,50")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    host.shutdown().await;
}

// ---------------------------------------------------------------- inbound

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_senders_get_aa_only_for_stored_messages_and_the_listener_survives_bad_traffic() {
    let mut bus = TestBus::start().await;
    let port = free_port();
    let source = connector(
        "hl7-in",
        "source",
        "mllp",
        &format!("listen = \"mllp://127.0.0.1:{port}\"\nto = \"raw.hl7\""),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &source);
    let host = start_host(&file).await;
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();

    client.write_all(&framed(HL7)).await.unwrap();
    assert_eq!(read_ack(&mut client).await, "MSA|AA|REQ-1|");
    assert_eq!(
        bus.count("raw.hl7").await,
        1,
        "AA came after the record was stored"
    );

    // Noise between frames, and a frame split across writes.
    let second = HL7.replace("REQ-1", "REQ-2");
    let bytes = [b"\r\nnoise".as_slice(), &framed(&second)].concat();
    let (a, b) = bytes.split_at(20);
    client.write_all(a).await.unwrap();
    client.flush().await.unwrap();
    client.write_all(b).await.unwrap();
    assert_eq!(read_ack(&mut client).await, "MSA|AA|REQ-2|");

    client.write_all(&framed("this is not hl7")).await.unwrap();
    let ack = read_ack(&mut client).await;
    assert!(
        ack.starts_with("MSA|AR||segment 1: \"this is not hl7\" is not an HL7 segment"),
        "{ack}"
    );

    let mut huge = HL7.replace("REQ-1", "REQ-BIG");
    huge.push_str(&"NTE|1||".repeat(200_000));
    client.write_all(&framed(&huge)).await.unwrap();
    let ack = read_ack(&mut client).await;
    assert!(ack.starts_with("MSA|AR|REQ-BIG|message exceeds"), "{ack}");

    // A sender that drops mid-frame loses only its own half message.
    let mut rude = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    rude.write_all(&framed(&HL7.replace("REQ-1", "REQ-HALF"))[..40])
        .await
        .unwrap();
    drop(rude);

    // With the bus down, a message cannot be stored: AE, never AA.
    bus.server.kill();
    client
        .write_all(&framed(&HL7.replace("REQ-1", "REQ-3")))
        .await
        .unwrap();
    let ack = read_ack(&mut client).await;
    assert!(ack.starts_with("MSA|AE|REQ-3|"), "{ack}");
    bus.server.restart().unwrap();
    client
        .write_all(&framed(&HL7.replace("REQ-1", "REQ-3")))
        .await
        .unwrap();
    assert_eq!(read_ack(&mut client).await, "MSA|AA|REQ-3|");

    let stored: Vec<String> = bus
        .messages("raw.hl7")
        .await
        .iter()
        .map(|m| header(m, "Plexus-Key").unwrap())
        .collect();
    assert_eq!(stored, ["REQ-1", "REQ-2", "REQ-3"]);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ingest_answers_202_only_once_stored() {
    let bus = TestBus::start().await;
    let source = connector(
        "hl7-http",
        "source",
        "mllp",
        "listen = \"http\"\nto = \"raw.hl7\"",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &source);
    let host = start_host(&file).await;
    let addr = host.http_addr();

    let (status, body) = http_post(addr, "/ingest/hl7-http", HL7).await;
    assert_eq!((status, body.as_str()), (202, "{\"published\":1}\n"));
    assert_eq!(bus.count("raw.hl7").await, 1);
    let (status, body) = http_post(addr, "/ingest/hl7-http", "PID|1\r").await;
    assert_eq!(
        (status, body.as_str()),
        (400, "segment 1: PID before any MSH segment\n")
    );
    let (status, _) = http_post(addr, "/ingest/nobody", HL7).await;
    assert_eq!(status, 404);
    assert_eq!(bus.count("raw.hl7").await, 1);
    host.shutdown().await;
}
