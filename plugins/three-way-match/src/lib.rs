//! `three-way-match`: matches purchase orders, goods receipts and invoices per
//! order line — with ship notices and supplier acknowledgements — and raises
//! `match-exception/1` records tied to the facility, the item category and the
//! money at risk. Each exception is published to `<to>.<code>`, keyed by its
//! `exception_id`.
//!
//! Consumes canonical records by `Plexus-Schema` (`purchase-order/1`,
//! `goods-receipt/1`, `ship-notice/1`, `invoice/1`, `po-ack/1`) and
//! `clock-tick/1` records (`{"now": "<RFC 3339>"}`, from the `ticker` source)
//! that drive the SLA watches; records of other schemas are passed over.
//!
//! | code | raised when |
//! |---|---|
//! | `quantity_mismatch` | an invoice bills more than accepted minus invoiced before, beyond tolerance |
//! | `price_mismatch` | an invoice's unit price strays from the order's beyond tolerance, or beyond the cap |
//! | `unreceived_order` | an invoice bills a line nothing was accepted on |
//! | `over_receipt` | more received on a line than ordered, beyond tolerance |
//! | `short_shipment` | less received on a line than its ship notices say |
//! | `duplicate_invoice` | a supplier's invoice number arrives again as another record |
//! | `unknown_po` | an invoice or receipt names an order (or line) not seen |
//! | `uom_mismatch` | a receipt or invoice line in another unit than the order |
//! | `ack_changed` | an acknowledgement changes or rejects a line the order does not reflect |
//! | `ack_overdue` | a tick finds an order unacknowledged past its `ack_due_at` |
//! | `receipt_overdue` | a tick finds nothing received on an order past its need-by date |
//!
//! | config key | meaning | default |
//! |---|---|---|
//! | `quantity_tolerance_pct` | quantity slack, percent | `0` |
//! | `price_tolerance_pct` | unit price slack, percent | `2` |
//! | `price_cap` | price difference × quantity above which a line is an exception | none |
//! | `<tolerance>.supplier.<id>`, `.category.<unspsc:NN>`, `.facility.<id>` | an override; the most specific wins (`policy.rs`) | |
//! | `currency` | exposure currency when the order is unknown | `USD` |
//!
//! State lives in the connector's kv bucket: one entry per order
//! (`po.<po_number>`), updated with compare-and-swap so instances working in
//! parallel never lose each other's updates, and holding each document under
//! its own id so a redelivered document changes nothing. Invoice numbers are
//! kept per supplier (`invoice.<supplier>.<number>`) to catch duplicates.
//! Exceptions are raised as documents arrive: a receipt arriving after its
//! invoice does not withdraw an `unreceived_order`. The SLA watches keep one
//! more kv entry (`open-orders`) and raise each overdue order once per code.

mod ledger;
mod policy;
mod watch;

use std::str::FromStr as _;

use ledger::{Finding, Ledger};
use plexus_sdk::canonical::{
    Entity, GoodsReceipt, Invoice, MatchException, Money, Party, PoAck, Provenance, PurchaseOrder,
    ShipNotice,
};
use plexus_sdk::{Error, Record, Transform, clock, config, kv};
use policy::Policy;
use rust_decimal::Decimal;
use watch::Watchlist;

/// Attempts at a compare-and-swap before the record is retried later.
const CAS_ATTEMPTS: usize = 8;
/// The schema of the ticks that drive the SLA watches: `{"now": "<RFC 3339>"}`.
const TICK_SCHEMA: &str = "clock-tick/1";
/// The kv key of the orders the SLA watches follow.
const WATCHLIST: &str = "open-orders";

struct Matcher;

