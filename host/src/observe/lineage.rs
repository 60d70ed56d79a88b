//! A record's lineage, from the headers already on the bus: every record
//! descended from one source record carries that record's `Plexus-Trace`,
//! and its `Plexus-Hops` say which connector and plugin version made it. To
//! trace an id (a `Nats-Msg-Id`, a source record id, a `Plexus-Key`), the
//! streams are read (headers only, the most recent records of each) for the
//! records the id names, then for every record sharing their trace ids —
//! published records, dead letters and replays alike — in time order.

use std::collections::BTreeSet;

use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::StreamExt as _;

use crate::bus::headers;

/// The most recent records read per stream.
const MOST_RECENT: u64 = 200_000;

/// One hop of a record: where it was stored and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hop {
    /// When it was stored (RFC 3339).
    pub time: String,
    /// `received` (a source took it in), `published`, `dead-lettered` or `replayed`.
    pub outcome: String,
    /// The subject it was stored under.
    pub subject: String,
    /// The stream and sequence.
    pub stream: String,
    /// The connector that made it (or dead-lettered it).
    pub connector: String,
    /// The plugin version (digest prefix) of that connector.
    pub plugin: String,
    /// Its `Nats-Msg-Id`.
    pub msg_id: String,
    /// Its trace id.
    pub trace: String,
    /// Its key and schema, or why it was dead-lettered.
    pub detail: String,
}

/// One record read: its place, time and headers.
struct Seen {
    stream: String,
    sequence: u64,
    subject: String,
    time: String,
    /// Its trace id, worked out once.
    trace: String,
    headers: HeaderMap,
}

/// The headers lineage reads, and no others: a stream's worth of records
/// is held in memory at once.
fn compact(headers: Option<&HeaderMap>) -> HeaderMap {
    const USED: [&str; 10] = [
        headers::MSG_ID,
        headers::IDENTITY,
        headers::KEY,
        headers::SOURCE,
        headers::TRACE,
        headers::HOPS,
        headers::SCHEMA,
        headers::ERROR,
        headers::CONNECTOR,
        headers::REPLAY_FOR,
    ];
    let mut kept = HeaderMap::new();
    for name in USED.iter().copied().chain([headers::ORIGINAL_SUBJECT]) {
        if let Some(value) = headers.and_then(|h| h.get(name)) {
            // A dead letter's reason can be long; the page needs its start.
            let value: String = value.as_str().chars().take(300).collect();
            kept.insert(name, value.as_str());
        }
    }
    kept
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).map_or("", |v| v.as_str())
}

/// The record's trace id: its `Plexus-Trace`, or for a record from outside
/// Plexus the one its outputs were given (derived from its identity).
fn trace_of(h: &HeaderMap) -> String {
    let carried = get(h, headers::TRACE);
    if !carried.is_empty() {
        return carried.to_owned();
    }
    let identity = [headers::IDENTITY, headers::MSG_ID]
        .iter()
        .map(|name| get(h, name))
        .find(|v| !v.is_empty())
        .unwrap_or("");
    if identity.is_empty() {
        String::new()
    } else {
        headers::trace_id(identity)
    }
}

/// Whether `id` names this record.
fn named(h: &HeaderMap, id: &str) -> bool {
    if id.is_empty() {
        return false;
    }
    let source = get(h, headers::SOURCE);
    [headers::MSG_ID, headers::IDENTITY, headers::KEY]
        .iter()
        .any(|name| get(h, name) == id)
        || source == id
        || source
            .split_once(':')
            .is_some_and(|(_, record)| record == id)
}

/// The shortest id traced: a shorter one would name too many records.
pub const SHORTEST_ID: usize = 3;
/// The longest id traced.
pub const LONGEST_ID: usize = 512;

/// Why `id` cannot be traced, if it cannot.
pub fn refuse(id: &str) -> Option<String> {
    let n = id.chars().count();
    (!(SHORTEST_ID..=LONGEST_ID).contains(&n))
        .then(|| format!("a record id must be {SHORTEST_ID} to {LONGEST_ID} characters; {n} given"))
}

/// One trace at a time per process: each reads every stream.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Every hop of the records `id` names, oldest first.
pub async fn trace(js: &jetstream::Context, id: &str) -> anyhow::Result<Vec<Hop>> {
    if let Some(reason) = refuse(id) {
        anyhow::bail!(reason);
    }
    let _turn = ONE_AT_A_TIME.acquire().await?;
    let seen = read_all(js).await?;
    let traces: BTreeSet<&str> = seen
        .iter()
        .filter(|s| named(&s.headers, id))
        .map(|s| s.trace.as_str())
        .filter(|t| !t.is_empty())
        .collect();
    let mut hops: Vec<Hop> = seen
        .iter()
        .filter(|s| traces.contains(s.trace.as_str()) || named(&s.headers, id))
        .map(hop)
        .collect();
    hops.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.stream.cmp(&b.stream)));
    Ok(hops)
}

fn hop(s: &Seen) -> Hop {
    let h = &s.headers;
    let last_hop = get(h, headers::HOPS).rsplit(',').next().unwrap_or("");
    let (connector, plugin) = last_hop.split_once('@').unwrap_or((last_hop, ""));
    let error = get(h, headers::ERROR);
    let (outcome, connector, detail) = if !error.is_empty() {
        (
            "dead-lettered",
            get(h, headers::CONNECTOR),
            format!("from {}: {error}", get(h, headers::ORIGINAL_SUBJECT)),
        )
    } else if !get(h, headers::REPLAY_FOR).is_empty() {
        (
            "replayed",
            get(h, headers::REPLAY_FOR),
            format!("sent back to {}", get(h, headers::REPLAY_FOR)),
        )
    } else {
        let described = [headers::KEY, headers::SCHEMA]
            .iter()
            .map(|n| get(h, n))
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        // A source's record is the first hop, and descends from its own.
        let first = !get(h, headers::HOPS).contains(',')
            && get(h, headers::SOURCE).starts_with(&format!("{connector}:"));
        let outcome = if first { "received" } else { "published" };
        (outcome, connector, described)
    };
    Hop {
        time: s.time.clone(),
        outcome: outcome.into(),
        subject: s.subject.clone(),
        stream: format!("{}#{}", s.stream, s.sequence),
        connector: connector.into(),
        plugin: plugin.into(),
        msg_id: get(h, headers::MSG_ID).into(),
        trace: s.trace.clone(),
        detail,
    }
}

/// Every record (headers only) of every stream that carries records, the
/// most recent of each.
async fn read_all(js: &jetstream::Context) -> anyhow::Result<Vec<Seen>> {
    let mut names = js.stream_names();
    let mut streams = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.map_err(|e| anyhow::anyhow!("cannot list the streams: {e}"))?;
        // Key-value buckets, object stores and the audit log hold no records.
        if !(name.starts_with("KV_") || name.starts_with("OBJ_") || name == "plexus-audit") {
            streams.push(name);
        }
    }
    let mut seen = Vec::new();
    for name in streams {
        crate::bus::read_recent(js, &name, None, MOST_RECENT, true, |msg| {
            let Ok(info) = msg.info() else { return };
            seen.push(Seen {
                stream: name.clone(),
                sequence: info.stream_sequence,
                time: {
                    let nanos = info.published.unix_timestamp_nanos();
                    chrono::DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(0))
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                },
                subject: msg.subject.to_string(),
                trace: msg.headers.as_ref().map_or_else(String::new, trace_of),
                headers: compact(msg.headers.as_ref()),
            });
        })
        .await?;
    }
    Ok(seen)
}
