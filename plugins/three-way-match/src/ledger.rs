//! What the matcher knows of one purchase order, and what follows from it.
//! Pure: no host calls, so every rule is unit- and property-tested natively.
//!
//! The ledger holds the documents of one order, each under its business key
//! (a redelivery changes nothing) and, where two versions of one document
//! arrive, the later version by its `received_at` (so arrival order does not
//! pick the winner). Exceptions and accruals are never decided by the
//! document that happens to arrive: [`Ledger::evaluate`] derives them from
//! all the documents held and the time, and [`Ledger::settle`] compares that
//! with what was published before — opening, updating and resolving. So the
//! open exceptions and the accruals are a function of the set of documents,
//! whatever the order they came in.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr as _;

use plexus_sdk::canonical::{
    GoodsReceipt, Invoice, InvoiceLine, Party, PoAck, PurchaseOrder, ReceiptLine, ShipLine,
};
use plexus_sdk::clock;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::policy::{Policy, Scope};

/// Documents whose published outputs are remembered, so that a redelivered
/// document re-publishes them (its first attempt may have died before its
/// outputs were stored).
const REMEMBERED_DOCUMENTS: usize = 64;

/// Resolved exceptions kept per order.
const REMEMBERED_RESOLVED: usize = 256;
/// Records remembered per supplier invoice number (to tell duplicates).
const REMEMBERED_RECORDS: usize = 16;

/// When a version arrived and which record it was: the later wins.
pub type Rank = (String, String);

/// Everything known of one order.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Bumped on every change.
    pub seq: u64,
    /// The latest time it was looked at, Unix seconds: time never runs
    /// backwards for an order, whatever a replayed tick says.
    pub now: i64,
    /// The order itself, once it has arrived.
    pub order: Option<Order>,
    /// The supplier's acknowledgements, by record id.
    pub acks: BTreeMap<String, Acked>,
    /// Shipment id → what its ship notice says was shipped.
    pub shipments: BTreeMap<String, Shipped>,
    /// Receipt number → what it received against this order.
    pub receipts: BTreeMap<String, Receipt>,
    /// `<supplier>:<invoice number>` → what it bills against this order.
    pub invoices: BTreeMap<String, Billed>,
    /// Every exception published for this order, open or resolved, by id.
    pub exceptions: BTreeMap<String, Exception>,
    /// Order line → the accrual last published for it.
    pub accruals: BTreeMap<String, Accrual>,
    /// Document key → the outputs it published.
    pub published: BTreeMap<String, Published>,
}

/// The ordered side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Which version of the order this is.
    pub rank: Rank,
    /// The supplier.
    pub supplier: Party,
    /// Where the goods go: the facility exceptions are tied to.
    pub facility: Party,
    /// The order's currency.
    pub currency: String,
    /// When the supplier's acknowledgement is due, Unix seconds.
    pub ack_due_at: Option<i64>,
    /// The earliest need-by date of the order or its lines.
    pub need_by: Option<String>,
    /// Line number → line.
    pub lines: BTreeMap<String, OrderLine>,
}

impl Order {
    /// The supplier's first identifier, for its tolerances.
    fn supplier_id(&self) -> &str {
        self.supplier.identifiers.first().map_or("", |i| &i.value)
    }

    /// The tolerances for one of this order's lines.
    fn tolerances(&self, policy: &Policy, category: &str) -> Tolerances {
        let facility = self
            .facility
            .identifiers
            .first()
            .map_or("", |i| i.value.as_str());
        policy.resolve(&Scope {
            supplier: self.supplier_id(),
            category,
            facility,
        })
    }
}

/// One ordered line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Quantity ordered.
    pub quantity: Decimal,
    /// Its unit.
    pub uom: String,
    /// Agreed unit price.
    pub unit_price: Decimal,
    /// UNSPSC segment (`unspsc:42`) or `uncategorized`.
    pub category: String,
}

/// One acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acked {
    /// Its date, then when it arrived: the latest acknowledgement counts.
    pub rank: (String, Rank),
    /// Its lines.
    pub lines: Vec<AckedLine>,
}

/// One acknowledged line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckedLine {
    /// The order line.
    pub line: String,
    /// X12 668 status.
    pub status: String,
    /// Quantity acknowledged.
    pub quantity: Decimal,
    /// Its unit.
    pub uom: String,
    /// Price acknowledged, when given.
    pub unit_price: Option<Decimal>,
}

/// One ship notice's lines for this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shipped {
    /// Which version.
    pub rank: Rank,
    /// Order line → quantity shipped.
    pub lines: BTreeMap<String, Decimal>,
}

/// One receipt's lines for this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Which version.
    pub rank: Rank,
    /// Where the goods arrived.
    pub location: Party,
    /// Its lines.
    pub lines: Vec<Received>,
}

/// One received line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Received {
    /// The order line.
    pub line: String,
    /// Quantity received.
    pub received: Decimal,
    /// Quantity accepted.
    pub accepted: Decimal,
    /// Its unit.
    pub uom: String,
}

/// One invoice (or credit memo) of a supplier, as it bills this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Billed {
    /// The version that counts.
    pub rank: Rank,
    /// Who is billed.
    pub bill_to: Option<Party>,
    /// The invoice's currency.
    pub currency: String,
    /// The invoice's total (negative for a credit memo).
    pub total: Decimal,
    /// When the counting version arrived, Unix seconds.
    pub arrived: i64,
    /// Its lines on this order.
    pub lines: Vec<BilledLine>,
    /// Every record that carried this supplier's invoice number → a digest
    /// of its content: two records with one digest are a duplicate invoice.
    pub records: BTreeMap<String, String>,
}

/// One invoiced line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BilledLine {
    /// The invoice's own line number.
    pub number: String,
    /// The order line it bills.
    pub line: String,
    /// Quantity billed (negative when credited).
    pub quantity: Decimal,
    /// Its unit.
    pub uom: String,
    /// The line's amount (negative when credited).
    pub amount: Decimal,
}