impl Transform for Matcher {
    fn transform(input: Record) -> Result<Vec<Record>, Error> {
        let policy = Policy::from_config(&config::all()).map_err(Error::Permanent)?;
        let raised = match input.schema.as_deref() {
            Some(PurchaseOrder::SCHEMA) => {
                let po: PurchaseOrder = parse(&input)?;
                update(&po.po_number, |l| l.order(&po).map(|()| Vec::new()))?;
                watch(|w| {
                    w.order(&po);
                    Ok(())
                })?;
                Vec::new()
            }
            Some(ShipNotice::SCHEMA) => {
                let asn: ShipNotice = parse(&input)?;
                for (po, lines) in by_order(&asn.lines, |l| Some(l.po_number.as_str())) {
                    update(po, |l| {
                        l.shipment(&asn.shipment_id, &lines).map(|()| Vec::new())
                    })?;
                }
                Vec::new()
            }
            Some(GoodsReceipt::SCHEMA) => {
                let receipt: GoodsReceipt = parse(&input)?;
                let mut raised = Vec::new();
                for (po, lines) in by_order(&receipt.lines, |l| Some(l.po_number.as_str())) {
                    let (ledger, found) = update(po, |l| l.receipt(&receipt, &lines, &policy))?;
                    watch(|w| {
                        w.received(po);
                        Ok(())
                    })?;
                    let doc = format!("goods-receipt:{}", receipt.receipt_number);
                    raised.extend(found.into_iter().map(|f| Raised {
                        po: po.to_owned(),
                        doc: doc.clone(),
                        facility: Some(receipt.location.clone()),
                        currency: None,
                        ledger: ledger.clone(),
                        finding: f,
                    }));
                }
                raised
            }
            Some(Invoice::SCHEMA) => invoice(parse(&input)?, &policy)?,
            Some(PoAck::SCHEMA) => {
                let ack: PoAck = parse(&input)?;
                watch(|w| {
                    w.acked(&ack.po_number);
                    Ok(())
                })?;
                let ledger = read(&ack.po_number)?;
                let doc = format!("po-ack:{}:{}", ack.po_number, ack.ack_date);
                ledger
                    .ack(&ack)
                    .map_err(Error::Permanent)?
                    .into_iter()
                    .map(|f| Raised {
                        po: ack.po_number.clone(),
                        doc: doc.clone(),
                        facility: None,
                        currency: None,
                        ledger: ledger.clone(),
                        finding: f,
                    })
                    .collect()
            }
            Some(TICK_SCHEMA) => tick(&input)?,
            _ => return Ok(Vec::new()),
        };
        let fallback = config::get("currency").unwrap_or_else(|| "USD".into());
        raised.into_iter().map(|r| r.record(&fallback)).collect()
    }
}

plexus_sdk::export_transform!(Matcher);

/// An invoice: a duplicate of another record with the same supplier and
/// number is only that; otherwise each order it names is matched.
fn invoice(invoice: Invoice, policy: &Policy) -> Result<Vec<Raised>, Error> {
    let supplier = invoice
        .supplier
        .as_ref()
        .and_then(|s| s.identifiers.first())
        .map_or_else(|| "unknown".to_owned(), |i| i.value.clone());
    let doc = format!("invoice:{supplier}:{}", invoice.invoice_number);
    let total = Decimal::from_str(&invoice.total.amount).unwrap_or_default();
    let header_po = invoice.po_number.clone().unwrap_or_default();
    let raise = |po: &str, ledger: Ledger, finding| Raised {
        po: po.to_owned(),
        doc: doc.clone(),
        facility: invoice.bill_to.clone(),
        currency: Some(invoice.currency.clone()),
        ledger,
        finding,
    };

    let first = first_seen(
        &format!(
            "invoice.{}.{}",
            key_part(&supplier),
            key_part(&invoice.invoice_number)
        ),
        &invoice.provenance.source_record_id,
    )?;
    if first != invoice.provenance.source_record_id {
        let finding = Finding {
            code: "duplicate_invoice",
            severity: "critical",
            line: None,
            category: "uncategorized".into(),
            exposure: total,
            detail: format!(
                "invoice {} from {supplier} arrived again as {} (first as {first})",
                invoice.invoice_number, invoice.provenance.source_record_id
            ),
        };
        let po = header_po.clone();
        let ledger = if po.is_empty() {
            Ledger::default()
        } else {
            read(&po)?
        };
        return Ok(vec![raise(&po, ledger, finding)]);
    }

    let mut raised = Vec::new();
    let orders = by_order(&invoice.lines, |l| {
        l.po_number.as_deref().or(invoice.po_number.as_deref())
    });
    let named: usize = orders.iter().map(|(_, lines)| lines.len()).sum();
    if named < invoice.lines.len() {
        let finding = Finding::unknown_po(
            "critical",
            None,
            total,
            format!(
                "invoice {} has lines that name no order",
                invoice.invoice_number
            ),
        );
        raised.push(raise("", Ledger::default(), finding));
    }
    for (po, lines) in orders {
        let (ledger, found) = update(po, |l| l.invoice(&doc, &invoice, &lines, policy))?;
        raised.extend(found.into_iter().map(|f| raise(po, ledger.clone(), f)));
    }
    Ok(raised)
}

