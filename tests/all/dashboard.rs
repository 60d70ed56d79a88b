//! The dashboard in real headless Chromium: the overview, the open
//! exceptions with facility, category and total exposure, a dead letter
//! replayed with the page's button (and delivered), and a lineage page.
//! A screenshot of each page is written under `target/dashboard/`.

use async_nats::HeaderMap;

use crate::browser::{self, Browser};
use crate::support::matcher_fixture as fixture;
use crate::support::*;

fn connectors(picky_mode: &str) -> String {
    format!(
        "{}{}",
        connector(
            "matcher",
            "transform",
            "three-way-match",
            "from = \"canon.docs\"\nto = \"exceptions\"\nemits = [\"match-exception/2\", \"accrual/1\"]",
        ),
        testkit(
            "picky",
            "raw.lab",
            "out.lab",
            &format!(
                "config = {{ mode = \"{picky_mode}\" }}\n[connector.delivery]\nmax_deliver = 1\nbackoff = []"
            ),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_exceptions_and_replays_a_dead_letter_in_chromium() {
    let Some(chromium) = browser::chromium() else {
        eprintln!(
            "SKIPPED the dashboard's browser test: no Chromium here. Install Debian's `chromium` package (`just test` does, where it can) or set PLEXUS_CHROMIUM."
        );
        return;
    };
    let shots = repo_root().join("target/dashboard");
    let bus = TestBus::start().await;
    bus.stream("CANON", "canon.docs").await;
    bus.stream("RAW", "raw.lab").await;
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors("fail"));
    let mut host = start_host(&file).await;

    let resent =
        fixture("invoice.json").replace("ISA-000000101/INV-9001", "ISA-000000140/INV-9001");
    for (id, schema, payload) in [
        ("po", "purchase-order/1", fixture("po.json")),
        ("ack", "po-ack/1", fixture("ack.json")),
        ("asn", "ship-notice/1", fixture("asn.json")),
        ("receipt", "goods-receipt/1", fixture("receipt.json")),
        ("invoice", "invoice/1", fixture("invoice.json")),
        ("invoice-again", "invoice/1", resent),
    ] {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", id);
        h.insert("Plexus-Schema", schema);
        bus.js
            .publish_with_headers("canon.docs", h, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        // One at a time: the receipt is matched before the invoices.
        bus.wait_drained("canon.docs", "matcher").await;
    }
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", "lab-1");
    h.insert("Plexus-Key", "LAB-1");
    bus.js
        .publish_with_headers("raw.lab", h, "a lab result".into())
        .await
        .unwrap()
        .await
        .unwrap();
    bus.wait_for_count("dlq.picky", 1).await;

    let base = format!("http://{}", host.http_addr());
    let mut page = Browser::start(&chromium).await;

    page.open(&format!("{base}/")).await;
    let overview = page.text().await;
    assert!(
        overview.contains("matcher") && overview.contains("picky"),
        "{overview}"
    );
    page.screenshot(&shots.join("connectors.png")).await;

    page.open(&format!("{base}/exceptions")).await;
    let exceptions = page.text().await;
    // ack_changed 100 + duplicate_invoice 755 + over_receipt 100 +
    // price_mismatch 50 + quantity_mismatch 25 + short_shipment 25 +
    // unreceived_order 80.
    assert!(
        exceptions.contains("7 open, 1,135.00 USD at risk"),
        "{exceptions}"
    );
    assert!(exceptions.contains("St Mary's Hospital"), "{exceptions}");
    assert!(exceptions.contains("unspsc:42"), "{exceptions}");
    assert!(
        exceptions.contains("price_mismatch:PO-1001:2"),
        "{exceptions}"
    );
    page.screenshot(&shots.join("exceptions.png")).await;

    // The lineage behind an exception.
    page.click("a[href^='/trace?id=matcher']").await;
    let lineage = page.text().await;
    assert!(
        lineage.contains("canon.docs")
            && lineage.contains("published")
            && lineage.contains("exceptions."),
        "{lineage}"
    );
    page.screenshot(&shots.join("lineage.png")).await;

    // The cause is fixed (the connector now takes the record), then the
    // dead letter is replayed from the page.
    write_config(bus.dir.path(), Some(bus.url()), &connectors("echo"));
    host.reload(plexus_host::config::Config::load(&file).unwrap())
        .await
        .unwrap();
    page.open(&format!("{base}/dead-letters")).await;
    let letters = page.text().await;
    assert!(
        letters.contains("testkit refuses record LAB-1"),
        "{letters}"
    );
    page.screenshot(&shots.join("dead-letters.png")).await;
    page.click("form[action^='/connectors/picky/dead-letters/replay'] button")
        .await;
    let after = page.text().await;
    assert!(after.contains("Replayed picky #"), "{after}");
    bus.wait_for_count("out.lab", 1).await;
    let delivered = &bus.messages("out.lab").await[0];
    assert_eq!(&delivered.payload[..], b"a lab result");
    assert_eq!(
        bus.count("dlq.picky").await,
        0,
        "the dead letter is gone once delivered"
    );
    page.screenshot(&shots.join("dead-letters-replayed.png"))
        .await;
    host.shutdown().await;
}
