//! Mappings field by field on R4 and R5 fixtures.

use serde_json::{Value, json};

use super::*;

const AT: &str = "2026-05-24T07:00:00Z";

fn records(fixture: &str) -> Vec<(String, String, String, Value)> {
    let bytes =
        std::fs::read(format!("{}/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    convert(&bytes, "fhir", AT)
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

/// The R4 specification's own SupplyRequest and SupplyDelivery examples
/// (`simpleorder`, `simpledelivery`): the delivery names its order by server
/// id, and its receipt must carry the order's business number to be matched.
#[test]
fn a_delivery_in_a_bundle_carries_its_order_s_business_number() {
    let got = records("r4-spec-supply.json");
    let (po, receipt) = (&got[0].3, &got[1].3);
    assert_eq!(
        (got[0].2.as_str(), got[1].2.as_str()),
        ("purchase_order", "goods_receipt")
    );
    assert_eq!(po["po_number"], "Order10284");
    assert_eq!(receipt["lines"][0]["po_number"], "Order10284");
    assert_eq!(receipt["lines"][0]["item"], po["lines"][0]["item"]);
    assert_eq!(receipt["lines"][0]["quantity_received"], "10");

    // Alone (no Bundle around it), the reference is all there is.
    let alone = serde_json::to_vec(
        &serde_json::from_slice::<Value>(
            &std::fs::read(format!(
                "{}/fixtures/r4-spec-supply.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap()["entry"][1]["resource"],
    )
    .unwrap();
    let receipt: Value =
        serde_json::from_slice(&convert(&alone, "fhir", AT).unwrap()[0].payload).unwrap();
    assert_eq!(receipt["lines"][0]["po_number"], "simpleorder");
}

#[test]
fn r4_resources() {
    let got = records("r4-bundle.json");
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|(k, _, t, _)| (k.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("REQ-2001", "purchase_order"),
            ("GR-7001", "goods_receipt"),
            ("0860001234565", "supplier"),
            ("4west", "location"),
            ("E-9001", "worker")
        ]
    );
    let po = &got[0].3;
    assert_eq!(
        (po["order_date"].as_str(), po["need_by"].as_str()),
        (Some("2026-05-22"), Some("2026-05-30"))
    );
    assert_eq!(
        po["supplier"],
        json!({"identifiers": [{"system": "legacy:vendors", "value": "MED-1"}], "name": "Medline"})
    );
    assert_eq!(
        po["ship_to"],
        json!({"identifiers": [{"system": "legacy:fhir", "value": "Location/4west"}], "name": "4 West supply room"})
    );
    assert_eq!(
        po["lines"][0],
        json!({"line_number": "1", "quantity": "12", "uom": "BX", "unit_price": "0",
               "item": {"identifiers": [{"system": "gtin", "value": "00614141000036"}], "description": "Gauze sponge 4x4"}})
    );
    assert_eq!(
        po["provenance"],
        json!({"source_system": "fhir", "source_record_id": "SupplyRequest/sr-1", "control_number": "3", "received_at": AT})
    );
    let gr = &got[1].3;
    assert_eq!(gr["received_at"], "2026-05-29T14:05:00Z");
    assert_eq!(gr["lines"][0]["po_number"], "REQ-2001");
    assert_eq!(
        (
            gr["lines"][0]["quantity_received"].as_str(),
            gr["lines"][0]["uom"].as_str()
        ),
        (Some("12"), Some("BX"))
    );
    assert_eq!(got[2].3["address"], "3 Lakes Dr, Northfield IL");
    assert_eq!(got[3].3["parent"]["name"], "St Mary's");
    assert_eq!(got[4].3["name"], "Ada Augusta Byron");
    assert_eq!(got[4].3["job_code"], "RN");
}

#[test]
fn r5_resources() {
    let got = records("r5-bundle.json");
    let kinds: Vec<&str> = got.iter().map(|(_, _, t, _)| t.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "purchase_order",
            "goods_receipt",
            "inventory_balance",
            "inventory_balance",
            "item"
        ]
    );
    let po = &got[0].3;
    assert_eq!(
        po["lines"][0]["item"],
        json!({"identifiers": [{"system": "ndc", "value": "0409-4888-02"}], "description": "Heparin 5000 units/mL"})
    );
    assert_eq!(po["lines"][0]["quantity"], "25");
    let gr = &got[1].3;
    assert_eq!(gr["received_at"], "2026-05-29T09:00:00Z");
    assert_eq!(gr["lines"].as_array().unwrap().len(), 2);
    assert_eq!(
        gr["lines"][1]["item"]["identifiers"][0],
        json!({"system": "legacy:parts", "value": "NON27124"})
    );
    assert_eq!(gr["lines"][1]["po_line"], "2");
    assert_eq!(got[2].0, "00614141000036@0614141000012");
    assert_eq!(
        (got[2].3["on_hand"].as_str(), got[2].3["uom"].as_str()),
        (Some("1840"), Some("CS"))
    );
    assert_eq!(
        got[4].3["identifiers"],
        json!([{"system": "unspsc", "value": "42311505"}])
    );
    assert_eq!(got[4].3["description"], "Gauze sponge 4x4 sterile");
}

#[test]
fn malformed_resources_say_what_and_where() {
    let err = |t: &str| convert(t.as_bytes(), "fhir", AT).unwrap_err();
    assert!(err("{").starts_with("not JSON"));
    assert_eq!(
        err(r#"{"resourceType":"Invoice","id":"i1"}"#),
        "Invoice/i1: resource type Invoice is not supported"
    );
    assert_eq!(
        err(
            r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"SupplyRequest","id":"x","quantity":{"value":"lots"}}}]}"#
        ),
        "Bundle entry 0: SupplyRequest/x: quantity.value is missing or not a number"
    );
    assert_eq!(
        err(r#"{"resourceType":"SupplyDelivery","id":"d","suppliedItem":{}}"#),
        "SupplyDelivery/d: basedOn names no order"
    );
}

proptest::proptest! {
    /// Fuzz: any JSON-ish text converts or gives an error, never a panic.
    #[test]
    fn fuzz_arbitrary_json_never_panics(text in r#"\{("resourceType":"(Bundle|SupplyRequest|SupplyDelivery|InventoryReport|Practitioner)",)?("[a-zA-Z]{1,12}":(\[|\{|"[a-z0-9:-]{0,12}"|[0-9]{1,4}|null|true)[,\]\}]{0,2}){0,12}\}"#) {
        let _ = convert(text.as_bytes(), "fhir", AT);
    }
}
