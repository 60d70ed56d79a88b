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

/// `goods-receipt/1`: goods received at a location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoodsReceipt {
    /// Business key.
    pub receipt_number: String,
    /// When the goods arrived.
    pub received_at: String,
    /// Where.
    pub location: Party,
    /// Lines.
    pub lines: Vec<ReceiptLine>,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(GoodsReceipt, "goods-receipt/1", "goods_receipt");

/// One received line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptLine {
    /// The order received against.
    pub po_number: String,
    /// Its line.
    pub po_line: String,
    /// The item.
    pub item: ItemRef,
    /// Quantity received.
    pub quantity_received: String,
    /// Quantity accepted.
    pub quantity_accepted: String,
    /// Unit of measure.
    pub uom: String,
}

/// `inventory-txn/1`: one inventory movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryTxn {
    /// The item.
    pub item: ItemRef,
    /// Where.
    pub location: Party,
    /// Signed change (issues are negative).
    pub quantity_delta: String,
    /// Unit of measure.
    pub uom: String,
    /// issue, receipt, adjust, count, transfer, waste or return.
    pub txn_type: String,
    /// When.
    pub occurred_at: String,
    /// Charged cost center.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
    /// Lot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(InventoryTxn, "inventory-txn/1", "inventory_txn");

/// `item/1`: an item master record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Internal item id: the business key.
    pub item_id: String,
    /// Identifiers.
    pub identifiers: Vec<Identifier>,
    /// Description.
    pub description: String,
    /// Base unit of measure.
    pub base_uom: String,
    /// Packaging levels.
    pub packs: Vec<Pack>,
    /// UNSPSC code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unspsc: Option<String>,
    /// Whether it is stocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stocked: Option<bool>,
    /// Whether it is charged to patients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_chargeable: Option<bool>,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(Item, "item/1", "item");

/// One packaging level of an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    /// Unit of measure of the pack.
    pub uom: String,
    /// Base units in it.
    pub quantity: String,
    /// GTIN of the pack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
}

/// `supplier/1` and `location/1`: an organisation or place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    /// Identifiers.
    pub identifiers: Vec<Identifier>,
    /// Name.
    pub name: String,
    /// Address, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The organisation or place it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Party>,
    /// Provenance.
    pub provenance: Provenance,
}

/// `supplier/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Supplier(pub Organization);
entity!(Supplier, "supplier/1", "supplier");

/// `location/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Location(pub Organization);
entity!(Location, "location/1", "location");

/// `worker/1`: a member of staff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    /// Business key.
    pub worker_id: String,
    /// Name.
    pub name: String,
    /// active, inactive, leave or terminated.
    pub status: String,
    /// Job code.
    pub job_code: String,
    /// Home cost center.
    pub home_cost_center: String,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(Worker, "worker/1", "worker");

/// `time-entry/1`: hours worked by one worker on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeEntry {
    /// The worker.
    pub worker_id: String,
    /// The day.
    pub work_date: String,
    /// Hours, decimal.
    pub hours: String,
    /// Pay code.
    pub pay_code: String,
    /// Cost center charged.
    pub cost_center: String,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(TimeEntry, "time-entry/1", "time_entry");

/// `match-exception/1`: a three-way-match or SLA exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchException {
    /// Business key.
    pub exception_id: String,
    /// Exception code, e.g. `price_mismatch`.
    pub code: String,
    /// info, warning or critical.
    pub severity: String,
    /// The order concerned.
    pub po_number: String,
    /// The facility.
    pub facility: Party,
    /// UNSPSC segment or item category.
    pub category: String,
    /// Money at risk.
    pub exposure: Money,
    /// What was found.
    pub detail: String,
    /// When.
    pub detected_at: String,
    /// Ids of the records involved.
    pub refs: Vec<String>,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(MatchException, "match-exception/1", "match_exception");

/// `match-exception/2`: an exception with its lifecycle. The matcher
/// publishes one record per change, keyed by `exception_id`: when it opens,
/// when what is at risk changes, and when a later document (or a tolerance
/// change) resolves it. A consumer keeps, per id, the highest `sequence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchExceptionV2 {
    /// Business key: the same for every record of one exception.
    pub exception_id: String,
    /// `open` or `resolved`.
    pub status: String,
    /// Exception code, e.g. `price_mismatch`.
    pub code: String,
    /// info, warning or critical.
    pub severity: String,
    /// The order concerned.
    pub po_number: String,
    /// The order lines concerned (none for a whole-order exception).
    pub lines: Vec<String>,
    /// The facility.
    pub facility: Party,
    /// UNSPSC segment or item category.
    pub category: String,
    /// Money at risk.
    pub exposure: Money,
    /// What was found.
    pub detail: String,
    /// When it (last) opened.
    pub opened_at: String,
    /// When it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// What resolved it: `receipt`, `credit_memo`, `corrected_invoice`,
    /// `invoice`, `order_change`, `acknowledgement`, `ship_notice` or
    /// `tolerance_change`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// When this record was made.
    pub updated_at: String,
    /// Orders the records of one order: higher is newer.
    pub sequence: u64,
    /// Ids of the records involved.
    pub refs: Vec<String>,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(MatchExceptionV2, "match-exception/2", "match_exception");

/// `accrual/1`: what is received and not yet invoiced on one order line —
/// the liability finance accrues at month end. The latest record per
/// `accrual_id` (highest `sequence`) stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accrual {
    /// Business key: `<po_number>:<po_line>`.
    pub accrual_id: String,
    /// The order.
    pub po_number: String,
    /// Its line.
    pub po_line: String,
    /// The supplier.
    pub supplier: Party,
    /// The facility the goods went to.
    pub facility: Party,
    /// UNSPSC segment or `uncategorized`.
    pub category: String,
    /// Unit of measure of the quantities.
    pub uom: String,
    /// The order's unit price.
    pub unit_price: String,
    /// Quantity ordered.
    pub quantity_ordered: String,
    /// Quantity accepted on receipts.
    pub quantity_received: String,
    /// Quantity invoiced, net of credit memos.
    pub quantity_invoiced: String,
    /// Received and not invoiced (never below zero).
    pub quantity_accrued: String,
    /// `quantity_accrued` at the unit price.
    pub amount_accrued: Money,
    /// When it last changed.
    pub as_of: String,
    /// Orders the records of one order: higher is newer.
    pub sequence: u64,
    /// Provenance.
    pub provenance: Provenance,
}
entity!(Accrual, "accrual/1", "accrual");

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
