//! The transform handler: run each consumed record through a warm instance,
//! publish the outputs, and only then ack.
//!
//! Outcomes per input record:
//! - outputs published and stored by JetStream → ack;
//! - retryable error → nak with the connector's backoff, or dead-letter once
//!   `max_deliver` deliveries have failed;
//! - permanent error, trap, timeout, memory cap → dead-letter, then terminate;
//! - the bus refused a publish → nak with backoff (the plugin is not blamed);
//! - released unrun by a stop during a runaway pause → nak for the next version.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Message;

use super::consume::Handler;
use super::publish::{Outgoing, PublishFailure, Publisher, subject, within_output_limits};
use super::record::{Lineage, to_plugin_record};
use super::settle::Settler;
use crate::bindings::{PluginError, PluginRecord};
use crate::config::Limits;
use crate::contract::Contracts;
use crate::plugin::{FaultKind, Pool};

pub(super) struct Transform {
    /// `connector@plugin-version`, appended to `Plexus-Hops`.
    pub(super) hop: String,
    pub(super) to: crate::config::Subject,
    pub(super) pool: Pool,
    pub(super) publisher: Publisher,
    pub(super) limits: Limits,
    pub(super) settle: Settler,
    pub(super) contracts: Arc<Contracts>,
}

impl Handler for Transform {
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
        let input = to_plugin_record(&msg);

        let result = self.pool.transform(input).await;

        match result {
            Ok(Ok(outputs)) => {
                let outgoing = match self.outgoing(&lineage, outputs) {
                    Ok(outgoing) => outgoing,
                    Err(reason) => {
                        metrics.error(name, "permanent");
                        return self
                            .settle
                            .dead_letter(&msg, &lineage, deliveries, &reason)
                            .await;
                    }
                };
                match self
                    .publisher
                    .publish_all(outgoing.into_iter().map(Ok))
                    .await
                {
                    Ok(n) => {
                        metrics.records_out(name, n);
                        self.settle.traced(&lineage, "published");
                        if let Err(error) = msg.ack().await {
                            // The record will come back and its outputs be dropped as duplicates.
                            tracing::warn!(connector = %name, %error, "Ack failed.");
                        }
                    }
                    Err(PublishFailure::Unpublishable(reason)) => {
                        metrics.error(name, "permanent");
                        self.settle
                            .dead_letter(&msg, &lineage, deliveries, &reason)
                            .await;
                    }
                    Err(PublishFailure::Bus(reason)) => {
                        metrics.error(name, "publish");
                        tracing::warn!(connector = %name, record = %lineage.identity, %reason, "Publish failed; will retry.");
                        self.settle.nak(&msg, deliveries, None).await;
                    }
                }
            }
            Ok(Err(PluginError::Retryable(reason))) => {
                metrics.error(name, "retryable");
                self.settle
                    .retry_or_dead_letter(&msg, &lineage, deliveries, &reason, None)
                    .await;
            }
            Ok(Err(PluginError::Permanent(reason))) => {
                metrics.error(name, "permanent");
                self.settle
                    .dead_letter(&msg, &lineage, deliveries, &reason)
                    .await;
            }
            Err(fault) if fault.kind == FaultKind::Released => {
                self.settle
                    .nak(&msg, deliveries, Some(Duration::ZERO))
                    .await;
            }
            Err(fault) if fault.kind == FaultKind::Instantiate => {
                // The host could not make an instance (the pool was full):
                // not the record's fault, so it waits and comes back.
                metrics.error(name, fault.kind.as_str());
                tracing::warn!(connector = %name, record = %lineage.identity, %fault, "No plugin instance; the record will be retried.");
                self.settle.nak(&msg, deliveries, None).await;
            }
            Err(fault) => {
                metrics.error(name, fault.kind.as_str());
                tracing::warn!(connector = %name, record = %lineage.identity, %fault, "Plugin instance discarded.");
                self.settle
                    .dead_letter(&msg, &lineage, deliveries, &fault.to_string())
                    .await;
            }
        }
    }
}

impl Transform {
    fn outgoing(
        &self,
        lineage: &Lineage,
        outputs: Vec<PluginRecord>,
    ) -> Result<Vec<Outgoing>, String> {
        within_output_limits(&self.limits, &outputs)
            .map_err(|reason| format!("the plugin {reason}"))?;
        outputs
            .into_iter()
            .enumerate()
            .map(|(index, mut output)| {
                self.contracts
                    .check(&mut output)
                    .map_err(|violation| format!("output {index} {violation}"))?;
                Ok(Outgoing {
                    subject: subject(&self.to, output.topic.as_deref())?,
                    headers: lineage.output_headers(&self.settle.name, &self.hop, index, &output),
                    payload: output.payload.into(),
                })
            })
            .collect()
    }
}
