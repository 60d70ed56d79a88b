//! Order independence, proved: for each scenario, every permutation of its
//! documents — and each document delivered twice — ends with the same open
//! exceptions and the same accruals, and those are the ones worked out by
//! hand. The documents go through the ledger exactly as the plugin does it
//! (apply, evaluate, settle), without the kv store around it.

use std::collections::{BTreeMap, BTreeSet};

use plexus_sdk::canonical::{GoodsReceipt, Invoice, PoAck, PurchaseOrder, ShipNotice};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::ledger::{Finding, Ledger, Output};
use crate::policy::Policy;

pub const PO: &str = "PO-7001";
/// Long after every document arrived: every receipt grace is over.
const LATER: i64 = 1_893_456_000; // 2030-01-01

/// One document of a scenario.
#[derive(Debug, Clone)]
pub enum Doc {
    Order(PurchaseOrder),
    Ack(PoAck),
    Shipment(ShipNotice),
    Receipt(GoodsReceipt),
    Invoice(Invoice),
}

fn provenance(id: &str, at: &str) -> Value {
    json!({"source_system": "test", "source_record_id": id, "received_at": at})
}

fn item(line: &str) -> Value {
    let unspsc = match line {
        "1" => "42131606",
        "2" => "42142901",
        _ => "42142523",
    };
    json!({"identifiers": [{"system": "unspsc", "value": unspsc}], "description": ""})
}

/// The order: line 1 10 BX at 12.50, line 2 5 CS at 100.00, line 3 2 EA at
/// 40.00 — with `changes` (line, quantity) applied, as version `id`.
pub fn order(id: &str, at: &str, changes: &[(&str, &str)]) -> Doc {
    let quantity = |line: &str, default: &str| {
        changes
            .iter()
            .find(|(l, _)| *l == line)
            .map_or(default.to_owned(), |(_, q)| (*q).to_owned())
    };
    let line = |n: &str, q: &str, uom: &str, price: &str| json!({"line_number": n, "item": item(n), "quantity": quantity(n, q), "uom": uom, "unit_price": price});
    Doc::Order(
        serde_json::from_value(json!({
            "po_number": PO, "order_date": "2026-11-02",
            "supplier": {"identifiers": [{"system": "duns", "value": "123456789"}]},
            "ship_to": {"identifiers": [{"system": "gln", "value": "0614141000012"}], "name": "St Mary's"},
            "currency": "USD",
            "lines": [line("1", "10", "BX", "12.50"), line("2", "5", "CS", "100.00"), line("3", "2", "EA", "40.00")],
            "provenance": provenance(id, at),
        }))
        .unwrap(),
    )
}

/// An acknowledgement changing `line` to `quantity` (status IQ).
pub fn ack(id: &str, line: &str, quantity: &str) -> Doc {
    Doc::Ack(
        serde_json::from_value(json!({
            "po_number": PO, "ack_type": "AC", "ack_date": "2026-11-03",
            "lines": [{"line_number": line, "status": "IQ", "quantity": quantity, "uom": "CS"}],
            "provenance": provenance(id, "2026-11-03T08:00:00Z"),
        }))
        .unwrap(),
    )
}

fn uom(line: &str) -> &'static str {
    match line {
        "1" => "BX",
        "2" => "CS",
        _ => "EA",
    }
}

/// A ship notice: (line, quantity shipped).
pub fn shipment(id: &str, lines: &[(&str, &str)]) -> Doc {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(l, q)| json!({"po_number": PO, "line_number": l, "item": item(l), "quantity_shipped": q, "uom": uom(l)}))
        .collect();
    Doc::Shipment(
        serde_json::from_value(json!({
            "shipment_id": id, "ship_date": "2026-11-04", "lines": lines,
            "provenance": provenance(id, "2026-11-04T08:00:00Z"),
        }))
        .unwrap(),
    )
}

/// A receipt: (line, quantity received and accepted).
pub fn receipt(id: &str, lines: &[(&str, &str)]) -> Doc {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(l, q)| json!({"po_number": PO, "po_line": l, "item": item(l), "quantity_received": q, "quantity_accepted": q, "uom": uom(l)}))
        .collect();
    Doc::Receipt(
        serde_json::from_value(json!({
            "receipt_number": id, "received_at": "2026-11-05T08:00:00Z",
            "location": {"identifiers": [{"system": "gln", "value": "0614141000012"}]},
            "lines": lines,
            "provenance": provenance(id, "2026-11-05T08:00:00Z"),
        }))
        .unwrap(),
    )
}

