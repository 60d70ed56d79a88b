//! The sink handler: hand each consumed record to the plugin's `deliver` with
//! an idempotency key stable across redeliveries, and settle it by the outcome.
//!
//! - `ok` → ack;
//! - `retry-after(ms)` → nak with that delay, or dead-letter once
//!   `max_deliver` deliveries have failed;
//! - `permanent` or a fault → dead-letter, then terminate;
//! - released unrun by a stop during a runaway pause → nak for the next version.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Message;

use super::consume::Handler;
use super::record::to_plugin_record;
use super::settle::Settler;
use crate::bindings::sink::{Delivery, Outcome};
use crate::bus::headers;
use crate::plugin::{FaultKind, Pool};

pub(super) struct Sink {
    pub(super) pool: Pool,
    pub(super) settle: Settler,
}

impl Handler for Sink {
    fn name(&self) -> &str {
        &self.settle.name
    }

    fn stopping(&self) {
        self.pool.stop();
    }

    async fn handle(self: Arc<Self>, msg: Message) {
        let name = &self.settle.name;
        let metrics = &self.settle.metrics;
        let Some((lineage, deliveries)) = self.settle.receive(&msg) else {
            return;
        };
        let delivery = Delivery {
            idempotency_key: headers::output_id(name, &lineage.identity, 0),
            record: to_plugin_record(&msg),
        };

        let result = self.pool.deliver(vec![delivery]).await;

        let outcome = match result {
            Ok(mut outcomes) if outcomes.len() == 1 => outcomes.pop(),
            Ok(outcomes) => {
                let reason = format!(
                    "the plugin returned {} outcomes for 1 delivery",
                    outcomes.len()
                );
                metrics.error(name, "permanent");
                return self
                    .settle
                    .dead_letter(&msg, &lineage, deliveries, &reason)
                    .await;
            }
            Err(fault) if fault.kind == FaultKind::Released => {
                return self
                    .settle
                    .nak(&msg, deliveries, Some(Duration::ZERO))
                    .await;
            }
            Err(fault) if fault.kind == FaultKind::Instantiate => {
                // The host could not make an instance (the pool was full):
                // not the record's fault, so it waits and comes back.
                metrics.error(name, fault.kind.as_str());
                tracing::warn!(connector = %name, record = %lineage.identity, %fault, "No plugin instance; the record will be retried.");
                return self.settle.nak(&msg, deliveries, None).await;
            }
            Err(fault) => {
                metrics.error(name, fault.kind.as_str());
                tracing::warn!(connector = %name, record = %lineage.identity, %fault, "Plugin instance discarded.");
                return self
                    .settle
                    .dead_letter(&msg, &lineage, deliveries, &fault.to_string())
                    .await;
            }
        };
        match outcome {
            Some(Outcome::Ok) => {
                metrics.records_out(name, 1);
                self.settle.traced(&lineage, "delivered");
                if let Err(error) = msg.ack().await {
                    tracing::warn!(connector = %name, %error, "Ack failed; the receiver will see the idempotency key again.");
                }
            }
            Some(Outcome::RetryAfter(ms)) => {
                metrics.error(name, "retryable");
                let delay =
                    Duration::from_millis(ms).max(self.settle.delivery.backoff_after(deliveries));
                let reason = format!("the receiver asked to retry after {ms}ms");
                self.settle
                    .retry_or_dead_letter(&msg, &lineage, deliveries, &reason, Some(delay))
                    .await;
            }
            Some(Outcome::Permanent(reason)) => {
                metrics.error(name, "permanent");
                self.settle
                    .dead_letter(&msg, &lineage, deliveries, &reason)
                    .await;
            }
            None => {}
        }
    }
}
