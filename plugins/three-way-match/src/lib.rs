//! `three-way-match`: matches purchase orders, goods receipts and invoices per
//! order line — with ship notices, supplier acknowledgements and credit
//! memos — and publishes the exceptions it finds, through their lifecycle,
//! as `match-exception/2` records tied to the facility, the item category and
//! the money at risk, and what finance must accrue as `accrual/1` records.
//! An exception goes to `<to>.<code>` keyed by its `exception_id`, once when
//! it opens, again when what is at risk changes, and once more with
//! `status = resolved` when a later document cures it; an accrual goes to
//! `<to>.accrual` keyed by `<po_number>:<po_line>` whenever it changes.
//!
//! Consumes canonical records by `Plexus-Schema` (`purchase-order/1`,
//! `goods-receipt/1`, `ship-notice/1`, `invoice/1`, `po-ack/1`) and
//! `clock-tick/1` records (`{"now": "<RFC 3339>"}`, from the `ticker` source)
//! that drive everything decided by time; records of other schemas are
//! passed over. A credit memo is an `invoice/1` with a negative total: its
//! lines' quantities and amounts are netted against the invoices'.
//!
//! Documents may arrive in any order and any number of times: what is open
//! and what is accrued depends only on which documents have arrived (and the
//! time), not on their order (`ledger.rs`), so `delivery.ordered` is not
//! needed.
//!
//! | code | open while |
//! |---|---|
//! | `quantity_mismatch` | a line is invoiced (net of credit memos) beyond what was accepted, past the receipt grace |
//! | `unreceived_order` | a line is invoiced with nothing accepted, past the receipt grace |
//! | `price_mismatch` | what a line is billed strays from the order's price beyond tolerance, or beyond the cap |
//! | `over_receipt` | more received on a line than ordered, beyond tolerance |
//! | `short_shipment` | less received on a line than its ship notices say |
//! | `duplicate_invoice` | a supplier's invoice arrived as two records with the same content |
//! | `unknown_po` | a receipt or invoice names an order (or line) not seen |
//! | `uom_mismatch` | a receipt or invoice line is in another unit than the order |
//! | `ack_changed` | the latest acknowledgement changes or rejects a line the order does not reflect |
//! | `ack_overdue` | an order is unacknowledged past its `ack_due_at` |
//! | `receipt_overdue` | nothing is received on an order past its need-by date |
//!
//! An invoice billing more than was received is held — awaiting its receipt,
//! not an exception — for `receipt_grace` after it arrived; the tick after
//! that opens `unreceived_order` (or `quantity_mismatch`) if the receipt
//! has not come.
//!
//! | config key | meaning | default |
//! |---|---|---|
//! | `quantity_tolerance_pct` | quantity slack, percent | `0` |
//! | `price_tolerance_pct` | unit price slack, percent | `2` |
//! | `price_cap` | price difference × quantity above which a line is an exception | none |
//! | `<tolerance>.supplier.<id>`, `.category.<unspsc:NN>`, `.facility.<id>` | an override; the most specific wins (`policy.rs`) | |
//! | `receipt_grace` | how long an invoice waits for its receipt (`48h`, `30m`, `0s`); needs ticks | `0s` |
//! | `currency` | exposure currency when the order is unknown | `USD` |
//!
//! State lives in the connector's kv bucket: one entry per order
//! (`po.<po_number>`), updated with compare-and-swap so instances working in
//! parallel never lose each other's updates, and `open-orders.<shard>`
//! listing the orders a tick must look at again (`watch.rs`).

mod ledger;
mod policy;
#[cfg(test)]
mod scenarios;
mod watch;

use ledger::{Ledger, Output};
use plexus_sdk::canonical::{
    Accrual, Entity, GoodsReceipt, Invoice, MatchExceptionV2, Money, PoAck, Provenance,
    PurchaseOrder, ShipNotice,
};
use plexus_sdk::{Error, Record, Transform, clock, config, kv};
use policy::Policy;
use watch::Watchlist;

/// Attempts at a compare-and-swap before the record is retried later.
const CAS_ATTEMPTS: usize = 8;
/// The schema of the ticks that drive the time-bound rules: `{"now": "<RFC 3339>"}`.
const TICK_SCHEMA: &str = "clock-tick/1";
/// The kv keys of the orders ticks look at: `open-orders.<shard>`.
const WATCHLIST: &str = "open-orders";
/// What the matcher's own records say they come from.
const SOURCE_SYSTEM: &str = "plexus:three-way-match";

struct Matcher;

