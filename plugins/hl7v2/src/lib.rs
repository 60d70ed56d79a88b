//! `hl7v2`: HL7 v2 (2.5+) supply-chain and workforce messages to the
//! canonical model, published to `<to>.<entity>`. See [`map`] for which
//! message becomes what.
//!
//! Input is one message or a batch (FHS/BHS envelopes, several MSH), as the
//! `mllp` listener or a `file-drop` source delivers it. Encoding characters
//! are read from each MSH; escape sequences are decoded; repetitions and
//! components are handled. A message that cannot be mapped is a permanent
//! error naming the segment, the field and the reason.
//!
//! | config key | meaning | default |
//! |---|---|---|
//! | `source_system` | provenance `source_system` | `hl7:<MSH-3>` |

pub mod map;
pub mod message;

use plexus_sdk::{Error, Record, Transform, clock, config};

struct Hl7;

impl Transform for Hl7 {
    fn transform(input: Record) -> Result<Vec<Record>, Error> {
        let text = std::str::from_utf8(&input.payload)
            .map_err(|e| Error::Permanent(format!("not UTF-8 text at byte {}", e.valid_up_to())))?;
        convert(
            text,
            &config::get("source_system").unwrap_or_default(),
            &clock::now_rfc3339(),
        )
        .map_err(Error::Permanent)
    }
}

/// Every message in `text` to canonical records.
pub fn convert(text: &str, source_system: &str, received_at: &str) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    for (i, chunk) in split_messages(text).into_iter().enumerate() {
        let message =
            message::Message::parse(&chunk).map_err(|e| format!("message {}: {e}", i + 1))?;
        for (key, schema, topic, json) in map::message(&message, source_system, received_at)
            .map_err(|e| format!("message {}: {e}", i + 1))?
        {
            records.push(
                Record::new(key, serde_json::to_vec(&json).unwrap_or_default())
                    .with_schema(schema)
                    .with_topic(topic)
                    .with_content_type("application/json"),
            );
        }
    }
    if records.is_empty() {
        return Err("no HL7 v2 message found".into());
    }
    Ok(records)
}

/// Split a batch at each MSH, dropping FHS/BHS/BTS/FTS envelope segments.
fn split_messages(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for segment in text.split(['\r', '\n']).filter(|s| !s.trim().is_empty()) {
        let id = segment.get(..3).unwrap_or(segment);
        match id {
            "FHS" | "BHS" | "BTS" | "FTS" => {}
            "MSH" => out.push(format!("{segment}\r")),
            _ => match out.last_mut() {
                Some(message) => {
                    message.push_str(segment);
                    message.push('\r');
                }
                None => out.push(format!("{segment}\r")),
            },
        }
    }
    out
}

plexus_sdk::export_transform!(Hl7);

#[cfg(test)]
mod tests;
