//! Warm instances of one connector, reused across records.
//!
//! Instantiation happens once per instance, never per record. An instance that
//! traps, runs out of time or hits its memory cap is dropped (its store may be
//! mid-call) and the next call builds a fresh one from the `InstancePre`.
//!
//! A connector whose calls keep faulting — a loop, a memory bomb, a trap on
//! every record — is on probation until a call returns: one call at a time
//! whatever its `limits.concurrency`, each after a pause ([`RUNAWAY_PAUSE`],
//! doubling up to [`RUNAWAY_PAUSE_MAX`]), on the low-priority probation thread
//! ([`crate::engine::probation_thread`]). So a runaway plugin cannot take the
//! host's CPU from its neighbours; its records wait, they are not lost.
//! Stopping the connector ([`Pool::stop`]) cuts the pause short and releases
//! the waiting records for the next version.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use futures::future::BoxFuture;

use super::World;
use crate::bindings::sink::{Delivery, Outcome, Sink};
use crate::bindings::source::Source;
use crate::bindings::source::exports::plexus::connector::source_api::PollResult;
use crate::bindings::transform::Transform;
use crate::bindings::webhook::Webhook;
use crate::bindings::{PluginError, PluginRecord, WebhookRefusal, WebhookRequest};
use crate::capability::{ConnectorContext, PluginState};
use crate::config::Limits;

/// Past the deadline the epoch interrupts wasm code; this extra margin only
/// catches a call stuck in an async host import (kv), which epochs cannot stop.
const HOST_CALL_GRACE: Duration = Duration::from_secs(1);

/// The pause after the first faulting call in a row.
const RUNAWAY_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between calls of a runaway connector.
const RUNAWAY_PAUSE_MAX: Duration = Duration::from_secs(2);

/// The pause before the next call after `strikes` exhausting calls in a row.
fn runaway_pause(strikes: u32) -> Duration {
    match strikes {
        0 => Duration::ZERO,
        n => RUNAWAY_PAUSE
            .saturating_mul(1 << (n - 1).min(16))
            .min(RUNAWAY_PAUSE_MAX),
    }
}

/// A call that did not return normally; the instance has been discarded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Fault {
    /// What went wrong, for metrics.
    pub kind: FaultKind,
    /// What went wrong, for people.
    pub message: String,
}

/// The kinds of [`Fault`], used as the `kind` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Ran past `limits.timeout`.
    Timeout,
    /// Tried to grow past `limits.memory`.
    Memory,
    /// Trapped (a panic, an out-of-bounds access, ...).
    Trap,
    /// Could not be instantiated.
    Instantiate,
    /// Never called: the connector was stopped while paused as a runaway. The
    /// record is released for the next version rather than waited for.
    Released,
}