impl Transform for Matcher {
    fn transform(input: Record) -> Result<Vec<Record>, Error> {
        let policy = Policy::from_config(&config::all()).map_err(Error::Permanent)?;
        let at = clock::now_rfc3339();
        let now = Now {
            at: &at,
            secs: clock::unix_seconds(&at).unwrap_or_default(),
        };
        match input.schema.as_deref() {
            Some(PurchaseOrder::SCHEMA) => {
                let po: PurchaseOrder = parse(&input)?;
                let doc = document(PurchaseOrder::SCHEMA, &po.provenance);
                apply(&po.po_number, &doc, "order_change", &now, &policy, |l| {
                    l.order(&po).map(|()| None)
                })
            }
            Some(PoAck::SCHEMA) => {
                let ack: PoAck = parse(&input)?;
                let doc = document(PoAck::SCHEMA, &ack.provenance);
                apply(
                    &ack.po_number,
                    &doc,
                    "acknowledgement",
                    &now,
                    &policy,
                    |l| l.ack(&ack).map(|()| None),
                )
            }
            Some(ShipNotice::SCHEMA) => {
                let asn: ShipNotice = parse(&input)?;
                let doc = document(ShipNotice::SCHEMA, &asn.provenance);
                let mut records = Vec::new();
                for (po, lines) in by_order(&asn.lines, |l| Some(l.po_number.as_str())) {
                    records.extend(apply(po, &doc, "ship_notice", &now, &policy, |l| {
                        l.shipment(&asn, &lines).map(|()| None)
                    })?);
                }
                Ok(records)
            }
            Some(GoodsReceipt::SCHEMA) => {
                let receipt: GoodsReceipt = parse(&input)?;
                let doc = document(GoodsReceipt::SCHEMA, &receipt.provenance);
                let mut records = Vec::new();
                for (po, lines) in by_order(&receipt.lines, |l| Some(l.po_number.as_str())) {
                    records.extend(apply(po, &doc, "receipt", &now, &policy, |l| {
                        l.receipt(&receipt, &lines).map(|()| None)
                    })?);
                }
                Ok(records)
            }
            Some(Invoice::SCHEMA) => invoice(&parse(&input)?, &now, &policy),
            Some(TICK_SCHEMA) => tick(&input, &policy),
            _ => Ok(Vec::new()),
        }
    }
}

plexus_sdk::export_transform!(Matcher);

/// The time a record is handled at.
struct Now<'a> {
    at: &'a str,
    secs: i64,
}

/// The key a document's outputs are remembered under: its schema and record.
fn document(schema: &str, provenance: &Provenance) -> String {
    format!("{schema}:{}", provenance.source_record_id)
}

/// An invoice or credit memo: each order it names is matched again.
fn invoice(invoice: &Invoice, now: &Now, policy: &Policy) -> Result<Vec<Record>, Error> {
    let supplier = invoice
        .supplier
        .as_ref()
        .and_then(|s| s.identifiers.first())
        .map_or("unknown", |i| i.value.as_str());
    let key = format!("{supplier}:{}", invoice.invoice_number);
    let doc = document(Invoice::SCHEMA, &invoice.provenance);
    let credit = invoice.total.amount.trim_start().starts_with('-');
    let orders = by_order(&invoice.lines, |l| {
        l.po_number.as_deref().or(invoice.po_number.as_deref())
    });
    let mut records = Vec::new();
    let named: usize = orders.iter().map(|(_, lines)| lines.len()).sum();
    if named < invoice.lines.len() {
        records.push(unnamed_order(invoice, &key, now)?);
    }
    for (po, lines) in orders {
        let cause = if credit { "credit_memo" } else { "invoice" };
        records.extend(apply(po, &doc, cause, now, policy, |l| {
            let correction = l.invoice(&key, invoice, &lines)?;
            Ok((correction && !credit).then_some("corrected_invoice"))
        })?);
    }
    Ok(records)
}

/// An invoice with lines that name no order: an exception no later
/// document can tie to an order, so it is only ever open.
fn unnamed_order(invoice: &Invoice, key: &str, now: &Now) -> Result<Record, Error> {
    let id = format!("unknown_po::invoice:{key}");
    exception_record(MatchExceptionV2 {
        exception_id: id.clone(),
        status: "open".into(),
        code: "unknown_po".into(),
        severity: "critical".into(),
        po_number: String::new(),
        lines: Vec::new(),
        facility: invoice.bill_to.clone().unwrap_or_default(),
        category: "uncategorized".into(),
        exposure: invoice.total.clone(),
        detail: format!("invoice {key} has lines that name no order"),
        opened_at: now.at.to_owned(),
        resolved_at: None,
        resolution: None,
        updated_at: now.at.to_owned(),
        sequence: 0,
        refs: vec![format!("invoice:{key}")],
        provenance: provenance(&id, now.at),
    })
}

