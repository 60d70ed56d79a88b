//! The transform run loop: fetch a batch from the durable consumer, run each
//! record through a warm instance, publish the outputs, and only then ack.
//!
//! Outcomes per input record:
//! - outputs published and acknowledged by JetStream → ack;
//! - retryable error → nak with the connector's backoff, or dead-letter once
//!   `max_deliver` deliveries have failed;
//! - permanent error, trap, timeout, memory cap → dead-letter, then terminate;
//! - the bus refused a publish → nak with backoff (the plugin is not blamed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{self, Message};
use futures::StreamExt as _;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::record::{Lineage, header_value, to_plugin_record, valid_topic};
use crate::bindings::{PluginError, PluginRecord};
use crate::bus::headers;
use crate::config::{ConnectorSpec, Delivery};
use crate::observe::Metrics;
use crate::plugin::{Plugin, TransformPool};

/// Records asked for in one pull.
const BATCH: usize = 256;
/// How long one pull waits for records when the stream is idle. A stopping
/// connector finishes its current pull, so this bounds how long a stop takes.
const PULL_WAIT: Duration = Duration::from_millis(500);

pub(super) struct Runner {
    name: String,
    /// `connector@plugin-version`, appended to `Plexus-Hops`.
    hop: String,
    to: String,
    delivery: Delivery,
    concurrency: usize,
    pool: TransformPool,
    js: jetstream::Context,
    metrics: Arc<Metrics>,
}

/// Why outputs could not be published.
enum PublishFailure {
    /// The plugin produced something unpublishable: the record's fault.
    Invalid(String),
    /// The bus did not take it: try again later.
    Bus(String),
}

