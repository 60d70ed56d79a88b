//! Transaction sets to canonical records: 850 → purchase-order, 855 → po-ack,
//! 856 → ship-notice, 810 → invoice, 846 → inventory-balance (one per LIN).
//! The same mapping serves 004010 and 005010: the segments used here did not
//! change between them.

use plexus_sdk::canonical::{
    AckLine, Entity, InventoryBalance, Invoice, InvoiceLine, ItemRef, Money, Party, PoAck, PoLine,
    Provenance, PurchaseOrder, ShipLine, ShipNotice,
};
use serde::Serialize;

use crate::parse::{Interchange, Segment, TransactionSet};
use crate::values::{
    date, decimal, identifier, implied, item_ids, multiply, opt_date, party_system,
};

/// One canonical record made from a transaction set.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// Business key.
    pub key: String,
    /// `Plexus-Schema`.
    pub schema: &'static str,
    /// Subject suffix.
    pub topic: &'static str,
    /// The record.
    pub json: serde_json::Value,
}

fn mapped<E: Entity>(key: String, entity: &E) -> Result<Mapped, String> {
    Ok(Mapped {
        key,
        schema: E::SCHEMA,
        topic: E::TOPIC,
        json: serde_json::to_value(entity).map_err(|e| e.to_string())?,
    })
}

/// What every record of one transaction set shares.
pub struct Context<'a> {
    /// `source_system` of the provenance.
    pub source_system: &'a str,
    /// When the interchange arrived.
    pub received_at: &'a str,
}

/// Map every transaction set of `interchange`.
pub fn interchange(interchange: &Interchange, ctx: &Context) -> Result<Vec<Mapped>, String> {
    let mut out = Vec::new();
    for (group_control, set) in &interchange.sets {
        let provenance = Provenance {
            source_system: ctx.source_system.to_owned(),
            source_record_id: format!("{}/{group_control}/{}", interchange.control, set.control),
            control_number: Some(format!(
                "{}/{group_control}/{}",
                interchange.control, set.control
            )),
            received_at: ctx.received_at.to_owned(),
        };
        let where_ = |e: String| {
            format!(
                "transaction set {} (ST02 {}, segment {}): {e}",
                set.id, set.control, set.starts_at
            )
        };
        match set.id.as_str() {
            "850" => out.push(purchase_order(set, provenance).map_err(where_)?),
            "855" => out.push(po_ack(set, provenance).map_err(where_)?),
            "856" => out.push(ship_notice(set, provenance).map_err(where_)?),
            "810" => out.push(invoice(set, provenance).map_err(where_)?),
            "846" => out.extend(inventory(set, provenance).map_err(where_)?),
            other => {
                return Err(where_(format!(
                    "transaction set {other} is not supported (850, 855, 856, 810, 846)"
                )));
            }
        }
    }
    Ok(out)
}

fn first<'a>(set: &'a TransactionSet, id: &str) -> Result<&'a Segment, String> {
    set.segments
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| format!("no {id} segment"))
}

fn required<'a>(seg: &'a Segment, n: usize, what: &str) -> Result<&'a str, String> {
    let v = seg.el(n).trim();
    if v.is_empty() {
        Err(format!("{} element {n:02}: {what} is missing", seg.at()))
    } else {
        Ok(v)
    }
}

fn party(n1: &Segment) -> Party {
    let mut identifiers = Vec::new();
    if !n1.el(3).trim().is_empty() && !n1.el(4).trim().is_empty() {
        identifiers.push(identifier(party_system(n1.el(3).trim()), n1.el(4)));
    }
    let name = Some(n1.el(2).trim().to_owned()).filter(|n| !n.is_empty());
    Party { identifiers, name }
}

fn item(ids: Vec<plexus_sdk::canonical::Identifier>, seg: &Segment) -> Result<ItemRef, String> {
    if ids.is_empty() {
        return Err(format!("{}: the item has no product id", seg.at()));
    }
    Ok(ItemRef {
        identifiers: ids,
        description: String::new(),
    })
}

fn currency(set: &TransactionSet) -> String {
    set.segments
        .iter()
        .find(|s| s.id == "CUR")
        .map(|c| c.el(2).trim().to_owned())
        .filter(|c| c.len() == 3)
        .unwrap_or_else(|| "USD".into())
}