/// An invoice (a credit memo when its amounts are negative) numbered
/// `number`, carried by record `record`: (line, quantity, unit price).
pub fn invoice(number: &str, record: &str, at: &str, lines: &[(&str, &str, &str)]) -> Doc {
    let mut total = Decimal::ZERO;
    let lines: Vec<Value> = lines
        .iter()
        .map(|(l, q, p)| {
            // A price-only credit bills no quantity: its amount is its price.
            let (q, p) = (q.parse::<Decimal>().unwrap(), p.parse::<Decimal>().unwrap());
            let amount = if q.is_zero() { p } else { q * p };
            total += amount;
            json!({"line_number": l, "item": item(l), "quantity": q, "uom": uom(l), "unit_price": p.abs().to_string(), "amount": format!("{amount:.2}"), "po_line": l})
        })
        .collect();
    Doc::Invoice(
        serde_json::from_value(json!({
            "invoice_number": number, "invoice_date": "2026-11-06",
            "supplier": {"identifiers": [{"system": "duns", "value": "123456789"}]},
            "currency": "USD", "po_number": PO, "lines": lines,
            "total": {"amount": format!("{total:.2}"), "currency": "USD"},
            "provenance": provenance(record, at),
        }))
        .unwrap(),
    )
}

/// Deliver one document to the ledger at `now`, as the plugin does.
pub fn deliver(ledger: &mut Ledger, doc: &Doc, policy: &Policy, now: i64) {
    deliver_as(ledger, doc, policy, now, "test");
}

/// A clock tick at `now`: what time alone changes. Returns what it published.
pub fn tick(ledger: &mut Ledger, policy: &Policy, now: i64) -> BTreeSet<Output> {
    ledger.now = ledger.now.max(now);
    let evaluation = ledger.evaluate(PO, policy, ledger.now);
    let changed = ledger.settle(&evaluation, &plexus_sdk::clock::rfc3339(now), "time");
    ledger.remember(&format!("clock-tick/1:{now}"), changed)
}

/// Deliver one document, resolving what it cures by `cause`; returns what
/// it published.
pub fn deliver_as(
    ledger: &mut Ledger,
    doc: &Doc,
    policy: &Policy,
    now: i64,
    cause: &str,
) -> BTreeSet<Output> {
    let result = match doc {
        Doc::Order(po) => ledger.order(po),
        Doc::Ack(ack) => ledger.ack(ack),
        Doc::Shipment(asn) => ledger.shipment(asn, &asn.lines.iter().collect::<Vec<_>>()),
        Doc::Receipt(r) => ledger.receipt(r, &r.lines.iter().collect::<Vec<_>>()),
        Doc::Invoice(i) => {
            let key = format!("123456789:{}", i.invoice_number);
            ledger
                .invoice(&key, i, &i.lines.iter().collect::<Vec<_>>())
                .map(|_| ())
        }
    };
    result.unwrap();
    ledger.now = ledger.now.max(now);
    let evaluation = ledger.evaluate(PO, policy, ledger.now);
    let changed = ledger.settle(&evaluation, &plexus_sdk::clock::rfc3339(now), cause);
    ledger.remember(&doc.key(), changed)
}

impl Doc {
    /// The key its outputs are remembered under, as the plugin makes it.
    pub fn key(&self) -> String {
        match self {
            Doc::Order(d) => format!("purchase-order/1:{}", d.provenance.source_record_id),
            Doc::Ack(d) => format!("po-ack/1:{}", d.provenance.source_record_id),
            Doc::Shipment(d) => format!("ship-notice/1:{}", d.provenance.source_record_id),
            Doc::Receipt(d) => format!("goods-receipt/1:{}", d.provenance.source_record_id),
            Doc::Invoice(d) => format!("invoice/1:{}", d.provenance.source_record_id),
        }
    }
}

/// What a ledger ends with: open exceptions (code, lines, exposure) and
/// accruals (line → received, invoiced, accrued, amount).
pub type Outcome = (
    BTreeMap<String, (String, Vec<String>, String)>,
    BTreeMap<String, [String; 4]>,
);