impl FaultKind {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Timeout => "timeout",
            FaultKind::Memory => "memory",
            FaultKind::Trap => "trap",
            FaultKind::Instantiate => "instantiate",
            FaultKind::Released => "released",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

enum Bindings {
    Transform(Transform),
    Source(Source),
    Sink(Sink),
    Webhook(Webhook),
}

struct Warm {
    store: Store<PluginState>,
    bindings: Bindings,
}

/// One export call; it owns the instance and its arguments while it runs (so
/// a timed-out call drops it, and it can move to the probation thread) and
/// hands the instance back with the result. Boxed so one code path can arm,
/// time and classify every kind of call.
type Call<R> = BoxFuture<'static, (Warm, wasmtime::Result<R>)>;

/// The instances of one version of one connector.
pub struct Pool {
    instances: Arc<Instances>,
    /// At most `limits.concurrency` calls at once, so at most that many instances.
    calls: tokio::sync::Semaphore,
    /// Calls in a row that faulted.
    strikes: AtomicU32,
    /// Held by the one call a connector on probation may make at a time.
    probation: tokio::sync::Mutex<()>,
    /// Set when the connector stops, to cut a runaway pause short.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// What a call needs wherever it runs: how to build an instance, the idle
/// ones, and the connector's limits.
struct Instances {
    pre: World,
    context: Arc<ConnectorContext>,
    limits: Limits,
    idle: Mutex<Vec<Warm>>,
}

fn wrong_world(export: &str) -> wasmtime::Error {
    wasmtime::format_err!("the plugin does not export `{export}`")
}

impl Pool {
    /// A pool that instantiates lazily, up to `limits.concurrency` instances.
    pub fn new(pre: World, context: Arc<ConnectorContext>, limits: Limits) -> Self {
        Pool {
            calls: tokio::sync::Semaphore::new(limits.concurrency.max(1)),
            instances: Arc::new(Instances {
                pre,
                context,
                limits,
                idle: Mutex::new(Vec::new()),
            }),
            strikes: AtomicU32::new(0),
            probation: tokio::sync::Mutex::new(()),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The connector is stopping: calls waiting out a runaway pause, and any
    /// made during one, return [`FaultKind::Released`] at once instead of
    /// holding the stop up for as long as the backlog of pauses.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// The connector this pool serves.
    pub fn context(&self) -> &Arc<ConnectorContext> {
        &self.instances.context
    }

    /// Build one instance now, so the first record does not pay for it and a
    /// broken plugin is found before it is put to work.
    pub async fn warm_up(&self) -> Result<(), Fault> {
        let warm = self.instances.instantiate().await?;
        self.instances.put_back(warm);
        Ok(())
    }

    /// `transform(input)`.
    pub async fn transform(
        &self,
        input: PluginRecord,
    ) -> Result<Result<Vec<PluginRecord>, PluginError>, Fault> {
        self.run(|mut warm| {
            Box::pin(async move {
                let result = match &warm.bindings {
                    Bindings::Transform(b) => b.call_transform(&mut warm.store, &input).await,
                    _ => Err(wrong_world("transform")),
                };
                (warm, result)
            })
        })
        .await
    }

    /// `poll(cursor)`.
    pub async fn poll(
        &self,
        cursor: Option<String>,
    ) -> Result<Result<PollResult, PluginError>, Fault> {
        self.run(|mut warm| {
            Box::pin(async move {
                let result = match &warm.bindings {
                    Bindings::Source(b) => {
                        b.plexus_connector_source_api()
                            .call_poll(&mut warm.store, cursor.as_deref())
                            .await
                    }
                    _ => Err(wrong_world("poll")),
                };
                (warm, result)
            })
        })
        .await
    }

    /// `decode(input)`.
    pub async fn decode(
        &self,
        input: bytes::Bytes,
    ) -> Result<Result<Vec<PluginRecord>, PluginError>, Fault> {
        self.run(|mut warm| {
            Box::pin(async move {
                let result = match &warm.bindings {
                    Bindings::Source(b) => {
                        b.plexus_connector_source_api()
                            .call_decode(&mut warm.store, &input)
                            .await
                    }
                    _ => Err(wrong_world("decode")),
                };
                (warm, result)
            })
        })
        .await
    }

    /// `receive(request)`, for a webhook source.
    pub async fn receive(
        &self,
        request: WebhookRequest,
    ) -> Result<Result<Vec<PluginRecord>, WebhookRefusal>, Fault> {
        self.run(|mut warm| {
            Box::pin(async move {
                let result = match &warm.bindings {
                    Bindings::Webhook(b) => {
                        b.plexus_connector_webhook_api()
                            .call_receive(&mut warm.store, &request)
                            .await
                    }
                    _ => Err(wrong_world("receive")),
                };
                (warm, result)
            })
        })
        .await
    }

    /// Whether the plugin is a webhook source (`world webhook`).
    pub fn is_webhook(&self) -> bool {
        matches!(self.instances.pre, World::Webhook(_))
    }

    /// `deliver(deliveries)`.
    pub async fn deliver(&self, deliveries: Vec<Delivery>) -> Result<Vec<Outcome>, Fault> {
        self.run(|mut warm| {
            Box::pin(async move {
                let result = match &warm.bindings {
                    Bindings::Sink(b) => b.call_deliver(&mut warm.store, &deliveries).await,
                    _ => Err(wrong_world("deliver")),
                };
                (warm, result)
            })
        })
        .await
    }

    /// Lend a warm instance to `call` within the connector's time budget; keep
    /// it if the call returned, drop it if it faulted.
    async fn run<R: Send + 'static>(
        &self,
        call: impl FnOnce(Warm) -> Call<R> + Send + 'static,
    ) -> Result<R, Fault> {
        let Ok(_call) = self.calls.acquire().await else {
            return Err(Fault {
                kind: FaultKind::Instantiate,
                message: "the connector is stopping".into(),
            });
        };
        // A connector that keeps faulting is on probation: one call at a time
        // whatever its `limits.concurrency`, each after a pause, on the
        // low-priority probation thread.
        let mut on_probation = None;
        if self.strikes.load(Ordering::Relaxed) > 0 {
            on_probation = Some(self.unless_stopped(self.probation.lock()).await?);
        }
        // Read again: a call that returned while this one waited cleared it.
        let strikes = self.strikes.load(Ordering::Relaxed);
        let on_probation = on_probation.filter(|_| strikes > 0);
        if on_probation.is_some() {
            self.unless_stopped(tokio::time::sleep(runaway_pause(strikes)))
                .await?;
        }
        let result = if on_probation.is_some() {
            let instances = self.instances.clone();
            on_probation_thread(async move { instances.call(call).await }).await
        } else {
            // Right here: a hop to other threads would cost more than most calls.
            self.instances.call(call).await
        };
        match &result {
            Ok(_) => self.strikes.store(0, Ordering::Relaxed),
            // A call that ran but faulted: its instance is gone.
            Err(fault) => {
                let strikes = self.strikes.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    connector = %self.instances.context.name,
                    %fault,
                    pause = ?runaway_pause(strikes),
                    "Plugin call faulted; pausing the connector before its next call."
                );
            }
        }
        result
    }

