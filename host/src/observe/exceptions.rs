//! The business view: the exceptions the matchers running here published,
//! read back from the bus for the dashboard. Each exception's latest record
//! (the highest `sequence` per `exception_id`) says where it stands.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;

/// The schema whose records are read.
pub const SCHEMA: &str = "match-exception/2";
/// The most recent records read per subject: the page stays quick however
/// long the stream grows.
const MOST_RECENT: u64 = 100_000;
/// How long to wait for the next record before giving up on a read.
const PATIENCE: Duration = Duration::from_secs(5);

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
        let mut stream = js.get_stream(&name).await?;
        let last = stream.info().await?.state.last_sequence;
        let reader = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: filter,
                ack_policy: consumer::AckPolicy::None,
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: last.saturating_sub(MOST_RECENT).max(1),
                },
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await?;
        let mut pending = reader.cached_info().num_pending;
        while pending > 0 {
            let mut batch = reader
                .fetch()
                .max_messages(usize::try_from(pending.min(1000)).unwrap_or(1000))
                .expires(PATIENCE)
                .messages()
                .await?;
            let mut got = 0;
            while let Some(msg) = batch.next().await {
                let msg = msg.map_err(|e| anyhow::anyhow!("{e}"))?;
                got += 1;
                let header = |name| {
                    msg.headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.as_str().to_owned())
                };
                if header(crate::bus::headers::SCHEMA).as_deref() != Some(SCHEMA) {
                    continue;
                }
                let Ok(record) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else {
                    continue;
                };
                let Some(id) = record["exception_id"].as_str().map(str::to_owned) else {
                    continue;
                };
                let newer = latest
                    .get(&id)
                    .is_none_or(|s| s.record["sequence"].as_u64() <= record["sequence"].as_u64());
                if newer {
                    let msg_id = header(crate::bus::headers::MSG_ID).unwrap_or_default();
                    latest.insert(id, Standing { record, msg_id });
                }
            }
            if got == 0 {
                break; // the rest aged out or was purged meanwhile
            }
            pending = pending.saturating_sub(got);
        }
    }
    Ok(latest)
}
