//! Publishing records to JetStream: send every one, then wait until each is
//! stored. Callers ack inputs or commit cursors only after this returns Ok.

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;

/// One record on its way to the bus.
pub(super) struct Outgoing {
    pub(super) subject: String,
    pub(super) headers: HeaderMap,
    pub(super) payload: Bytes,
}

/// Why records were not published.
pub(super) enum PublishFailure {
    /// A record can never be published (larger than the bus takes): the
    /// input is at fault, not the bus.
    Unpublishable(String),
    /// The bus did not store them now; try again later.
    Bus(String),
}

/// Publish all of `records`; the count once JetStream has stored each one
/// (a duplicate id counts: JetStream already has it).
pub(super) async fn publish_all(
    js: &jetstream::Context,
    records: Vec<Outgoing>,
) -> Result<u64, PublishFailure> {
    let mut acks = Vec::with_capacity(records.len());
    for (index, record) in records.into_iter().enumerate() {
        let size = record.payload.len();
        let publish = PublishMessage::build()
            .payload(record.payload)
            .headers(record.headers);
        match js.send_publish(record.subject, publish).await {
            Ok(ack) => acks.push(ack),
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                return Err(PublishFailure::Unpublishable(format!(
                    "output {index} is {size} bytes, more than the bus's maximum message size"
                )));
            }
            Err(e) => return Err(PublishFailure::Bus(e.to_string())),
        }
    }
    let n = acks.len() as u64;
    for ack in acks {
        ack.await.map_err(|e| PublishFailure::Bus(e.to_string()))?;
    }
    Ok(n)
}

/// The subject for a record with an optional topic under `to`.
pub(super) fn subject(to: &str, topic: Option<&str>) -> Result<String, String> {
    match topic {
        None => Ok(to.to_owned()),
        Some(topic) if super::record::valid_topic(topic) => Ok(format!("{to}.{topic}")),
        Some(topic) => Err(format!("plugin returned an invalid topic {topic:?}")),
    }
}
