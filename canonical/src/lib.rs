//! The canonical model, version 1, as serde types. Each entity serializes to
//! a record that satisfies `schemas/<entity>/1.json` (the host checks this when
//! a connector declares `emits`); [`Entity::SCHEMA`] is its `Plexus-Schema` and
//! [`Entity::TOPIC`] its subject suffix.
//!
//! Conventions: decimals (quantities, prices, amounts) are strings holding a
//! decimal, never floats; dates are `YYYY-MM-DD`; timestamps RFC 3339 UTC;
//! identifiers are `{system, value}`; every record carries its [`Provenance`].
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

/// A canonical entity: its schema id and the subject suffix it is published under.
pub trait Entity: Serialize {
    /// `Plexus-Schema`, e.g. `purchase-order/1`.
    const SCHEMA: &'static str;
    /// Subject suffix, e.g. `purchase_order`.
    const TOPIC: &'static str;
}

/// An identifier in a named system (`gtin`, `gln`, `vendor-part`, `x12:CB`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identifier {
    /// The identifier system.
    pub system: String,
    /// The value.
    pub value: String,
    /// `Some(false)` when a GTIN or GLN fails its check digit: kept, but flagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_digit_valid: Option<bool>,
}

impl Identifier {
    /// An identifier without a check-digit verdict.
    pub fn new(system: impl Into<String>, value: impl Into<String>) -> Self {
        Identifier {
            system: system.into(),
            value: value.into(),
            check_digit_valid: None,
        }
    }
}

/// A trading partner, facility or location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// Its identifiers.
    pub identifiers: Vec<Identifier>,
    /// Its name, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An item as referenced on a line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemRef {
    /// At least one identifier.
    pub identifiers: Vec<Identifier>,
    /// Description (empty when the source gives none).
    pub description: String,
}

/// An amount in a currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Decimal string.
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The system that produced it.
    pub source_system: String,
    /// Its id there.
    pub source_record_id: String,
    /// ISA13/GS06/ST02 or MSH-10, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_number: Option<String>,
    /// When Plexus received it.
    pub received_at: String,
}

macro_rules! entity {
    ($ty:ty, $schema:literal, $topic:literal) => {
        impl Entity for $ty {
            const SCHEMA: &'static str = $schema;
            const TOPIC: &'static str = $topic;
        }
    };
}

/// `purchase-order/1`: a buyer's order to a supplier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseOrder {
    /// Business key.
    pub po_number: String,
    /// Order date.
    pub order_date: String,
    /// The supplier.
    pub supplier: Party,
    /// Where to deliver.
    pub ship_to: Party,
    /// Who pays, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_to: Option<Party>,
    /// The buyer, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer: Option<Party>,
    /// ISO 4217 currency.
    pub currency: String,
    /// Requested delivery date for the whole order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub need_by: Option<String>,
    /// When the supplier's acknowledgement is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_due_at: Option<String>,
    /// Lines.
    pub lines: Vec<PoLine>,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(PurchaseOrder, "purchase-order/1", "purchase_order");

/// One purchase-order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoLine {
    /// Line number (PO101, or the position when absent).
    pub line_number: String,
    /// The item.
    pub item: ItemRef,
    /// Quantity ordered.
    pub quantity: String,
    /// Unit of measure.
    pub uom: String,
    /// Unit price.
    pub unit_price: String,
    /// Requested delivery date for this line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub need_by: Option<String>,
}

/// `po-ack/1`: a supplier's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoAck {
    /// The acknowledged order.
    pub po_number: String,
    /// X12 587 code (AC, AD, AE, AK, AT, RD, RJ, ...).
    pub ack_type: String,
    /// Acknowledgement date.
    pub ack_date: String,
    /// Lines.
    pub lines: Vec<AckLine>,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(PoAck, "po-ack/1", "po_ack");

/// One acknowledged line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckLine {
    /// The order line.
    pub line_number: String,
    /// The item, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<ItemRef>,
    /// X12 668 line status (IA, IB, IC, ...).
    pub status: String,
    /// Quantity acknowledged.
    pub quantity: String,
    /// Unit of measure.
    pub uom: String,
    /// Price acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<String>,
    /// Promised delivery date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promised_date: Option<String>,
}

/// `ship-notice/1`: an advance ship notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipNotice {
    /// Business key (BSN02).
    pub shipment_id: String,
    /// Ship date.
    pub ship_date: String,
    /// Shipped from, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_from: Option<Party>,
    /// Shipped to, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_to: Option<Party>,
    /// Lines.
    pub lines: Vec<ShipLine>,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(ShipNotice, "ship-notice/1", "ship_notice");

/// One shipped item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipLine {
    /// The order it ships against.
    pub po_number: String,
    /// The order line, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_number: Option<String>,
    /// The item.
    pub item: ItemRef,
    /// Quantity shipped.
    pub quantity_shipped: String,
    /// Unit of measure.
    pub uom: String,
    /// Lot number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    /// Expiry date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
    /// Serial shipping container code of its pack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sscc: Option<String>,
}

/// `invoice/1`: a supplier invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invoice {
    /// Business key, with the supplier.
    pub invoice_number: String,
    /// Invoice date.
    pub invoice_date: String,
    /// The supplier, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier: Option<Party>,
    /// Who is billed, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_to: Option<Party>,
    /// ISO 4217 currency.
    pub currency: String,
    /// The one PO this invoice names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub po_number: Option<String>,
    /// Lines.
    pub lines: Vec<InvoiceLine>,
    /// Total.
    pub total: Money,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(Invoice, "invoice/1", "invoice");

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceLine {
    /// Line number.
    pub line_number: String,
    /// The item.
    pub item: ItemRef,
    /// Quantity invoiced.
    pub quantity: String,
    /// Unit of measure.
    pub uom: String,
    /// Unit price.
    pub unit_price: String,
    /// Line amount.
    pub amount: String,
    /// The order, when the line names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub po_number: Option<String>,
    /// The order line, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub po_line: Option<String>,
}

/// `inventory-balance/1`: stock of one item at one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryBalance {
    /// The item.
    pub item: ItemRef,
    /// The location.
    pub location: Party,
    /// On hand.
    pub on_hand: String,
    /// Available to promise.
    pub available: String,
    /// Unit of measure.
    pub uom: String,
    /// As of.
    pub as_of: String,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(InventoryBalance, "inventory-balance/1", "inventory_balance");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_left_out() {
        let party = Party {
            identifiers: vec![Identifier::new("gln", "0614141000012")],
            name: None,
        };
        assert_eq!(
            serde_json::to_string(&party).unwrap(),
            r#"{"identifiers":[{"system":"gln","value":"0614141000012"}]}"#
        );
        assert_eq!(PurchaseOrder::SCHEMA, "purchase-order/1");
        assert_eq!(PurchaseOrder::TOPIC, "purchase_order");
    }
}