fn purchase_order(set: &TransactionSet, provenance: Provenance) -> Result<Mapped, String> {
    let beg = first(set, "BEG")?;
    let mut po = PurchaseOrder {
        po_number: required(beg, 3, "purchase order number")?.to_owned(),
        order_date: date(beg, 5)?,
        supplier: Party::default(),
        ship_to: Party::default(),
        bill_to: None,
        buyer: None,
        currency: currency(set),
        need_by: None,
        ack_due_at: None,
        lines: Vec::new(),
        provenance,
    };
    let mut ctt = None;
    for seg in &set.segments {
        match seg.id.as_str() {
            "N1" => match seg.el(1) {
                "ST" => po.ship_to = party(seg),
                "SE" | "SU" | "VN" => po.supplier = party(seg),
                "BT" => po.bill_to = Some(party(seg)),
                "BY" => po.buyer = Some(party(seg)),
                _ => {}
            },
            "DTM" if seg.el(1) == "002" => {
                let when = date(seg, 2)?;
                match po.lines.last_mut() {
                    Some(line) => line.need_by = Some(when),
                    None => po.need_by = Some(when),
                }
            }
            "PO1" => {
                let position = po.lines.len() + 1;
                let line_number = Some(seg.el(1).trim())
                    .filter(|l| !l.is_empty())
                    .map_or(position.to_string(), str::to_owned);
                po.lines.push(PoLine {
                    line_number,
                    quantity: decimal(seg, 2, "quantity")?,
                    uom: required(seg, 3, "unit of measure")?.to_owned(),
                    unit_price: decimal(seg, 4, "unit price")?,
                    item: item(item_ids(seg, 6), seg)?,
                    need_by: None,
                });
            }
            "PID" => {
                if let Some(line) = po.lines.last_mut() {
                    append_description(&mut line.item, seg);
                }
            }
            "CTT" => ctt = Some(seg),
            _ => {}
        }
    }
    check_ctt(ctt, po.lines.len())?;
    if po.lines.is_empty() {
        return Err("the purchase order has no PO1 lines".into());
    }
    mapped(po.po_number.clone(), &po)
}

fn append_description(item: &mut ItemRef, pid: &Segment) {
    let text = pid.el(5).trim();
    if !text.is_empty() {
        if !item.description.is_empty() {
            item.description.push(' ');
        }
        item.description.push_str(text);
    }
}

fn check_ctt(ctt: Option<&Segment>, lines: usize) -> Result<(), String> {
    if let Some(ctt) = ctt
        && ctt.el(1).trim().parse::<usize>().ok() != Some(lines)
    {
        return Err(format!(
            "{}: CTT01 says {} line items, but there are {lines}",
            ctt.at(),
            ctt.el(1)
        ));
    }
    Ok(())
}

fn po_ack(set: &TransactionSet, provenance: Provenance) -> Result<Mapped, String> {
    let bak = first(set, "BAK")?;
    let po_number = required(bak, 3, "purchase order number")?.to_owned();
    let ack_date = match opt_date(bak, 9)? {
        Some(d) => d,
        None => date(bak, 4)?,
    };
    let mut ack = PoAck {
        po_number,
        ack_type: required(bak, 2, "acknowledgment type")?.to_owned(),
        ack_date,
        lines: Vec::new(),
        provenance,
    };
    for seg in &set.segments {
        match seg.id.as_str() {
            "PO1" => {
                let position = ack.lines.len() + 1;
                let ids = item_ids(seg, 6);
                ack.lines.push(AckLine {
                    line_number: Some(seg.el(1).trim())
                        .filter(|l| !l.is_empty())
                        .map_or(position.to_string(), str::to_owned),
                    item: if ids.is_empty() {
                        None
                    } else {
                        Some(ItemRef {
                            identifiers: ids,
                            description: String::new(),
                        })
                    },
                    // A line without an ACK segment is accepted as ordered.
                    status: "IA".into(),
                    quantity: decimal(seg, 2, "quantity")?,
                    uom: required(seg, 3, "unit of measure")?.to_owned(),
                    unit_price: if seg.el(4).trim().is_empty() {
                        None
                    } else {
                        Some(decimal(seg, 4, "unit price")?)
                    },
                    promised_date: None,
                });
            }
            "ACK" => {
                let line = ack
                    .lines
                    .last_mut()
                    .ok_or_else(|| format!("{}: ACK before any PO1", seg.at()))?;
                line.status = required(seg, 1, "line item status")?.to_owned();
                if !seg.el(2).trim().is_empty() {
                    line.quantity = decimal(seg, 2, "quantity")?;
                }
                if !seg.el(3).trim().is_empty() {
                    line.uom = seg.el(3).trim().to_owned();
                }
                if matches!(seg.el(4), "067" | "068" | "017") {
                    line.promised_date = opt_date(seg, 5)?;
                }
            }
            _ => {}
        }
    }
    mapped(format!("{}:{}", ack.po_number, ack.ack_date), &ack)
}

