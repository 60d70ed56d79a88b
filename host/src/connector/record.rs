//! Between bus messages and plugin records: what a plugin sees of an input,
//! and the headers every output carries.

use async_nats::HeaderMap;
use async_nats::jetstream::Message;

use crate::bindings::PluginRecord;
use crate::bus::headers;

/// Where an input came from, carried onto everything derived from it.
pub struct Lineage {
    /// Stable identity of the input: its `Plexus-Identity` (set on replayed
    /// records), else its `Nats-Msg-Id`, else `<stream>:<sequence>`.
    pub identity: String,
    source: String,
    hops: Option<String>,
    trace: String,
    /// The facility the record entered at, when it entered at an edge.
    facility: Option<String>,
    /// When its first hop took it in, Unix milliseconds.
    pub origin_ms: u64,
    /// When this hop took it.
    pub taken_at: std::time::SystemTime,
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn header<'a>(map: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    map?.get(name).map(|v| v.as_str()).filter(|v| !v.is_empty())
}

impl Lineage {
    /// Read the lineage of a consumed message, stored at `published_ms`.
    pub fn of(msg: &Message, stream: &str, sequence: u64, published_ms: u64) -> Lineage {
        let h = msg.headers.as_ref();
        let identity = header(h, headers::IDENTITY)
            .or_else(|| header(h, headers::MSG_ID))
            .map_or_else(|| format!("{stream}:{sequence}"), str::to_owned);
        Lineage {
            source: header(h, headers::SOURCE).unwrap_or(&identity).to_owned(),
            hops: header(h, headers::HOPS).map(str::to_owned),
            trace: header(h, headers::TRACE)
                .map_or_else(|| headers::trace_id(&identity), str::to_owned),
            facility: header(h, headers::FACILITY).map(str::to_owned),
            // A record from before this header, or from outside Plexus,
            // started its journey when it was stored.
            // Never later than this hop's input was stored: a header from a
            // fast clock (or a forger) cannot hide latency.
            origin_ms: header(h, headers::ORIGIN_TIME)
                .and_then(|t| t.parse::<u64>().ok())
                .map_or(published_ms, |t| t.min(published_ms)),
            taken_at: std::time::SystemTime::now(),
            identity,
        }
    }

    /// The lineage of a record entering Plexus through a source: its identity is
    /// the source record id, so polling or posting it again yields the same ids.
    pub fn origin(connector: &str, record_id: &str, facility: Option<&str>) -> Lineage {
        let source = format!("{connector}:{record_id}");
        Lineage {
            identity: record_id.to_owned(),
            trace: headers::trace_id(&source),
            source,
            hops: None,
            facility: facility.map(str::to_owned),
            origin_ms: now_ms(),
            taken_at: std::time::SystemTime::now(),
        }
    }

    /// Its trace id (`Plexus-Trace`).
    pub fn trace(&self) -> &str {
        &self.trace
    }

    /// Headers for output `index` of `connector` (at `hop`, `connector@version`).
    pub fn output_headers(
        &self,
        connector: &str,
        hop: &str,
        index: usize,
        record: &PluginRecord,
    ) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in &record.headers {
            if !headers::is_reserved(name) && valid_header(name, value) {
                h.append(name.as_str(), value.as_str());
            }
        }
        h.insert(
            headers::MSG_ID,
            headers::keyed_output_id(connector, &self.identity, index, &record.key).as_str(),
        );
        if !record.key.is_empty() && valid_header(headers::KEY, &record.key) {
            h.insert(headers::KEY, record.key.as_str());
        }
        if let Some(schema) = record
            .schema
            .as_deref()
            .filter(|s| valid_header(headers::SCHEMA, s))
        {
            h.insert(headers::SCHEMA, schema);
        }
        if let Some(ct) = record
            .content_type
            .as_deref()
            .filter(|s| valid_header(headers::CONTENT_TYPE, s))
        {
            h.insert(headers::CONTENT_TYPE, ct);
        }
        h.insert(headers::SOURCE, self.source.as_str());
        let hops = match &self.hops {
            Some(earlier) => format!("{earlier},{hop}"),
            None => hop.to_owned(),
        };
        h.insert(headers::HOPS, hops.as_str());
        h.insert(headers::TRACE, self.trace.as_str());
        h.insert(headers::ORIGIN_TIME, self.origin_ms.to_string().as_str());
        if let Some(facility) = self
            .facility
            .as_deref()
            .filter(|f| valid_header(headers::FACILITY, f))
        {
            h.insert(headers::FACILITY, facility);
        }
        h
    }
}

/// The plugin's view of a consumed message. Reserved headers are kept out of
/// `headers`; the key, schema and content type arrive in their own fields.
pub fn to_plugin_record(msg: &Message) -> PluginRecord {
    let h = msg.headers.as_ref();
    let mut user_headers = Vec::new();
    if let Some(map) = h {
        for (name, values) in map.iter() {
            let name: &str = name.as_ref();
            if headers::is_reserved(name) || name.eq_ignore_ascii_case(headers::CONTENT_TYPE) {
                continue;
            }
            for value in values {
                user_headers.push((name.to_owned(), value.as_str().to_owned()));
            }
        }
    }
    PluginRecord {
        key: header(h, headers::KEY).unwrap_or_default().to_owned(),
        payload: msg.payload.to_vec(),
        headers: user_headers,
        schema: header(h, headers::SCHEMA).map(str::to_owned),
        content_type: header(h, headers::CONTENT_TYPE).map(str::to_owned),
        topic: None,
    }
}

/// NATS headers cannot carry line breaks, and names cannot hold `:` or spaces.
fn valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !value.bytes().any(|b| b == b'\r' || b == b'\n')
}

/// A header value safe to send: line breaks become spaces, and it is cut at 1 KiB.
pub fn header_value(text: &str) -> String {
    let mut value: String = text
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    if value.len() > 1024 {
        let mut cut = 1024;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
    }
    value
}

/// Whether `topic` may be appended to a subject.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
