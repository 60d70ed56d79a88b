//! Healthcare formats inside the host: X12 interchanges become canonical
//! records on `<to>.<entity>` that pass their schemas, and canonical purchase
//! orders become X12 850s.

use crate::support::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("plugins/x12/fixtures").join(name)).unwrap()
}

const ALL_X12: &str = "emits = [\"purchase-order/1\", \"po-ack/1\", \"ship-notice/1\", \"invoice/1\", \"inventory-balance/1\"]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x12_interchanges_become_canonical_records_that_satisfy_their_schemas() {
    let bus = TestBus::start().await;
    bus.stream("EDI", "raw.x12").await;
    let files = [
        "orders-004010.x12",
        "supplier-005010.x12",
        "inventory-846.x12",
    ]
    .map(fixture);
    bus.publish_range("raw.x12", 0..files.len(), |i| files[i].clone())
        .await;
    let connector = format!(
        "[[connector]]\nname = \"edi-in\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"raw.x12\"\nto = \"canon\"\n{ALL_X12}\n",
        plugin("x12").display()
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connector);
    let host = start_host(&file).await;
    bus.wait_drained("raw.x12", "edi-in").await;

    assert_eq!(
        bus.count("dlq.edi-in").await,
        0,
        "every record satisfied its schema"
    );
    let keys = |msgs: Vec<async_nats::jetstream::Message>| {
        let mut k: Vec<String> = msgs
            .iter()
            .map(|m| header(m, "Plexus-Key").unwrap())
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(bus.messages("canon.purchase_order").await),
        ["PO-778812", "PO-778813"]
    );
    assert_eq!(
        keys(bus.messages("canon.po_ack").await),
        ["PO-778812:2026-05-23"]
    );
    assert_eq!(
        keys(bus.messages("canon.ship_notice").await),
        ["SHIP-88123"]
    );
    assert_eq!(
        keys(bus.messages("canon.invoice").await),
        ["007901234:INV-99120"]
    );
    assert_eq!(keys(bus.messages("canon.inventory_balance").await).len(), 2);
    let invoice = &bus.messages("canon.invoice").await[0];
    assert_eq!(
        header(invoice, "Plexus-Schema").as_deref(),
        Some("invoice/1")
    );
    let body: serde_json::Value = serde_json::from_slice(&invoice.payload).unwrap();
    assert_eq!(body["total"]["amount"], "661.50");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_interchanges_are_dead_lettered_with_where() {
    let bus = TestBus::start().await;
    bus.stream("EDI", "raw.x12").await;
    let bad = fixture("orders-004010.x12").replace("SE*13*0001", "SE*12*0001");
    bus.publish_range("raw.x12", 0..1, |_| bad.clone()).await;
    let connector = format!(
        "[[connector]]\nname = \"edi-in\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"raw.x12\"\nto = \"canon\"\n",
        plugin("x12").display()
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connector);
    let host = start_host(&file).await;
    bus.wait_drained("raw.x12", "edi-in").await;
    let dead = bus.messages("dlq.edi-in").await;
    assert_eq!(
        header(&dead[0], "Plexus-Error").unwrap(),
        "segment 15 (SE): SE01 says 12 segments, but transaction set 850 (ST02 0001) has 13"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_purchase_orders_become_850s() {
    let bus = TestBus::start().await;
    bus.stream("EDI", "raw.x12").await;
    let connectors = format!(
        "[[connector]]\nname = \"edi-in\"\nkind = \"transform\"\nplugin = \"{x12}\"\nfrom = \"raw.x12\"\nto = \"canon\"\n{ALL_X12}\n\n\
         [[connector]]\nname = \"edi-out\"\nkind = \"transform\"\nplugin = \"{x12}\"\nfrom = \"canon.purchase_order\"\nto = \"out.x12\"\n\
         config = {{ direction = \"outbound\", sender = \"STMARYSHOSP\", receiver = \"MEDLINE\", version = \"005010\" }}\n",
        x12 = plugin("x12").display()
    );
    let orders = fixture("orders-004010.x12");
    bus.publish_range("raw.x12", 0..1, |_| orders.clone()).await;
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let host = start_host(&file).await;
    bus.wait_for_count("out.x12", 2).await;
    bus.wait_drained("canon.purchase_order", "edi-out").await;

    let out = bus.messages("out.x12").await;
    let mut texts: Vec<String> = out
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect();
    texts.sort();
    assert!(
        texts[0]
            .starts_with("ISA*00*          *00*          *ZZ*STMARYSHOSP    *ZZ*MEDLINE        *"),
        "{}",
        texts[0]
    );
    assert!(
        texts[0].contains("~\nGS*PO*STMARYSHOSP*MEDLINE*"),
        "{}",
        texts[0]
    );
    assert!(texts[0].contains("*X*005010~\nST*850*"), "{}", texts[0]);
    assert!(
        texts[0].contains("~\nBEG*00*SA*PO-778812**20260522~\n"),
        "{}",
        texts[0]
    );
    assert!(texts[0].contains("~\nPO1*1*10*CS*62.50*PE*UK*00614141000036*VP*MDS1955~\nPID*F****GAUZE SPONGE 4X4 STERILE~\n"), "{}", texts[0]);
    assert!(texts[1].contains("~\nCUR*BY*EUR~\n"), "{}", texts[1]);
    assert_eq!(
        header(&out[0], "Content-Type").as_deref(),
        Some("application/edi-x12")
    );
    host.shutdown().await;
}

const STOCK_MAPPING: &str = r#"
[connector.config]
entity = "inventory-balance/1"
delimiter = ";"
decimal_separator = ","
date_format = "%d/%m/%Y"
key = "Artikel"
"map.item.identifiers.0.value" = "Artikel"
"set.item.identifiers.0.system" = "legacy:st-marys"
"map.item.description" = "Bezeichnung"
"map.location.identifiers.0.value" = "Lager"
"set.location.identifiers.0.system" = "legacy:st-marys"
"map.on_hand" = "Bestand"
"map.available" = "Verfuegbar"
"map.uom" = "ME"
"map.as_of" = "Stichtag"
decimals = "on_hand,available"
timestamps = "as_of"
source_system = "legacy:st-marys"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_csv_export_becomes_canonical_inventory_balances() {
    let bus = TestBus::start().await;
    bus.stream("CSV", "raw.csv").await;
    let csv =
        std::fs::read(repo_root().join("plugins/csv-map/fixtures/st-marys-stock.csv")).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    bus.publish_range("raw.csv", 0..2, |i| {
        if i == 0 {
            csv.clone()
        } else {
            csv.replace("1.840,5", "lots")
        }
    })
    .await;
    let connector = format!(
        "[[connector]]\nname = \"stock\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"raw.csv\"\nto = \"canon\"\nemits = [\"inventory-balance/1\"]\n{STOCK_MAPPING}",
        plugin("csv-map").display()
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connector);
    let host = start_host(&file).await;
    bus.wait_drained("raw.csv", "stock").await;

    let out = bus.messages("canon.inventory_balance").await;
    assert_eq!(
        out.len(),
        2,
        "rows of the good file; nothing of the bad one"
    );
    let first: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
    assert_eq!(first["on_hand"], "1840.5");
    assert_eq!(first["item"]["description"], "Kompresse 10x10; steril");
    assert_eq!(first["as_of"], "2026-05-24T00:00:00Z");
    let dead = bus.messages("dlq.stock").await;
    assert_eq!(
        header(&dead[0], "Plexus-Error").unwrap(),
        "line 2, field on_hand: \"lots\" is not a decimal"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hl7_messages_become_canonical_records_that_satisfy_their_schemas() {
    let bus = TestBus::start().await;
    bus.stream("HL7", "raw.hl7").await;
    let read = |name: &str| {
        std::fs::read_to_string(repo_root().join("plugins/hl7v2/fixtures").join(name)).unwrap()
    };
    let messages = [
        read("requisition.hl7"),
        read("batch.hl7"),
        "MSH|^~\\&|A|B|C|D|20260522||ADT^A01|X|P|2.5\r".to_owned(),
    ];
    bus.publish_range("raw.hl7", 0..messages.len(), |i| messages[i].clone())
        .await;
    let connector = format!(
        "[[connector]]\nname = \"hl7-in\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"raw.hl7\"\nto = \"canon\"\n\
         emits = [\"purchase-order/1\", \"item/1\", \"inventory-txn/1\", \"worker/1\"]\n",
        plugin("hl7v2").display()
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connector);
    let host = start_host(&file).await;
    bus.wait_drained("raw.hl7", "hl7-in").await;

    assert_eq!(bus.count("canon.purchase_order").await, 1);
    assert_eq!(bus.count("canon.item").await, 2);
    assert_eq!(bus.count("canon.inventory_txn").await, 2);
    assert_eq!(bus.count("canon.worker").await, 1);
    let dead = bus.messages("dlq.hl7-in").await;
    assert_eq!(dead.len(), 1, "only the unsupported message");
    assert!(
        header(&dead[0], "Plexus-Error")
            .unwrap()
            .contains("message type ADT^A01 is not supported")
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_r4_and_r5_bundles_become_canonical_records_that_satisfy_their_schemas() {
    let bus = TestBus::start().await;
    bus.stream("FHIR", "raw.fhir").await;
    let read = |name: &str| {
        std::fs::read_to_string(repo_root().join("plugins/fhir/fixtures").join(name)).unwrap()
    };
    let bundles = [read("r4-bundle.json"), read("r5-bundle.json")];
    bus.publish_range("raw.fhir", 0..2, |i| bundles[i].clone())
        .await;
    let connector = format!(
        "[[connector]]\nname = \"fhir-in\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"raw.fhir\"\nto = \"canon\"\n\
         emits = [\"purchase-order/1\", \"goods-receipt/1\", \"inventory-balance/1\", \"item/1\", \"location/1\", \"supplier/1\", \"worker/1\"]\n",
        plugin("fhir").display()
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connector);
    let host = start_host(&file).await;
    bus.wait_drained("raw.fhir", "fhir-in").await;

    assert_eq!(
        bus.count("dlq.fhir-in").await,
        0,
        "every record satisfied its schema"
    );
    for (topic, n) in [
        ("purchase_order", 2),
        ("goods_receipt", 2),
        ("inventory_balance", 2),
        ("item", 1),
        ("location", 1),
        ("supplier", 1),
        ("worker", 1),
    ] {
        assert_eq!(bus.count(&format!("canon.{topic}")).await, n, "{topic}");
    }
    host.shutdown().await;
}
