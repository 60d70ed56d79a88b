//! `fhir`: FHIR R4 and R5 JSON resources to canonical records, published to
//! `<to>.<entity>`. Bundles are split into their entries.
//!
//! | resource | entity | notes |
//! |---|---|---|
//! | SupplyRequest | `purchase_order` | a request, as a draft order (unit price 0) |
//! | SupplyDelivery | `goods_receipt` | `basedOn` names the order: its identifier, or the business number of the SupplyRequest it references in the same Bundle; R4 single or R5 repeated `suppliedItem` |
//! | InventoryReport (R5) | `inventory_balance` | one per listed item |
//! | InventoryItem (R5) | `item` | |
//! | Location | `location` | |
//! | Organization | `supplier` | |
//! | Practitioner | `worker` | |
//!
//! Codings map to identifier systems: GS1 GTIN → `gtin`, NDC → `ndc`, UNSPSC
//! → `unspsc`, anything else `legacy:<last segment of the system URL>`.
//! Bad JSON, an unsupported resource type or a missing required element is a
//! permanent error naming the resource and the element.
//!
//! | config key | meaning | default |
//! |---|---|---|
//! | `source_system` | provenance `source_system` | `fhir` |

use plexus_sdk::canonical::{
    Entity, GoodsReceipt, Identifier, InventoryBalance, Item, ItemRef, Location, Organization,
    Party, PoLine, Provenance, PurchaseOrder, ReceiptLine, Supplier, Worker,
};
use plexus_sdk::{Error, Record, Transform, clock, config};
use serde_json::Value;

struct Fhir;

impl Transform for Fhir {
    fn transform(input: Record) -> Result<Vec<Record>, Error> {
        let source = config::get("source_system").unwrap_or_else(|| "fhir".into());
        convert(&input.payload, &source, &clock::now_rfc3339()).map_err(Error::Permanent)
    }
}

/// A resource or Bundle to canonical records.
pub fn convert(
    payload: &[u8],
    source_system: &str,
    received_at: &str,
) -> Result<Vec<Record>, String> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let mut out = Vec::new();
    let orders = Orders::of(&value);
    resource(&value, source_system, received_at, &orders, &mut out)?;
    Ok(out)
}

/// The business numbers of the SupplyRequests in a Bundle, by every way a
/// SupplyDelivery's `basedOn` may point at one (`SupplyRequest/<id>`, the
/// entry's `fullUrl`): a delivery names its order by server id, while the
/// matcher joins on the order's business identifier.
#[derive(Default)]
struct Orders(std::collections::HashMap<String, String>);

impl Orders {
    fn of(bundle: &Value) -> Orders {
        let mut orders = Orders::default();
        for entry in bundle["entry"].as_array().into_iter().flatten() {
            let r = &entry["resource"];
            if r["resourceType"] != "SupplyRequest" {
                continue;
            }
            let number = key_of(r);
            if let Some(id) = r["id"].as_str() {
                orders
                    .0
                    .insert(format!("SupplyRequest/{id}"), number.clone());
            }
            if let Some(url) = entry["fullUrl"].as_str() {
                orders.0.insert(url.to_owned(), number);
            }
        }
        orders
    }

    /// The business number of the order `reference` names, if the Bundle
    /// has it (also when the reference is absolute and ends in
    /// `SupplyRequest/<id>`).
    fn number(&self, reference: &str) -> Option<String> {
        self.0.get(reference).cloned().or_else(|| {
            let mut tail = reference.rsplit('/');
            let (id, kind) = (tail.next()?, tail.next()?);
            self.0.get(&format!("{kind}/{id}")).cloned()
        })
    }
}

