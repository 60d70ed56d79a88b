//! Mappings field by field on fixtures written from the standard.

use serde_json::{Value, json};

use super::*;

const AT: &str = "2026-05-22T12:00:00Z";

fn records(fixture: &str) -> Vec<(String, String, String, Value)> {
    let text =
        std::fs::read_to_string(format!("{}/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    convert(&text, "", AT)
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
fn requisitions_become_draft_purchase_orders() {
    let got = records("requisition.hl7");
    assert_eq!(got.len(), 1);
    let (key, schema, topic, po) = &got[0];
    assert_eq!(
        (key.as_str(), schema.as_str(), topic.as_str()),
        ("REQ-1001", "purchase-order/1", "purchase_order")
    );
    assert_eq!(
        po["order_date"], "2026-05-22",
        "08:30 -05:00 is still the 22nd in UTC"
    );
    assert_eq!(
        po["ship_to"],
        json!({"identifiers": [{"system": "legacy:stmarys", "value": "ST MARYS 4 WEST"}], "name": "ST MARYS 4 WEST"})
    );
    assert_eq!(
        po["supplier"],
        json!({"identifiers": [{"system": "legacy:stmarys", "value": "MED-1"}], "name": "Medline Industries"})
    );
    assert_eq!(
        po["lines"][0],
        json!({"line_number": "1", "quantity": "10", "uom": "BX", "unit_price": "6.25", "need_by": "2026-05-29",
               "item": {"description": "Gauze 4&4 sterile~bulk",
                        "identifiers": [{"system": "buyer-part", "value": "4471"}, {"system": "vendor-part", "value": "MDS1955"}, {"system": "mfr-part", "value": "27124"}]}})
    );
    assert_eq!(
        po["lines"][1]["unit_price"], "0",
        "no RQ1: price unknown on a requisition"
    );
    assert_eq!(po["provenance"]["source_system"], "hl7:MMIS");
}

#[test]
fn a_batch_of_item_master_charges_and_personnel() {
    let got = records("batch.hl7");
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|(k, _, t, _)| (k.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("4471", "item"),
            ("8812", "item"),
            ("CHG-5/1", "inventory_txn"),
            ("CHG-5/2", "inventory_txn"),
            ("E-9001", "worker")
        ]
    );

    let gauze = &got[0].3;
    assert_eq!(gauze["description"], "Gauze sponge 4x4 sterile");
    assert_eq!(gauze["base_uom"], "EA");
    assert_eq!(
        gauze["packs"],
        json!([{"uom": "EA", "quantity": "1"}, {"uom": "BX", "quantity": "50"}])
    );
    assert_eq!(gauze["unspsc"], "42311505");
    assert_eq!(
        (
            gauze["stocked"].as_bool(),
            gauze["patient_chargeable"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert_eq!(
        gauze["identifiers"],
        json!([{"system": "legacy:stmarys", "value": "4471"}, {"system": "mfr-part", "value": "MDS1955"}, {"system": "vendor-part", "value": "NON27124"}])
    );
    assert_eq!(got[1].3["patient_chargeable"], false);
    assert_eq!(got[1].3["base_uom"], "EA", "no pack of one: EA");

    let issue = &got[2].3;
    assert_eq!(
        (
            issue["txn_type"].as_str(),
            issue["quantity_delta"].as_str(),
            issue["occurred_at"].as_str(),
            issue["cost_center"].as_str()
        ),
        (
            Some("issue"),
            Some("-3"),
            Some("2026-05-22T10:10:00Z"),
            Some("CC-4410")
        )
    );
    assert_eq!(issue["location"]["identifiers"][0]["value"], "STMARYS/OR-3");
    assert_eq!(
        (
            got[3].3["txn_type"].as_str(),
            got[3].3["quantity_delta"].as_str()
        ),
        (Some("return"), Some("1"))
    );

    let ada = &got[4].3;
    assert_eq!(ada["name"], "Ada Byron");
    assert_eq!(
        (
            ada["status"].as_str(),
            ada["job_code"].as_str(),
            ada["home_cost_center"].as_str()
        ),
        (Some("active"), Some("RN"), Some("CC-4410"))
    );
}

#[test]
fn malformed_messages_say_where() {
    let err = |t: &str| convert(t, "", AT).unwrap_err();
    assert_eq!(
        err("MSH|^~\\&|A|B|C|D|20260522||ADT^A01|X|P|2.5\r"),
        "message 1: segment 1 (MSH) field 9: message type ADT^A01 is not supported (OMS^O05, OMN^O07, MFN^M16, DFT^P03, PMU^B01)"
    );
    assert_eq!(
        err("MSH|^~\\&|A|B|C|D|20260522||DFT^P03|X|P|2.5\rFT1|1|||20260522||CG|4471|||many\r"),
        "message 1: segment 2 (FT1) field 10: transaction quantity \"many\" is not a number"
    );
    assert_eq!(
        err("MSH|^~\\&|A|B|C|D|20260522||OMS^O05|X|P|2.5\rORC|NW|R1|||||||2026-05-22\r"),
        "message 1: segment 2 (ORC) field 9: \"2026-05-22\" is not a timestamp (YYYYMMDDHHMM)"
    );
    assert!(err("hello").contains("starts with MSH"));
}

proptest::proptest! {
    /// Whatever arrives, the parser answers with records or an error, never a panic.
    #[test]
    fn fuzz_arbitrary_text_never_panics(text in "(MSH\\|\\^~\\\\&\\|)?[A-Z0-9|^~\\\\&\r\n ]{0,300}") {
        let _ = convert(&text, "", AT);
    }
}
