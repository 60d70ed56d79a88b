//! What the matcher knows of one purchase order, and the rules it applies
//! when a document arrives. Pure: no host calls, so every rule is unit-tested
//! natively. Each document is stored under its own id, so processing one
//! twice (a redelivery) changes nothing and finds the same exceptions.

use std::collections::BTreeMap;
use std::str::FromStr as _;

use plexus_sdk::canonical::{
    GoodsReceipt, Invoice, InvoiceLine, Party, PoAck, PurchaseOrder, ReceiptLine, ShipLine,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::policy::{Policy, Scope};

/// Everything known of one order.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// The order itself, once it has arrived.
    pub order: Option<Order>,
    /// Receipt number → what it received against this order.
    pub receipts: BTreeMap<String, Vec<Received>>,
    /// Shipment id → order line → quantity shipped.
    pub shipments: BTreeMap<String, BTreeMap<String, Decimal>>,
    /// Invoice key → order line → quantity invoiced.
    pub invoices: BTreeMap<String, BTreeMap<String, Decimal>>,
}

/// The ordered side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The supplier's first identifier, for its tolerances.
    #[serde(default)]
    pub supplier: String,
    /// Where the goods go: the facility exceptions are tied to.
    pub facility: Party,
    /// The order's currency.
    pub currency: String,
    /// Line number → line.
    pub lines: BTreeMap<String, OrderLine>,
}

