//! The mappings, field by field, on fixtures written from the standard, and
//! the 850 round trip as a property.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use plexus_sdk::canonical::{Identifier, ItemRef, Party, PoLine, Provenance, PurchaseOrder};

const AT: &str = "2026-05-22T08:30:00Z";

fn records(fixture: &str) -> Vec<(String, String, String, Value)> {
    let path = format!("{}/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(path).unwrap();
    inbound(&bytes, None, AT)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.key,
                r.schema.unwrap(),
                r.topic.unwrap(),
                serde_json::from_slice(&r.payload).unwrap(),
            )
        })
        .collect()
}

#[test]
fn purchase_orders_004010() {
    let got = records("orders-004010.x12");
    assert_eq!(got.len(), 2);
    let (key, schema, topic, po) = &got[0];
    assert_eq!(
        (key.as_str(), schema.as_str(), topic.as_str()),
        ("PO-778812", "purchase-order/1", "purchase_order")
    );
    assert_eq!(po["po_number"], "PO-778812");
    assert_eq!(po["order_date"], "2026-05-22");
    assert_eq!(po["currency"], "USD");
    assert_eq!(po["need_by"], "2026-05-29");
    assert_eq!(
        po["ship_to"],
        json!({"identifiers": [{"system": "gln", "value": "0614141000012", "check_digit_valid": true}], "name": "ST MARYS MAIN STORES"})
    );
    assert_eq!(
        po["supplier"],
        json!({"identifiers": [{"system": "duns", "value": "007901234"}], "name": "MEDLINE INDUSTRIES"})
    );
    assert_eq!(
        po["lines"][0],
        json!({"line_number": "1", "quantity": "10", "uom": "CS", "unit_price": "62.50",
               "item": {"identifiers": [{"system": "gtin", "value": "00614141000036", "check_digit_valid": true},
                                        {"system": "vendor-part", "value": "MDS1955"}],
                        "description": "GAUZE SPONGE 4X4 STERILE"}})
    );
    assert_eq!(
        po["lines"][1]["item"]["identifiers"][1],
        json!({"system": "mfr-part", "value": "27124"})
    );
    assert_eq!(po["lines"][1]["need_by"], "2026-06-01");
    assert_eq!(
        po["provenance"],
        json!({"source_system": "x12:STMARYSHOSP", "source_record_id": "000000905/905/0001", "control_number": "000000905/905/0001", "received_at": AT})
    );

    let (_, _, _, second) = &got[1];
    assert_eq!(second["currency"], "EUR");
    assert_eq!(
        second["lines"][0]["line_number"], "1",
        "lines without PO101 are numbered by position"
    );
    assert_eq!(second["lines"][1]["line_number"], "2");
    assert_eq!(second["lines"][1]["unit_price"], "0.5");
    assert_eq!(
        second["lines"][0]["item"]["identifiers"][0],
        json!({"system": "gtin", "value": "036000291453", "check_digit_valid": false}),
        "a bad check digit is kept, flagged"
    );
    assert_eq!(
        second["lines"][1]["item"]["identifiers"][0],
        json!({"system": "x12:CB", "value": "CUSTOM-9"})
    );
    assert_eq!(
        second["ship_to"]["identifiers"][0],
        json!({"system": "x12:92", "value": "RIV-OR-2"})
    );
    assert_eq!(
        second["supplier"],
        json!({"identifiers": [], "name": "OWENS AND MINOR"})
    );
}

#[test]
fn ack_ship_notice_and_invoice_005010_with_newline_terminators() {
    let got = records("supplier-005010.x12");
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|(k, _, t, _)| (k.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("PO-778812:2026-05-23", "po_ack"),
            ("SHIP-88123", "ship_notice"),
            ("007901234:INV-99120", "invoice")
        ]
    );

    let ack = &got[0].3;
    assert_eq!(
        (ack["ack_type"].as_str(), ack["ack_date"].as_str()),
        (Some("AC"), Some("2026-05-23"))
    );
    assert_eq!(
        ack["lines"][0],
        json!({"line_number": "1", "status": "IA", "quantity": "10", "uom": "CS", "unit_price": "62.50", "promised_date": "2026-05-29",
        "item": {"identifiers": [{"system": "gtin", "value": "00614141000036", "check_digit_valid": true}], "description": ""}})
    );
    assert_eq!(
        (
            ack["lines"][1]["status"].as_str(),
            ack["lines"][1]["quantity"].as_str()
        ),
        (Some("IB"), Some("2"))
    );

    let asn = &got[1].3;
    assert_eq!(asn["ship_date"], "2026-05-26");
    assert_eq!(asn["ship_from"]["identifiers"][0]["value"], "0860001234565");
    assert_eq!(
        asn["lines"][0],
        json!({"po_number": "PO-778812", "line_number": "1", "quantity_shipped": "10", "uom": "CS", "lot": "LOT-2291", "expiry": "2028-01-31",
               "sscc": "00106141411234567894",
               "item": {"identifiers": [{"system": "gtin", "value": "00614141000036", "check_digit_valid": true}], "description": "GAUZE SPONGE 4X4 STERILE"}})
    );

    let invoice = &got[2].3;
    assert_eq!(invoice["invoice_number"], "INV-99120");
    assert_eq!(invoice["invoice_date"], "2026-05-27");
    assert_eq!(
        invoice["po_number"], "PO-778812",
        "REF*PO names the PO when BIG04 is absent"
    );
    assert_eq!(
        invoice["total"],
        json!({"amount": "661.50", "currency": "USD"}),
        "TDS01 has two implied decimals"
    );
    assert_eq!(invoice["lines"][0]["amount"], "625.00");
    assert_eq!(invoice["lines"][1]["amount"], "36.50");
    assert_eq!(invoice["bill_to"]["name"], "ST MARYS AP");
    assert_eq!(
        invoice["provenance"]["control_number"],
        "000000417/419/0419"
    );
}

