//! Header names on the bus (CONTRACT §3) and the deterministic ids that make
//! re-publishing after a crash harmless.

use sha2::{Digest, Sha256};

/// JetStream's idempotency key.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// Business key.
pub const KEY: &str = "Plexus-Key";
/// Schema id of the payload.
pub const SCHEMA: &str = "Plexus-Schema";
/// `connector:source-record-id` of the record this one descends from.
pub const SOURCE: &str = "Plexus-Source";
/// `connector@plugin-version` hops, oldest first.
pub const HOPS: &str = "Plexus-Hops";
/// Trace id carried unchanged from the first hop.
pub const TRACE: &str = "Plexus-Trace";
/// When the record's first hop took it in, Unix milliseconds: carried
/// unchanged, so every later hop knows its end-to-end latency.
pub const ORIGIN_TIME: &str = "Plexus-Origin-Time";
/// The facility whose edge host the record entered at; carried onto
/// everything derived from it.
pub const FACILITY: &str = "Plexus-Facility";
/// On a record an edge forwarded: its stream sequence at the edge, from
/// which the edge resumes after the last record the hub holds.
pub const EDGE_SEQ: &str = "Plexus-Edge-Seq";
/// JetStream's check that a publish follows the stream's last sequence.
pub const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
/// Why a record was dead-lettered.
pub const ERROR: &str = "Plexus-Error";
/// How many times it was delivered before being dead-lettered.
pub const DELIVERIES: &str = "Plexus-Deliveries";
/// The subject it was consumed from.
pub const ORIGINAL_SUBJECT: &str = "Plexus-Original-Subject";
/// The connector that dead-lettered it.
pub const CONNECTOR: &str = "Plexus-Connector";
/// The record's identity where it differs from its `Nats-Msg-Id`: on a dead
/// letter (which gets an id of its own) and on a replayed record, so that
/// replaying yields the same output ids and sink idempotency keys.
pub const IDENTITY: &str = "Plexus-Identity";
/// On a replayed record: the one connector that is to process it; others
/// consuming the same subject ack it unseen.
pub const REPLAY_FOR: &str = "Plexus-Replay-For";
/// On a dead letter whose body did not fit beside its headers: the object
/// in the dead-letter body store that holds it.
pub const BODY: &str = "Plexus-Body";
/// MIME type of the payload.
pub const CONTENT_TYPE: &str = "Content-Type";

/// Whether a plugin may set this header itself (the `Plexus-` and `Nats-`
/// families belong to the host).
pub fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("plexus-") || lower.starts_with("nats-")
}

/// `headers` without the `Nats-Expected-…` checks they were published with:
/// a record stored once and published again (forwarded, dead-lettered,
/// replayed) must not be held to its first stream's sequences.
pub fn without_expectations(headers: Option<&async_nats::HeaderMap>) -> async_nats::HeaderMap {
    kept(headers, |name| {
        !name.to_ascii_lowercase().starts_with("nats-expected-")
    })
}

/// The headers whose names `keep` accepts, every value of each.
pub fn kept(
    headers: Option<&async_nats::HeaderMap>,
    keep: impl Fn(&str) -> bool,
) -> async_nats::HeaderMap {
    let mut kept = async_nats::HeaderMap::new();
    for (name, values) in headers.into_iter().flat_map(|h| h.iter()) {
        let name: &str = name.as_ref();
        if keep(name) {
            for value in values {
                kept.append(name, value.as_str());
            }
        }
    }
    kept
}

/// The id of output `index` produced by `connector` from the input whose
/// identity is `input`. The same input always yields the same ids, so outputs
/// re-published after a crash or redelivery are dropped by JetStream.
pub fn output_id(connector: &str, input: &str, index: usize) -> String {
    let mut h = Sha256::new();
    h.update(connector.as_bytes());
    h.update([0]);
    h.update(input.as_bytes());
    h.update([0]);
    h.update(index.to_le_bytes());
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{connector}:{hex}")
}

/// The id of output `index`, keyed `key`, of `connector` from `input`. The
/// key is part of it: a plugin whose outputs depend on more than its input
/// (the time, its state) may return another set when a record is
/// redelivered, and a new record at an index an earlier one had must not be
/// dropped as that one's duplicate. Unkeyed outputs get [`output_id`].
pub fn keyed_output_id(connector: &str, input: &str, index: usize, key: &str) -> String {
    if key.is_empty() {
        return output_id(connector, input, index);
    }
    let mut keyed = String::with_capacity(input.len() + key.len() + 1);
    keyed.push_str(input);
    keyed.push('\0');
    keyed.push_str(key);
    output_id(connector, &keyed, index)
}

/// A trace id for a record that arrived without one: derived from its
/// identity, so a redelivery gets the same trace.
pub fn trace_id(input: &str) -> String {
    Sha256::digest(input.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_are_dropped_and_everything_else_kept() {
        let mut h = async_nats::HeaderMap::new();
        h.insert(MSG_ID, "m-1");
        h.insert(EXPECTED_LAST_SEQUENCE, "41");
        h.insert("nats-expected-last-msg-id", "m-0");
        h.append(HOPS, "a@1");
        h.append(HOPS, "b@2");
        let kept = without_expectations(Some(&h));
        assert_eq!(kept.get(MSG_ID).map(|v| v.as_str()), Some("m-1"));
        assert!(kept.get(EXPECTED_LAST_SEQUENCE).is_none());
        assert!(kept.get("Nats-Expected-Last-Msg-Id").is_none());
        assert_eq!(kept.get_all(HOPS).count(), 2);
        assert!(without_expectations(None).is_empty());
    }

    #[test]
    fn output_ids_are_deterministic_and_distinct() {
        assert_eq!(output_id("a", "x", 0), output_id("a", "x", 0));
        assert_ne!(output_id("a", "x", 0), output_id("a", "x", 1));
        assert_ne!(output_id("a", "x", 0), output_id("b", "x", 0));
        assert_ne!(output_id("a", "x1", 0), output_id("a", "x", 1));
        assert!(output_id("a", "x", 0).starts_with("a:"));
    }

    #[test]
    fn a_keyed_output_s_id_depends_on_its_key() {
        let a = keyed_output_id("m", "in-1", 0, "exception-a");
        assert_eq!(a, keyed_output_id("m", "in-1", 0, "exception-a"));
        assert_ne!(
            a,
            keyed_output_id("m", "in-1", 0, "exception-b"),
            "another record at the same place"
        );
        assert_ne!(a, keyed_output_id("m", "in-1", 1, "exception-a"));
        assert_eq!(
            keyed_output_id("m", "in-1", 2, ""),
            output_id("m", "in-1", 2)
        );
    }

    #[test]
    fn reserved_headers() {
        assert!(is_reserved("plexus-key"));
        assert!(is_reserved("Nats-Msg-Id"));
        assert!(!is_reserved("Idempotency-Key"));
    }
}