/// A tick: look again at every order whose time has come, and, after a
/// tolerance change, at every order with open exceptions.
fn tick(input: &Record, policy: &Policy) -> Result<Vec<Record>, Error> {
    #[derive(serde::Deserialize)]
    struct Tick {
        now: String,
    }
    let tick: Tick = parse(input)?;
    let secs = clock::unix_seconds(&tick.now).ok_or_else(|| {
        Error::Permanent(format!(
            "tick {:?}: `now` {:?} is not an RFC 3339 UTC time",
            input.key, tick.now
        ))
    })?;
    let fingerprint = policy.fingerprint();
    let doc = format!("{TICK_SCHEMA}:{}", tick.now);
    let now = Now {
        at: &tick.now,
        secs,
    };
    let mut records = Vec::new();
    for shard in 0..watch::SHARDS {
        // Remembered per tick: a retry of this tick finds the same orders.
        let (due, changed) = watch(shard, |w| {
            let before = w.clone();
            let found = w.due_for(&tick.now, secs, &fingerprint);
            Ok((*w != before, found))
        })?;
        let cause = if changed { "tolerance_change" } else { "time" };
        for po in due {
            records.extend(apply(&po, &doc, cause, &now, policy, |_| Ok(None))?);
        }
    }
    Ok(records)
}

/// Apply a document to the ledger of `po`, settle what it comes to, note
/// when a tick must look again, and return the records to publish.
fn apply(
    po: &str,
    doc: &str,
    cause: &str,
    now: &Now,
    policy: &Policy,
    mut change: impl FnMut(&mut Ledger) -> Result<Option<&'static str>, String>,
) -> Result<Vec<Record>, Error> {
    let (ledger, (outputs, wake)) =
        update_state(&ledger_key(po), &format!("order {po}"), |l: &mut Ledger| {
            let cause = change(l)?.unwrap_or(cause);
            l.now = l.now.max(now.secs);
            let evaluation = l.evaluate(po, policy, l.now);
            let changed = l.settle(&evaluation, now.at, cause);
            Ok((l.remember(doc, changed), evaluation.wake))
        })?;
    let open = ledger.open().next().is_some();
    watch(watch::shard(po), |w| {
        Ok((w.note(po, ledger.seq, wake, open), ()))
    })?;
    outputs.iter().map(|o| output(po, &ledger, o)).collect()
}

/// The record of one output as it stands in `ledger`.
fn output(po: &str, ledger: &Ledger, output: &Output) -> Result<Record, Error> {
    match output {
        Output::Exception(id) => {
            let e = &ledger.exceptions[id];
            let f = &e.finding;
            exception_record(MatchExceptionV2 {
                exception_id: id.clone(),
                status: e.status.as_str().into(),
                code: f.code.clone(),
                severity: f.severity.clone(),
                po_number: po.to_owned(),
                lines: f.lines.clone(),
                facility: f.facility.clone(),
                category: f.category.clone(),
                exposure: Money {
                    amount: format!("{:.2}", f.exposure.round_dp(2)),
                    currency: f.currency.clone(),
                },
                detail: f.detail.clone(),
                opened_at: e.opened_at.clone(),
                resolved_at: e.resolved_at.clone(),
                resolution: e.resolution.clone(),
                updated_at: e.updated_at.clone(),
                sequence: e.sequence,
                refs: f.refs.clone(),
                provenance: provenance(id, &e.updated_at),
            })
        }
        Output::Accrual(line) => {
            let a = &ledger.accruals[line];
            let order = ledger
                .order
                .as_ref()
                .ok_or_else(|| Error::Permanent(format!("an accrual on {po} without its order")))?;
            let ordered = &order.lines[line];
            let id = format!("{po}:{line}");
            let accrual = Accrual {
                accrual_id: id.clone(),
                po_number: po.to_owned(),
                po_line: line.clone(),
                supplier: order.supplier.clone(),
                facility: order.facility.clone(),
                category: ordered.category.clone(),
                uom: ordered.uom.clone(),
                unit_price: ordered.unit_price.to_string(),
                quantity_ordered: a.ordered.to_string(),
                quantity_received: a.received.to_string(),
                quantity_invoiced: a.invoiced.to_string(),
                quantity_accrued: a.accrued.to_string(),
                amount_accrued: Money {
                    amount: format!("{:.2}", a.amount.round_dp(2)),
                    currency: order.currency.clone(),
                },
                as_of: a.updated_at.clone(),
                sequence: a.sequence,
                provenance: provenance(&id, &a.updated_at),
            };
            let json = serde_json::to_vec(&accrual)
                .map_err(|e| Error::Permanent(format!("cannot encode accrual {id}: {e}")))?;
            Ok(Record::new(id, json)
                .with_schema(Accrual::SCHEMA)
                .with_content_type("application/json")
                .with_topic(Accrual::TOPIC))
        }
    }
}