impl Order {
    /// The tolerances for one of this order's lines.
    fn tolerances(&self, policy: &Policy, category: &str) -> Tolerances {
        let facility = self
            .facility
            .identifiers
            .first()
            .map_or("", |i| i.value.as_str());
        policy.resolve(&Scope {
            supplier: &self.supplier,
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
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Exception code (`price_mismatch`, ...).
    pub code: &'static str,
    /// info, warning or critical.
    pub severity: &'static str,
    /// The order line concerned, if one.
    pub line: Option<String>,
    /// UNSPSC segment or `uncategorized`.
    pub category: String,
    /// Money at risk, in the order's currency.
    pub exposure: Decimal,
    /// What was found, for a person.
    pub detail: String,
}

impl Finding {
    /// A document, or a line of one, naming an order or order line not seen.
    pub fn unknown_po(
        severity: &'static str,
        line: Option<String>,
        exposure: Decimal,
        detail: String,
    ) -> Finding {
        Finding {
            code: "unknown_po",
            severity,
            line,
            category: "uncategorized".into(),
            exposure,
            detail,
        }
    }
}

fn decimal(text: &str, what: &str) -> Result<Decimal, String> {
    Decimal::from_str(text.trim()).map_err(|e| format!("{what} {text:?} is not a decimal: {e}"))
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

impl Ledger {
    /// Record the order (a changed order replaces the earlier version).
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
        self.order = Some(Order {
            supplier: po
                .supplier
                .identifiers
                .first()
                .map(|i| i.value.clone())
                .unwrap_or_default(),
            facility: po.ship_to.clone(),
            currency: po.currency.clone(),
            lines,
        });
        Ok(())
    }

    /// Record what a ship notice says was shipped against this order.
    pub fn shipment(&mut self, shipment_id: &str, lines: &[&ShipLine]) -> Result<(), String> {
        let mut shipped: BTreeMap<String, Decimal> = BTreeMap::new();
        for (position, line) in lines.iter().enumerate() {
            let number = line
                .line_number
                .clone()
                .unwrap_or_else(|| (position + 1).to_string());
            let quantity = decimal(
                &line.quantity_shipped,
                &format!("shipment {shipment_id} quantity_shipped"),
            )?;
            *shipped.entry(number).or_default() += quantity;
        }
        self.shipments.insert(shipment_id.to_owned(), shipped);
        Ok(())
    }

    fn received(&self, line: &str) -> (Decimal, Decimal) {
        self.receipts
            .values()
            .flatten()
            .filter(|r| r.line == line)
            .fold((Decimal::ZERO, Decimal::ZERO), |(received, accepted), r| {
                (received + r.received, accepted + r.accepted)
            })
    }

    fn shipped(&self, line: &str) -> Option<Decimal> {
        let quantities: Vec<Decimal> = self
            .shipments
            .values()
            .filter_map(|s| s.get(line).copied())
            .collect();
        (!quantities.is_empty()).then(|| quantities.iter().sum())
    }

    /// Record a receipt's lines against this order: over-receipts, short
    /// shipments (less received than the ship notices said) and unit mismatches.
    pub fn receipt(
        &mut self,
        receipt: &GoodsReceipt,
        lines: &[&ReceiptLine],
        policy: &Policy,
    ) -> Result<Vec<Finding>, String> {
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
        self.receipts
            .insert(receipt.receipt_number.clone(), received.clone());
        let Some(order) = &self.order else {
            return Ok(vec![Finding::unknown_po(
                "warning",
                None,
                Decimal::ZERO,
                format!(
                    "receipt {} is against an order not seen (yet)",
                    receipt.receipt_number
                ),
            )]);
        };
        let mut found = Vec::new();
        for line in &received {
            let Some(ordered) = order.lines.get(&line.line) else {
                found.push(Finding::unknown_po(
                    "warning",
                    Some(line.line.clone()),
                    Decimal::ZERO,
                    format!(
                        "receipt {} names line {}, which the order does not have",
                        receipt.receipt_number, line.line
                    ),
                ));
                continue;
            };
            let category = ordered.category.clone();
            let tolerances = order.tolerances(policy, &category);
            if line.uom != ordered.uom {
                found.push(Finding {
                    code: "uom_mismatch",
                    severity: "warning",
                    line: Some(line.line.clone()),
                    category: category.clone(),
                    exposure: line.accepted * ordered.unit_price,
                    detail: format!(
                        "line {} received in {} but ordered in {}",
                        line.line, line.uom, ordered.uom
                    ),
                });
                continue;
            }
            let (total_received, _) = self.received(&line.line);
            if !within(total_received, ordered.quantity, tolerances.quantity_pct) {
                let excess = total_received - ordered.quantity;
                found.push(Finding {
                    code: "over_receipt",
                    severity: "warning",
                    line: Some(line.line.clone()),
                    category: category.clone(),
                    exposure: excess * ordered.unit_price,
                    detail: format!(
                        "line {}: {} {} received against {} ordered",
                        line.line, total_received, line.uom, ordered.quantity
                    ),
                });
            }
            if let Some(shipped) = self.shipped(&line.line)
                && total_received < shipped
            {
                let short = shipped - total_received;
                found.push(Finding {
                    code: "short_shipment",
                    severity: "warning",
                    line: Some(line.line.clone()),
                    category,
                    exposure: short * ordered.unit_price,
                    detail: format!(
                        "line {}: {} {} shipped but {} received",
                        line.line, shipped, line.uom, total_received
                    ),
                });
            }
        }
        Ok(found)
    }

    /// Match an invoice's lines against the order and what was received.
    pub fn invoice(
        &mut self,
        key: &str,
        invoice: &Invoice,
        lines: &[&InvoiceLine],
        policy: &Policy,
    ) -> Result<Vec<Finding>, String> {
        let mut invoiced: BTreeMap<String, Decimal> = BTreeMap::new();
        let mut parsed = Vec::new();
        for line in lines {
            let what = |field| {
                format!(
                    "invoice {} line {} {field}",
                    invoice.invoice_number, line.line_number
                )
            };
            let quantity = decimal(&line.quantity, &what("quantity"))?;
            let price = decimal(&line.unit_price, &what("unit_price"))?;
            let amount = decimal(&line.amount, &what("amount"))?;
            let po_line = line
                .po_line
                .clone()
                .unwrap_or_else(|| line.line_number.clone());
            *invoiced.entry(po_line.clone()).or_default() += quantity;
            parsed.push((line, po_line, quantity, price, amount));
        }
        // Invoiced earlier by other invoices; this one's own entry is replaced,
        // so a redelivery does not count it twice.
        self.invoices.remove(key);
        let earlier: BTreeMap<String, Decimal> =
            self.invoices
                .values()
                .flatten()
                .fold(BTreeMap::new(), |mut sum, (line, quantity)| {
                    *sum.entry(line.clone()).or_default() += *quantity;
                    sum
                });
        let this = invoiced.clone();
        self.invoices.insert(key.to_owned(), invoiced);

        let Some(order) = &self.order else {
            let total = parsed.iter().map(|p| p.4).sum();
            return Ok(vec![Finding::unknown_po(
                "critical",
                None,
                total,
                format!(
                    "invoice {} names an order not seen (yet)",
                    invoice.invoice_number
                ),
            )]);
        };
        let mut found = Vec::new();
        for (line, po_line, quantity, price, amount) in parsed {
            let number = &line.line_number;
            let Some(ordered) = order.lines.get(&po_line) else {
                found.push(Finding::unknown_po("critical", Some(po_line.clone()), amount, format!(
                        "invoice line {number} names order line {po_line}, which the order does not have"
                    )));
                continue;
            };
            let tolerances = order.tolerances(policy, &ordered.category);
            let finding = |code, severity, exposure, detail| Finding {
                code,
                severity,
                line: Some(po_line.clone()),
                category: ordered.category.clone(),
                exposure,
                detail,
            };
            if line.uom != ordered.uom {
                found.push(finding(
                    "uom_mismatch",
                    "warning",
                    amount,
                    format!(
                        "invoice line {number} is in {} but the order in {}",
                        line.uom, ordered.uom
                    ),
                ));
                continue;
            }
            let over = (price - ordered.unit_price) * quantity;
            let beyond_pct = (price - ordered.unit_price).abs()
                > ordered.unit_price.abs() * tolerances.price_pct / Decimal::ONE_HUNDRED;
            let beyond_cap = tolerances.price_cap.is_some_and(|cap| over.abs() > cap);
            if beyond_pct || beyond_cap {
                found.push(finding(
                    "price_mismatch",
                    "warning",
                    over.max(Decimal::ZERO),
                    format!(
                        "invoice line {number}: unit price {price} against {} ordered",
                        ordered.unit_price
                    ),
                ));
            }
            let (_, accepted) = self.received(&po_line);
            let before = earlier.get(&po_line).copied().unwrap_or_default();
            if accepted.is_zero() {
                found.push(finding(
                    "unreceived_order",
                    "critical",
                    amount,
                    format!("invoice line {number}: nothing received on order line {po_line}"),
                ));
            } else {
                let open = accepted - before;
                let total = this.get(&po_line).copied().unwrap_or(quantity);
                if !within(total, open, tolerances.quantity_pct) {
                    found.push(finding(
                        "quantity_mismatch",
                        "critical",
                        (total - open.max(Decimal::ZERO)) * price,
                        format!(
                            "order line {po_line}: {total} invoiced, {accepted} accepted, {before} invoiced before"
                        ),
                    ));
                }
            }
        }
        // Two invoice lines on one order line find the same thing once.
        let mut seen = std::collections::BTreeSet::new();
        found.retain(|f| seen.insert((f.code, f.line.clone())));
        Ok(found)
    }

    /// A whole order that is late (an SLA watch): its value is at risk, in the
    /// category of its largest line.
    pub fn overdue(&self, code: &'static str, detail: String) -> Finding {
        let lines = self.order.iter().flat_map(|o| o.lines.values());
        let value = |l: &OrderLine| l.quantity * l.unit_price;
        let largest = lines.clone().max_by_key(|l| value(l));
        Finding {
            code,
            severity: "warning",
            line: None,
            category: largest.map_or_else(|| "uncategorized".to_owned(), |l| l.category.clone()),
            exposure: lines.map(value).sum(),
            detail,
        }
    }

    /// An acknowledgement that changes a line (quantity, price, date,
    /// back-order, rejection) that the order does not reflect.
    pub fn ack(&self, ack: &PoAck) -> Result<Vec<Finding>, String> {
        const CHANGES: [&str; 6] = ["IQ", "IP", "IB", "IR", "IS", "DR"];
        let Some(order) = &self.order else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for line in ack
            .lines
            .iter()
            .filter(|l| CHANGES.contains(&l.status.as_str()))
        {
            let Some(ordered) = order.lines.get(&line.line_number) else {
                continue;
            };
            let what = |field| {
                format!(
                    "acknowledgement of {} line {} {field}",
                    ack.po_number, line.line_number
                )
            };
            let quantity = decimal(&line.quantity, &what("quantity"))?;
            let price = match &line.unit_price {
                Some(price) => decimal(price, &what("unit_price"))?,
                None => ordered.unit_price,
            };
            let reflected = quantity == ordered.quantity && price == ordered.unit_price;
            if reflected && !matches!(line.status.as_str(), "IR" | "IB" | "DR") {
                continue;
            }
            let accepted = if line.status == "IR" {
                Decimal::ZERO
            } else {
                quantity
            };
            found.push(Finding {
                code: "ack_changed",
                severity: "warning",
                line: Some(line.line_number.clone()),
                category: ordered.category.clone(),
                exposure: (ordered.quantity * ordered.unit_price - accepted * price).abs(),
                detail: format!(
                    "line {} acknowledged {} ({} {} at {}) against {} at {} ordered",
                    line.line_number,
                    line.status,
                    quantity,
                    line.uom,
                    price,
                    ordered.quantity,
                    ordered.unit_price
                ),
            });
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn policy(pairs: &[(&str, &str)]) -> Policy {
        let entries: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Policy::from_config(&entries).unwrap()
    }

    fn found(findings: &[Finding]) -> Vec<(&str, Option<&str>, String)> {
        findings
            .iter()
            .map(|f| (f.code, f.line.as_deref(), format!("{:.2}", f.exposure)))
            .collect()
    }

    /// The order and its ship notice, as the fixtures have them.
    fn shipped() -> Ledger {
        let mut ledger = Ledger::default();
        ledger.order(&fixture("po.json")).unwrap();
        let asn: plexus_sdk::canonical::ShipNotice = fixture("asn.json");
        let lines: Vec<_> = asn.lines.iter().collect();
        ledger.shipment(&asn.shipment_id, &lines).unwrap();
        ledger
    }

    /// Receive the fixture's receipt into `ledger`.
    fn receive(ledger: &mut Ledger, policy: &Policy) -> Vec<Finding> {
        let receipt: GoodsReceipt = fixture("receipt.json");
        let lines: Vec<_> = receipt.lines.iter().collect();
        ledger.receipt(&receipt, &lines, policy).unwrap()
    }

    /// The order, its ship notice and its receipt.
    fn received() -> Ledger {
        let mut ledger = shipped();
        receive(&mut ledger, &Policy::default());
        ledger
    }

    #[test]
    fn a_receipt_is_matched_against_the_order_and_its_ship_notice() {
        let mut ledger = shipped();
        let findings = receive(&mut ledger, &Policy::default());
        assert_eq!(
            found(&findings),
            [
                ("short_shipment", Some("1"), "25.00".into()),
                ("over_receipt", Some("2"), "100.00".into()),
            ]
        );
        assert_eq!(findings[0].category, "unspsc:42");
        assert_eq!(findings[0].detail, "line 1: 10 BX shipped but 8 received");

        let again = receive(&mut ledger, &Policy::default());
        assert_eq!(
            again, findings,
            "a redelivered receipt is not counted twice"
        );
        let lenient = policy(&[("quantity_tolerance_pct.category.unspsc:42", "25")]);
        let within = receive(&mut ledger, &lenient);
        assert_eq!(
            found(&within),
            [("short_shipment", Some("1"), "25.00".into())]
        );
    }

    #[test]
    fn an_invoice_is_matched_three_ways() {
        let mut ledger = received();
        let invoice: Invoice = fixture("invoice.json");
        let lines: Vec<_> = invoice.lines.iter().collect();
        let findings = ledger
            .invoice("inv", &invoice, &lines, &Policy::default())
            .unwrap();
        assert_eq!(
            found(&findings),
            [
                ("quantity_mismatch", Some("1"), "25.00".into()),
                ("price_mismatch", Some("2"), "50.00".into()),
                ("unreceived_order", Some("3"), "80.00".into()),
            ]
        );
        assert_eq!(
            findings[0].detail,
            "order line 1: 10 invoiced, 8 accepted, 0 invoiced before"
        );
        let again = ledger
            .invoice("inv", &invoice, &lines, &Policy::default())
            .unwrap();
        assert_eq!(
            again, findings,
            "a redelivered invoice is not counted twice"
        );

        // A second invoice for what is left of line 2 (6 accepted, 5 invoiced).
        let mut second = invoice.clone();
        second.lines.retain(|l| l.line_number == "2");
        second.lines[0].quantity = "2".into();
        second.lines[0].unit_price = "101.00".into();
        let lines: Vec<_> = second.lines.iter().collect();
        let findings = ledger
            .invoice("second", &second, &lines, &Policy::default())
            .unwrap();
        assert_eq!(
            found(&findings),
            [("quantity_mismatch", Some("2"), "101.00".into())],
            "1% above the order's price is within the default 2%"
        );
        let capped = policy(&[("price_cap", "1")]);
        let findings = ledger.invoice("second", &second, &lines, &capped).unwrap();
        assert_eq!(findings[0].code, "price_mismatch", "2.00 over a 1.00 cap");
        let lenient = policy(&[("price_cap", "1"), ("price_cap.supplier.123456789", "5")]);
        let findings = ledger.invoice("second", &second, &lines, &lenient).unwrap();
        assert_eq!(
            findings[0].code, "quantity_mismatch",
            "the supplier's own cap is 5.00"
        );
    }

    #[test]
    fn documents_for_an_unknown_order_or_line_are_exceptions() {
        let mut ledger = Ledger::default();
        let invoice: Invoice = fixture("invoice.json");
        let lines: Vec<_> = invoice.lines.iter().collect();
        let findings = ledger
            .invoice("inv", &invoice, &lines, &Policy::default())
            .unwrap();
        assert_eq!(found(&findings), [("unknown_po", None, "755.00".into())]);

        let mut ledger = received();
        let mut stray = invoice.clone();
        stray.lines[0].po_line = Some("9".into());
        stray.lines[1].uom = "EA".into();
        let lines: Vec<_> = stray.lines.iter().take(2).collect();
        let findings = ledger
            .invoice("stray", &stray, &lines, &Policy::default())
            .unwrap();
        assert_eq!(
            found(&findings),
            [
                ("unknown_po", Some("9"), "125.00".into()),
                ("uom_mismatch", Some("2"), "550.00".into()),
            ]
        );
    }

    #[test]
    fn an_acknowledged_change_the_order_does_not_reflect() {
        let ledger = received();
        let findings = ledger.ack(&fixture("ack.json")).unwrap();
        assert_eq!(
            found(&findings),
            [("ack_changed", Some("2"), "100.00".into())]
        );
        assert_eq!(Ledger::default().ack(&fixture("ack.json")).unwrap(), []);
    }

    #[test]
    fn bad_decimals_name_the_document_line_and_field() {
        let mut po: PurchaseOrder = fixture("po.json");
        po.lines[1].unit_price = "1O0.00".into();
        let error = Ledger::default().order(&po).unwrap_err();
        assert!(
            error.starts_with("PO PO-1001 line 2 unit_price \"1O0.00\" is not a decimal"),
            "{error}"
        );
    }

    #[test]
    fn the_ledger_round_trips_with_decimals_as_strings() {
        let ledger = received();
        let json = serde_json::to_string(&ledger).unwrap();
        assert!(json.contains("\"unit_price\":\"12.50\""), "{json}");
        assert_eq!(serde_json::from_str::<Ledger>(&json).unwrap(), ledger);
    }
}