#[test]
fn inventory_balances_one_per_item() {
    let got = records("inventory-846.x12");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "00614141000036@0857311000010");
    let b = &got[0].3;
    assert_eq!(
        (
            b["on_hand"].as_str(),
            b["available"].as_str(),
            b["uom"].as_str()
        ),
        (Some("1840"), Some("1600"), Some("CS"))
    );
    assert_eq!(b["as_of"], "2026-05-24T00:00:00Z");
    assert_eq!(b["location"]["name"], "OM DISTRIBUTION RICHMOND");
    assert_eq!(got[1].3["available"], "0");
    assert_eq!(
        got[1].3["provenance"]["source_record_id"],
        "000001200/1200/1200/2"
    );
}

#[test]
fn malformed_input_says_what_and_where() {
    let path = format!("{}/fixtures/orders-004010.x12", env!("CARGO_MANIFEST_DIR"));
    let good = std::fs::read_to_string(path).unwrap();
    let err = |text: String| inbound(text.as_bytes(), None, AT).unwrap_err();
    assert_eq!(
        err(good.replace("CTT*2~\nSE*13", "CTT*3~\nSE*13")),
        "transaction set 850 (ST02 0001, segment 3): segment 14 (CTT): CTT01 says 3 line items, but there are 2"
    );
    assert_eq!(
        err(good.replace("PO1*1*10*CS", "PO1*1*ten*CS")),
        "transaction set 850 (ST02 0001, segment 3): segment 9 (PO1) element 02: quantity \"ten\" is not a number"
    );
    assert_eq!(
        err(good.replace(
            "BEG*00*SA*PO-778812**20260522",
            "BEG*00*SA*PO-778812**20261399"
        )),
        "transaction set 850 (ST02 0001, segment 3): segment 4 (BEG) element 05: \"20261399\" is not a date (CCYYMMDD)"
    );
    assert!(
        err(good.replace("ST*850*0002", "ST*999*0002"))
            .contains("transaction set 999 is not supported")
    );
    assert!(err(good[..good.len() / 2].to_owned()).starts_with("truncated"));
    assert_eq!(
        err("ISA*00".into()),
        "not an X12 interchange: it does not start with a complete ISA segment"
    );
}

fn po_strategy() -> impl Strategy<Value = PurchaseOrder> {
    let token = "[A-Z0-9][A-Z0-9-]{0,11}";
    let decimal = (0u32..100_000, 0u32..100).prop_map(|(i, f)| {
        if f == 0 {
            i.to_string()
        } else {
            format!("{i}.{f:02}")
        }
    });
    let line = (
        token,
        decimal.clone(),
        decimal,
        "(EA|CS|BX)",
        "[A-Z ]{0,20}",
        proptest::option::of("20[2-3][0-9]-0[1-9]-1[0-9]"),
    );
    (
        token,
        "20[2-3][0-9]-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])",
        "(USD|EUR)",
        proptest::collection::vec(line, 1..6),
        "[A-Z ]{1,20}",
    )
        .prop_map(
            |(po_number, order_date, currency, lines, name)| PurchaseOrder {
                po_number,
                order_date,
                supplier: Party {
                    identifiers: vec![Identifier::new("duns", "007901234")],
                    name: Some(name.trim().to_owned()).filter(|n| !n.is_empty()),
                },
                ship_to: Party {
                    identifiers: vec![Identifier {
                        check_digit_valid: Some(true),
                        ..Identifier::new("gln", "0614141000012")
                    }],
                    name: None,
                },
                bill_to: None,
                buyer: None,
                currency,
                need_by: None,
                ack_due_at: None,
                lines: lines
                    .into_iter()
                    .enumerate()
                    .map(
                        |(i, (part, quantity, unit_price, uom, description, need_by))| PoLine {
                            line_number: (i + 1).to_string(),
                            item: ItemRef {
                                identifiers: vec![Identifier::new("vendor-part", part)],
                                description: description.trim().to_owned(),
                            },
                            quantity,
                            uom,
                            unit_price,
                            need_by,
                        },
                    )
                    .collect(),
                provenance: Provenance {
                    source_system: "erp".into(),
                    source_record_id: "x".into(),
                    control_number: None,
                    received_at: AT.into(),
                },
            },
        )
}

proptest! {
    #[test]
    fn purchase_orders_round_trip_through_850(po in po_strategy(), version in "(004010|005010)") {
        let settings = Outbound { sender: "STMARYSHOSP".into(), receiver: "MEDLINE".into(), version };
        let x12 = outbound(&serde_json::to_vec(&po).unwrap(), &settings, &("260522".into(), "0830".into())).unwrap();
        let back = inbound(&x12.payload, Some("erp".into()), AT).unwrap();
        prop_assert_eq!(back.len(), 1);
        let mut parsed: PurchaseOrder = serde_json::from_slice(&back[0].payload).unwrap();
        parsed.provenance = po.provenance.clone();
        prop_assert_eq!(parsed, po);
    }
}

proptest! {
    /// Fuzz: arbitrary bytes give records or an error, never a panic.
    #[test]
    fn fuzz_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = inbound(&bytes, None, AT);
    }

    /// Fuzz: a real interchange with bytes changed, dropped or repeated.
    #[test]
    fn fuzz_mutated_interchanges_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)) {
        let mut bytes = std::fs::read(format!("{}/fixtures/supplier-005010.x12", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                _ => bytes.insert(i, byte),
            }
        }
        let _ = inbound(&bytes, None, AT);
    }
}
