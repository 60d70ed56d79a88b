//! How a consumed record is settled when it did not simply succeed: nak with
//! backoff, or dead-letter with the reason and then terminate.

use std::sync::Arc;

use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, Message};

use super::record::{Lineage, header_value, now_ms};
use crate::bus::{dead_letters, headers};
use crate::capability::{ConnectorContext, redact};
use crate::config::Delivery;
use crate::observe::Metrics;

/// Settles records for one connector.
pub(super) struct Settler {
    pub(super) name: String,
    pub(super) delivery: Delivery,
    pub(super) js: jetstream::Context,
    pub(super) metrics: Arc<Metrics>,
    /// Granted secret values, redacted from every reason.
    pub(super) secrets: Arc<ConnectorContext>,
    /// End-to-end latencies, kept when the connector has a latency SLA.
    pub(super) latency: Option<Arc<crate::observe::sla::Latencies>>,
    /// Where hop spans go, when `[observe] otlp` is set.
    pub(super) spans: Option<Arc<crate::observe::otel::Spans>>,
    /// `transform` or `sink`, for the spans.
    pub(super) kind: &'static str,
    /// The plugin version (digest prefix), for the spans.
    pub(super) plugin: String,
}

impl Settler {
    /// Count a consumed record and read what settling it needs: its lineage
    /// and how often it has been delivered. `None` (logged) for a message
    /// without JetStream metadata, which cannot be acked anyway.
    pub(super) fn receive(&self, msg: &Message) -> Option<(Lineage, u32)> {
        self.metrics.record_in(&self.name);
        let Ok(info) = msg.info() else {
            tracing::warn!(connector = %self.name, "Message without JetStream metadata; skipped.");
            return None;
        };
        let deliveries = u32::try_from(info.delivered).unwrap_or(u32::MAX);
        let published_ms =
            u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let lineage = Lineage::of(msg, info.stream, info.stream_sequence, published_ms);
        // A record's latency counts once: not again when it is redelivered
        // or replayed (an operator's replay is not the flow being late).
        let replayed = msg
            .headers
            .as_ref()
            .is_some_and(|h| h.get(headers::REPLAY_FOR).is_some());
        if let Some(latency) = &self.latency
            && deliveries == 1
            && !replayed
        {
            latency.record(now_ms().saturating_sub(lineage.origin_ms));
        }
        Some((lineage, deliveries))
    }

    /// Record the hop as a span (when spans are exported): the record was
    /// `outcome` (`published`, `delivered`, `dead-lettered`).
    pub(super) fn traced(&self, lineage: &Lineage, outcome: &str) {
        if let Some(spans) = &self.spans {
            spans.hop(&crate::observe::otel::HopSpan {
                trace: lineage.trace(),
                connector: &self.name,
                kind: self.kind,
                plugin: &self.plugin,
                record: &lineage.identity,
                outcome,
                start: lineage.taken_at,
            });
        }
    }

    /// Redeliver after the backoff for this delivery count (or `delay`).
    pub(super) async fn nak(
        &self,
        msg: &Message,
        deliveries: u32,
        delay: Option<std::time::Duration>,
    ) {
        let delay = delay.unwrap_or_else(|| self.delivery.backoff_after(deliveries));
        if let Err(error) = msg.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::warn!(connector = %self.name, %error, "Nak failed; the record returns after ack_wait.");
        }
    }

    /// Retry later, unless this was the last allowed delivery.
    pub(super) async fn retry_or_dead_letter(
        &self,
        msg: &Message,
        lineage: &Lineage,
        deliveries: u32,
        reason: &str,
        delay: Option<std::time::Duration>,
    ) {
        if deliveries >= self.delivery.max_deliver {
            let reason = format!("gave up after {deliveries} deliveries: {reason}");
            self.dead_letter(msg, lineage, deliveries, &reason).await;
        } else {
            tracing::debug!(connector = %self.name, record = %lineage.identity, reason, "Retryable error.");
            self.nak(msg, deliveries, delay).await;
        }
    }

    /// Send the original record, with why it failed, to the dead-letter
    /// subject; terminate it only once the dead letter is stored.
    pub(super) async fn dead_letter(
        &self,
        msg: &Message,
        lineage: &Lineage,
        deliveries: u32,
        reason: &str,
    ) {
        let reason = &redact(&self.secrets.secrets, reason);
        let mut h = headers::without_expectations(msg.headers.as_ref());
        // Keyed by the delivery's own message id: a replayed record carries a
        // new one, so failing again after a replay is a new dead letter rather
        // than a duplicate JetStream would drop.
        let id = {
            let delivered_as = h
                .get(headers::MSG_ID)
                .map_or(lineage.identity.as_str(), |id| id.as_str());
            headers::output_id(&self.name, &format!("dlq:{delivered_as}"), 0)
        };
        h.insert(headers::MSG_ID, id.as_str());
        h.insert(headers::IDENTITY, lineage.identity.as_str());
        h.insert(headers::ERROR, header_value(reason).as_str());
        h.insert(headers::DELIVERIES, deliveries.to_string().as_str());
        h.insert(headers::ORIGINAL_SUBJECT, msg.subject.as_str());
        h.insert(headers::CONNECTOR, self.name.as_str());
        // A body near the bus's size limit moves to the body store rather
        // than pushing the dead letter over it.
        let stored =
            dead_letters::write(&self.js, &self.delivery.dlq, h, msg.payload.clone()).await;
        match stored {
            Ok(_) => {
                self.metrics.dead_lettered(&self.name);
                self.traced(lineage, "dead-lettered");
                tracing::warn!(connector = %self.name, record = %lineage.identity, reason, "Record dead-lettered.");
                if let Err(error) = msg.ack_with(AckKind::Term).await {
                    tracing::warn!(connector = %self.name, %error, "Terminate failed; the record returns and is dead-lettered again (deduplicated).");
                }
            }
            Err(error) => {
                self.metrics.error(&self.name, "publish");
                tracing::error!(connector = %self.name, record = %lineage.identity, error = format!("{error:#}"), "Dead-letter publish failed; will retry.");
                self.nak(msg, deliveries, None).await;
            }
        }
    }
}