/// An exception as last published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exception {
    /// What was found.
    pub finding: Finding,
    /// `open` or `resolved`.
    pub status: Status,
    /// When it (last) opened.
    pub opened_at: String,
    /// When it was resolved, if it is.
    pub resolved_at: Option<String>,
    /// What resolved it, if it is.
    pub resolution: Option<String>,
    /// When it last changed.
    pub updated_at: String,
    /// The ledger's `seq` when it last changed: a consumer keeps the highest.
    pub sequence: u64,
}

/// Whether an exception stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Someone has to act.
    Open,
    /// A later document (or a tolerance change) cured it.
    Resolved,
}

impl Status {
    /// As published.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Resolved => "resolved",
        }
    }
}

/// What is accrued on one order line: received, not yet invoiced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accrual {
    /// Quantity ordered.
    pub ordered: Decimal,
    /// Quantity accepted on receipts.
    pub received: Decimal,
    /// Quantity invoiced, net of credit memos.
    pub invoiced: Decimal,
    /// Received and not invoiced: never below zero.
    pub accrued: Decimal,
    /// `accrued` at the order's unit price.
    pub amount: Decimal,
    /// When it last changed.
    pub updated_at: String,
    /// The ledger's `seq` when it last changed.
    pub sequence: u64,
}

/// The outputs one document published.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The ledger's `seq` when the document was (last) applied.
    pub seq: u64,
    /// What it published.
    pub outputs: BTreeSet<Output>,
}

/// A record the matcher publishes for an order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Output {
    /// The exception of this id, as it stands.
    Exception(String),
    /// The accrual of this order line, as it stands.
    Accrual(String),
}

/// How far a document may stray before it is an exception.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerances {
    /// Quantity, percent of what was received (or ordered).
    pub quantity_pct: Decimal,
    /// Unit price, percent of the order's price.
    pub price_pct: Decimal,
    /// Unit price difference times quantity above which a line is an
    /// exception whatever the percentage.
    pub price_cap: Option<Decimal>,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            quantity_pct: Decimal::ZERO,
            price_pct: Decimal::new(2, 0),
            price_cap: None,
        }
    }
}

/// One exception found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Exception code (`price_mismatch`, ...).
    pub code: String,
    /// info, warning or critical.
    pub severity: String,
    /// The order lines concerned.
    pub lines: Vec<String>,
    /// UNSPSC segment or `uncategorized`.
    pub category: String,
    /// The facility it is tied to.
    pub facility: Party,
    /// Money at risk.
    pub exposure: Decimal,
    /// Its currency.
    pub currency: String,
    /// What was found, for a person.
    pub detail: String,
    /// The documents involved (`invoice:<supplier>:<number>`, ...).
    pub refs: Vec<String>,
}

/// What the documents held, at a time, come to.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Evaluation {
    /// Exception id → what stands.
    pub findings: BTreeMap<String, Finding>,
    /// Order line → what is accrued on it.
    pub accruals: BTreeMap<String, (Decimal, Decimal, Decimal, Decimal)>,
    /// The earliest time (Unix seconds) at which the time alone changes the
    /// findings: an invoice's grace ends, an acknowledgement or a delivery
    /// falls due.
    pub wake: Option<i64>,
}

impl Evaluation {
    fn raise(&mut self, po: &str, key: &str, finding: Finding) {
        let id = format!("{}:{po}:{key}", finding.code);
        self.findings.insert(id, finding);
    }

    fn wake_at(&mut self, at: i64) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }
}

/// The largest quantity, price or amount a document may carry: products and
/// sums of such stay far inside the decimal type's range, so no rule can
/// overflow (and trap) on a crafted document.
const LARGEST: Decimal = Decimal::from_parts(0xD4A5_1000, 0xE8, 0, false, 0); // 1e12

fn decimal(text: &str, what: &str) -> Result<Decimal, String> {
    let value = Decimal::from_str(text.trim())
        .map_err(|e| format!("{what} {text:?} is not a decimal: {e}"))?;
    if value.abs() > LARGEST || value.scale() > 8 {
        return Err(format!(
            "{what} {text:?} is out of range (at most 1000000000000, 8 decimal places)"
        ));
    }
    Ok(value)
}

fn within(actual: Decimal, allowed: Decimal, pct: Decimal) -> bool {
    actual <= allowed + allowed.abs() * pct / Decimal::ONE_HUNDRED
}

/// `unspsc:<segment>` from an item's UNSPSC code, else `uncategorized`.
fn category(identifiers: &[plexus_sdk::canonical::Identifier]) -> String {
    identifiers
        .iter()
        .filter(|i| i.system == "unspsc")
        .find_map(|i| i.value.get(..2))
        .map_or_else(
            || "uncategorized".to_owned(),
            |segment| format!("unspsc:{segment}"),
        )
}

/// FNV-1a, 64 bits: a digest that stays the same across builds.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn money(amount: Decimal) -> String {
    format!("{:.2}", amount.round_dp(2))
}

/// Put `value` under `key` unless a later version is there already.
fn keep_latest<T>(map: &mut BTreeMap<String, T>, key: &str, value: T, rank: impl Fn(&T) -> &Rank) {
    match map.get(key) {
        Some(held) if rank(held) > rank(&value) => {}
        _ => {
            map.insert(key.to_owned(), value);
        }
    }
}

fn rank_of(provenance: &plexus_sdk::canonical::Provenance) -> Rank {
    (
        provenance.received_at.clone(),
        provenance.source_record_id.clone(),
    )
}

