//! Messages to canonical records.
//!
//! | message | entity | from |
//! |---|---|---|
//! | OMS^O05, OMN^O07 | `purchase_order` (a requisition, as a draft order) | ORC, RQD, RQ1 |
//! | MFN^M16 | `item` (one per MFE) | ITM, VND, PKG, IVT |
//! | DFT^P03 | `inventory_txn` (one per FT1: charges issue, credits return) | FT1 |
//! | PMU^B01 | `worker` | STF, ORG |

use plexus_sdk::canonical::{
    Entity, Identifier, InventoryTxn, Item, ItemRef, Pack, Party, PoLine, Provenance,
    PurchaseOrder, Worker,
};

use plexus_sdk::clock;

use crate::message::{Message, Segment};

/// A mapped record: key, schema, topic, JSON.
pub type Mapped = (String, &'static str, &'static str, serde_json::Value);

fn mapped<E: Entity>(key: String, entity: &E) -> Result<Mapped, String> {
    Ok((
        key,
        E::SCHEMA,
        E::TOPIC,
        serde_json::to_value(entity).map_err(|e| e.to_string())?,
    ))
}

/// Map one message.
pub fn message(m: &Message, source_system: &str, received_at: &str) -> Result<Vec<Mapped>, String> {
    let msh = &m.segments[0];
    let control = m.value(msh, 10);
    if control.is_empty() {
        return Err("segment 1 (MSH) field 10: the message control id is empty".into());
    }
    let source = if source_system.is_empty() {
        format!("hl7:{}", m.value(msh, 3))
    } else {
        source_system.to_owned()
    };
    let provenance = |id: String| Provenance {
        source_system: source.clone(),
        source_record_id: id,
        control_number: Some(control.clone()),
        received_at: received_at.to_owned(),
    };
    match m.message_type().as_str() {
        "OMS^O05" | "OMN^O07" => requisition(m, provenance(control.clone())).map(|r| vec![r]),
        "MFN^M16" => items(m, &|i| provenance(format!("{control}/{i}"))),
        "DFT^P03" => charges(m, &|i| provenance(format!("{control}/{i}"))),
        "PMU^B01" => worker(m, provenance(control.clone())).map(|r| vec![r]),
        other => Err(format!(
            "segment 1 (MSH) field 9: message type {other} is not supported (OMS^O05, OMN^O07, MFN^M16, DFT^P03, PMU^B01)"
        )),
    }
}

fn required(m: &Message, seg: &Segment, n: usize, what: &str) -> Result<String, String> {
    let v = m.value(seg, n);
    if v.trim().is_empty() {
        Err(format!("{} field {n}: {what} is missing", seg.at()))
    } else {
        Ok(v.trim().to_owned())
    }
}

/// HL7 TS (`YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ]`) to RFC 3339 UTC.
pub fn timestamp(m: &Message, seg: &Segment, n: usize) -> Result<String, String> {
    let raw = m.value(seg, n);
    let bad = || {
        format!(
            "{} field {n}: {raw:?} is not a timestamp (YYYYMMDDHHMM)",
            seg.at()
        )
    };
    let (body, offset) = match raw.find(['+', '-']) {
        Some(i) => (&raw[..i], Some(&raw[i..])),
        None => (raw.as_str(), None),
    };
    let body = body.split('.').next().unwrap_or_default();
    if body.len() < 8 || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num =
        |r: std::ops::Range<usize>| body.get(r).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let (y, mo, d, h, mi, s) = (
        num(0..4),
        num(4..6),
        num(6..8),
        num(8..10),
        num(10..12),
        num(12..14),
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return Err(bad());
    }
    let offset_minutes = match offset {
        None => 0,
        Some(o) if o.len() == 5 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().map_err(|_| bad())? * 60
                + o[3..5].parse::<i64>().map_err(|_| bad())?)
        }
        Some(_) => return Err(bad()),
    };
    let secs =
        clock::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_minutes * 60;
    Ok(clock::rfc3339(secs))
}

fn decimal(m: &Message, seg: &Segment, n: usize, what: &str) -> Result<String, String> {
    let raw = m.value(seg, n);
    let raw = raw.trim();
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = !(int.is_empty() && frac.is_empty())
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit());
    if !ok {
        return Err(format!(
            "{} field {n}: {what} {raw:?} is not a number",
            seg.at()
        ));
    }
    Ok(if int.is_empty() {
        format!("0{raw}")
    } else {
        raw.to_owned()
    })
}

