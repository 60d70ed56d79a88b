//! The pull loop shared by transforms and sinks: fetch batches from the
//! durable consumer and hand each record to a handler. Up to [`IN_FLIGHT`]
//! records are in progress at once — most of a record's time is spent
//! waiting for publish acks — while the plugin pool lets only
//! `limits.concurrency` of them into the plugin at a time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt as _;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Records taken but not yet settled, per connector.
pub(super) const IN_FLIGHT: usize = 256;

/// Records asked for in one pull.
const BATCH: usize = 256;
/// How long one pull waits for records when the stream is idle. A stopping
/// connector finishes its current pull, so this bounds how long a stop takes.
const PULL_WAIT: Duration = Duration::from_millis(500);

/// What a connector does with one consumed record; it must ack, nak or
/// terminate it.
pub(super) trait Handler: Send + Sync + 'static {
    /// The connector's name, for logs.
    fn name(&self) -> &str;
    /// Handle and settle one record.
    fn handle(self: Arc<Self>, msg: Message) -> impl Future<Output = ()> + Send;
    /// No more records will be taken; the ones in flight are being finished.
    fn stopping(&self);
}

/// Consume until `stop` turns true, then finish every record already taken.
/// `ordered` settles each record before taking the next, so the plugin sees
/// them in stream order (for stateful plugins such as a matcher).
pub(super) async fn run<H: Handler>(
    handler: Arc<H>,
    consumer: PullConsumer,
    mut stop: watch::Receiver<bool>,
    ordered: bool,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
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
                tracing::warn!(connector = %handler.name(), %error, "Pull from the bus failed; retrying.");
                let pause = Duration::from_millis(100 * u64::from(pull_failures.min(20)));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        // A pull is finished even when stopping: what the server has handed us
        // is processed rather than left to time out.
        while let Some(msg) = batch.next().await {
            let msg = match msg {
                Ok(msg) => msg,
                Err(error) => {
                    tracing::debug!(connector = %handler.name(), %error, "Pull ended early.");
                    break;
                }
            };
            if replayed_for_another(&msg, handler.name()) {
                if let Err(error) = msg.ack().await {
                    tracing::debug!(connector = %handler.name(), %error, "Ack of another connector's replay failed; it returns and is skipped again.");
                }
                continue;
            }
            if ordered {
                handler.clone().handle(msg).await;
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let handler = handler.clone();
            in_flight.spawn(async move {
                handler.handle(msg).await;
                drop(permit);
            });
            while in_flight.try_join_next().is_some() {}
        }
    }
    handler.stopping();
    while in_flight.join_next().await.is_some() {}
}

/// A dead letter replayed to its original subject is meant for the connector
/// that dead-lettered it; every other consumer of that subject already
/// processed the record the first time.
fn replayed_for_another(msg: &Message, name: &str) -> bool {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(crate::bus::headers::REPLAY_FOR))
        .is_some_and(|target| target.as_str() != name)
}