impl Ledger {
    /// Hold the order (the later of two versions wins).
    pub fn order(&mut self, po: &PurchaseOrder) -> Result<(), String> {
        let mut lines = BTreeMap::new();
        for line in &po.lines {
            let what = |field| format!("PO {} line {} {field}", po.po_number, line.line_number);
            lines.insert(
                line.line_number.clone(),
                OrderLine {
                    quantity: decimal(&line.quantity, &what("quantity"))?,
                    uom: line.uom.clone(),
                    unit_price: decimal(&line.unit_price, &what("unit_price"))?,
                    category: category(&line.item.identifiers),
                },
            );
        }
        let ack_due_at = match &po.ack_due_at {
            Some(text) => Some(clock::unix_seconds(text).ok_or_else(|| {
                format!(
                    "PO {} ack_due_at {text:?} is not an RFC 3339 time",
                    po.po_number
                )
            })?),
            None => None,
        };
        let order = Order {
            rank: rank_of(&po.provenance),
            supplier: po.supplier.clone(),
            facility: po.ship_to.clone(),
            currency: po.currency.clone(),
            ack_due_at,
            need_by: po
                .lines
                .iter()
                .filter_map(|l| l.need_by.clone())
                .chain(po.need_by.clone())
                .min(),
            lines,
        };
        if self
            .order
            .as_ref()
            .is_none_or(|held| held.rank <= order.rank)
        {
            self.order = Some(order);
        }
        Ok(())
    }

    /// Hold a supplier's acknowledgement.
    pub fn ack(&mut self, ack: &PoAck) -> Result<(), String> {
        let mut lines = Vec::new();
        for line in &ack.lines {
            let what = |field| {
                format!(
                    "acknowledgement of {} line {} {field}",
                    ack.po_number, line.line_number
                )
            };
            lines.push(AckedLine {
                line: line.line_number.clone(),
                status: line.status.clone(),
                quantity: decimal(&line.quantity, &what("quantity"))?,
                uom: line.uom.clone(),
                unit_price: match &line.unit_price {
                    Some(price) => Some(decimal(price, &what("unit_price"))?),
                    None => None,
                },
            });
        }
        self.acks.insert(
            ack.provenance.source_record_id.clone(),
            Acked {
                rank: (ack.ack_date.clone(), rank_of(&ack.provenance)),
                lines,
            },
        );
        Ok(())
    }

    /// Hold what a ship notice says was shipped against this order.
    pub fn shipment(
        &mut self,
        asn: &plexus_sdk::canonical::ShipNotice,
        lines: &[&ShipLine],
    ) -> Result<(), String> {
        let mut shipped: BTreeMap<String, Decimal> = BTreeMap::new();
        for (position, line) in lines.iter().enumerate() {
            let number = line
                .line_number
                .clone()
                .unwrap_or_else(|| (position + 1).to_string());
            let quantity = decimal(
                &line.quantity_shipped,
                &format!("shipment {} quantity_shipped", asn.shipment_id),
            )?;
            *shipped.entry(number).or_default() += quantity;
        }
        let value = Shipped {
            rank: rank_of(&asn.provenance),
            lines: shipped,
        };
        keep_latest(&mut self.shipments, &asn.shipment_id, value, |s| &s.rank);
        Ok(())
    }

    /// Hold a receipt's lines against this order.
    pub fn receipt(
        &mut self,
        receipt: &GoodsReceipt,
        lines: &[&ReceiptLine],
    ) -> Result<(), String> {
        let mut received = Vec::new();
        for line in lines {
            let what = |field| {
                format!(
                    "receipt {} line {} {field}",
                    receipt.receipt_number, line.po_line
                )
            };
            received.push(Received {
                line: line.po_line.clone(),
                received: decimal(&line.quantity_received, &what("quantity_received"))?,
                accepted: decimal(&line.quantity_accepted, &what("quantity_accepted"))?,
                uom: line.uom.clone(),
            });
        }
        let value = Receipt {
            rank: rank_of(&receipt.provenance),
            location: receipt.location.clone(),
            lines: received,
        };
        keep_latest(&mut self.receipts, &receipt.receipt_number, value, |r| {
            &r.rank
        });
        Ok(())
    }

    /// Hold an invoice's (or credit memo's) lines on this order, under
    /// `key` (`<supplier>:<number>`). Returns whether it corrects an earlier
    /// version with other content.
    pub fn invoice(
        &mut self,
        key: &str,
        invoice: &Invoice,
        lines: &[&InvoiceLine],
    ) -> Result<bool, String> {
        let mut billed = Vec::new();
        for line in lines {
            let what = |field| {
                format!(
                    "invoice {} line {} {field}",
                    invoice.invoice_number, line.line_number
                )
            };
            billed.push(BilledLine {
                number: line.line_number.clone(),
                line: line
                    .po_line
                    .clone()
                    .unwrap_or_else(|| line.line_number.clone()),
                quantity: decimal(&line.quantity, &what("quantity"))?,
                uom: line.uom.clone(),
                amount: decimal(&line.amount, &what("amount"))?,
            });
        }
        let total = decimal(
            &invoice.total.amount,
            &format!("invoice {} total", invoice.invoice_number),
        )?;
        let arrived = clock::unix_seconds(&invoice.provenance.received_at).ok_or_else(|| {
            format!(
                "invoice {} received_at {:?} is not an RFC 3339 time",
                invoice.invoice_number, invoice.provenance.received_at
            )
        })?;
        let digest = {
            let content = serde_json::to_vec(&(&invoice.lines, &invoice.total, &invoice.po_number))
                .map_err(|e| e.to_string())?;
            format!("{:016x}", fnv(&content))
        };
        let rank = rank_of(&invoice.provenance);
        let record = invoice.provenance.source_record_id.clone();
        let fresh = Billed {
            rank: rank.clone(),
            bill_to: invoice.bill_to.clone(),
            currency: invoice.currency.clone(),
            total,
            arrived,
            lines: billed,
            records: BTreeMap::from([(record.clone(), digest.clone())]),
        };
        let Some(held) = self.invoices.get_mut(key) else {
            self.invoices.insert(key.to_owned(), fresh);
            return Ok(false);
        };
        let correction = !held.records.values().any(|d| *d == digest);
        if held.records.len() < REMEMBERED_RECORDS || held.records.contains_key(&record) {
            held.records.insert(record, digest);
        }
        if held.rank < rank {
            let records = std::mem::take(&mut held.records);
            *held = Billed { records, ..fresh };
        }
        Ok(correction)
    }

