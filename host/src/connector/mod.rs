//! Running connectors: each kind's loop, started from a loaded plugin and
//! stopped by draining what it has already taken.
//!
//! | kind | driven by | loop |
//! |---|---|---|
//! | transform | durable consumer on `from` | `consume` + `transform` |
//! | sink | durable consumer on `from` | `consume` + `sink` |
//! | source, `schedule` | interval or cron | `source::Source::run_schedule` |
//! | source, `listen = "http"` | `POST /ingest/<name>` | `source::Source::ingest` via [`Inbound`] |
//! | source, `listen = "mllp://…"` or `"mllp+tls://…"` | HL7 v2 over TCP or TLS | `mllp` |

mod consume;
mod identity;
mod mllp;
mod publish;
mod record;
mod settle;
mod sink;
mod source;
mod transform;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bus::Bus;
use crate::capability::ConnectorContext;
use crate::config::{ConnectorSpec, Role, Trigger};
use crate::contract::Contracts;
use crate::observe::Metrics;
use crate::plugin::{Plugin, Pool};
pub use mllp::MAX_FRAME as MLLP_MAX_FRAME;
pub use publish::{CLIENT_ACK_BUDGET, WINDOW as PUBLISH_WINDOW};
pub use source::IngestError;

/// Sources fed by `POST /ingest/<name>`, looked up by the admin endpoint.
#[derive(Default)]
pub struct Inbound(RwLock<HashMap<String, Arc<source::Source>>>);

impl Inbound {
    /// Decode and publish a message posted to connector `name` (a webhook
    /// source also gets its `headers`), with `sender` as the origin of its
    /// records' identities; `None` if no such HTTP-ingest connector runs.
    pub async fn ingest(
        &self,
        name: &str,
        body: bytes::Bytes,
        headers: Vec<(String, String)>,
        sender: &str,
    ) -> Option<Result<u64, IngestError>> {
        let source = self.0.read().ok()?.get(name).cloned()?;
        Some(source.ingest(body, headers, sender).await)
    }

    fn set(&self, name: &str, source: Option<Arc<source::Source>>) {
        if let (Ok(mut map), Some(source)) = (self.0.write(), source) {
            map.insert(name.to_owned(), source);
        }
    }

    /// Remove `name` unless a newer version has already taken its place.
    fn unset(&self, name: &str, source: &Arc<source::Source>) {
        if let Ok(mut map) = self.0.write()
            && map
                .get(name)
                .is_some_and(|current| Arc::ptr_eq(current, source))
        {
            map.remove(name);
        }
    }
}

/// What every connector start needs from its host.
pub struct Shared {
    /// The bus.
    pub bus: Bus,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// HTTP-ingest registry.
    pub inbound: Arc<Inbound>,
    /// `[host].secrets_file`.
    pub secrets_file: Option<std::path::PathBuf>,
    /// The audit log.
    pub audit: crate::observe::Audit,
    /// An edge host's facility, stamped on what its sources publish.
    pub facility: Option<Arc<str>>,
    /// SLA breaches, for the dashboard.
    pub sla: Arc<crate::observe::sla::Board>,
    /// Where hop spans go, when `[observe] otlp` is set.
    pub spans: Option<Arc<crate::observe::otel::Spans>>,
}

/// A connector at work.
pub struct Running {
    /// The spec it was started from.
    pub spec: ConnectorSpec,
    /// Digest of the plugin it runs.
    pub digest: String,
    /// The plugin it runs, to start it again (a reload that must roll back).
    pub plugin: Plugin,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Where this connector is registered for HTTP ingest.
    inbound: Option<(Arc<Inbound>, Arc<source::Source>)>,
}

