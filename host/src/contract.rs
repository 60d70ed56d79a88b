//! Output contracts: the canonical JSON Schemas (`schemas/<entity>/<version>.json`),
//! built into the host and compiled once per connector.
//!
//! A connector that lists `emits` has every output checked before it is
//! published: its `Plexus-Schema` must be one it declared (a connector that
//! declares exactly one may leave it unset), its payload must be JSON, and the
//! JSON must satisfy the schema. A record that fails is never published; its
//! input goes to the dead-letter subject with the first violation named.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bindings::PluginRecord;

/// Every released schema: id and text. A released schema is never edited; a
/// change is a new version added beside it.
const SCHEMAS: &[(&str, &str)] = &[
    ("accrual/1", include_str!("../../schemas/accrual/1.json")),
    (
        "goods-receipt/1",
        include_str!("../../schemas/goods-receipt/1.json"),
    ),
    (
        "inventory-balance/1",
        include_str!("../../schemas/inventory-balance/1.json"),
    ),
    (
        "inventory-txn/1",
        include_str!("../../schemas/inventory-txn/1.json"),
    ),
    ("invoice/1", include_str!("../../schemas/invoice/1.json")),
    ("item/1", include_str!("../../schemas/item/1.json")),
    ("location/1", include_str!("../../schemas/location/1.json")),
    (
        "match-exception/1",
        include_str!("../../schemas/match-exception/1.json"),
    ),
    (
        "match-exception/2",
        include_str!("../../schemas/match-exception/2.json"),
    ),
    ("po-ack/1", include_str!("../../schemas/po-ack/1.json")),
    (
        "purchase-order/1",
        include_str!("../../schemas/purchase-order/1.json"),
    ),
    (
        "ship-notice/1",
        include_str!("../../schemas/ship-notice/1.json"),
    ),
    (
        "sla-breach/1",
        include_str!("../../schemas/sla-breach/1.json"),
    ),
    ("supplier/1", include_str!("../../schemas/supplier/1.json")),
    (
        "time-entry/1",
        include_str!("../../schemas/time-entry/1.json"),
    ),
    ("worker/1", include_str!("../../schemas/worker/1.json")),
];

/// Whether `id` names a released schema.
pub fn is_known(id: &str) -> bool {
    SCHEMAS.iter().any(|(known, _)| *known == id)
}

/// The ids of every released schema.
pub fn known() -> impl Iterator<Item = &'static str> {
    SCHEMAS.iter().map(|(id, _)| *id)
}

/// The compiled schemas one connector declared.
#[derive(Default)]
pub struct Contracts {
    validators: BTreeMap<String, jsonschema::Validator>,
}

impl Contracts {
    /// Compile the schemas in `emits`; none means no checks.
    pub fn compile(emits: &[String]) -> anyhow::Result<Arc<Contracts>> {
        let mut validators = BTreeMap::new();
        for id in emits {
            let text = SCHEMAS
                .iter()
                .find(|(known, _)| known == id)
                .map(|(_, text)| *text)
                .ok_or_else(|| anyhow::anyhow!("no schema {id}"))?;
            let schema: serde_json::Value = serde_json::from_str(text)?;
            let validator = jsonschema::validator_for(&schema)
                .map_err(|e| anyhow::anyhow!("schema {id}: {e}"))?;
            validators.insert(id.clone(), validator);
        }
        Ok(Arc::new(Contracts { validators }))
    }

    /// Check one output, filling in its schema when the connector declares just
    /// one. `Err` names the first violation.
    pub fn check(&self, record: &mut PluginRecord) -> Result<(), String> {
        if self.validators.is_empty() {
            return Ok(());
        }
        if record.schema.is_none() && self.validators.len() == 1 {
            record.schema = self.validators.keys().next().cloned();
        }
        let Some(schema) = record.schema.as_deref() else {
            return Err(format!(
                "the record names no schema; the connector emits {}",
                self.declared()
            ));
        };
        let Some(validator) = self.validators.get(schema) else {
            return Err(format!(
                "schema {schema} is not among the connector's emits ({})",
                self.declared()
            ));
        };
        let value: serde_json::Value = serde_json::from_slice(&record.payload)
            .map_err(|e| format!("{schema}: the payload is not JSON: {e}"))?;
        match validator.iter_errors(&value).next() {
            None => Ok(()),
            Some(error) => {
                let at = error.instance_path().to_string();
                let at = if at.is_empty() { "/".to_owned() } else { at };
                Err(format!("violates {schema} at {at}: {error}"))
            }
        }
    }