    /// What the documents held come to at `now` (Unix seconds).
    pub fn evaluate(&self, po: &str, policy: &Policy, now: i64) -> Evaluation {
        let mut out = Evaluation::default();
        let fallback_currency = policy.currency.clone().unwrap_or_else(|| "USD".into());
        self.duplicates(po, &mut out, &fallback_currency);
        let Some(order) = &self.order else {
            for (number, receipt) in &self.receipts {
                let finding = Finding {
                    code: "unknown_po".into(),
                    severity: "warning".into(),
                    lines: Vec::new(),
                    category: "uncategorized".into(),
                    facility: receipt.location.clone(),
                    exposure: Decimal::ZERO,
                    currency: fallback_currency.clone(),
                    detail: format!("receipt {number} is against order {po}, not seen (yet)"),
                    refs: vec![format!("goods-receipt:{number}")],
                };
                out.raise(po, &format!("goods-receipt:{number}"), finding);
            }
            for (key, invoice) in &self.invoices {
                let finding = Finding {
                    code: "unknown_po".into(),
                    severity: "critical".into(),
                    lines: Vec::new(),
                    category: "uncategorized".into(),
                    facility: invoice.bill_to.clone().unwrap_or_default(),
                    exposure: invoice.lines.iter().map(|l| l.amount).sum(),
                    currency: invoice.currency.clone(),
                    detail: format!("invoice {key} bills order {po}, not seen (yet)"),
                    refs: vec![format!("invoice:{key}")],
                };
                out.raise(po, &format!("invoice:{key}"), finding);
            }
            return out;
        };
        let facts = self.facts(order);
        let on_order = |code: &str,
                        severity: &str,
                        lines: Vec<String>,
                        category: &str,
                        exposure,
                        detail,
                        refs| Finding {
            code: code.into(),
            severity: severity.into(),
            lines,
            category: category.into(),
            facility: order.facility.clone(),
            exposure,
            currency: order.currency.clone(),
            detail,
            refs,
        };
        for (line, refs) in &facts.unknown_lines {
            let (severity, exposure) = match facts.unknown_billed.get(line) {
                Some(amount) => ("critical", *amount),
                None => ("warning", Decimal::ZERO),
            };
            let finding = on_order(
                "unknown_po",
                severity,
                vec![line.clone()],
                "uncategorized",
                exposure,
                format!("line {line} is not on order {po}"),
                refs.iter().cloned().collect(),
            );
            out.raise(po, &format!("line:{line}"), finding);
        }
        for (number, ordered) in &order.lines {
            let Some(f) = facts.lines.get(number) else {
                continue;
            };
            let tolerances = order.tolerances(policy, &ordered.category);
            let refs = |kinds: &[&str]| -> Vec<String> {
                f.refs
                    .iter()
                    .filter(|r| kinds.iter().any(|k| r.starts_with(k)))
                    .cloned()
                    .chain(std::iter::once(format!("purchase-order:{po}")))
                    .collect()
            };
            let found = |code: &str,
                         severity: &str,
                         exposure: Decimal,
                         detail: String,
                         refs: Vec<String>| {
                on_order(
                    code,
                    severity,
                    vec![number.clone()],
                    &ordered.category,
                    exposure,
                    detail,
                    refs,
                )
            };
            if !f.off_uom.is_empty() {
                out.raise(
                    po,
                    number,
                    found(
                        "uom_mismatch",
                        "warning",
                        f.off_uom_exposure,
                        format!(
                            "line {number}: {} in {} but ordered in {}",
                            f.off_uom.iter().cloned().collect::<Vec<_>>().join(" and "),
                            f.off_uoms.iter().cloned().collect::<Vec<_>>().join(", "),
                            ordered.uom
                        ),
                        refs(&["goods-receipt:", "invoice:"]),
                    ),
                );
            }
            if !within(f.received, ordered.quantity, tolerances.quantity_pct) {
                out.raise(
                    po,
                    number,
                    found(
                        "over_receipt",
                        "warning",
                        (f.received - ordered.quantity) * ordered.unit_price,
                        format!(
                            "line {number}: {} {} received against {} ordered",
                            f.received, ordered.uom, ordered.quantity
                        ),
                        refs(&["goods-receipt:"]),
                    ),
                );
            }
            if let Some(shipped) = f.shipped
                && f.receipted
                && f.received < shipped
            {
                out.raise(
                    po,
                    number,
                    found(
                        "short_shipment",
                        "warning",
                        (shipped - f.received) * ordered.unit_price,
                        format!(
                            "line {number}: {shipped} {} shipped but {} received",
                            ordered.uom, f.received
                        ),
                        refs(&["ship-notice:", "goods-receipt:"]),
                    ),
                );
            }
            if f.invoiced {
                let expected = f.billed_quantity * ordered.unit_price;
                let over = f.billed_amount - expected;
                let beyond_pct =
                    over.abs() > expected.abs() * tolerances.price_pct / Decimal::ONE_HUNDRED;
                let beyond_cap = tolerances.price_cap.is_some_and(|cap| over.abs() > cap);
                if beyond_pct || beyond_cap {
                    out.raise(
                        po,
                        number,
                        found(
                            "price_mismatch",
                            "warning",
                            over.max(Decimal::ZERO),
                            format!(
                                "line {number}: billed {} for {} {}, which is {} at the order's {}",
                                money(f.billed_amount),
                                f.billed_quantity,
                                ordered.uom,
                                money(expected),
                                ordered.unit_price
                            ),
                            refs(&["invoice:"]),
                        ),
                    );
                }
                if !within(f.billed_quantity, f.accepted, tolerances.quantity_pct) {
                    let held_until = f.billed_since + policy.receipt_grace;
                    if now < held_until {
                        // awaiting_receipt: not an exception until the grace ends.
                        out.wake_at(held_until);
                    } else if f.accepted.is_zero() {
                        let finding = on_order(
                            "unreceived_order",
                            "critical",
                            vec![number.clone()],
                            &ordered.category,
                            f.billed_amount,
                            format!(
                                "line {number}: {} {} invoiced, nothing received",
                                f.billed_quantity, ordered.uom
                            ),
                            refs(&["invoice:"]),
                        );
                        out.raise(po, number, finding);
                    } else {
                        let finding = on_order(
                            "quantity_mismatch",
                            "critical",
                            vec![number.clone()],
                            &ordered.category,
                            (f.billed_quantity - f.accepted) * ordered.unit_price,
                            format!(
                                "line {number}: {} {} invoiced, {} accepted",
                                f.billed_quantity, ordered.uom, f.accepted
                            ),
                            refs(&["invoice:", "goods-receipt:"]),
                        );
                        out.raise(po, number, finding);
                    }
                }
            }
            if f.receipted || f.invoiced {
                let accrued = (f.accepted - f.billed_quantity).max(Decimal::ZERO);
                out.accruals.insert(
                    number.clone(),
                    (
                        f.accepted,
                        f.billed_quantity,
                        accrued,
                        accrued * ordered.unit_price,
                    ),
                );
            }
        }
        self.ack_changes(po, order, &mut out);
        self.watches(po, order, now, &mut out);
        out
    }