impl Running {
    /// Set up the connector's streams, consumer, kv bucket and listener, warm
    /// one instance, and start it.
    pub async fn start(
        spec: ConnectorSpec,
        plugin: Plugin,
        shared: &Shared,
    ) -> anyhow::Result<Running> {
        let name = spec.name.clone();
        let bus = &shared.bus;
        let kv = bus.kv_bucket(&name).await?;
        let context = Arc::new(
            ConnectorContext::new(
                &spec,
                Some(kv),
                shared.secrets_file.as_deref(),
                shared.metrics.clone(),
                shared.audit.clone(),
            )
            .with_context(|| format!("connector {name}"))?,
        );
        let loaded = plugin.clone();
        let pool = Pool::new(plugin.world.clone(), context.clone(), spec.limits.clone());
        pool.warm_up().await.with_context(|| {
            format!(
                "connector {name}: plugin {} cannot start",
                plugin.path.display()
            )
        })?;
        let contracts =
            Contracts::compile(&spec.emits).with_context(|| format!("connector {name}: emits"))?;
        let (stop, stopped) = watch::channel(false);
        let latencies = spec
            .sla
            .as_ref()
            .and_then(|s| s.latency_p99)
            .map(|_| Arc::new(crate::observe::sla::Latencies::default()));
        if let Some(sla) = &spec.sla {
            bus.ensure_stream(crate::observe::sla::SUBJECT_PREFIX, true)
                .await?;
            let watcher = crate::observe::sla::Watcher {
                connector: name.clone(),
                sla: sla.clone(),
                latencies: latencies.clone(),
                metrics: shared.metrics.clone(),
                js: bus.js.clone(),
                facility: shared.facility.clone(),
                board: shared.sla.clone(),
                metrics_shown: std::sync::Mutex::default(),
            };
            tokio::spawn(watcher.run(stopped.clone()));
        }
        let hop = format!("{name}@{}", plugin.version());
        let publisher = publish::Publisher::new(bus.js.clone());
        let settler = || settle::Settler {
            name: name.clone(),
            delivery: spec.delivery.clone(),
            js: bus.js.clone(),
            metrics: shared.metrics.clone(),
            secrets: context.clone(),
            latency: latencies.clone(),
            spans: shared.spans.clone(),
            kind: match spec.kind() {
                crate::config::Kind::Sink => "sink",
                _ => "transform",
            },
            plugin: plugin.version().to_owned(),
        };
        let mut inbound = None;
        let task = match &spec.role {
            Role::Transform { from, to } => {
                let (from, to) = (from.clone(), to.clone());
                bus.ensure_stream(&to, true).await?;
                bus.ensure_stream(&spec.delivery.dlq, false).await?;
                let consumer = bus.durable_consumer(&spec, &from).await?;
                let handler = Arc::new(transform::Transform {
                    hop,
                    to,
                    pool,
                    publisher,
                    limits: spec.limits.clone(),
                    settle: settler(),
                    contracts,
                });
                tokio::spawn(consume::run(
                    handler,
                    consumer,
                    stopped,
                    spec.delivery.ordered,
                ))
            }
            Role::Sink { from } => {
                bus.ensure_stream(&spec.delivery.dlq, false).await?;
                let consumer = bus.durable_consumer(&spec, from).await?;
                let handler = Arc::new(sink::Sink {
                    pool,
                    settle: settler(),
                });
                tokio::spawn(consume::run(
                    handler,
                    consumer,
                    stopped,
                    spec.delivery.ordered,
                ))
            }
            Role::Source { to, trigger } => {
                let to = to.clone();
                bus.ensure_stream(&to, true).await?;
                bus.ensure_stream(&spec.delivery.dlq, false).await?;
                let source = Arc::new(source::Source {
                    name: name.clone(),
                    hop,
                    to,
                    pool,
                    publisher,
                    metrics: shared.metrics.clone(),
                    delivery: spec.delivery.clone(),
                    limits: spec.limits.clone(),
                    cursors: bus.cursor_bucket().await?,
                    contracts,
                    collisions: identity::Collisions::default(),
                    audit: shared.audit.clone(),
                    facility: shared.facility.clone(),
                    spans: shared.spans.clone(),
                });
                match trigger {
                    Trigger::Schedule(schedule) => {
                        tokio::spawn(source.run_schedule(schedule.clone(), stopped))
                    }
                    Trigger::Http => {
                        shared.inbound.set(&name, Some(source.clone()));
                        inbound = Some((shared.inbound.clone(), source));
                        // Nothing to run: the admin endpoint calls in.
                        tokio::spawn(async {})
                    }
                    Trigger::Mllp(settings) => {
                        let settings = settings.clone();
                        let tls = match &settings.tls {
                            Some(tls) => Some(
                                crate::tls::acceptor(&tls.cert, &tls.key, tls.client_ca.as_deref())
                                    .with_context(|| {
                                        format!("connector {name}: [connector.tls]")
                                    })?,
                            ),
                            None => None,
                        };
                        let listener = tokio::net::TcpListener::bind(settings.addr)
                            .await
                            .with_context(|| {
                                format!("connector {name}: cannot listen on {}", settings.addr)
                            })?;
                        tracing::info!(connector = %name, address = %listener.local_addr()?, tls = tls.is_some(), "MLLP listener up.");
                        let mllp = Arc::new(mllp::Mllp::new(source, settings, tls));
                        tokio::spawn(mllp.serve(listener, stopped))
                    }
                }
            }
        };
        tracing::info!(connector = %name, kind = %spec.kind(), plugin = %plugin.path.display(), version = plugin.version(), "Connector started.");
        Ok(Running {
            spec,
            digest: plugin.digest,
            plugin: loaded,
            stop,
            task,
            inbound,
        })
    }

    /// Whether the old version must stop before the new one starts: a
    /// listener's port can be bound by one of them at a time.
    pub fn binds_a_port(&self) -> bool {
        self.spec.listener().is_some()
    }

    /// Stop taking records, finish and acknowledge the ones already taken, then return.
    pub async fn stop(self) {
        if let Some((inbound, source)) = &self.inbound {
            inbound.unset(&self.spec.name, source);
        }
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(connector = %self.spec.name, %error, "Connector task failed.");
        }
        tracing::info!(connector = %self.spec.name, "Connector stopped.");
    }
}