fn coded(m: &Message, seg: &Segment, n: usize, system: &str) -> Option<Identifier> {
    let id = m.component(seg, n, 1);
    (!id.trim().is_empty()).then(|| Identifier::new(system, id.trim()))
}

fn requisition(m: &Message, provenance: Provenance) -> Result<Mapped, String> {
    let orc = m.first("ORC").ok_or("no ORC segment")?;
    let po_number = required(m, orc, 2, "placer order number")?;
    let order_date = timestamp(m, orc, 9)?[..10].to_owned();
    // ORC-21 ordering facility, else the sending facility (MSH-4).
    let facility = Some(m.component(orc, 21, 1))
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| m.value(&m.segments[0], 4));
    let ship_to = Party {
        identifiers: vec![Identifier::new(
            format!("legacy:{}", slug(&m.value(&m.segments[0], 4))),
            facility.clone(),
        )],
        name: Some(facility).filter(|f| !f.is_empty()),
    };
    let mut po = PurchaseOrder {
        po_number: po_number.clone(),
        order_date,
        supplier: Party::default(),
        ship_to,
        bill_to: None,
        buyer: None,
        currency: "USD".into(),
        need_by: None,
        ack_due_at: None,
        lines: Vec::new(),
        provenance,
    };
    for seg in &m.segments {
        match seg.id.as_str() {
            "RQD" => {
                let mut ids: Vec<Identifier> =
                    [(2, "buyer-part"), (3, "vendor-part"), (4, "buyer-part")]
                        .iter()
                        .filter_map(|(n, system)| coded(m, seg, *n, system))
                        .collect();
                ids.dedup();
                if ids.is_empty() {
                    return Err(format!(
                        "{}: the requisition line names no item (RQD-2, RQD-3 or RQD-4)",
                        seg.at()
                    ));
                }
                let description = [m.component(seg, 2, 2), m.component(seg, 3, 2)]
                    .into_iter()
                    .find(|d| !d.is_empty())
                    .unwrap_or_default();
                let need_by = if m.value(seg, 10).is_empty() {
                    None
                } else {
                    Some(timestamp(m, seg, 10)?[..10].to_owned())
                };
                let position = po.lines.len() + 1;
                po.lines.push(PoLine {
                    line_number: Some(m.value(seg, 1))
                        .filter(|l| !l.is_empty())
                        .unwrap_or(position.to_string()),
                    item: ItemRef {
                        identifiers: ids,
                        description,
                    },
                    quantity: decimal(m, seg, 5, "requisition quantity")?,
                    uom: Some(m.component(seg, 6, 1))
                        .filter(|u| !u.is_empty())
                        .unwrap_or_else(|| "EA".into()),
                    unit_price: "0".into(),
                    need_by,
                });
            }
            "RQ1" => {
                let line = po
                    .lines
                    .last_mut()
                    .ok_or_else(|| format!("{}: RQ1 before any RQD", seg.at()))?;
                if !m.value(seg, 1).is_empty() {
                    line.unit_price = decimal(m, seg, 1, "anticipated price")?;
                }
                if let Some(mfr) = coded(m, seg, 3, "mfr-part") {
                    line.item.identifiers.push(mfr);
                }
                let vendor = m.component(seg, 4, 1);
                if !vendor.is_empty() && po.supplier.identifiers.is_empty() {
                    po.supplier = Party {
                        identifiers: vec![Identifier::new(
                            format!("legacy:{}", slug(&m.value(&m.segments[0], 4))),
                            vendor,
                        )],
                        name: Some(m.component(seg, 4, 2)).filter(|n| !n.is_empty()),
                    };
                }
            }
            _ => {}
        }
    }
    if po.lines.is_empty() {
        return Err("the requisition has no RQD lines".into());
    }
    mapped(po_number, &po)
}

fn slug(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "hl7".into() } else { s }
}

