//! `x12`: ASC X12 EDI to and from the canonical model.
//!
//! Inbound (the default) takes an interchange — 004010, 005010 or the nearby
//! 0040x versions, any separators, several GS groups and ST transaction sets —
//! and emits one canonical record per transaction set (one per item for 846),
//! published to `<to>.<entity>`:
//!
//! | set | entity | schema | key |
//! |---|---|---|---|
//! | 850 | `purchase_order` | `purchase-order/1` | BEG03 |
//! | 855 | `po_ack` | `po-ack/1` | BAK03 `:` ack date |
//! | 856 | `ship_notice` | `ship-notice/1` | BSN02 |
//! | 810 | `invoice` | `invoice/1` | supplier id `:` BIG02 |
//! | 846 | `inventory_balance` | `inventory-balance/1` | item `@` location |
//!
//! Outbound (`direction = "outbound"`) takes a canonical `purchase-order/1`
//! record and emits its X12 850 interchange (`sender`, `receiver`, `version`
//! from config; control numbers derived from the PO number).
//!
//! Malformed input — truncated envelopes, wrong control counts, bad dates or
//! numbers, unsupported sets — is a permanent error naming the segment and
//! element. GTIN and GLN check digits are verified; a bad one is kept and
//! flagged `check_digit_valid: false`.
//!
//! | config key | meaning | default |
//! |---|---|---|
//! | `direction` | `inbound` or `outbound` | `inbound` |
//! | `source_system` | provenance `source_system` | `x12:<ISA06>` |
//! | `sender`, `receiver` | outbound ISA06/ISA08 | `PLEXUS`, `SUPPLIER` |
//! | `version` | outbound GS08 | `004010` |

pub mod emit;
pub mod map;
pub mod parse;
pub mod values;

use plexus_sdk::canonical::PurchaseOrder;
use plexus_sdk::{Error, Record, Transform, clock, config};

struct X12;

impl Transform for X12 {
    fn transform(input: Record) -> Result<Vec<Record>, Error> {
        match config::get("direction").as_deref() {
            None | Some("inbound") => inbound(
                &input.payload,
                config::get("source_system"),
                &clock::now_rfc3339(),
            )
            .map_err(Error::Permanent),
            Some("outbound") => {
                let settings = Outbound {
                    sender: config::get("sender").unwrap_or_else(|| "PLEXUS".into()),
                    receiver: config::get("receiver").unwrap_or_else(|| "SUPPLIER".into()),
                    version: config::get("version").unwrap_or_else(|| "004010".into()),
                };
                outbound(&input.payload, &settings, &clock::now_compact())
                    .map(|r| vec![r])
                    .map_err(Error::Permanent)
            }
            Some(other) => Err(Error::Permanent(format!(
                "config `direction` {other:?} must be `inbound` or `outbound`"
            ))),
        }
    }
}

/// Interchange bytes to canonical records.
pub fn inbound(
    payload: &[u8],
    source_system: Option<String>,
    received_at: &str,
) -> Result<Vec<Record>, String> {
    let interchange = parse::parse(payload)?;
    let source_system = source_system.unwrap_or_else(|| format!("x12:{}", interchange.sender));
    let ctx = map::Context {
        source_system: &source_system,
        received_at,
    };
    Ok(map::interchange(&interchange, &ctx)?
        .into_iter()
        .map(|m| {
            Record::new(m.key, map::to_bytes(&m.json))
                .with_schema(m.schema)
                .with_topic(m.topic)
                .with_content_type("application/json")
        })
        .collect())
}

/// Outbound interchange settings.
pub struct Outbound {
    /// ISA06.
    pub sender: String,
    /// ISA08.
    pub receiver: String,
    /// GS08.
    pub version: String,
}

/// A canonical purchase order to its 850 interchange, dated `(YYMMDD, HHMM)`.
pub fn outbound(
    payload: &[u8],
    settings: &Outbound,
    (date, time): &(String, String),
) -> Result<Record, String> {
    let po: PurchaseOrder = serde_json::from_slice(payload)
        .map_err(|e| format!("not a purchase-order/1 record: {e}"))?;
    let env = emit::Envelope {
        sender: &settings.sender,
        receiver: &settings.receiver,
        version: &settings.version,
        control: control_number(&po.po_number),
        date,
        time,
    };
    Ok(
        Record::new(po.po_number.clone(), emit::purchase_order(&po, &env))
            .with_content_type("application/edi-x12"),
    )
}

/// A stable control number for a PO: FNV-1a of its number.
pub fn control_number(po_number: &str) -> u32 {
    po_number.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) % 999_999_999
        + 1
}

plexus_sdk::export_transform!(X12);

#[cfg(test)]
mod tests;