    fn declared(&self) -> String {
        self.validators
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(schema: Option<&str>, payload: &str) -> PluginRecord {
        PluginRecord {
            key: String::new(),
            payload: payload.as_bytes().to_vec(),
            headers: vec![],
            schema: schema.map(str::to_owned),
            content_type: None,
            topic: None,
        }
    }

    const WORKER: &str = r#"{"worker_id":"W1","name":"Ada","status":"active","job_code":"RN","home_cost_center":"CC-100",
        "provenance":{"source_system":"hr","source_record_id":"W1","received_at":"2026-05-22T08:00:00Z"}}"#;

    /// The serde types of `plexus-canonical` produce records their schemas accept.
    #[test]
    fn canonical_types_match_their_schemas() {
        use plexus_canonical::*;
        let prov = Provenance {
            source_system: "erp".into(),
            source_record_id: "1".into(),
            control_number: None,
            received_at: "2026-05-22T08:00:00Z".into(),
        };
        let id = Identifier::new("gtin", "00614141000036");
        let item = ItemRef {
            identifiers: vec![id.clone()],
            description: "Gauze".into(),
        };
        let party = Party {
            identifiers: vec![Identifier::new("gln", "0614141000012")],
            name: Some("Main stores".into()),
        };
        let money = Money {
            amount: "10.00".into(),
            currency: "USD".into(),
        };
        fn check<E: Entity>(entity: &E) {
            let contracts = Contracts::compile(&[E::SCHEMA.to_owned()]).unwrap();
            let mut r = record(None, &serde_json::to_string(entity).unwrap());
            assert_eq!(contracts.check(&mut r), Ok(()), "{}", E::SCHEMA);
        }
        let org = Organization {
            identifiers: vec![id.clone()],
            name: "Medline".into(),
            address: None,
            parent: Some(party.clone()),
            provenance: prov.clone(),
        };
        check(&Supplier(org.clone()));
        check(&Location(org));
        check(&GoodsReceipt {
            receipt_number: "GR-1".into(),
            received_at: "2026-05-22T08:00:00Z".into(),
            location: party.clone(),
            lines: vec![ReceiptLine {
                po_number: "PO-1".into(),
                po_line: "1".into(),
                item: item.clone(),
                quantity_received: "10".into(),
                quantity_accepted: "9".into(),
                uom: "EA".into(),
            }],
            provenance: prov.clone(),
        });
        check(&InventoryTxn {
            item: item.clone(),
            location: party.clone(),
            quantity_delta: "-2".into(),
            uom: "EA".into(),
            txn_type: "issue".into(),
            occurred_at: "2026-05-22T08:00:00Z".into(),
            cost_center: Some("CC-1".into()),
            lot: None,
            provenance: prov.clone(),
        });
        check(&Item {
            item_id: "4471".into(),
            identifiers: vec![id],
            description: "Gauze".into(),
            base_uom: "EA".into(),
            packs: vec![Pack {
                uom: "BX".into(),
                quantity: "50".into(),
                gtin: None,
            }],
            unspsc: None,
            stocked: Some(true),
            patient_chargeable: None,
            provenance: prov.clone(),
        });
        check(&Worker {
            worker_id: "W1".into(),
            name: "Ada".into(),
            status: "active".into(),
            job_code: "RN".into(),
            home_cost_center: "CC-1".into(),
            provenance: prov.clone(),
        });
        check(&TimeEntry {
            worker_id: "W1".into(),
            work_date: "2026-05-22".into(),
            hours: "7.5".into(),
            pay_code: "REG".into(),
            cost_center: "CC-1".into(),
            provenance: prov.clone(),
        });
        check(&MatchException {
            exception_id: "E1".into(),
            code: "price_mismatch".into(),
            severity: "warning".into(),
            po_number: "PO-1".into(),
            facility: party.clone(),
            category: "42".into(),
            exposure: money.clone(),
            detail: "price 12.00 vs 10.00".into(),
            detected_at: "2026-05-22T08:00:00Z".into(),
            refs: vec!["invoice:1".into()],
            provenance: prov.clone(),
        });
        let resolved = MatchExceptionV2 {
            exception_id: "price_mismatch:PO-1:2".into(),
            status: "resolved".into(),
            code: "price_mismatch".into(),
            severity: "warning".into(),
            po_number: "PO-1".into(),
            lines: vec!["2".into()],
            facility: party.clone(),
            category: "unspsc:42".into(),
            exposure: money.clone(),
            detail: "billed 12.00 against 10.00".into(),
            opened_at: "2026-05-22T08:00:00Z".into(),
            resolved_at: Some("2026-05-23T08:00:00Z".into()),
            resolution: Some("credit_memo".into()),
            updated_at: "2026-05-23T08:00:00Z".into(),
            sequence: 7,
            refs: vec!["invoice:1".into()],
            provenance: prov.clone(),
        };
        check(&resolved);
        check(&MatchExceptionV2 {
            status: "open".into(),
            resolved_at: None,
            resolution: None,
            ..resolved.clone()
        });
        // A resolved exception says when and by what; an open one does not.
        let contracts = Contracts::compile(&["match-exception/2".into()]).unwrap();
        for bad in [
            MatchExceptionV2 {
                resolution: None,
                ..resolved.clone()
            },
            MatchExceptionV2 {
                status: "open".into(),
                ..resolved.clone()
            },
        ] {
            let mut r = record(None, &serde_json::to_string(&bad).unwrap());
            assert!(contracts.check(&mut r).is_err(), "{bad:?}");
        }
        check(&Accrual {
            accrual_id: "PO-1:2".into(),
            po_number: "PO-1".into(),
            po_line: "2".into(),
            supplier: party.clone(),
            facility: party.clone(),
            category: "unspsc:42".into(),
            uom: "EA".into(),
            unit_price: "10.00".into(),
            quantity_ordered: "5".into(),
            quantity_received: "4".into(),
            quantity_invoiced: "1".into(),
            quantity_accrued: "3".into(),
            amount_accrued: money.clone(),
            as_of: "2026-05-22T08:00:00Z".into(),
            sequence: 3,
            provenance: prov.clone(),
        });
        check(&InventoryBalance {
            item,
            location: party,
            on_hand: "1".into(),
            available: "1".into(),
            uom: "EA".into(),
            as_of: "2026-05-22T08:00:00Z".into(),
            provenance: prov,
        });
    }