    /// Wait for `until`, unless the connector stops first: then the call is
    /// [`FaultKind::Released`] at once instead of holding the stop up for as
    /// long as the backlog of runaway pauses.
    async fn unless_stopped<T>(&self, until: impl Future<Output = T>) -> Result<T, Fault> {
        let mut stopping = self.stopping.subscribe();
        tokio::select! {
            done = until => Ok(done),
            _ = stopping.wait_for(|stopping| *stopping) => Err(Fault {
                kind: FaultKind::Released,
                message: "the connector stopped while paused after repeated faults".into(),
            }),
        }
    }
}

/// Run `work` on the probation thread and wait for it here. A panic in host
/// code during a call (never the plugin's: that is a trap) fails that call alone.
async fn on_probation_thread<R: Send + 'static>(
    work: impl Future<Output = Result<R, Fault>> + Send + 'static,
) -> Result<R, Fault> {
    let task = crate::engine::probation_thread().spawn(work);
    task.await.unwrap_or_else(|error| {
        Err(Fault {
            kind: FaultKind::Trap,
            message: format!("the plugin call ended abnormally: {error}"),
        })
    })
}

impl Instances {
    /// One call on a warm instance (or a fresh one), timed and classified.
    async fn call<R>(&self, call: impl FnOnce(Warm) -> Call<R>) -> Result<R, Fault> {
        let taken = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        let mut warm = match taken {
            Some(warm) => warm,
            None => self.instantiate().await?,
        };
        self.arm(&mut warm.store);
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.limits.timeout + HOST_CALL_GRACE, call(warm)).await;
        // The call itself, not the wait for a free instance before it.
        self.context
            .metrics
            .plugin_call(&self.context.name, started.elapsed().as_secs_f64());
        match outcome {
            Ok((warm, Ok(result))) => {
                self.put_back(warm);
                Ok(result)
            }
            Ok((warm, Err(error))) => Err(self.classify(&warm.store, &error)),
            Err(_) => Err(self.stuck()),
        }
    }