pub fn outcome(ledger: &Ledger, policy: &Policy) -> Outcome {
    let open = ledger
        .open()
        .map(|id| {
            let f: &Finding = &ledger.exceptions[id].finding;
            (
                id.clone(),
                (
                    f.code.clone(),
                    f.lines.clone(),
                    format!("{:.2}", f.exposure),
                ),
            )
        })
        .collect();
    let evaluation = ledger.evaluate(PO, policy, ledger.now);
    assert_eq!(
        ledger.open().cloned().collect::<Vec<_>>(),
        evaluation.findings.keys().cloned().collect::<Vec<_>>(),
        "what is published open is what the documents come to"
    );
    let accruals = ledger
        .accruals
        .iter()
        .map(|(line, a)| {
            (
                line.clone(),
                [a.received, a.invoiced, a.accrued, a.amount].map(|d| d.normalize().to_string()),
            )
        })
        .collect();
    (open, accruals)
}

fn run(docs: &[&Doc], policy: &Policy) -> Outcome {
    let mut ledger = Ledger::default();
    for doc in docs {
        deliver(&mut ledger, doc, policy, LATER);
    }
    outcome(&ledger, policy)
}

/// Every permutation of `0..n` (Heap's algorithm).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn heap(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k - 1 {
            heap(k - 1, a, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            a.swap(j, k - 1);
        }
        heap(k - 1, a, out);
    }
    let mut out = Vec::new();
    heap(n, &mut (0..n).collect(), &mut out);
    out
}

struct Scenario {
    name: &'static str,
    docs: Vec<Doc>,
    /// Open exceptions: (id, code, exposure).
    open: Vec<(&'static str, &'static str)>,
    /// Accruals: line → [received, invoiced, accrued, amount].
    accruals: Vec<(&'static str, [&'static str; 4])>,
}

fn scenarios() -> Vec<Scenario> {
    let at = "2026-11-06T10:00:00Z";
    vec![
        Scenario {
            name: "order, acknowledgement, ship notice, receipt, invoice — all as agreed",
            docs: vec![
                order("PO-7001", "2026-11-02T09:00:00Z", &[]),
                ack("ACK-1", "2", "5"),
                shipment("SH-1", &[("1", "10"), ("2", "5")]),
                receipt("GR-1", &[("1", "10"), ("2", "5")]),
                invoice(
                    "INV-1",
                    "INV-1",
                    at,
                    &[("1", "10", "12.50"), ("2", "5", "100.00")],
                ),
            ],
            open: vec![],
            accruals: vec![("1", ["10", "10", "0", "0"]), ("2", ["5", "5", "0", "0"])],
        },
        Scenario {
            name: "partial receipts against one ship notice, and a partial invoice",
            docs: vec![
                order("PO-7001", "2026-11-02T09:00:00Z", &[]),
                shipment("SH-1", &[("1", "10")]),
                receipt("GR-1", &[("1", "6")]),
                receipt("GR-2", &[("1", "4"), ("3", "2")]),
                invoice("INV-1", "INV-1", at, &[("1", "6", "12.50")]),
            ],
            open: vec![],
            accruals: vec![("1", ["10", "6", "4", "50"]), ("3", ["2", "0", "2", "80"])],
        },
        Scenario {
            name: "an overbilled invoice cured by a credit memo",
            docs: vec![
                order("PO-7001", "2026-11-02T09:00:00Z", &[]),
                receipt("GR-1", &[("1", "8")]),
                invoice("INV-1", "INV-1", at, &[("1", "10", "12.50")]),
                invoice("CM-1", "CM-1", at, &[("1", "-2", "12.50")]),
            ],
            open: vec![],
            accruals: vec![("1", ["8", "8", "0", "0"])],
        },
        Scenario {
            name: "a duplicate invoice and a short shipment stay open",
            docs: vec![
                order("PO-7001", "2026-11-02T09:00:00Z", &[]),
                shipment("SH-1", &[("2", "5")]),
                receipt("GR-1", &[("2", "4")]),
                invoice("INV-1", "ISA-1/INV-1", at, &[("2", "4", "100.00")]),
                invoice(
                    "INV-1",
                    "ISA-2/INV-1",
                    "2026-11-07T10:00:00Z",
                    &[("2", "4", "100.00")],
                ),
            ],
            open: vec![
                (
                    "duplicate_invoice:PO-7001:invoice:123456789:INV-1",
                    "400.00",
                ),
                ("short_shipment:PO-7001:2", "100.00"),
            ],
            accruals: vec![("2", ["4", "4", "0", "0"])],
        },
        Scenario {
            name: "an acknowledged change the order's next version reflects",
            docs: vec![
                order("PO-7001", "2026-11-02T09:00:00Z", &[]),
                ack("ACK-1", "2", "4"),
                order("PO-7001-v2", "2026-11-03T09:00:00Z", &[("2", "4")]),
                receipt("GR-1", &[("2", "4")]),
            ],
            open: vec![],
            accruals: vec![("2", ["4", "0", "4", "400"])],
        },
        Scenario {
            name: "a corrected invoice replaces a mispriced one; nothing received on line 3",
            docs: vec![
                order("PO-7001", "2026-11-02T09:00:00Z", &[]),
                receipt("GR-1", &[("2", "5")]),
                invoice(
                    "INV-1",
                    "ISA-1/INV-1",
                    at,
                    &[("2", "5", "110.00"), ("3", "2", "40.00")],
                ),
                invoice(
                    "INV-1",
                    "ISA-2/INV-1",
                    "2026-11-07T10:00:00Z",
                    &[("2", "5", "100.00"), ("3", "2", "40.00")],
                ),
            ],
            open: vec![("unreceived_order:PO-7001:3", "80.00")],
            accruals: vec![("2", ["5", "5", "0", "0"]), ("3", ["0", "2", "0", "0"])],
        },
        Scenario {
            name: "an over-receipt, a price mismatch and a price credit",
            docs: vec![
                order("PO-7001", "2026-11-02T09:00:00Z", &[]),
                receipt("GR-1", &[("1", "12")]),
                receipt("GR-2", &[("2", "5")]),
                invoice(
                    "INV-1",
                    "INV-1",
                    at,
                    &[("1", "12", "12.50"), ("2", "5", "106.00")],
                ),
                invoice("CM-1", "CM-1", at, &[("2", "0", "-10.00")]),
            ],
            open: vec![
                ("over_receipt:PO-7001:1", "25.00"),
                ("price_mismatch:PO-7001:2", "20.00"),
            ],
            accruals: vec![("1", ["12", "12", "0", "0"]), ("2", ["5", "5", "0", "0"])],
        },
    ]
}