    #[test]
    fn every_schema_compiles() {
        let all: Vec<String> = known().map(str::to_owned).collect();
        assert_eq!(all.len(), 16);
        assert!(Contracts::compile(&all).is_ok());
    }

    #[test]
    fn valid_records_pass_and_get_their_schema() {
        let contracts = Contracts::compile(&["worker/1".into()]).unwrap();
        let mut r = record(None, WORKER);
        assert_eq!(contracts.check(&mut r), Ok(()));
        assert_eq!(r.schema.as_deref(), Some("worker/1"));
    }

    #[test]
    fn the_first_violation_is_named() {
        let contracts = Contracts::compile(&["worker/1".into(), "time-entry/1".into()]).unwrap();
        let bad = WORKER.replace("\"active\"", "\"asleep\"");
        let err = contracts
            .check(&mut record(Some("worker/1"), &bad))
            .unwrap_err();
        assert!(err.starts_with("violates worker/1 at /status:"), "{err}");
        let err = contracts.check(&mut record(None, WORKER)).unwrap_err();
        assert!(err.starts_with("the record names no schema"), "{err}");
        let err = contracts
            .check(&mut record(Some("invoice/1"), WORKER))
            .unwrap_err();
        assert!(
            err.starts_with("schema invoice/1 is not among the connector's emits"),
            "{err}"
        );
        let err = contracts
            .check(&mut record(Some("worker/1"), "{"))
            .unwrap_err();
        assert!(
            err.starts_with("worker/1: the payload is not JSON"),
            "{err}"
        );
        let float = WORKER.replace("\"W1\",\"name\"", "\"W1\",\"hours\":7.5,\"name\"");
        let err = contracts
            .check(&mut record(Some("worker/1"), &float))
            .unwrap_err();
        assert!(
            err.contains("hours"),
            "unknown fields are violations: {err}"
        );
    }
}