impl Runner {
    pub(super) fn new(
        spec: &ConnectorSpec,
        plugin: &Plugin,
        to: String,
        pool: TransformPool,
        js: jetstream::Context,
        metrics: Arc<Metrics>,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            name: spec.name.clone(),
            hop: format!("{}@{}", spec.name, plugin.version()),
            to,
            delivery: spec.delivery.clone(),
            concurrency: spec.limits.concurrency,
            pool,
            js,
            metrics,
        })
    }

    pub(super) async fn run(
        self: Arc<Self>,
        consumer: PullConsumer,
        mut stop: watch::Receiver<bool>,
    ) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut in_flight = JoinSet::new();
        let mut pull_failures = 0u32;
        while !*stop.borrow() {
            let pull = consumer
                .batch()
                .max_messages(BATCH)
                .expires(PULL_WAIT)
                .messages();
            let mut batch = tokio::select! {
                batch = pull => batch,
                _ = stop.changed() => break,
            };
            let batch = match batch.as_mut() {
                Ok(batch) => {
                    pull_failures = 0;
                    batch
                }
                Err(error) => {
                    pull_failures += 1;
                    tracing::warn!(connector = %self.name, %error, "Pull from the bus failed; retrying.");
                    let pause = Duration::from_millis(100 * u64::from(pull_failures.min(20)));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = stop.changed() => break,
                    }
                }
            };
            // A pull is finished even when stopping: what the server has handed
            // us is processed rather than left to time out.
            while let Some(msg) = batch.next().await {
                let msg = match msg {
                    Ok(msg) => msg,
                    Err(error) => {
                        tracing::debug!(connector = %self.name, %error, "Pull ended early.");
                        break;
                    }
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let this = self.clone();
                in_flight.spawn(async move {
                    this.process(msg).await;
                    drop(permit);
                });
                while in_flight.try_join_next().is_some() {}
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    async fn process(&self, msg: Message) {
        self.metrics.record_in(&self.name);
        let (stream, sequence, deliveries) = match msg.info() {
            Ok(info) => (
                info.stream.to_owned(),
                info.stream_sequence,
                u32::try_from(info.delivered).unwrap_or(u32::MAX),
            ),
            Err(error) => {
                tracing::warn!(connector = %self.name, %error, "Message without JetStream metadata; skipped.");
                return;
            }
        };
        let lineage = Lineage::of(&msg, &stream, sequence);
        let input = to_plugin_record(&msg);

        let started = Instant::now();
        let result = self.pool.call(&input).await;
        self.metrics
            .plugin_call(&self.name, started.elapsed().as_secs_f64());

        match result {
            Ok(Ok(outputs)) => match self.publish(&lineage, outputs).await {
                Ok(n) => {
                    self.metrics.records_out(&self.name, n);
                    if let Err(error) = msg.ack().await {
                        // The record will come back and its outputs be dropped as duplicates.
                        tracing::warn!(connector = %self.name, %error, "Ack failed.");
                    }
                }
                Err(PublishFailure::Invalid(reason)) => {
                    self.metrics.error(&self.name, "permanent");
                    self.dead_letter(&msg, &lineage, deliveries, &reason).await;
                }
                Err(PublishFailure::Bus(reason)) => {
                    self.metrics.error(&self.name, "publish");
                    tracing::warn!(connector = %self.name, record = %lineage.identity, %reason, "Publish failed; will retry.");
                    self.nak(&msg, deliveries).await;
                }
            },
            Ok(Err(PluginError::Retryable(reason))) => {
                self.metrics.error(&self.name, "retryable");
                if deliveries >= self.delivery.max_deliver {
                    let reason = format!("gave up after {deliveries} deliveries: {reason}");
                    self.dead_letter(&msg, &lineage, deliveries, &reason).await;
                } else {
                    tracing::debug!(connector = %self.name, record = %lineage.identity, %reason, "Retryable error.");
                    self.nak(&msg, deliveries).await;
                }
            }
            Ok(Err(PluginError::Permanent(reason))) => {
                self.metrics.error(&self.name, "permanent");
                self.dead_letter(&msg, &lineage, deliveries, &reason).await;
            }
            Err(fault) => {
                self.metrics.error(&self.name, fault.kind.as_str());
                tracing::warn!(connector = %self.name, record = %lineage.identity, %fault, "Plugin instance discarded.");
                self.dead_letter(&msg, &lineage, deliveries, &fault.to_string())
                    .await;
            }
        }
    }

    /// Publish every output and wait until JetStream has stored each one.
    async fn publish(
        &self,
        lineage: &Lineage,
        outputs: Vec<PluginRecord>,
    ) -> Result<u64, PublishFailure> {
        let mut subjects = Vec::with_capacity(outputs.len());
        for output in &outputs {
            subjects.push(match output.topic.as_deref() {
                None => self.to.clone(),
                Some(topic) if valid_topic(topic) => format!("{}.{topic}", self.to),
                Some(topic) => {
                    return Err(PublishFailure::Invalid(format!(
                        "plugin returned an invalid topic {topic:?}"
                    )));
                }
            });
        }
        let mut acks = Vec::with_capacity(outputs.len());
        for (index, (output, subject)) in outputs.into_iter().zip(subjects).enumerate() {
            let headers = lineage.output_headers(&self.name, &self.hop, index, &output);
            let publish = Publish::build()
                .payload(output.payload.into())
                .headers(headers);
            let ack = self
                .js
                .send_publish(subject, publish)
                .await
                .map_err(|e| PublishFailure::Bus(e.to_string()))?;
            acks.push(ack);
        }
        let n = acks.len() as u64;
        for ack in acks {
            ack.await.map_err(|e| PublishFailure::Bus(e.to_string()))?;
        }
        Ok(n)
    }

    async fn nak(&self, msg: &Message, deliveries: u32) {
        let delay = self.delivery.backoff_after(deliveries);
        if let Err(error) = msg.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::warn!(connector = %self.name, %error, "Nak failed; the record returns after ack_wait.");
        }
    }

    /// Send the original record, with why it failed, to the dead-letter
    /// subject; terminate it only once the dead letter is stored.
    async fn dead_letter(&self, msg: &Message, lineage: &Lineage, deliveries: u32, reason: &str) {
        let mut h = msg.headers.clone().unwrap_or_default();
        let id = headers::output_id(&self.name, &format!("dlq:{}", lineage.identity), 0);
        h.insert(headers::MSG_ID, id.as_str());
        h.insert(headers::ERROR, header_value(reason).as_str());
        h.insert(headers::DELIVERIES, deliveries.to_string().as_str());
        h.insert(headers::ORIGINAL_SUBJECT, msg.subject.as_str());
        h.insert(headers::CONNECTOR, self.name.as_str());
        let publish = Publish::build().payload(msg.payload.clone()).headers(h);
        let stored = match self
            .js
            .send_publish(self.delivery.dlq.clone(), publish)
            .await
        {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(_) => {
                self.metrics.dead_lettered(&self.name);
                tracing::warn!(connector = %self.name, record = %lineage.identity, reason, "Record dead-lettered.");
                if let Err(error) = msg.ack_with(AckKind::Term).await {
                    tracing::warn!(connector = %self.name, %error, "Terminate failed; the record returns and is dead-lettered again (deduplicated).");
                }
            }
            Err(error) => {
                self.metrics.error(&self.name, "publish");
                tracing::error!(connector = %self.name, record = %lineage.identity, %error, "Dead-letter publish failed; will retry.");
                self.nak(msg, deliveries).await;
            }
        }
    }
}