fn resource(
    r: &Value,
    source: &str,
    at: &str,
    orders: &Orders,
    out: &mut Vec<Record>,
) -> Result<(), String> {
    let kind = r["resourceType"]
        .as_str()
        .ok_or("no resourceType: not a FHIR resource")?;
    if kind == "Bundle" {
        for (i, entry) in r["entry"].as_array().into_iter().flatten().enumerate() {
            resource(&entry["resource"], source, at, orders, out)
                .map_err(|e| format!("Bundle entry {i}: {e}"))?;
        }
        return Ok(());
    }
    let id = r["id"].as_str().unwrap_or_default();
    let here = |e: String| format!("{kind}/{id}: {e}");
    let provenance = Provenance {
        source_system: source.to_owned(),
        source_record_id: format!("{kind}/{id}"),
        control_number: r["meta"]["versionId"].as_str().map(str::to_owned),
        received_at: at.to_owned(),
    };
    match kind {
        "SupplyRequest" => push(out, supply_request(r, provenance).map_err(here)?),
        "SupplyDelivery" => push(out, supply_delivery(r, orders, provenance).map_err(here)?),
        "InventoryReport" => {
            for balance in inventory_report(r, &provenance).map_err(here)? {
                push(out, balance);
            }
        }
        "InventoryItem" => push(out, inventory_item(r, provenance).map_err(here)?),
        "Location" => push(
            out,
            (
                key_of(r),
                Location(organization(r, provenance).map_err(here)?),
            ),
        ),
        "Organization" => push(
            out,
            (
                key_of(r),
                Supplier(organization(r, provenance).map_err(here)?),
            ),
        ),
        "Practitioner" => push(out, practitioner(r, provenance).map_err(here)?),
        other => {
            return Err(format!(
                "{other}/{id}: resource type {other} is not supported"
            ));
        }
    }
    Ok(())
}

fn push<E: Entity>(out: &mut Vec<Record>, (key, entity): (String, E)) {
    out.push(
        Record::new(key, serde_json::to_vec(&entity).unwrap_or_default())
            .with_schema(E::SCHEMA)
            .with_topic(E::TOPIC)
            .with_content_type("application/json"),
    );
}

fn key_of(r: &Value) -> String {
    r["identifier"][0]["value"]
        .as_str()
        .or(r["id"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn system_of(url: &str) -> String {
    match url {
        "https://www.gs1.org/gtin" | "urn:oid:1.3.160" => "gtin".into(),
        "http://hl7.org/fhir/sid/ndc" => "ndc".into(),
        "http://www.unspsc.org" | "http://unspsc.org" => "unspsc".into(),
        other => {
            let last = other
                .trim_end_matches('/')
                .rsplit(['/', ':'])
                .next()
                .unwrap_or("fhir");
            let slug: String = last
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect();
            format!(
                "legacy:{}",
                if slug.is_empty() { "fhir".into() } else { slug }
            )
        }
    }
}

fn codings(concept: &Value) -> Vec<Identifier> {
    concept["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(Identifier::new(
                system_of(c["system"].as_str().unwrap_or("fhir")),
                c["code"].as_str()?,
            ))
        })
        .collect()
}

fn identifiers(r: &Value) -> Vec<Identifier> {
    r["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            Some(Identifier::new(
                system_of(i["system"].as_str().unwrap_or("fhir")),
                i["value"].as_str()?,
            ))
        })
        .collect()
}

/// An R4 `itemCodeableConcept`/`itemReference` or an R5 `item` CodeableReference.
fn item_ref(holder: &Value) -> Result<ItemRef, String> {
    let concept = [
        &holder["itemCodeableConcept"],
        &holder["item"]["concept"],
        &holder["item"],
    ]
    .into_iter()
    .find(|c| c["coding"].is_array());
    let reference = [&holder["itemReference"], &holder["item"]["reference"]]
        .into_iter()
        .find(|r| r.is_object());
    let mut ids = concept.map(codings).unwrap_or_default();
    if let Some(r) = reference {
        if let Some(value) = r["identifier"]["value"].as_str() {
            ids.push(Identifier::new(
                system_of(r["identifier"]["system"].as_str().unwrap_or("fhir")),
                value,
            ));
        } else if let Some(reference) = r["reference"].as_str() {
            ids.push(Identifier::new("legacy:fhir", reference));
        }
    }
    if ids.is_empty() {
        return Err("the item has no coding or reference".into());
    }
    let description = concept
        .and_then(|c| c["text"].as_str().or(c["coding"][0]["display"].as_str()))
        .unwrap_or_default();
    Ok(ItemRef {
        identifiers: ids,
        description: description.to_owned(),
    })
}

