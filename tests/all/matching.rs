//! The three-way matcher inside a host: canonical orders, ship notices,
//! receipts, invoices and acknowledgements in; `match-exception/2` records
//! (through their lifecycle) on `<to>.<code>` and `accrual/1` records on
//! `<to>.accrual` out, each passing its schema (the connector declares
//! `emits`), tied to the facility, the item category and the money at risk.
//! Its state lives in the connector's kv bucket, so a host restart between
//! documents loses nothing, and a re-sent invoice is caught as a duplicate.
//! The matcher runs unordered: what it ends with does not depend on the
//! order documents arrive in.

use std::collections::BTreeMap;

use async_nats::HeaderMap;

use crate::support::matcher_fixture as fixture;
use crate::support::*;

/// Publish canonical documents to `subject` and wait until `matcher` has
/// settled them all.
async fn send_to(bus: &TestBus, subject: &str, matcher: &str, documents: &[(&str, &str, String)]) {
    for (id, schema, payload) in documents {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", *id);
        h.insert("Plexus-Schema", *schema);
        bus.js
            .publish_with_headers(subject.to_owned(), h, payload.clone().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    bus.wait_drained(subject, matcher).await;
}

async fn send(bus: &TestBus, documents: &[(&str, &str, String)]) {
    send_to(bus, "canon.docs", "matcher", documents).await;
}

const EMITS: &str = "emits = [\"match-exception/2\", \"accrual/1\"]";

fn matcher(name: &str, from: &str, to: &str, extra: &str) -> String {
    format!(
        "[[connector]]\nname = \"{name}\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"{from}\"\nto = \"{to}\"\n{EMITS}\n{extra}\n",
        plugin("three-way-match").display()
    )
}

fn connector() -> String {
    matcher("matcher", "canon.docs", "exceptions", "")
}

/// The latest record per key (the highest `sequence`) under `subject`, of
/// the records that have `key`.
async fn latest(bus: &TestBus, subject: &str, key: &str) -> BTreeMap<String, serde_json::Value> {
    let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for m in bus.messages(subject).await {
        let v = json(&m);
        let Some(id) = v[key].as_str().map(str::to_owned) else {
            continue; // another kind of record
        };
        if latest
            .get(&id)
            .is_none_or(|held| held["sequence"].as_u64() <= v["sequence"].as_u64())
        {
            latest.insert(id, v);
        }
    }
    latest
}

/// The exception records (not the accruals) under `<to>.>`.
async fn exceptions(bus: &TestBus, to: &str) -> Vec<serde_json::Value> {
    bus.messages(&format!("{to}.>"))
        .await
        .iter()
        .filter(|m| header(m, "Plexus-Schema").as_deref() == Some("match-exception/2"))
        .map(json)
        .collect()
}

fn json(msg: &async_nats::jetstream::Message) -> serde_json::Value {
    serde_json::from_slice(&msg.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_receipts_and_invoices_are_matched_into_exceptions() {
    let bus = TestBus::start().await;
    bus.stream("CANON", "canon.docs").await;
    let file = write_config(bus.dir.path(), Some(bus.url()), &connector());
    let host = start_host(&file).await;
    send(
        &bus,
        &[
            ("po", "purchase-order/1", fixture("po.json")),
            ("ack", "po-ack/1", fixture("ack.json")),
            ("asn", "ship-notice/1", fixture("asn.json")),
        ],
    )
    .await;
    // The matcher's state outlives its host.
    host.shutdown().await;
    let host = start_host(&file).await;
    let resent =
        fixture("invoice.json").replace("ISA-000000101/INV-9001", "ISA-000000140/INV-9001");
    send(
        &bus,
        &[
            ("receipt", "goods-receipt/1", fixture("receipt.json")),
            ("invoice", "invoice/1", fixture("invoice.json")),
            ("invoice-again", "invoice/1", resent),
        ],
    )
    .await;

    assert_eq!(
        bus.count("dlq.matcher").await,
        0,
        "every exception passed its schema"
    );
    for m in bus.messages("exceptions.>").await {
        let e = json(&m);
        if m.subject.as_str() == "exceptions.accrual" {
            assert_eq!(header(&m, "Plexus-Schema").as_deref(), Some("accrual/1"));
            continue;
        }
        assert_eq!(
            m.subject.as_str(),
            format!("exceptions.{}", e["code"].as_str().unwrap())
        );
        assert_eq!(
            header(&m, "Plexus-Schema").as_deref(),
            Some("match-exception/2")
        );
        assert_eq!(
            header(&m, "Plexus-Key").as_deref(),
            e["exception_id"].as_str()
        );
    }
    // Documents sent in a burst are matched in parallel, so an invoice may
    // be matched before the receipt sent ahead of it (opening, then
    // resolving, a passing exception); where each exception ends is the same.
    let mut ended: Vec<(String, String, String)> = latest(&bus, "exceptions.>", "exception_id")
        .await
        .values()
        .map(|e| {
            (
                e["code"].as_str().unwrap().to_owned(),
                e["status"].as_str().unwrap().to_owned(),
                e["exposure"]["amount"].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(_, status, _)| status == "open")
        .collect();
    ended.sort();
    let expected: Vec<(String, String, String)> = [
        ("ack_changed", "100.00"),
        ("duplicate_invoice", "755.00"),
        ("over_receipt", "100.00"),
        ("price_mismatch", "50.00"),
        ("quantity_mismatch", "25.00"),
        ("short_shipment", "25.00"),
        ("unreceived_order", "80.00"),
    ]
    .map(|(c, a)| (c.to_owned(), "open".to_owned(), a.to_owned()))
    .into();
    assert_eq!(ended, expected);

    let price = json(
        bus.messages("exceptions.price_mismatch")
            .await
            .last()
            .expect("a price mismatch"),
    );
    assert_eq!(price["exception_id"], "price_mismatch:PO-1001:2");
    assert_eq!(price["severity"], "warning");
    assert_eq!(price["po_number"], "PO-1001");
    assert_eq!(price["lines"], serde_json::json!(["2"]));
    assert_eq!(price["facility"]["name"], "St Mary's Hospital");
    assert_eq!(price["category"], "unspsc:42");
    assert_eq!(price["exposure"]["currency"], "USD");
    assert_eq!(
        price["detail"],
        "line 2: billed 550.00 for 5 CS, which is 500.00 at the order's 100.00"
    );
    assert_eq!(
        price["refs"],
        serde_json::json!(["invoice:123456789:INV-9001", "purchase-order:PO-1001"])
    );
    assert_eq!(price["opened_at"], price["updated_at"]);
    assert!(price.get("resolution").is_none());

    // Accruals: received (accepted) and not invoiced, per line, latest wins.
    let accruals = latest(&bus, "exceptions.accrual", "accrual_id").await;
    let table: Vec<(&str, &str, &str, &str, &str)> = accruals
        .values()
        .map(|a| {
            (
                a["po_line"].as_str().unwrap(),
                a["quantity_received"].as_str().unwrap(),
                a["quantity_invoiced"].as_str().unwrap(),
                a["quantity_accrued"].as_str().unwrap(),
                a["amount_accrued"]["amount"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        table,
        [
            ("1", "8", "10", "0", "0.00"),
            ("2", "6", "5", "1", "100.00"),
            ("3", "0", "2", "0", "0.00"),
        ]
    );
    host.shutdown().await;
}

/// A connector that sends ticks every second and a matcher fed by it.
fn ticking(name: &str, from: &str, extra: &str) -> String {
    format!(
        "[[connector]]\nname = \"{name}-clock\"\nkind = \"source\"\nplugin = \"{}\"\nschedule = \"1s\"\nto = \"{from}.ticks\"\n\n{}",
        plugin("ticker").display(),
        matcher(name, &format!("{from}.>"), &format!("{name}-out"), extra)
    )
}

/// RFC 3339 UTC, `offset` seconds from now.
fn rfc3339_from_now(offset: i64) -> String {
    (chrono::Utc::now() + chrono::TimeDelta::seconds(offset))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_ahead_of_its_receipt_waits_for_it_through_the_grace() {
    let bus = TestBus::start().await;
    bus.stream("PATIENT", "patient.>").await;
    bus.stream("STRICT", "strict.>").await;
    // One matcher waits an hour for receipts, the other two seconds.
    let connectors = format!(
        "{}\n{}",
        matcher(
            "patient",
            "patient.docs",
            "patient-out",
            "config = { receipt_grace = \"1h\" }"
        ),
        ticking("strict", "strict", "config = { receipt_grace = \"2s\" }"),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let host = start_host(&file).await;
    let order = fixture("po.json");
    // Invoiced as received: 8 of line 1 and 5 of line 2, arriving now.
    // Billed as received (8 of line 1, 5 of line 2 at the order's prices),
    // arriving now.
    let billed = {
        let mut v: serde_json::Value = serde_json::from_str(&fixture("invoice.json")).unwrap();
        v["lines"].as_array_mut().unwrap().truncate(2);
        v["lines"][0]["quantity"] = "8".into();
        v["lines"][0]["amount"] = "100.00".into();
        v["lines"][1]["unit_price"] = "100.00".into();
        v["lines"][1]["amount"] = "500.00".into();
        v["total"]["amount"] = "600.00".into();
        v["provenance"]["received_at"] = rfc3339_from_now(0).into();
        v.to_string()
    };
    let received = fixture("receipt.json").replace(
        "\"quantity_received\": \"6\", \"quantity_accepted\": \"6\"",
        "\"quantity_received\": \"5\", \"quantity_accepted\": \"5\"",
    );

    // Within the grace: the invoice is matched before its receipt (each
    // document is settled before the next is sent), and nothing opens.
    for doc in [
        ("po", "purchase-order/1", order.clone()),
        ("invoice", "invoice/1", billed.clone()),
    ] {
        send_to(&bus, "patient.docs", "patient", &[doc]).await;
    }
    assert_eq!(
        exceptions(&bus, "patient-out").await,
        Vec::<serde_json::Value>::new(),
        "the invoice awaits its receipt"
    );
    send_to(
        &bus,
        "patient.docs",
        "patient",
        &[("receipt", "goods-receipt/1", received.clone())],
    )
    .await;
    assert_eq!(
        exceptions(&bus, "patient-out").await,
        Vec::<serde_json::Value>::new()
    );
    let accruals = latest(&bus, "patient-out.accrual", "accrual_id").await;
    assert_eq!(accruals.len(), 2);
    assert!(
        accruals.values().all(|a| a["quantity_accrued"] == "0"),
        "{accruals:?}"
    );

    // Past the grace: a tick opens unreceived_order; the receipt resolves it.
    for doc in [
        ("po", "purchase-order/1", order),
        ("invoice", "invoice/1", billed),
    ] {
        send_to(&bus, "strict.docs", "strict", &[doc]).await;
    }
    bus.wait_for_count("strict-out.unreceived_order", 2).await;
    let opened = exceptions(&bus, "strict-out").await;
    assert_eq!(opened.len(), 2, "{opened:?}");
    for e in &opened {
        assert_eq!(e["status"], "open");
        assert!(e.get("resolved_at").is_none());
    }
    send_to(
        &bus,
        "strict.docs",
        "strict",
        &[("receipt", "goods-receipt/1", received)],
    )
    .await;
    let now = latest(&bus, "strict-out.unreceived_order", "exception_id").await;
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        ["unreceived_order:PO-1001:1", "unreceived_order:PO-1001:2"]
    );
    for e in now.values() {
        assert_eq!(e["status"], "resolved", "{e}");
        assert_eq!(e["resolution"], "receipt");
        assert!(e["resolved_at"].as_str().unwrap() >= e["opened_at"].as_str().unwrap());
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fhir_specification_s_order_and_delivery_are_matched() {
    let bus = TestBus::start().await;
    bus.stream("FHIR", "raw.fhir").await;
    let bundle =
        std::fs::read_to_string(repo_root().join("plugins/fhir/fixtures/r4-spec-supply.json"))
            .unwrap();
    bus.publish_range("raw.fhir", 0..1, |_| bundle.clone())
        .await;
    let connectors = format!(
        "[[connector]]\nname = \"fhir-in\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"raw.fhir\"\nto = \"canon\"\n\n{}",
        plugin("fhir").display(),
        matcher("matcher", "canon.>", "exceptions", ""),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let host = start_host(&file).await;
    bus.wait_drained("raw.fhir", "fhir-in").await;
    bus.wait_drained("canon.>", "matcher").await;

    // The order was due in 2016, so it may open receipt_overdue before its
    // delivery is matched; the delivery must resolve it, and nothing else opens.
    let ended = latest(&bus, "exceptions.>", "exception_id").await;
    let open: Vec<&String> = ended
        .iter()
        .filter(|(_, e)| e.get("status").is_some_and(|s| s == "open"))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(open, Vec::<&String>::new(), "{ended:?}");
    let accrual = &latest(&bus, "exceptions.accrual", "accrual_id").await["Order10284:1"];
    assert_eq!(accrual["po_number"], "Order10284");
    assert_eq!(
        accrual["quantity_received"], "10",
        "the delivery counts against the order"
    );
    assert_eq!(accrual["quantity_ordered"], "10");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_from_the_ticker_open_each_overdue_order_once() {
    let bus = TestBus::start().await;
    bus.stream("SLA", "sla.>").await;
    let connectors = format!(
        "[[connector]]\nname = \"sla-clock\"\nkind = \"source\"\nplugin = \"{}\"\nschedule = \"1s\"\nto = \"sla.ticks\"\n\n\
         {}",
        plugin("ticker").display(),
        matcher("matcher", "sla.>", "exceptions", "")
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let host = start_host(&file).await;
    // The acknowledgement falls due two seconds from now: only a tick can
    // find it late.
    let due = rfc3339_from_now(2);
    let late = fixture("po.json").replace(
        "\"currency\": \"USD\",",
        &format!("\"currency\": \"USD\", \"ack_due_at\": \"{due}\", \"need_by\": \"2026-01-20\","),
    );
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", "late-po");
    h.insert("Plexus-Schema", "purchase-order/1");
    bus.js
        .publish_with_headers("sla.docs", h, late.into())
        .await
        .unwrap()
        .await
        .unwrap();

    bus.wait_for_count("exceptions.ack_overdue", 1).await;
    bus.wait_for_count("exceptions.receipt_overdue", 1).await;
    // Two more ticks find nothing new.
    let addr = host.http_addr();
    let ticks = || {
        metric(
            &scrape(addr),
            "plexus_records_out_total{connector=\"sla-clock\"}",
        )
    };
    let seen = ticks();
    wait_until("two more ticks", || ticks() >= seen + 2.0).await;
    bus.wait_drained("sla.>", "matcher").await;
    assert_eq!(bus.count("exceptions.>").await, 2);

    let ack = json(&bus.messages("exceptions.ack_overdue").await[0]);
    assert_eq!(ack["exception_id"], "ack_overdue:PO-1001:-");
    assert_eq!(ack["status"], "open");
    assert_eq!(
        ack["exposure"],
        serde_json::json!({"amount": "705.00", "currency": "USD"})
    );
    assert_eq!(ack["category"], "unspsc:42");
    assert_eq!(
        ack["detail"],
        format!("no acknowledgement of PO-1001, due {due}")
    );
    let receipt = json(&bus.messages("exceptions.receipt_overdue").await[0]);
    assert_eq!(
        receipt["detail"],
        "nothing received on PO-1001, needed by 2026-01-20"
    );
    host.shutdown().await;
}