    /// Per order line, what the receipts, ship notices and invoices held say.
    fn facts(&self, order: &Order) -> Facts {
        let mut facts = Facts::default();
        for (number, receipt) in &self.receipts {
            let doc = format!("goods-receipt:{number}");
            for r in &receipt.lines {
                let Some(ordered) = order.lines.get(&r.line) else {
                    facts
                        .unknown_lines
                        .entry(r.line.clone())
                        .or_default()
                        .insert(doc.clone());
                    continue;
                };
                let f = facts.lines.entry(r.line.clone()).or_default();
                f.refs.insert(doc.clone());
                f.receipted = true;
                if r.uom == ordered.uom {
                    f.received += r.received;
                    f.accepted += r.accepted;
                } else {
                    f.off_uom.insert("received".into());
                    f.off_uoms.insert(r.uom.clone());
                    f.off_uom_exposure += r.accepted * ordered.unit_price;
                }
            }
        }
        for (id, shipped) in &self.shipments {
            for (line, quantity) in &shipped.lines {
                if order.lines.contains_key(line) {
                    let f = facts.lines.entry(line.clone()).or_default();
                    f.refs.insert(format!("ship-notice:{id}"));
                    *f.shipped.get_or_insert_default() += *quantity;
                }
            }
        }
        for (key, invoice) in &self.invoices {
            let doc = format!("invoice:{key}");
            for b in &invoice.lines {
                let Some(ordered) = order.lines.get(&b.line) else {
                    facts
                        .unknown_lines
                        .entry(b.line.clone())
                        .or_default()
                        .insert(doc.clone());
                    *facts.unknown_billed.entry(b.line.clone()).or_default() += b.amount;
                    continue;
                };
                let f = facts.lines.entry(b.line.clone()).or_default();
                f.refs.insert(doc.clone());
                if b.uom == ordered.uom {
                    f.invoiced = true;
                    f.billed_quantity += b.quantity;
                    f.billed_amount += b.amount;
                    if b.quantity.is_sign_positive() && !b.quantity.is_zero() {
                        f.billed_since = f.billed_since.max(invoice.arrived);
                    }
                } else {
                    f.off_uom.insert("invoiced".into());
                    f.off_uoms.insert(b.uom.clone());
                    f.off_uom_exposure += b.amount;
                }
            }
        }
        facts
    }

    /// The same supplier invoice carried twice by different records.
    fn duplicates(&self, po: &str, out: &mut Evaluation, fallback_currency: &str) {
        for (key, invoice) in &self.invoices {
            let mut digests = BTreeMap::<&str, Vec<&str>>::new();
            for (record, digest) in &invoice.records {
                digests.entry(digest).or_default().push(record);
            }
            let Some(records) = digests.values().find(|r| r.len() > 1) else {
                continue;
            };
            let (facility, currency) = match &self.order {
                Some(order) => (order.facility.clone(), order.currency.clone()),
                None => (
                    invoice.bill_to.clone().unwrap_or_default(),
                    if invoice.currency.is_empty() {
                        fallback_currency.to_owned()
                    } else {
                        invoice.currency.clone()
                    },
                ),
            };
            let finding = Finding {
                code: "duplicate_invoice".into(),
                severity: "critical".into(),
                lines: Vec::new(),
                category: "uncategorized".into(),
                facility,
                exposure: invoice.total,
                currency,
                detail: format!(
                    "invoice {key} arrived as {} records: {}",
                    records.len(),
                    records.join(", ")
                ),
                refs: vec![format!("invoice:{key}"), format!("purchase-order:{po}")],
            };
            out.raise(po, &format!("invoice:{key}"), finding);
        }
    }

    /// Changes in the latest acknowledgement that the order does not reflect.
    fn ack_changes(&self, po: &str, order: &Order, out: &mut Evaluation) {
        const CHANGES: [&str; 6] = ["IQ", "IP", "IB", "IR", "IS", "DR"];
        let Some((id, ack)) = self.acks.iter().max_by(|a, b| a.1.rank.cmp(&b.1.rank)) else {
            return;
        };
        for line in ack
            .lines
            .iter()
            .filter(|l| CHANGES.contains(&l.status.as_str()))
        {
            let Some(ordered) = order.lines.get(&line.line) else {
                continue;
            };
            let price = line.unit_price.unwrap_or(ordered.unit_price);
            let reflected = line.quantity == ordered.quantity && price == ordered.unit_price;
            if reflected && !matches!(line.status.as_str(), "IR" | "IB" | "DR") {
                continue;
            }
            let accepted = if line.status == "IR" {
                Decimal::ZERO
            } else {
                line.quantity
            };
            let finding = Finding {
                code: "ack_changed".into(),
                severity: "warning".into(),
                lines: vec![line.line.clone()],
                category: ordered.category.clone(),
                facility: order.facility.clone(),
                exposure: (ordered.quantity * ordered.unit_price - accepted * price).abs(),
                currency: order.currency.clone(),
                detail: format!(
                    "line {} acknowledged {} ({} {} at {}) against {} at {} ordered",
                    line.line,
                    line.status,
                    line.quantity,
                    line.uom,
                    price,
                    ordered.quantity,
                    ordered.unit_price
                ),
                refs: vec![format!("po-ack:{id}"), format!("purchase-order:{po}")],
            };
            out.raise(po, &line.line, finding);
        }
    }

