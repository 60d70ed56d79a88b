//! Canonical purchase orders to X12 850, so ERP orders reach EDI suppliers.

use plexus_sdk::canonical::{Identifier, Party, PurchaseOrder};

/// Interchange settings from the connector's config.
pub struct Envelope<'a> {
    /// ISA06 / GS02.
    pub sender: &'a str,
    /// ISA08 / GS03.
    pub receiver: &'a str,
    /// `004010` or `005010`.
    pub version: &'a str,
    /// ISA13 / GS06 / ST02 base; derived from the PO number so a re-sent order
    /// gets the same control numbers.
    pub control: u32,
    /// `YYMMDD` and `HHMM` of the interchange.
    pub date: &'a str,
    /// `HHMM`.
    pub time: &'a str,
}

fn qualifier(system: &str) -> Option<&str> {
    Some(match system {
        "gtin" => "UK",
        "vendor-part" => "VP",
        "buyer-part" => "BP",
        "mfr-part" => "MG",
        "ndc" => "ND",
        "hibc" => "HI",
        other => other.strip_prefix("x12:")?,
    })
}

fn party_qualifier(id: &Identifier) -> Option<&str> {
    Some(match id.system.as_str() {
        "gln" => "UL",
        "hin" => "21",
        "duns" => "1",
        other => other.strip_prefix("x12:")?,
    })
}

fn clean(text: &str) -> String {
    // Separators may not appear in data.
    text.chars()
        .map(|c| {
            if matches!(c, '*' | '~' | '>' | '\r' | '\n') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

fn n1(code: &str, party: &Party, out: &mut Vec<String>) {
    let name = clean(party.name.as_deref().unwrap_or(""));
    match party
        .identifiers
        .iter()
        .find_map(|id| Some((party_qualifier(id)?, id)))
    {
        Some((q, id)) => out.push(format!("N1*{code}*{name}*{q}*{}", clean(&id.value))),
        None => out.push(format!("N1*{code}*{name}")),
    }
}

/// The 850 interchange for `po`, segments ended by `~` and a newline.
pub fn purchase_order(po: &PurchaseOrder, env: &Envelope) -> String {
    let control = format!("{:09}", env.control % 1_000_000_000);
    let group = (env.control % 1_000_000).to_string();
    let st = format!("{:04}", env.control % 10_000);
    let mut body = vec![format!(
        "BEG*00*SA*{}**{}",
        clean(&po.po_number),
        po.order_date.replace('-', "")
    )];
    if po.currency != "USD" {
        body.push(format!("CUR*BY*{}", po.currency));
    }
    if let Some(need_by) = &po.need_by {
        body.push(format!("DTM*002*{}", need_by.replace('-', "")));
    }
    n1("ST", &po.ship_to, &mut body);
    n1("SE", &po.supplier, &mut body);
    if let Some(bill_to) = &po.bill_to {
        n1("BT", bill_to, &mut body);
    }
    if let Some(buyer) = &po.buyer {
        n1("BY", buyer, &mut body);
    }
    for line in &po.lines {
        let ids: String = line
            .item
            .identifiers
            .iter()
            .filter_map(|id| Some(format!("*{}*{}", qualifier(&id.system)?, clean(&id.value))))
            .collect();
        // PO105 "PE": the unit price is per each unit of PO103.
        body.push(format!(
            "PO1*{}*{}*{}*{}*PE{ids}",
            clean(&line.line_number),
            line.quantity,
            line.uom,
            line.unit_price
        ));
        if !line.item.description.is_empty() {
            body.push(format!("PID*F****{}", clean(&line.item.description)));
        }
        if let Some(need_by) = &line.need_by {
            body.push(format!("DTM*002*{}", need_by.replace('-', "")));
        }
    }
    body.push(format!("CTT*{}", po.lines.len()));

    let isa = format!(
        "ISA*00*          *00*          *ZZ*{:<15}*ZZ*{:<15}*{}*{}*{}*{}*{control}*0*P*>",
        clean(env.sender),
        clean(env.receiver),
        env.date,
        env.time,
        if env.version.starts_with("005") {
            "^"
        } else {
            "U"
        },
        if env.version.starts_with("005") {
            "00501"
        } else {
            "00401"
        },
    );
    let gs = format!(
        "GS*PO*{}*{}*20{}*{}*{group}*X*{}",
        clean(env.sender),
        clean(env.receiver),
        env.date,
        env.time,
        env.version
    );
    let mut segments = vec![isa, gs, format!("ST*850*{st}")];
    let count = body.len() + 2;
    segments.extend(body);
    segments.push(format!("SE*{count}*{st}"));
    segments.push(format!("GE*1*{group}"));
    segments.push(format!("IEA*1*{control}"));
    segments.iter().map(|s| format!("{s}~\n")).collect()
}