fn ship_notice(set: &TransactionSet, provenance: Provenance) -> Result<Mapped, String> {
    let bsn = first(set, "BSN")?;
    let mut asn = ShipNotice {
        shipment_id: required(bsn, 2, "shipment identification")?.to_owned(),
        ship_date: date(bsn, 3)?,
        ship_from: None,
        ship_to: None,
        lines: Vec::new(),
        provenance,
    };
    let (mut po_number, mut sscc) = (None::<String>, None::<String>);
    for seg in &set.segments {
        match seg.id.as_str() {
            "HL" if seg.el(3) == "O" => po_number = None,
            "HL" if matches!(seg.el(3), "P" | "T") => sscc = None,
            "N1" => match seg.el(1) {
                "ST" => asn.ship_to = Some(party(seg)),
                "SF" => asn.ship_from = Some(party(seg)),
                _ => {}
            },
            "PRF" => po_number = Some(required(seg, 1, "purchase order number")?.to_owned()),
            "MAN" if seg.el(1) == "GM" => sscc = Some(seg.el(2).trim().to_owned()),
            "LIN" => {
                let po = po_number
                    .clone()
                    .ok_or_else(|| format!("{}: item before any PRF (order) segment", seg.at()))?;
                let mut ids = item_ids(seg, 2);
                let lot = ids
                    .iter()
                    .position(|i| i.system == "x12:LT")
                    .map(|i| ids.remove(i).value);
                asn.lines.push(ShipLine {
                    po_number: po,
                    line_number: Some(seg.el(1).trim().to_owned()).filter(|l| !l.is_empty()),
                    item: item(ids, seg)?,
                    quantity_shipped: "0".into(),
                    uom: "EA".into(),
                    lot,
                    expiry: None,
                    sscc: sscc.clone(),
                });
            }
            "SN1" => {
                let line = asn
                    .lines
                    .last_mut()
                    .ok_or_else(|| format!("{}: SN1 before any LIN", seg.at()))?;
                line.quantity_shipped = decimal(seg, 2, "quantity shipped")?;
                line.uom = required(seg, 3, "unit of measure")?.to_owned();
            }
            "PID" => {
                if let Some(line) = asn.lines.last_mut() {
                    append_description(&mut line.item, seg);
                }
            }
            "DTM" if seg.el(1) == "036" => {
                if let Some(line) = asn.lines.last_mut() {
                    line.expiry = Some(date(seg, 2)?);
                }
            }
            _ => {}
        }
    }
    if asn.lines.is_empty() {
        return Err("the ship notice has no LIN items".into());
    }
    mapped(asn.shipment_id.clone(), &asn)
}