    /// The SLA watches: no acknowledgement by its due time, nothing received
    /// by the need-by date.
    fn watches(&self, po: &str, order: &Order, now: i64, out: &mut Evaluation) {
        let value = |l: &OrderLine| l.quantity * l.unit_price;
        let largest = order.lines.values().max_by_key(|l| value(l));
        let overdue = |code: &str, detail: String| Finding {
            code: code.into(),
            severity: "warning".into(),
            lines: Vec::new(),
            category: largest.map_or_else(|| "uncategorized".to_owned(), |l| l.category.clone()),
            facility: order.facility.clone(),
            exposure: order.lines.values().map(value).sum(),
            currency: order.currency.clone(),
            detail,
            refs: vec![format!("purchase-order:{po}")],
        };
        if let Some(due) = order.ack_due_at
            && self.acks.is_empty()
        {
            if now > due {
                let detail = format!("no acknowledgement of {po}, due {}", clock::rfc3339(due));
                out.raise(po, "-", overdue("ack_overdue", detail));
            } else {
                out.wake_at(due + 1);
            }
        }
        let received = self
            .receipts
            .values()
            .any(|r| r.lines.iter().any(|l| order.lines.contains_key(&l.line)));
        if let Some(need_by) = &order.need_by
            && let Some(day) = clock::unix_seconds(need_by.get(..10).unwrap_or(need_by))
            && !received
        {
            let end = day + 86_400;
            if now >= end {
                let detail = format!("nothing received on {po}, needed by {need_by}");
                out.raise(po, "-", overdue("receipt_overdue", detail));
            } else {
                out.wake_at(end);
            }
        }
    }

    /// Bring the published exceptions and accruals in line with `now`'s
    /// evaluation; returns what changed, stamped `at` (RFC 3339). An
    /// exception that no longer stands is resolved by `cause`.
    pub fn settle(&mut self, evaluation: &Evaluation, at: &str, cause: &str) -> BTreeSet<Output> {
        let mut changed = BTreeSet::new();
        self.seq += 1;
        let seq = self.seq;
        for (id, finding) in &evaluation.findings {
            match self.exceptions.get_mut(id) {
                Some(e) if e.status == Status::Open && e.finding == *finding => {}
                Some(e) if e.status == Status::Open => {
                    e.finding = finding.clone();
                    e.updated_at = at.to_owned();
                    e.sequence = seq;
                    changed.insert(Output::Exception(id.clone()));
                }
                _ => {
                    self.exceptions.insert(
                        id.clone(),
                        Exception {
                            finding: finding.clone(),
                            status: Status::Open,
                            opened_at: at.to_owned(),
                            resolved_at: None,
                            resolution: None,
                            updated_at: at.to_owned(),
                            sequence: seq,
                        },
                    );
                    changed.insert(Output::Exception(id.clone()));
                }
            }
        }
        for (id, e) in &mut self.exceptions {
            if e.status == Status::Open && !evaluation.findings.contains_key(id) {
                e.status = Status::Resolved;
                e.resolved_at = Some(at.to_owned());
                e.resolution = Some(cause.to_owned());
                e.updated_at = at.to_owned();
                e.sequence = seq;
                changed.insert(Output::Exception(id.clone()));
            }
        }
        for (line, &(received, invoiced, accrued, amount)) in &evaluation.accruals {
            let ordered = self
                .order
                .as_ref()
                .and_then(|o| o.lines.get(line))
                .map_or(Decimal::ZERO, |l| l.quantity);
            let same = self.accruals.get(line).is_some_and(|a| {
                (a.ordered, a.received, a.invoiced, a.accrued, a.amount)
                    == (ordered, received, invoiced, accrued, amount)
            });
            if !same {
                self.accruals.insert(
                    line.clone(),
                    Accrual {
                        ordered,
                        received,
                        invoiced,
                        accrued,
                        amount,
                        updated_at: at.to_owned(),
                        sequence: seq,
                    },
                );
                changed.insert(Output::Accrual(line.clone()));
            }
        }
        // Resolved exceptions are kept (a recurrence reopens the same id)
        // only so many: the order's kv entry must stay small.
        let resolved = self
            .exceptions
            .values()
            .filter(|e| e.status == Status::Resolved)
            .count();
        if resolved > REMEMBERED_RESOLVED {
            let mut oldest: Vec<(u64, String)> = self
                .exceptions
                .iter()
                .filter(|(_, e)| e.status == Status::Resolved)
                .map(|(id, e)| (e.sequence, id.clone()))
                .collect();
            oldest.sort();
            for (_, id) in oldest.into_iter().take(resolved - REMEMBERED_RESOLVED) {
                self.exceptions.remove(&id);
            }
        }
        changed
    }

    /// Remember what document `doc` published (with what it published when
    /// it came before), and return it all: a redelivered document publishes
    /// again what its first delivery may not have.
    pub fn remember(&mut self, doc: &str, changed: BTreeSet<Output>) -> BTreeSet<Output> {
        let mut outputs = changed;
        if let Some(earlier) = self.published.remove(doc) {
            outputs.extend(earlier.outputs);
        }
        if !outputs.is_empty() {
            self.published.insert(
                doc.to_owned(),
                Published {
                    seq: self.seq,
                    outputs: outputs.clone(),
                },
            );
        }
        while self.published.len() > REMEMBERED_DOCUMENTS {
            let oldest = self
                .published
                .iter()
                .min_by_key(|(_, p)| p.seq)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.published.remove(&oldest);
            }
        }
        outputs
    }

    /// The open exceptions' ids.
    pub fn open(&self) -> impl Iterator<Item = &String> {
        self.exceptions
            .iter()
            .filter(|(_, e)| e.status == Status::Open)
            .map(|(id, _)| id)
    }
}