/// A tick: raise every order that has become overdue.
fn tick(input: &Record) -> Result<Vec<Raised>, Error> {
    #[derive(serde::Deserialize)]
    struct Tick {
        now: String,
    }
    let tick: Tick = parse(input)?;
    let (_, overdue) = watch(|w| Ok(w.due(&tick.now)))?;
    let mut raised = Vec::new();
    for (po, code, detail) in overdue {
        let ledger = read(&po)?;
        raised.push(Raised {
            finding: ledger.overdue(code, detail),
            doc: "sla".into(),
            po,
            facility: None,
            currency: None,
            ledger,
        });
    }
    Ok(raised)
}

/// An exception found in one document, with what it needs to be published.
struct Raised {
    po: String,
    doc: String,
    /// Where to tie it when the order is unknown.
    facility: Option<Party>,
    /// Its currency when the order is unknown.
    currency: Option<String>,
    ledger: Ledger,
    finding: Finding,
}

impl Raised {
    fn record(self, fallback_currency: &str) -> Result<Record, Error> {
        let f = self.finding;
        let exception_id = format!(
            "{}:{}:{}:{}",
            f.code,
            self.po,
            self.doc,
            f.line.as_deref().unwrap_or("-")
        );
        let (facility, currency) = match self.ledger.order {
            Some(order) => (order.facility, order.currency),
            None => (
                self.facility.unwrap_or_default(),
                self.currency
                    .unwrap_or_else(|| fallback_currency.to_owned()),
            ),
        };
        let mut refs = vec![self.doc];
        if !self.po.is_empty() {
            refs.push(format!("purchase-order:{}", self.po));
        }
        let now = clock::now_rfc3339();
        let exception = MatchException {
            exception_id: exception_id.clone(),
            code: f.code.to_owned(),
            severity: f.severity.to_owned(),
            po_number: self.po,
            facility,
            category: f.category,
            exposure: Money {
                amount: format!("{:.2}", f.exposure.round_dp(2)),
                currency,
            },
            detail: f.detail,
            detected_at: now.clone(),
            refs,
            provenance: Provenance {
                source_system: "plexus:three-way-match".into(),
                source_record_id: exception_id.clone(),
                control_number: None,
                received_at: now,
            },
        };
        let json = serde_json::to_vec(&exception)
            .map_err(|e| Error::Permanent(format!("cannot encode exception: {e}")))?;
        Ok(Record::new(exception_id, json)
            .with_schema(MatchException::SCHEMA)
            .with_content_type("application/json")
            .with_topic(f.code))
    }
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

/// The ledger of `po` as stored.
fn read(po: &str) -> Result<Ledger, Error> {
    match kv::get(&ledger_key(po)).map_err(unavailable)? {
        Some(entry) => decode(&format!("order {po}"), &entry.value),
        None => Ok(Ledger::default()),
    }
}

/// Apply `change` to the ledger of `po` and store it; returns the stored
/// ledger and what `change` found.
fn update(
    po: &str,
    change: impl FnMut(&mut Ledger) -> Result<Vec<Finding>, String>,
) -> Result<(Ledger, Vec<Finding>), Error> {
    update_state(&ledger_key(po), &format!("order {po}"), change)
}

/// Apply `change` to the watchlist and store it.
fn watch<R>(
    change: impl FnMut(&mut Watchlist) -> Result<R, String>,
) -> Result<(Watchlist, R), Error> {
    update_state(WATCHLIST, "the SLA watchlist", change)
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

/// The record id first seen under `key`, storing `id` if there is none yet.
fn first_seen(key: &str, id: &str) -> Result<String, Error> {
    for _ in 0..CAS_ATTEMPTS {
        if let Some(entry) = kv::get(key).map_err(unavailable)? {
            return Ok(String::from_utf8_lossy(&entry.value).into_owned());
        }
        match kv::compare_and_swap(key, id.as_bytes(), None) {
            Ok(_) => return Ok(id.to_owned()),
            Err(kv::KvError::RevisionMismatch) => continue,
            Err(e) => return Err(unavailable(e)),
        }
    }
    Err(Error::Retryable(format!("{key} kept changing")))
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