fn invoice(set: &TransactionSet, provenance: Provenance) -> Result<Mapped, String> {
    let big = first(set, "BIG")?;
    let mut inv = Invoice {
        invoice_number: required(big, 2, "invoice number")?.to_owned(),
        invoice_date: date(big, 1)?,
        supplier: None,
        bill_to: None,
        currency: currency(set),
        po_number: Some(big.el(4).trim().to_owned()).filter(|p| !p.is_empty()),
        lines: Vec::new(),
        total: Money {
            amount: "0".into(),
            currency: String::new(),
        },
        provenance,
    };
    let mut total = None;
    let mut ctt = None;
    for seg in &set.segments {
        match seg.id.as_str() {
            "REF" if seg.el(1) == "PO" => {
                let po = seg.el(2).trim().to_owned();
                match inv.lines.last_mut() {
                    Some(line) => line.po_number = Some(po),
                    None => inv.po_number = inv.po_number.take().or(Some(po)),
                }
            }
            "N1" => match seg.el(1) {
                "SE" | "SU" | "VN" | "RI" => inv.supplier = Some(party(seg)),
                "BT" | "BY" => inv.bill_to = Some(party(seg)),
                _ => {}
            },
            "IT1" => {
                let position = inv.lines.len() + 1;
                let quantity = decimal(seg, 2, "quantity invoiced")?;
                let unit_price = decimal(seg, 4, "unit price")?;
                let amount = multiply(&quantity, &unit_price)
                    .ok_or_else(|| format!("{}: amount out of range", seg.at()))?;
                inv.lines.push(InvoiceLine {
                    line_number: Some(seg.el(1).trim())
                        .filter(|l| !l.is_empty())
                        .map_or(position.to_string(), str::to_owned),
                    item: item(item_ids(seg, 6), seg)?,
                    quantity,
                    uom: required(seg, 3, "unit of measure")?.to_owned(),
                    unit_price,
                    amount,
                    po_number: None,
                    po_line: None,
                });
            }
            "PID" => {
                if let Some(line) = inv.lines.last_mut() {
                    append_description(&mut line.item, seg);
                }
            }
            "TDS" => total = Some(implied(seg, 1, 2, "total invoice amount")?),
            "CTT" => ctt = Some(seg),
            _ => {}
        }
    }
    check_ctt(ctt, inv.lines.len())?;
    let amount = total.ok_or("no TDS (total) segment")?;
    inv.total = Money {
        amount,
        currency: inv.currency.clone(),
    };
    let key = match &inv.supplier {
        Some(Party { identifiers, .. }) if !identifiers.is_empty() => {
            format!("{}:{}", identifiers[0].value, inv.invoice_number)
        }
        _ => inv.invoice_number.clone(),
    };
    mapped(key, &inv)
}

fn inventory(set: &TransactionSet, provenance: Provenance) -> Result<Vec<Mapped>, String> {
    let bia = first(set, "BIA")?;
    let as_of = format!("{}T00:00:00Z", date(bia, 4)?);
    let mut location = Party::default();
    let mut balances: Vec<InventoryBalance> = Vec::new();
    for seg in &set.segments {
        match seg.id.as_str() {
            "N1" if balances.is_empty() => location = party(seg),
            "LIN" => balances.push(InventoryBalance {
                item: item(item_ids(seg, 2), seg)?,
                location: location.clone(),
                on_hand: "0".into(),
                available: "0".into(),
                uom: "EA".into(),
                as_of: as_of.clone(),
                provenance: provenance.clone(),
            }),
            "PID" => {
                if let Some(b) = balances.last_mut() {
                    append_description(&mut b.item, seg);
                }
            }
            "QTY" => {
                let b = balances
                    .last_mut()
                    .ok_or_else(|| format!("{}: QTY before any LIN", seg.at()))?;
                let qty = decimal(seg, 2, "quantity")?;
                match seg.el(1) {
                    "17" => b.on_hand = qty,
                    "33" => b.available = qty,
                    _ => continue,
                }
                let uom = seg
                    .el(3)
                    .split(['>', ':', '^'])
                    .next()
                    .unwrap_or_default()
                    .trim();
                if !uom.is_empty() {
                    b.uom = uom.to_owned();
                }
            }
            _ => {}
        }
    }
    if balances.is_empty() {
        return Err("the inventory inquiry has no LIN items".into());
    }
    balances
        .iter_mut()
        .enumerate()
        .map(|(i, b)| {
            b.provenance.source_record_id = format!("{}/{}", b.provenance.source_record_id, i + 1);
            let key = format!(
                "{}@{}",
                b.item.identifiers[0].value,
                b.location
                    .identifiers
                    .first()
                    .map_or("", |l| l.value.as_str())
            );
            mapped(key, &*b)
        })
        .collect()
}

/// Serialize for a record payload.
pub fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
