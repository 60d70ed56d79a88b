//! Running connectors: one task per connector, started from a loaded plugin and
//! stopped by draining what it has already taken from the bus.

mod record;
mod transform;

use std::sync::Arc;

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bus::Bus;
use crate::capability::ConnectorContext;
use crate::config::ConnectorSpec;
use crate::observe::Metrics;
use crate::plugin::{Plugin, TransformPool, World};

/// A connector at work.
pub struct Running {
    /// The spec it was started from.
    pub spec: ConnectorSpec,
    /// Digest of the plugin it runs.
    pub digest: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Set up the connector's streams, consumer and kv bucket, warm one
    /// instance, and start consuming.
    pub async fn start(
        spec: ConnectorSpec,
        plugin: Plugin,
        bus: &Bus,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Running> {
        let name = spec.name.clone();
        let kv = bus.kv_bucket(&name).await?;
        let context = Arc::new(ConnectorContext {
            name: name.clone(),
            config: spec.config.clone(),
            kv: Some(kv),
        });
        let (stop, stopped) = watch::channel(false);
        let task = match &plugin.world {
            World::Transform(pre) => {
                let (Some(from), Some(to)) = (spec.from.clone(), spec.to.clone()) else {
                    bail!("connector {name}: a transform needs `from` and `to`");
                };
                bus.ensure_stream(&to, true).await?;
                bus.ensure_stream(&spec.delivery.dlq, false).await?;
                let consumer = bus.durable_consumer(&spec, &from).await?;
                let pool = TransformPool::new(pre.clone(), context, spec.limits.clone());
                pool.warm_up().await.with_context(|| {
                    format!(
                        "connector {name}: plugin {} cannot start",
                        plugin.path.display()
                    )
                })?;
                let runner =
                    transform::Runner::new(&spec, &plugin, to, pool, bus.js.clone(), metrics);
                tokio::spawn(runner.run(consumer, stopped))
            }
            World::Source(_) | World::Sink(_) => {
                bail!(
                    "connector {name}: {} connectors are not run by this version of the host yet",
                    spec.kind
                )
            }
        };
        tracing::info!(connector = %name, plugin = %plugin.path.display(), version = plugin.version(), "Connector started.");
        Ok(Running {
            spec,
            digest: plugin.digest,
            stop,
            task,
        })
    }

    /// Stop taking records, finish and acknowledge the ones already taken, then return.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(connector = %self.spec.name, %error, "Connector task failed.");
        }
        tracing::info!(connector = %self.spec.name, "Connector stopped.");
    }
}