    fn put_back(&self, warm: Warm) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(warm);
        }
    }

    /// Start the wall-clock budget of one call.
    fn arm(&self, store: &mut Store<PluginState>) {
        store.data_mut().deadline = Instant::now() + self.limits.timeout;
        store.set_epoch_deadline(1);
    }

    async fn instantiate(&self) -> Result<Warm, Fault> {
        let engine = match &self.pre {
            World::Transform(pre) => pre.engine(),
            World::Source(pre) => pre.engine(),
            World::Sink(pre) => pre.engine(),
            World::Webhook(pre) => pre.engine(),
        };
        let state =
            PluginState::new(self.context.clone(), self.limits.memory).map_err(|e| Fault {
                kind: FaultKind::Instantiate,
                message: format!("{e:#}"),
            })?;
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.memory);
        // At every epoch tick: yield to the scheduler so one busy plugin cannot
        // starve the others, and interrupt once the call's deadline has passed.
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        self.arm(&mut store);
        let instantiate = async {
            wasmtime::Result::Ok(match &self.pre {
                World::Transform(pre) => {
                    Bindings::Transform(pre.instantiate_async(&mut store).await?)
                }
                World::Source(pre) => Bindings::Source(pre.instantiate_async(&mut store).await?),
                World::Sink(pre) => Bindings::Sink(pre.instantiate_async(&mut store).await?),
                World::Webhook(pre) => Bindings::Webhook(pre.instantiate_async(&mut store).await?),
            })
        };
        let instantiated =
            tokio::time::timeout(self.limits.timeout + HOST_CALL_GRACE, instantiate).await;
        match instantiated {
            Ok(Ok(bindings)) => Ok(Warm { store, bindings }),
            Ok(Err(error)) => {
                let mut fault = self.classify(&store, &error);
                if fault.kind == FaultKind::Trap {
                    fault.kind = FaultKind::Instantiate;
                }
                Err(fault)
            }
            Err(_) => Err(self.stuck()),
        }
    }

    /// The epoch callback interrupted wasm code at the deadline.
    fn interrupted(&self) -> Fault {
        Fault {
            kind: FaultKind::Timeout,
            message: format!(
                "interrupted at limits.timeout of {}",
                humantime::format_duration(self.limits.timeout)
            ),
        }
    }

    /// The call overran its deadline inside a host import, where epochs do not reach.
    fn stuck(&self) -> Fault {
        Fault {
            kind: FaultKind::Timeout,
            message: format!(
                "stuck in a host call past limits.timeout of {}",
                humantime::format_duration(self.limits.timeout)
            ),
        }
    }

    fn classify(&self, store: &Store<PluginState>, error: &wasmtime::Error) -> Fault {
        if store.data().memory.hit {
            return Fault {
                kind: FaultKind::Memory,
                message: error.root_cause().to_string(),
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => self.interrupted(),
            Some(Trap::UnreachableCodeReached) => Fault {
                kind: FaultKind::Trap,
                message: "the plugin panicked (wasm `unreachable` executed)".into(),
            },
            Some(trap) => Fault {
                kind: FaultKind::Trap,
                message: trap.to_string(),
            },
            // The root cause, without the wasm backtrace wrapped around it.
            None => Fault {
                kind: FaultKind::Trap,
                message: error.root_cause().to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runaway_connector_pauses_longer_each_time_up_to_the_cap() {
        let ms = |n| runaway_pause(n).as_millis();
        assert_eq!(ms(0), 0);
        assert_eq!(ms(1), 100);
        assert_eq!(ms(2), 200);
        assert_eq!(ms(5), 1600);
        assert_eq!(ms(6), 2000);
        assert_eq!(ms(u32::MAX), 2000);
    }
}