fn party(reference: &Value) -> Party {
    let mut identifiers = Vec::new();
    if let Some(value) = reference["identifier"]["value"].as_str() {
        identifiers.push(Identifier::new(
            system_of(reference["identifier"]["system"].as_str().unwrap_or("fhir")),
            value,
        ));
    } else if let Some(r) = reference["reference"].as_str() {
        identifiers.push(Identifier::new("legacy:fhir", r));
    }
    Party {
        identifiers,
        name: reference["display"].as_str().map(str::to_owned),
    }
}

fn quantity(q: &Value, what: &str) -> Result<(String, String), String> {
    let value = match &q["value"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.parse::<f64>().is_ok() => s.clone(),
        _ => return Err(format!("{what}.value is missing or not a number")),
    };
    let code = q["code"].as_str().unwrap_or_default();
    let uom = if code.len() == 2
        && code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        code.to_owned()
    } else {
        "EA".to_owned()
    };
    Ok((value, uom))
}

fn date_of(v: &Value, what: &str) -> Result<String, String> {
    let s = v.as_str().ok_or(format!("{what} is missing"))?;
    if s.len() < 10 || s.as_bytes()[4] != b'-' {
        return Err(format!("{what} {s:?} is not a date"));
    }
    Ok(s[..10].to_owned())
}

fn instant_of(v: &Value, what: &str) -> Result<String, String> {
    let s = v.as_str().ok_or(format!("{what} is missing"))?;
    match s.len() {
        10 => Ok(format!("{s}T00:00:00Z")),
        20 if s.ends_with('Z') => Ok(s.to_owned()),
        _ if s.ends_with("+00:00") => Ok(format!("{}Z", &s[..s.len() - 6])),
        _ => Err(format!("{what} {s:?} is not a UTC instant")),
    }
}

fn supply_request(r: &Value, provenance: Provenance) -> Result<(String, PurchaseOrder), String> {
    let po_number = key_of(r);
    let (qty, uom) = quantity(&r["quantity"], "quantity")?;
    let po = PurchaseOrder {
        po_number: po_number.clone(),
        order_date: date_of(&r["authoredOn"], "authoredOn")?,
        supplier: r["supplier"].get(0).map(party).unwrap_or_default(),
        ship_to: party(&r["deliverTo"]),
        bill_to: None,
        buyer: r["requester"].is_object().then(|| party(&r["requester"])),
        currency: "USD".into(),
        need_by: r["occurrenceDateTime"]
            .as_str()
            .map(|d| d[..d.len().min(10)].to_owned()),
        ack_due_at: None,
        lines: vec![PoLine {
            line_number: "1".into(),
            item: item_ref(r)?,
            quantity: qty,
            uom,
            unit_price: "0".into(),
            need_by: None,
        }],
        provenance,
    };
    Ok((po_number, po))
}

fn supply_delivery(
    r: &Value,
    orders: &Orders,
    provenance: Provenance,
) -> Result<(String, GoodsReceipt), String> {
    let receipt_number = key_of(r);
    // The order's business number: given, or that of the SupplyRequest in
    // the same Bundle the reference names; else the reference's id.
    let reference = r["basedOn"][0]["reference"].as_str();
    let po_number = r["basedOn"][0]["identifier"]["value"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| reference.and_then(|x| orders.number(x)))
        .or_else(|| reference.map(|x| x.rsplit('/').next().unwrap_or(x).to_owned()))
        .ok_or("basedOn names no order")?;
    // R4 has one suppliedItem object, R5 a list.
    let supplied: Vec<&Value> = match &r["suppliedItem"] {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![&r["suppliedItem"]],
        _ => return Err("suppliedItem is missing".into()),
    };
    let mut lines = Vec::new();
    for (i, s) in supplied.into_iter().enumerate() {
        let (qty, uom) = quantity(&s["quantity"], &format!("suppliedItem[{i}].quantity"))?;
        lines.push(ReceiptLine {
            po_number: po_number.clone(),
            po_line: (i + 1).to_string(),
            item: item_ref(s).map_err(|e| format!("suppliedItem[{i}]: {e}"))?,
            quantity_received: qty.clone(),
            quantity_accepted: qty,
            uom,
        });
    }
    let receipt = GoodsReceipt {
        receipt_number: receipt_number.clone(),
        received_at: instant_of(&r["occurrenceDateTime"], "occurrenceDateTime")?,
        location: party(&r["destination"]),
        lines,
        provenance,
    };
    Ok((receipt_number, receipt))
}