/// Open exceptions (id, exposure) and accruals, to compare.
type Summary = (Vec<(String, String)>, BTreeMap<String, [String; 4]>);

fn expected(s: &Scenario) -> Summary {
    (
        s.open
            .iter()
            .map(|(id, e)| ((*id).to_owned(), (*e).to_owned()))
            .collect(),
        s.accruals
            .iter()
            .map(|(l, a)| ((*l).to_owned(), a.map(str::to_owned)))
            .collect(),
    )
}

fn summary(o: &Outcome) -> Summary {
    (
        o.0.iter()
            .map(|(id, (_, _, e))| (id.clone(), e.clone()))
            .collect(),
        o.1.clone(),
    )
}

#[test]
fn every_order_of_every_scenario_ends_the_same_and_as_worked_out_by_hand() {
    let policy = Policy::default();
    for s in scenarios() {
        let n = s.docs.len();
        let first = run(&s.docs.iter().collect::<Vec<_>>(), &policy);
        assert_eq!(summary(&first), expected(&s), "{}", s.name);
        for p in permutations(n) {
            let once: Vec<&Doc> = p.iter().map(|&i| &s.docs[i]).collect();
            assert_eq!(run(&once, &policy), first, "{}: order {p:?}", s.name);
            // Each delivered twice: right away, and all again in reverse.
            let doubled: Vec<&Doc> = once.iter().flat_map(|d| [*d, *d]).collect();
            assert_eq!(
                run(&doubled, &policy),
                first,
                "{}: each twice, order {p:?}",
                s.name
            );
            let replayed: Vec<&Doc> = once.iter().chain(once.iter().rev()).copied().collect();
            assert_eq!(
                run(&replayed, &policy),
                first,
                "{}: replayed, order {p:?}",
                s.name
            );
        }
    }
}

proptest! {
    /// Any interleaving of every document delivered twice.
    #[test]
    fn any_interleaving_of_duplicates_ends_the_same(
        scenario in 0..7usize,
        keys in proptest::collection::vec(any::<u32>(), 20),
    ) {
        let policy = Policy::default();
        let s = &scenarios()[scenario];
        let mut deliveries: Vec<(u32, &Doc)> = s
            .docs
            .iter()
            .chain(s.docs.iter())
            .zip(keys)
            .map(|(d, k)| (k, d))
            .collect();
        deliveries.sort_by_key(|(k, _)| *k);
        let docs: Vec<&Doc> = deliveries.into_iter().map(|(_, d)| d).collect();
        prop_assert_eq!(summary(&run(&docs, &policy)), expected(s), "{}", s.name);
    }
}
