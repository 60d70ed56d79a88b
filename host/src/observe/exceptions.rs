//! The business view: the exceptions the matchers running here published,
//! read back from the bus for the dashboard. Each exception's latest record
//! (the highest `sequence` per `exception_id`) says where it stands.

use std::collections::BTreeMap;

use async_nats::jetstream;

/// The schema whose records are read.
pub const SCHEMA: &str = "match-exception/2";
/// The most recent records read per subject: the page stays quick however
/// long the stream grows.
const MOST_RECENT: u64 = 100_000;

/// One exception as it stands, with the record that says so.
#[derive(Debug, Clone)]
pub struct Standing {
    /// The latest record.
    pub record: serde_json::Value,
    /// Its `Nats-Msg-Id`, for its lineage.
    pub msg_id: String,
}

/// The latest record of every exception published under `subjects`
/// (each a matcher's `<to>`), by exception id.
pub async fn read(
    js: &jetstream::Context,
    subjects: &[String],
) -> anyhow::Result<BTreeMap<String, Standing>> {
    let mut latest: BTreeMap<String, Standing> = BTreeMap::new();
    for to in subjects {
        let filter = format!("{to}.>");
        let Ok(name) = js.stream_by_subject(&filter).await else {
            continue; // nothing published yet
        };
        crate::bus::read_recent(js, &name, Some(filter), MOST_RECENT, false, |msg| {
            let header = |name| {
                msg.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            if header(crate::bus::headers::SCHEMA).as_deref() != Some(SCHEMA) {
                return;
            }
            let Ok(record) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else {
                return;
            };
            let Some(id) = record["exception_id"].as_str().map(str::to_owned) else {
                return;
            };
            let newer = latest
                .get(&id)
                .is_none_or(|s| s.record["sequence"].as_u64() <= record["sequence"].as_u64());
            if newer {
                let msg_id = header(crate::bus::headers::MSG_ID).unwrap_or_default();
                latest.insert(id, Standing { record, msg_id });
            }
        })
        .await?;
    }
    Ok(latest)
}
