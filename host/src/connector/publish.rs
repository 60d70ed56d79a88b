//! Publishing records to JetStream with flow control: each connector keeps at
//! most [`WINDOW`] publishes awaiting their acks, and a unit of work (one
//! poll, one message, one transformed record) awaits its acks as it goes, so
//! a poll of a million records flows through in bounded memory and never
//! holds the NATS client's own ack budget, which every connector shares.
//! Callers ack inputs or commit cursors only after this returns Ok.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::Semaphore;

/// Publishes awaiting their acks, per connector. Well under the client's
/// budget ([`CLIENT_ACK_BUDGET`]) so that no connector can take it all.
pub const WINDOW: usize = 256;

/// Publishes awaiting acks across the whole client; with every connector
/// held to [`WINDOW`], reaching it only slows publishing, and acks are
/// always being awaited, so it cannot deadlock.
pub const CLIENT_ACK_BUDGET: usize = 65_536;

/// One record on its way to the bus.
pub(super) struct Outgoing {
    pub(super) subject: String,
    pub(super) headers: HeaderMap,
    pub(super) payload: Bytes,
}

/// Why records were not published.
#[derive(Debug)]
pub(super) enum PublishFailure {
    /// A record can never be published (larger than the bus takes): the
    /// input is at fault, not the bus.
    Unpublishable(String),
    /// The bus did not store them now; try again later.
    Bus(String),
}

impl std::fmt::Display for PublishFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishFailure::Unpublishable(reason) | PublishFailure::Bus(reason) => {
                f.write_str(reason)
            }
        }
    }
}

/// A connector's way onto the bus: the JetStream context and its window.
#[derive(Clone)]
pub(super) struct Publisher {
    pub(super) js: jetstream::Context,
    window: Arc<Semaphore>,
    max_payload: usize,
}

impl Publisher {
    pub(super) fn new(js: jetstream::Context) -> Publisher {
        let max_payload = js.client().server_info().max_payload;
        Publisher {
            js,
            window: Arc::new(Semaphore::new(WINDOW)),
            // 1 MiB, the server's default, until the server has said.
            max_payload: if max_payload == 0 {
                1 << 20
            } else {
                max_payload
            },
        }
    }

    /// The largest message the bus takes, headers included.
    pub(super) fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Publish every record `records` yields; the count once JetStream has
    /// stored each one (a duplicate id counts: JetStream already has it).
    /// Records are taken from the iterator only as the window allows, so a
    /// lazy iterator keeps only the window's worth in memory.
    pub(super) async fn publish_all<I>(&self, records: I) -> Result<u64, PublishFailure>
    where
        I: IntoIterator<Item = Result<Outgoing, PublishFailure>>,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(WINDOW);
        let send = async move {
            for (index, record) in records.into_iter().enumerate() {
                let record = record?;
                let permit = self
                    .window
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| PublishFailure::Bus(e.to_string()))?;
                let size = record.payload.len();
                let publish = PublishMessage::build()
                    .payload(record.payload)
                    .headers(record.headers);
                let ack = match self.js.send_publish(record.subject, publish).await {
                    Ok(ack) => ack,
                    Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                        return Err(PublishFailure::Unpublishable(format!(
                            "output {index} is {size} bytes, more than the bus's maximum message size"
                        )));
                    }
                    Err(e) => return Err(PublishFailure::Bus(e.to_string())),
                };
                if tx.send((ack, permit)).await.is_err() {
                    // The ack side stopped on a failure it reports itself.
                    break;
                }
            }
            Ok(())
        };
        // Acks are awaited while later records are sent; each frees its
        // window slot as it arrives.
        let acked = async move {
            let mut acks = tokio_stream_of(rx)
                .map(|(ack, permit)| async move {
                    let stored = ack.await;
                    drop(permit);
                    stored
                })
                .buffer_unordered(WINDOW);
            let mut n = 0u64;
            while let Some(stored) = acks.next().await {
                stored.map_err(|e| PublishFailure::Bus(e.to_string()))?;
                n += 1;
            }
            Ok(n)
        };
        let ((), n) = futures::future::try_join(send, acked).await?;
        Ok(n)
    }
}

/// An mpsc receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Whether one call's `records` keep within `limits.outputs` and
/// `limits.output_bytes`; why not, if they do not.
pub(super) fn within_output_limits(
    limits: &crate::config::Limits,
    records: &[crate::bindings::PluginRecord],
) -> Result<(), String> {
    if records.len() > limits.outputs {
        return Err(format!(
            "returned {} records, more than limits.outputs ({})",
            records.len(),
            limits.outputs
        ));
    }
    let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
    if bytes > limits.output_bytes {
        return Err(format!(
            "returned {bytes} bytes, more than limits.output_bytes ({})",
            limits.output_bytes
        ));
    }
    Ok(())
}

/// The subject for a record with an optional topic under `to`.
pub(super) fn subject(to: &str, topic: Option<&str>) -> Result<String, String> {
    match topic {
        None => Ok(to.to_owned()),
        Some(topic) if super::record::valid_topic(topic) => Ok(format!("{to}.{topic}")),
        Some(topic) => Err(format!("plugin returned an invalid topic {topic:?}")),
    }
}