/// What the documents held say of the order's lines.
#[derive(Default)]
struct Facts {
    lines: BTreeMap<String, LineFacts>,
    /// Lines the order does not have → the documents naming them.
    unknown_lines: BTreeMap<String, BTreeSet<String>>,
    /// What is billed on lines the order does not have.
    unknown_billed: BTreeMap<String, Decimal>,
}

#[derive(Default)]
struct LineFacts {
    receipted: bool,
    received: Decimal,
    accepted: Decimal,
    shipped: Option<Decimal>,
    invoiced: bool,
    billed_quantity: Decimal,
    billed_amount: Decimal,
    /// When the latest invoice billing this line arrived, Unix seconds.
    billed_since: i64,
    /// `received` / `invoiced` when a document is in another unit.
    off_uom: BTreeSet<String>,
    off_uoms: BTreeSet<String>,
    off_uom_exposure: Decimal,
    refs: BTreeSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::{PO, deliver, deliver_as, invoice, order, receipt, tick};

    const ARRIVED: &str = "2026-11-06T10:00:00Z";
    const HOUR: i64 = 3600;

    fn arrived() -> i64 {
        clock::unix_seconds(ARRIVED).unwrap()
    }

    fn grace(text: &str) -> Policy {
        Policy::from_config(&[("receipt_grace".to_owned(), text.to_owned())]).unwrap()
    }

