//! Sources: scheduled polls and inbound messages become records on the bus.
//!
//! A poll's records are published with ids derived from the connector and each
//! source record id (the record's `key`), and the new cursor is committed to
//! the `plexus-cursors` bucket only after every record is stored. A crash in
//! between re-polls from the old cursor, and JetStream drops the duplicates.

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use tokio::sync::watch;

use super::publish::{Outgoing, PublishFailure, publish_all, subject};
use super::record::Lineage;
use super::schedule::Schedule;
use crate::bindings::{PluginError, PluginRecord};
use crate::bus::headers;
use crate::capability::redact;
use crate::config::Delivery;
use crate::contract::Contracts;
use crate::observe::Metrics;
use crate::plugin::Pool;

/// Why an inbound message was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// It can never be taken (undecodable): tell the sender, do not retry.
    #[error("{0}")]
    Rejected(String),
    /// Not now (the bus or the plugin is unavailable): the sender should retry.
    #[error("{0}")]
    Unavailable(String),
}

pub(crate) struct Source {
    pub(super) name: String,
    pub(super) hop: String,
    pub(super) to: String,
    pub(super) pool: Pool,
    pub(super) js: jetstream::Context,
    pub(super) metrics: Arc<Metrics>,
    pub(super) delivery: Delivery,
    pub(super) cursors: kv::Store,
    pub(super) contracts: Arc<Contracts>,
}

impl Source {
    /// Poll on `schedule` until `stop`; a poll still running when the next is
    /// due is never started twice, and failing polls back off.
    pub(super) async fn run_schedule(
        self: Arc<Self>,
        schedule: Schedule,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut first = true;
        let mut failures = 0u32;
        loop {
            let mut wait = schedule.delay(first);
            if failures > 0 {
                wait = wait.max(self.delivery.backoff_after(failures));
            }
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            match self.poll_once().await {
                Ok(n) => {
                    failures = 0;
                    tracing::debug!(connector = %self.name, records = n, "Poll done.");
                }
                Err(reason) => {
                    failures += 1;
                    let reason = redact(&self.pool.context().secrets, &reason);
                    tracing::warn!(connector = %self.name, %reason, failures, "Poll failed; backing off.");
                }
            }
        }
    }

    /// One poll: call the plugin with the committed cursor, publish what it
    /// returns, then commit its new cursor.
    pub(super) async fn poll_once(&self) -> Result<u64, String> {
        let cursor = match self.cursors.get(&self.name).await {
            Ok(value) => value.map(|v| String::from_utf8_lossy(&v).into_owned()),
            Err(e) => return Err(format!("cannot read the cursor: {e}")),
        };
        let result = self.pool.poll(cursor.clone()).await;
        let polled = match result {
            Ok(Ok(polled)) => polled,
            Ok(Err(PluginError::Retryable(reason))) => {
                self.metrics.error(&self.name, "retryable");
                return Err(reason);
            }
            Ok(Err(PluginError::Permanent(reason))) => {
                self.metrics.error(&self.name, "permanent");
                return Err(reason);
            }
            Err(fault) => {
                self.metrics.error(&self.name, fault.kind.as_str());
                return Err(fault.to_string());
            }
        };
        let n = self
            .publish(polled.records, &[])
            .await
            .map_err(|e| e.to_string())?;
        if let Some(next) = polled.cursor.filter(|next| Some(next) != cursor.as_ref()) {
            self.cursors
                .put(&self.name, next.into_bytes().into())
                .await
                .map_err(|e| format!("records published, cursor not committed (they will be re-polled and de-duplicated): {e}"))?;
        }
        Ok(n)
    }

    /// Decode one inbound message and publish its records; returns once every
    /// record is stored.
    pub(crate) async fn ingest(&self, body: bytes::Bytes) -> Result<u64, IngestError> {
        let secrets = &self.pool.context().secrets;
        self.decode_and_publish(body).await.map_err(|e| match e {
            IngestError::Rejected(reason) => IngestError::Rejected(redact(secrets, &reason)),
            IngestError::Unavailable(reason) => IngestError::Unavailable(redact(secrets, &reason)),
        })
    }

    async fn decode_and_publish(&self, body: bytes::Bytes) -> Result<u64, IngestError> {
        let result = self.pool.decode(body.clone()).await;
        let records = match result {
            Ok(Ok(records)) => records,
            Ok(Err(PluginError::Permanent(reason))) => {
                self.metrics.error(&self.name, "permanent");
                return Err(IngestError::Rejected(reason));
            }
            Ok(Err(PluginError::Retryable(reason))) => {
                self.metrics.error(&self.name, "retryable");
                return Err(IngestError::Unavailable(reason));
            }
            Err(fault) => {
                self.metrics.error(&self.name, fault.kind.as_str());
                return Err(IngestError::Rejected(fault.to_string()));
            }
        };
        self.publish(records, &body).await
    }

    async fn publish(
        &self,
        records: Vec<PluginRecord>,
        message: &[u8],
    ) -> Result<u64, IngestError> {
        // Records without a key are identified by the message they came in
        // (hashed only if some record needs it) and their own payload.
        let mut message_id: Option<String> = None;
        self.metrics.records_in(&self.name, records.len() as u64);
        let mut outgoing = Vec::with_capacity(records.len());
        for (index, mut record) in records.into_iter().enumerate() {
            // One bad record refuses the whole poll or message: the cursor
            // stays, and the sender or the next poll sees the reason.
            self.contracts.check(&mut record).map_err(|violation| {
                IngestError::Rejected(format!("record {index} {violation}"))
            })?;
            let id = if record.key.is_empty() {
                let payload_id = headers::trace_id(&String::from_utf8_lossy(&record.payload));
                let message_id = message_id.get_or_insert_with(|| {
                    if message.is_empty() {
                        String::new()
                    } else {
                        headers::trace_id(&String::from_utf8_lossy(message))
                    }
                });
                format!("{message_id}{payload_id}:{index}")
            } else {
                record.key.clone()
            };
            let lineage = Lineage::origin(&self.name, &id);
            let subject =
                subject(&self.to, record.topic.as_deref()).map_err(IngestError::Rejected)?;
            outgoing.push(Outgoing {
                subject,
                headers: lineage.output_headers(&self.name, &self.hop, 0, &record),
                payload: record.payload.into(),
            });
        }
        match publish_all(&self.js, outgoing).await {
            Ok(n) => {
                self.metrics.records_out(&self.name, n);
                Ok(n)
            }
            Err(PublishFailure::Unpublishable(reason)) => {
                self.metrics.error(&self.name, "permanent");
                Err(IngestError::Rejected(reason))
            }
            Err(PublishFailure::Bus(reason)) => {
                self.metrics.error(&self.name, "publish");
                Err(IngestError::Unavailable(format!(
                    "the bus did not store the records: {reason}"
                )))
            }
        }
    }
}
