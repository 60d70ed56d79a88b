//! The three-way matcher inside a host: canonical orders, ship notices,
//! receipts, invoices and acknowledgements in; `match-exception/1` records out
//! on `<to>.<code>`, each passing its schema (the connector declares `emits`),
//! tied to the facility, the item category and the money at risk. Its state
//! lives in the connector's kv bucket, so a host restart between documents
//! loses nothing, and a re-sent invoice is caught as a duplicate. Documents
//! are sent in bursts: `delivery.ordered` hands them to the plugin in stream
//! order, so an invoice never overtakes its order.

use async_nats::HeaderMap;

use crate::support::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        repo_root()
            .join("plugins/three-way-match/fixtures")
            .join(name),
    )
    .unwrap()
}

/// Publish canonical documents, in this order, and wait until the matcher
/// has settled them all.
async fn send(bus: &TestBus, documents: &[(&str, &str, String)]) {
    for (id, schema, payload) in documents {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", *id);
        h.insert("Plexus-Schema", *schema);
        bus.js
            .publish_with_headers("canon.docs", h, payload.clone().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    bus.wait_drained("canon.docs", "matcher").await;
}

fn connector() -> String {
    format!(
        "[[connector]]\nname = \"matcher\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"canon.docs\"\nto = \"exceptions\"\nemits = [\"match-exception/1\"]\n\n[connector.delivery]\nordered = true\n",
        plugin("three-way-match").display()
    )
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
    let mut raised: Vec<(String, String)> = bus
        .messages("exceptions.>")
        .await
        .iter()
        .map(|m| {
            let e = json(m);
            assert_eq!(
                m.subject.as_str(),
                format!("exceptions.{}", e["code"].as_str().unwrap())
            );
            assert_eq!(
                header(m, "Plexus-Schema").as_deref(),
                Some("match-exception/1")
            );
            assert_eq!(
                header(m, "Plexus-Key").as_deref(),
                e["exception_id"].as_str()
            );
            (
                e["code"].as_str().unwrap().to_owned(),
                e["exposure"]["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    raised.sort();
    let expected: Vec<(String, String)> = [
        ("ack_changed", "100.00"),
        ("duplicate_invoice", "755.00"),
        ("over_receipt", "100.00"),
        ("price_mismatch", "50.00"),
        ("quantity_mismatch", "25.00"),
        ("short_shipment", "25.00"),
        ("unreceived_order", "80.00"),
    ]
    .map(|(c, a)| (c.to_owned(), a.to_owned()))
    .into();
    assert_eq!(raised, expected);

    let price = json(&bus.messages("exceptions.price_mismatch").await[0]);
    assert_eq!(
        price["exception_id"],
        "price_mismatch:PO-1001:invoice:123456789:INV-9001:2"
    );
    assert_eq!(price["severity"], "warning");
    assert_eq!(price["po_number"], "PO-1001");
    assert_eq!(price["facility"]["name"], "St Mary's Hospital");
    assert_eq!(price["category"], "unspsc:42");
    assert_eq!(price["exposure"]["currency"], "USD");
    assert_eq!(
        price["detail"],
        "invoice line 2: unit price 110.00 against 100.00 ordered"
    );
    assert_eq!(
        price["refs"],
        serde_json::json!(["invoice:123456789:INV-9001", "purchase-order:PO-1001"])
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_from_the_ticker_raise_each_overdue_order_once() {
    let bus = TestBus::start().await;
    bus.stream("SLA", "sla.>").await;
    let connectors = format!(
        "[[connector]]\nname = \"sla-clock\"\nkind = \"source\"\nplugin = \"{}\"\nschedule = \"1s\"\nto = \"sla.ticks\"\n\n\
         [[connector]]\nname = \"matcher\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"sla.>\"\nto = \"exceptions\"\nemits = [\"match-exception/1\"]\n\n[connector.delivery]\nordered = true\n",
        plugin("ticker").display(),
        plugin("three-way-match").display()
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let host = start_host(&file).await;
    let late = fixture("po.json").replace(
        "\"currency\": \"USD\",",
        "\"currency\": \"USD\", \"ack_due_at\": \"2026-01-05T12:00:00Z\", \"need_by\": \"2026-01-20\",",
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
    assert_eq!(ack["exception_id"], "ack_overdue:PO-1001:sla:-");
    assert_eq!(
        ack["exposure"],
        serde_json::json!({"amount": "705.00", "currency": "USD"})
    );
    assert_eq!(ack["category"], "unspsc:42");
    assert_eq!(
        ack["detail"],
        "no acknowledgement of PO-1001, due 2026-01-05T12:00:00Z"
    );
    let receipt = json(&bus.messages("exceptions.receipt_overdue").await[0]);
    assert_eq!(
        receipt["detail"],
        "nothing received on PO-1001, needed by 2026-01-20"
    );
    host.shutdown().await;
}