    fn exception<'a>(ledger: &'a Ledger, id: &str) -> &'a Exception {
        ledger
            .exceptions
            .get(id)
            .unwrap_or_else(|| panic!("no {id} in {:?}", ledger.exceptions.keys()))
    }

    #[test]
    fn an_invoice_before_its_receipt_is_held_through_the_grace() {
        let policy = grace("48h");
        let billed = invoice("INV-1", "INV-1", ARRIVED, &[("1", "10", "12.50")]);
        let mut ledger = Ledger::default();
        deliver(
            &mut ledger,
            &order("PO-7001", "2026-11-02T09:00:00Z", &[]),
            &policy,
            arrived(),
        );
        deliver(&mut ledger, &billed, &policy, arrived() + HOUR);
        assert_eq!(
            ledger.open().count(),
            0,
            "awaiting its receipt: not an exception"
        );
        let evaluation = ledger.evaluate(PO, &policy, ledger.now);
        assert_eq!(
            evaluation.wake,
            Some(arrived() + 48 * HOUR),
            "a tick must look again when the grace ends"
        );
        assert!(tick(&mut ledger, &policy, arrived() + 47 * HOUR).is_empty());
        deliver(
            &mut ledger,
            &receipt("GR-1", &[("1", "10")]),
            &policy,
            arrived() + 47 * HOUR,
        );
        assert!(ledger.exceptions.is_empty(), "{:?}", ledger.exceptions);
        assert!(tick(&mut ledger, &policy, arrived() + 49 * HOUR).is_empty());
        assert!(ledger.exceptions.is_empty());
    }

    #[test]
    fn past_the_grace_it_opens_and_the_receipt_resolves_it() {
        let policy = grace("48h");
        let billed = invoice("INV-1", "INV-1", ARRIVED, &[("1", "10", "12.50")]);
        let mut ledger = Ledger::default();
        deliver(
            &mut ledger,
            &order("PO-7001", "2026-11-02T09:00:00Z", &[]),
            &policy,
            arrived(),
        );
        deliver(&mut ledger, &billed, &policy, arrived() + HOUR);
        let opened = tick(&mut ledger, &policy, arrived() + 48 * HOUR);
        let id = "unreceived_order:PO-7001:1";
        assert_eq!(opened, BTreeSet::from([Output::Exception(id.into())]));
        let e = exception(&ledger, id);
        assert_eq!(
            (e.status, e.finding.exposure),
            (Status::Open, Decimal::new(125, 0))
        );
        assert_eq!(e.opened_at, "2026-11-08T10:00:00Z");
        assert_eq!(e.finding.lines, ["1"]);

        let cured = deliver_as(
            &mut ledger,
            &receipt("GR-1", &[("1", "10")]),
            &policy,
            arrived() + 50 * HOUR,
            "receipt",
        );
        assert!(cured.contains(&Output::Exception(id.into())), "{cured:?}");
        let e = exception(&ledger, id);
        assert_eq!(e.status, Status::Resolved);
        assert_eq!(e.resolution.as_deref(), Some("receipt"));
        assert_eq!(e.resolved_at.as_deref(), Some("2026-11-08T12:00:00Z"));
        assert_eq!(
            e.opened_at, "2026-11-08T10:00:00Z",
            "when it opened is kept"
        );
        assert!(e.sequence > 0);
    }

    #[test]
    fn without_a_grace_an_invoice_ahead_of_its_receipt_opens_at_once() {
        let policy = Policy::default();
        let mut ledger = Ledger::default();
        deliver(
            &mut ledger,
            &order("PO-7001", "2026-11-02T09:00:00Z", &[]),
            &policy,
            arrived(),
        );
        deliver(
            &mut ledger,
            &invoice("INV-1", "INV-1", ARRIVED, &[("1", "10", "12.50")]),
            &policy,
            arrived(),
        );
        assert_eq!(
            ledger.open().collect::<Vec<_>>(),
            ["unreceived_order:PO-7001:1"]
        );
    }

    #[test]
    fn accruals_after_three_receipts_and_two_invoices_match_the_hand_computed_table() {
        let policy = Policy::default();
        let mut ledger = Ledger::default();
        let docs = [
            order("PO-7001", "2026-11-02T09:00:00Z", &[]),
            receipt("GR-1", &[("1", "6"), ("2", "3")]),
            receipt("GR-2", &[("1", "4"), ("3", "1")]),
            invoice(
                "INV-1",
                "INV-1",
                ARRIVED,
                &[("1", "10", "12.50"), ("2", "2", "100.00")],
            ),
            receipt("GR-3", &[("2", "2"), ("3", "1")]),
            invoice(
                "INV-2",
                "INV-2",
                ARRIVED,
                &[("2", "1", "100.00"), ("3", "1", "40.00")],
            ),
        ];
        let mut accrued_on = Vec::new();
        for doc in &docs {
            let published = deliver_as(&mut ledger, doc, &policy, arrived(), "test");
            accrued_on.push(
                published
                    .iter()
                    .filter_map(|o| match o {
                        Output::Accrual(line) => Some(line.as_str()),
                        Output::Exception(_) => None,
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        assert_eq!(
            accrued_on,
            ["", "1,2", "1,3", "1,2", "2,3", "2,3"],
            "every receipt and invoice updates its lines"
        );
        // line | ordered | received        | invoiced  | accrued | at     | amount
        // 1    | 10      | 6 + 4 = 10      | 10        | 0       | 12.50  | 0.00
        // 2    | 5       | 3 + 2 = 5       | 2 + 1 = 3 | 2       | 100.00 | 200.00
        // 3    | 2       | 1 + 1 = 2       | 1         | 1       | 40.00  | 40.00
        let table: Vec<(&str, [String; 5])> = ledger
            .accruals
            .iter()
            .map(|(line, a)| {
                (
                    line.as_str(),
                    [a.ordered, a.received, a.invoiced, a.accrued, a.amount]
                        .map(|d| format!("{:.2}", d)),
                )
            })
            .collect();
        let row = |line, r: [&str; 5]| (line, r.map(str::to_owned));
        assert_eq!(
            table,
            [
                row("1", ["10.00", "10.00", "10.00", "0.00", "0.00"]),
                row("2", ["5.00", "5.00", "3.00", "2.00", "200.00"]),
                row("3", ["2.00", "2.00", "1.00", "1.00", "40.00"]),
            ]
        );
        assert_eq!(ledger.open().count(), 0, "{:?}", ledger.exceptions);
    }

    #[test]
    fn a_redelivered_document_publishes_again_what_it_published() {
        let policy = Policy::default();
        let mut ledger = Ledger::default();
        deliver(
            &mut ledger,
            &order("PO-7001", "2026-11-02T09:00:00Z", &[]),
            &policy,
            arrived(),
        );
        let over = receipt("GR-1", &[("1", "12")]);
        let first = deliver_as(&mut ledger, &over, &policy, arrived(), "receipt");
        assert_eq!(
            first,
            BTreeSet::from([
                Output::Exception("over_receipt:PO-7001:1".into()),
                Output::Accrual("1".into())
            ])
        );
        let sequence = exception(&ledger, "over_receipt:PO-7001:1").sequence;
        let again = deliver_as(&mut ledger, &over, &policy, arrived(), "receipt");
        assert_eq!(
            again, first,
            "its first delivery's outputs may have been lost"
        );
        assert_eq!(
            exception(&ledger, "over_receipt:PO-7001:1").sequence,
            sequence,
            "and nothing changed"
        );
    }

    #[test]
    fn a_tolerance_change_resolves_what_it_forgives() {
        let mut ledger = Ledger::default();
        let strict = Policy::default();
        deliver(
            &mut ledger,
            &order("PO-7001", "2026-11-02T09:00:00Z", &[]),
            &strict,
            arrived(),
        );
        deliver(
            &mut ledger,
            &receipt("GR-1", &[("1", "11")]),
            &strict,
            arrived(),
        );
        assert_eq!(
            ledger.open().collect::<Vec<_>>(),
            ["over_receipt:PO-7001:1"]
        );
        let lenient =
            Policy::from_config(&[("quantity_tolerance_pct".into(), "10".into())]).unwrap();
        assert_ne!(strict.fingerprint(), lenient.fingerprint());
        ledger.now += 1;
        let evaluation = ledger.evaluate(PO, &lenient, ledger.now);
        ledger.settle(&evaluation, "2026-11-07T00:00:00Z", "tolerance_change");
        let e = exception(&ledger, "over_receipt:PO-7001:1");
        assert_eq!(
            (e.status, e.resolution.as_deref()),
            (Status::Resolved, Some("tolerance_change"))
        );
    }

    #[test]
    fn bad_decimals_name_the_document_line_and_field() {
        let crate::scenarios::Doc::Order(mut po) = order("PO-7001", "2026-11-02T09:00:00Z", &[])
        else {
            unreachable!()
        };
        po.lines[1].unit_price = "1O0.00".into();
        let error = Ledger::default().order(&po).unwrap_err();
        assert!(
            error.starts_with("PO PO-7001 line 2 unit_price \"1O0.00\" is not a decimal"),
            "{error}"
        );
    }

    #[test]
    fn a_quantity_past_any_real_order_is_refused_not_trapped_on() {
        let policy = Policy::default();
        let mut ledger = Ledger::default();
        let crate::scenarios::Doc::Invoice(mut huge) =
            invoice("INV-1", "INV-1", ARRIVED, &[("1", "10", "12.50")])
        else {
            unreachable!()
        };
        huge.lines[0].quantity = "70000000000000000000000000000".into();
        let error = ledger
            .invoice("S:INV-1", &huge, &huge.lines.iter().collect::<Vec<_>>())
            .unwrap_err();
        assert!(
            error.contains("quantity") && error.contains("out of range"),
            "{error}"
        );
        // The order and what was held still evaluate.
        deliver(
            &mut ledger,
            &order("PO-7001", "2026-11-02T09:00:00Z", &[]),
            &policy,
            arrived(),
        );
        assert!(ledger.exceptions.is_empty());
    }

    #[test]
    fn the_ledger_round_trips_with_decimals_as_strings() {
        let policy = Policy::default();
        let mut ledger = Ledger::default();
        deliver(
            &mut ledger,
            &order("PO-7001", "2026-11-02T09:00:00Z", &[]),
            &policy,
            arrived(),
        );
        deliver(
            &mut ledger,
            &receipt("GR-1", &[("1", "12")]),
            &policy,
            arrived(),
        );
        let json = serde_json::to_string(&ledger).unwrap();
        assert!(json.contains("\"unit_price\":\"12.50\""), "{json}");
        assert_eq!(serde_json::from_str::<Ledger>(&json).unwrap(), ledger);
    }
}
