//! Each reference plugin, run as a component inside the host. Every crate
//! under `plugins/` must be named here, so a plugin cannot ship untested.

use crate::support::*;

/// Plugins and the tests that run them inside the host.
const TESTED: &[(&str, &str)] = &[
    (
        "csv-map",
        "formats::a_legacy_csv_export_becomes_canonical_inventory_balances",
    ),
    (
        "file-drop",
        "connectors::file_drops_are_taken_once_and_never_while_being_written, connectors::grants_*",
    ),
    ("fhir", "formats::fhir_r4_and_r5_bundles_*"),
    ("hl7v2", "formats::hl7_messages_*"),
    ("http-poll", "connectors::polling_five_pages_*"),
    (
        "http-post",
        "connectors::a_flapping_sink_endpoint_*, connectors::secrets_*",
    ),
    ("json-filter", "plugins::json_filter_keeps_drops_and_routes"),
    ("mllp", "connectors::mllp_*, connectors::http_ingest_*"),
    ("testkit", "delivery, faults, lifecycle and reload"),
    (
        "three-way-match",
        "matching::orders_receipts_and_invoices_are_matched_into_exceptions",
    ),
    (
        "ticker",
        "matching::ticks_from_the_ticker_raise_each_overdue_order_once",
    ),
    ("webhook", "webhook::*"),
    ("x12", "formats::*"),
];

#[test]
fn every_plugin_has_a_host_test() {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("plugins")).unwrap() {
        let path = entry.unwrap().path();
        if path.join("Cargo.toml").is_file() {
            found.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    found.sort();
    let mut known: Vec<String> = TESTED.iter().map(|(p, _)| p.to_string()).collect();
    known.sort();
    assert_eq!(
        found, known,
        "add a host test for each plugin under plugins/ and list it in TESTED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_filter_keeps_drops_and_routes() {
    let bus = TestBus::start().await;
    bus.stream("PO", "raw.po").await;
    let connector = format!(
        r#"[[connector]]
name = "po-router"
kind = "transform"
plugin = "{}"
from = "raw.po"
to = "po"
config = {{ keep = "status == approved", drop = "test exists", "route.large" = "total.amount >= 10000", default_topic = "standard" }}
"#,
        plugin("json-filter").display()
    );
    let orders = [
        r#"{"po":"A","status":"approved","total":{"amount":"25000.00"}}"#,
        r#"{"po":"B","status":"approved","total":{"amount":"120.50"}}"#,
        r#"{"po":"C","status":"draft","total":{"amount":"99999.00"}}"#,
        r#"{"po":"D","status":"approved","test":true,"total":{"amount":"1.00"}}"#,
        r#"{"po":"E","status":"approved","total":{"amount":10000}}"#,
        "PO-F,approved,12.00",
    ];
    bus.publish_range("raw.po", 0..orders.len(), |i| orders[i].to_owned())
        .await;
    let file = write_config(bus.dir.path(), Some(bus.url()), &connector);
    let host = start_host(&file).await;
    bus.wait_drained("raw.po", "po-router").await;

    let po = |m: &async_nats::jetstream::Message| {
        serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["po"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut large: Vec<String> = bus.messages("po.large").await.iter().map(po).collect();
    large.sort();
    let standard: Vec<String> = bus.messages("po.standard").await.iter().map(po).collect();
    assert_eq!(large, ["A", "E"]);
    assert_eq!(standard, ["B"]);
    let dead = bus.messages("dlq.po-router").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, "PO-F,approved,12.00".as_bytes());
    assert!(
        header(&dead[0], "Plexus-Error")
            .unwrap()
            .starts_with("payload is not JSON")
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_filter_names_a_bad_rule() {
    let bus = TestBus::start().await;
    bus.stream("PO", "raw.po").await;
    bus.publish_range("raw.po", 0..1, |_| "{}".into()).await;
    let connector = format!(
        "[[connector]]\nname = \"bad-rules\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"raw.po\"\nto = \"po\"\nconfig = {{ keep = \"status ~ approved\" }}\n",
        plugin("json-filter").display()
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connector);
    let host = start_host(&file).await;
    bus.wait_drained("raw.po", "bad-rules").await;
    let dead = bus.messages("dlq.bad-rules").await;
    assert_eq!(
        header(&dead[0], "Plexus-Error").unwrap(),
        "json-filter config: keep: unknown operator in \"status ~ approved\" (expected == != > >= < <= exists missing)"
    );
    host.shutdown().await;
}

#[test]
fn plexus_test_runs_a_plugin_on_sample_files() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(args)
            .output()
            .unwrap()
    };
    let fixture = repo_root().join("plugins/x12/fixtures/orders-004010.x12");
    let out = run(&[
        "test",
        plugin("x12").to_str().unwrap(),
        "-i",
        fixture.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("orders-004010.x12: 2 record(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-- key \"PO-778812\", topic purchase_order, schema purchase-order/1"),
        "{stdout}"
    );

    let out = run(&[
        "test",
        plugin("mllp").to_str().unwrap(),
        "--kind",
        "source",
        "-i",
        fixture.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a plugin error is a runtime failure"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("permanent error: segment 1: "),
        "the reason is shown"
    );

    let out = run(&[
        "test",
        plugin("x12").to_str().unwrap(),
        "-i",
        "no-such-file.x12",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: input no-such-file.x12: "));
}