fn provenance(id: &str, at: &str) -> Provenance {
    Provenance {
        source_system: SOURCE_SYSTEM.into(),
        source_record_id: id.to_owned(),
        control_number: None,
        received_at: at.to_owned(),
    }
}

fn exception_record(exception: MatchExceptionV2) -> Result<Record, Error> {
    let json = serde_json::to_vec(&exception).map_err(|e| {
        Error::Permanent(format!(
            "cannot encode exception {}: {e}",
            exception.exception_id
        ))
    })?;
    let topic = exception.code.clone();
    Ok(Record::new(exception.exception_id, json)
        .with_schema(MatchExceptionV2::SCHEMA)
        .with_content_type("application/json")
        .with_topic(topic))
}

fn parse<T: serde::de::DeserializeOwned>(input: &Record) -> Result<T, Error> {
    serde_json::from_slice(&input.payload).map_err(|e| {
        Error::Permanent(format!(
            "record {:?} is not a valid {}: {e}",
            input.key,
            input.schema.as_deref().unwrap_or("record")
        ))
    })
}

/// Lines grouped by the order they name, in first-seen order; lines naming
/// none are left out.
fn by_order<'a, L>(
    lines: &'a [L],
    order_of: impl Fn(&'a L) -> Option<&'a str>,
) -> Vec<(&'a str, Vec<&'a L>)> {
    let mut groups: Vec<(&str, Vec<&L>)> = Vec::new();
    for line in lines {
        let Some(po) = order_of(line).filter(|po| !po.is_empty()) else {
            continue;
        };
        match groups.iter_mut().find(|(p, _)| *p == po) {
            Some((_, group)) => group.push(line),
            None => groups.push((po, vec![line])),
        }
    }
    groups
}

/// A kv key part: the key alphabet is `[A-Za-z0-9_=/-]` here (no `.`, which
/// separates parts); anything else is written `=XX` per byte.
fn key_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

fn unavailable(e: kv::KvError) -> Error {
    Error::Retryable(format!("state store: {e:?}"))
}

fn ledger_key(po: &str) -> String {
    format!("po.{}", key_part(po))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Permanent(format!("stored state of {what} is unreadable: {e}")))
}

/// Apply `change` to the watchlist, storing it when `change` says it changed.
fn watch<R>(
    shard: u64,
    mut change: impl FnMut(&mut Watchlist) -> Result<(bool, R), String>,
) -> Result<R, Error> {
    let key = format!("{WATCHLIST}.{shard}");
    for _ in 0..CAS_ATTEMPTS {
        let (mut list, revision) = match kv::get(&key).map_err(unavailable)? {
            Some(entry) => (
                decode::<Watchlist>("the watchlist", &entry.value)?,
                Some(entry.revision),
            ),
            None => (Watchlist::default(), None),
        };
        let (changed, result) = change(&mut list).map_err(Error::Permanent)?;
        if !changed {
            return Ok(result);
        }
        let bytes = serde_json::to_vec(&list)
            .map_err(|e| Error::Permanent(format!("cannot encode the watchlist: {e}")))?;
        match kv::compare_and_swap(&key, &bytes, revision) {
            Ok(_) => return Ok(result),
            Err(kv::KvError::RevisionMismatch) => continue,
            Err(e) => return Err(unavailable(e)),
        }
    }
    Err(Error::Retryable(
        "the watchlist kept changing under concurrent updates".into(),
    ))
}

/// Read-modify-write of the state under `key`, retried on a concurrent update.
fn update_state<T, R>(
    key: &str,
    what: &str,
    mut change: impl FnMut(&mut T) -> Result<R, String>,
) -> Result<(T, R), Error>
where
    T: Default + serde::Serialize + serde::de::DeserializeOwned,
{
    for _ in 0..CAS_ATTEMPTS {
        let (mut state, revision) = match kv::get(key).map_err(unavailable)? {
            Some(entry) => (decode(what, &entry.value)?, Some(entry.revision)),
            None => (T::default(), None),
        };
        let result = change(&mut state).map_err(Error::Permanent)?;
        let bytes = serde_json::to_vec(&state)
            .map_err(|e| Error::Permanent(format!("cannot encode {what}: {e}")))?;
        match kv::compare_and_swap(key, &bytes, revision) {
            Ok(_) => return Ok((state, result)),
            Err(kv::KvError::RevisionMismatch) => continue,
            Err(e) => return Err(unavailable(e)),
        }
    }
    Err(Error::Retryable(format!(
        "{what} kept changing under concurrent updates"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_stay_in_the_key_alphabet() {
        assert_eq!(key_part("PO-4500012345"), "PO-4500012345");
        assert_eq!(key_part("PO 17.a"), "PO=2017=2Ea");
    }
}