fn inventory_report(
    r: &Value,
    provenance: &Provenance,
) -> Result<Vec<(String, InventoryBalance)>, String> {
    let as_of = instant_of(&r["reportedDateTime"], "reportedDateTime")?;
    let mut out = Vec::new();
    for (l, listing) in r["inventoryListing"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let location = party(&listing["location"]);
        for (i, entry) in listing["item"].as_array().into_iter().flatten().enumerate() {
            let at = format!("inventoryListing[{l}].item[{i}]");
            let (qty, uom) = quantity(&entry["quantity"], &format!("{at}.quantity"))?;
            let item = item_ref(entry).map_err(|e| format!("{at}: {e}"))?;
            let key = format!(
                "{}@{}",
                item.identifiers[0].value,
                location
                    .identifiers
                    .first()
                    .map_or("", |p| p.value.as_str())
            );
            let mut provenance = provenance.clone();
            provenance.source_record_id = format!("{}/{l}/{i}", provenance.source_record_id);
            out.push((
                key,
                InventoryBalance {
                    item,
                    location: location.clone(),
                    on_hand: qty.clone(),
                    available: qty,
                    uom,
                    as_of: as_of.clone(),
                    provenance,
                },
            ));
        }
    }
    if out.is_empty() {
        return Err("inventoryListing lists no items".into());
    }
    Ok(out)
}

fn inventory_item(r: &Value, provenance: Provenance) -> Result<(String, Item), String> {
    let item_id = r["id"].as_str().ok_or("id is missing")?.to_owned();
    let mut ids = identifiers(r);
    for code in r["code"].as_array().into_iter().flatten() {
        ids.extend(codings(code));
    }
    if ids.is_empty() {
        ids.push(Identifier::new("legacy:fhir", &item_id));
    }
    let base_uom = r["baseUnit"]["coding"][0]["code"]
        .as_str()
        .filter(|c| c.len() == 2)
        .unwrap_or("EA")
        .to_owned();
    let item = Item {
        item_id: item_id.clone(),
        identifiers: ids,
        description: r["name"][0]["name"].as_str().unwrap_or_default().to_owned(),
        base_uom,
        packs: Vec::new(),
        unspsc: None,
        stocked: None,
        patient_chargeable: None,
        provenance,
    };
    Ok((item_id, item))
}

fn organization(r: &Value, provenance: Provenance) -> Result<Organization, String> {
    let mut ids = identifiers(r);
    if ids.is_empty() {
        ids.push(Identifier::new(
            "legacy:fhir",
            r["id"].as_str().ok_or("neither identifier nor id")?,
        ));
    }
    let address = match &r["address"] {
        Value::Array(a) => a.first().and_then(|a| a["text"].as_str()),
        a => a["text"].as_str(),
    };
    Ok(Organization {
        identifiers: ids,
        name: r["name"].as_str().ok_or("name is missing")?.to_owned(),
        address: address.map(str::to_owned),
        parent: r["partOf"].is_object().then(|| party(&r["partOf"])),
        provenance,
    })
}

fn practitioner(r: &Value, provenance: Provenance) -> Result<(String, Worker), String> {
    let worker_id = key_of(r);
    if worker_id.is_empty() {
        return Err("neither identifier nor id".into());
    }
    let name = &r["name"][0];
    let full = name["text"].as_str().map(str::to_owned).unwrap_or_else(|| {
        let given: Vec<&str> = name["given"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        [
            given.join(" "),
            name["family"].as_str().unwrap_or_default().to_owned(),
        ]
        .join(" ")
        .trim()
        .to_owned()
    });
    let worker = Worker {
        worker_id: worker_id.clone(),
        name: if full.is_empty() {
            worker_id.clone()
        } else {
            full
        },
        status: if r["active"].as_bool() == Some(false) {
            "inactive"
        } else {
            "active"
        }
        .into(),
        job_code: r["qualification"][0]["code"]["coding"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        home_cost_center: String::new(),
        provenance,
    };
    Ok((worker_id, worker))
}

plexus_sdk::export_transform!(Fhir);

#[cfg(test)]
mod tests;