fn items(m: &Message, provenance: &dyn Fn(usize) -> Provenance) -> Result<Vec<Mapped>, String> {
    let system = format!("legacy:{}", slug(&m.value(&m.segments[0], 4)));
    let mut out: Vec<Item> = Vec::new();
    for seg in &m.segments {
        match seg.id.as_str() {
            "ITM" => {
                let id = required(m, seg, 1, "item identifier")?;
                out.push(Item {
                    item_id: id.clone(),
                    identifiers: vec![Identifier::new(system.clone(), id)],
                    description: m.value(seg, 2),
                    base_uom: "EA".into(),
                    packs: Vec::new(),
                    unspsc: None,
                    stocked: None,
                    patient_chargeable: match m.value(seg, 11).as_str() {
                        "Y" => Some(true),
                        "N" => Some(false),
                        _ => None,
                    },
                    provenance: provenance(out.len() + 1),
                });
                let category = m.component(seg, 5, 1);
                let mfr = coded(m, seg, 9, "mfr-part");
                if let Some(item) = out.last_mut() {
                    item.identifiers.extend(mfr);
                    if m.component(seg, 5, 3).eq_ignore_ascii_case("UNSPSC") && !category.is_empty()
                    {
                        item.unspsc = Some(category);
                    }
                }
            }
            "VND" => {
                let item = out
                    .last_mut()
                    .ok_or_else(|| format!("{}: VND before any ITM", seg.at()))?;
                if let Some(part) = coded(m, seg, 4, "vendor-part") {
                    item.identifiers.push(part);
                }
            }
            "PKG" => {
                let item = out
                    .last_mut()
                    .ok_or_else(|| format!("{}: PKG before any ITM", seg.at()))?;
                let uom = required(m, seg, 2, "packaging unit")?;
                let quantity = decimal(m, seg, 4, "package quantity")?;
                if quantity == "1" {
                    item.base_uom = uom.clone();
                }
                item.packs.push(Pack {
                    uom,
                    quantity,
                    gtin: None,
                });
            }
            "IVT" => {
                let item = out
                    .last_mut()
                    .ok_or_else(|| format!("{}: IVT before any ITM", seg.at()))?;
                item.stocked = Some(true);
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err("the item master message has no ITM segments".into());
    }
    out.iter().map(|i| mapped(i.item_id.clone(), i)).collect()
}

fn charges(m: &Message, provenance: &dyn Fn(usize) -> Provenance) -> Result<Vec<Mapped>, String> {
    let system = format!("legacy:{}", slug(&m.value(&m.segments[0], 4)));
    let mut out = Vec::new();
    for seg in m.segments.iter().filter(|s| s.id == "FT1") {
        let (txn_type, sign) = match m.value(seg, 6).as_str() {
            "CG" => ("issue", "-"),
            "CD" => ("return", ""),
            other => {
                return Err(format!(
                    "{} field 6: transaction type {other:?} is not CG (charge) or CD (credit)",
                    seg.at()
                ));
            }
        };
        let item = coded(m, seg, 7, &system).ok_or_else(|| {
            format!(
                "{} field 7: the transaction code (item) is missing",
                seg.at()
            )
        })?;
        let quantity = decimal(m, seg, 10, "transaction quantity")?;
        let location_code = [m.component(seg, 16, 4), m.component(seg, 16, 1)]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        let txn = InventoryTxn {
            item: ItemRef {
                identifiers: vec![item],
                description: m.component(seg, 7, 2),
            },
            location: Party {
                identifiers: if location_code.is_empty() {
                    vec![]
                } else {
                    vec![Identifier::new(system.clone(), location_code)]
                },
                name: None,
            },
            quantity_delta: format!("{sign}{quantity}").replace("--", ""),
            uom: "EA".into(),
            txn_type: txn_type.into(),
            occurred_at: timestamp(m, seg, 4)?,
            cost_center: Some(m.component(seg, 13, 1)).filter(|c| !c.is_empty()),
            lot: None,
            provenance: provenance(out.len() + 1),
        };
        let key = txn.provenance.source_record_id.clone();
        out.push(mapped(key, &txn)?);
    }
    if out.is_empty() {
        return Err("the charge message has no FT1 segments".into());
    }
    Ok(out)
}

fn worker(m: &Message, provenance: Provenance) -> Result<Mapped, String> {
    let stf = m.first("STF").ok_or("no STF segment")?;
    let worker_id = Some(m.component(stf, 2, 1))
        .filter(|i| !i.is_empty())
        .map_or_else(|| required(m, stf, 1, "staff id"), Ok)?;
    let name = [m.component(stf, 3, 2), m.component(stf, 3, 1)]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let status = match m.value(stf, 7).as_str() {
        "A" | "" => "active",
        "I" => "inactive",
        other => {
            return Err(format!(
                "{} field 7: active/inactive flag {other:?} is not A or I",
                stf.at()
            ));
        }
    };
    let cost_center = m
        .first("ORG")
        .map(|org| m.component(org, 2, 1))
        .unwrap_or_default();
    let w = Worker {
        worker_id: worker_id.clone(),
        name: if name.is_empty() {
            worker_id.clone()
        } else {
            name
        },
        status: status.into(),
        job_code: m.component(stf, 4, 1),
        home_cost_center: cost_center,
        provenance,
    };
    mapped(worker_id, &w)
}
