//! `mllp`: the decoder behind an MLLP listener (`listen = "mllp://…"`).
//!
//! Splits what arrives — one HL7 v2 message, or a batch wrapped in
//! FHS/BHS…BTS/FTS — into one record per message, keyed by MSH-10 (the
//! message control id), with the message type (MSH-9) in an `HL7-Message-Type`
//! header. Encoding characters are read from each MSH. Input that is not HL7
//! v2 is a permanent error naming the segment and the reason, which the
//! listener returns to the sender as `AR`.

use plexus_sdk::{Error, PollResult, Record, Source};

/// One HL7 v2 message found in the input.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    /// MSH-10.
    pub control_id: String,
    /// MSH-9, e.g. `OMS^O05^OMS_O05`.
    pub message_type: String,
    /// The message's segments, each ended by `\r`.
    pub text: String,
}

/// Split `input` into messages. Segments may end in `\r`, `\n` or `\r\n`.
pub fn split(input: &[u8]) -> Result<Vec<Message>, String> {
    let text = std::str::from_utf8(input)
        .map_err(|e| format!("not UTF-8 text at byte {}", e.valid_up_to()))?;
    let mut messages: Vec<Message> = Vec::new();
    for (n, segment) in text
        .split(['\r', '\n'])
        .enumerate()
        .filter(|(_, s)| !s.trim().is_empty())
    {
        let segment_no = n + 1;
        let id = segment.get(..3).unwrap_or(segment);
        match id {
            "FHS" | "BHS" | "BTS" | "FTS" => continue,
            "MSH" => {
                let separator = segment
                    .chars()
                    .nth(3)
                    .ok_or_else(|| format!("segment {segment_no}: MSH has no field separator"))?;
                let fields: Vec<&str> = segment.split(separator).collect();
                let field = |n: usize| fields.get(n - 1).copied().unwrap_or_default();
                if field(2).len() < 4 {
                    return Err(format!(
                        "segment {segment_no}: MSH-2 encoding characters {:?} are incomplete",
                        field(2)
                    ));
                }
                let control_id = field(10);
                if control_id.is_empty() {
                    return Err(format!(
                        "segment {segment_no}: MSH-10 (message control id) is empty"
                    ));
                }
                messages.push(Message {
                    control_id: control_id.to_owned(),
                    message_type: field(9).to_owned(),
                    text: String::new(),
                });
            }
            _ if !id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                || id.len() != 3 =>
            {
                return Err(format!(
                    "segment {segment_no}: {:?} is not an HL7 segment",
                    truncate(segment)
                ));
            }
            _ if messages.is_empty() => {
                return Err(format!("segment {segment_no}: {id} before any MSH segment"));
            }
            _ => {}
        }
        if let Some(message) = messages.last_mut() {
            message.text.push_str(segment);
            message.text.push('\r');
        }
    }
    if messages.is_empty() {
        return Err("no MSH segment: not an HL7 v2 message".into());
    }
    Ok(messages)
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(40).map_or(s, |(i, _)| &s[..i])
}

struct Mllp;

impl Source for Mllp {
    fn poll(_cursor: Option<String>) -> Result<PollResult, Error> {
        Err(Error::Permanent(
            "the mllp plugin decodes messages from a listener; give it `listen`, not `schedule`"
                .into(),
        ))
    }

    fn decode(input: Vec<u8>) -> Result<Vec<Record>, Error> {
        let messages = split(&input).map_err(Error::Permanent)?;
        Ok(messages
            .into_iter()
            .map(|m| {
                Record::new(m.control_id, m.text)
                    .with_content_type("application/hl7-v2")
                    .with_header("HL7-Message-Type", m.message_type)
            })
            .collect())
    }
}

plexus_sdk::export_source!(Mllp);

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = "MSH|^~\\&|MMS|STMARYS|ERP|HQ|20260522083000||OMS^O05^OMS_O05|REQ-1001|P|2.5\rORC|NW|REQ-1001\rRQD|1|4471^Gauze||10|BX\r";

    #[test]
    fn one_message() {
        let got = split(ORDER.as_bytes()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].control_id, "REQ-1001");
        assert_eq!(got[0].message_type, "OMS^O05^OMS_O05");
        assert_eq!(got[0].text, ORDER);
    }

    #[test]
    fn batches_are_split_and_newlines_accepted() {
        let batch = format!(
            "FHS|^~\\&|MMS\nBHS|^~\\&|MMS\n{}\n{}\nBTS|2\nFTS|1\n",
            ORDER.trim_end().replace('\r', "\n"),
            "MSH#^~\\&#MMS#STMARYS#ERP#HQ#20260522#x#MFN^M16#ITEM-7#P#2.6\nITM#4471"
        );
        let got = split(batch.as_bytes()).unwrap();
        let ids: Vec<&str> = got.iter().map(|m| m.control_id.as_str()).collect();
        assert_eq!(ids, ["REQ-1001", "ITEM-7"]);
        assert_eq!(got[1].message_type, "MFN^M16");
        assert_eq!(
            got[1].text,
            "MSH#^~\\&#MMS#STMARYS#ERP#HQ#20260522#x#MFN^M16#ITEM-7#P#2.6\rITM#4471\r"
        );
    }

    proptest::proptest! {
        /// Fuzz: any bytes split into messages or give an error, never a panic.
        #[test]
        fn fuzz_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = split(&bytes);
        }
    }

    #[test]
    fn garbage_is_refused_with_where() {
        assert_eq!(
            split(b"hello world").unwrap_err(),
            "segment 1: \"hello world\" is not an HL7 segment"
        );
        assert_eq!(
            split(b"PID|1\rMSH|^~\\&|a").unwrap_err(),
            "segment 1: PID before any MSH segment"
        );
        assert_eq!(
            split(b"MSH|^~\\&|A|B|C|D|E||ADT^A01||P|2.5").unwrap_err(),
            "segment 1: MSH-10 (message control id) is empty"
        );
        assert_eq!(
            split(b"").unwrap_err(),
            "no MSH segment: not an HL7 v2 message"
        );
        assert!(split(&[0xff, 0xfe]).unwrap_err().starts_with("not UTF-8"));
    }
}
