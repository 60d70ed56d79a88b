//! A host: the engine, the bus, the admin endpoint and the running connectors,
//! started together and stopped in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::admin;
use crate::bus::embedded::{self, EmbeddedNats};
use crate::bus::{self, Bus};
use crate::config::{Config, ConfigError, ConnectorSpec, PluginSource};
use crate::connector::{Inbound, Running, Shared};
use crate::control::reconcile;
use crate::engine::Runtime;
use crate::observe::Metrics;
use crate::observe::status::{self, Roster};
use crate::plugin::{LoadError, Plugin};

/// How long a starting host waits for JetStream to answer.
const JETSTREAM_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a stopping host waits for the bus to take its last writes.
const FLUSH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a host could not start (or a reload was refused).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A connector's plugin cannot be used.
    #[error("{file}: connector \"{connector}\": {error}")]
    Plugin {
        /// The config file.
        file: PathBuf,
        /// The connector.
        connector: String,
        /// Why.
        error: LoadError,
    },
    /// A command was used wrongly (a missing input file, a bad plugin).
    #[error("{0}")]
    Usage(String),
    /// The embedded bus was wanted but there is no `nats-server`.
    #[error(transparent)]
    NoNatsServer(#[from] embedded::NotFound),
    /// Anything else: the bus, the network, the disk.
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
}

impl HostError {
    /// 2 for mistakes the user can fix in their config or set-up, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            HostError::Config(_)
            | HostError::Plugin { .. }
            | HostError::NoNatsServer(_)
            | HostError::Usage(_) => 2,
            HostError::Runtime(_) => 1,
        }
    }
}

/// A running host.
pub struct Host {
    runtime: Runtime,
    shared: Shared,
    config: Config,
    connectors: BTreeMap<String, Running>,
    /// What `GET /connectors` reports.
    roster: Arc<Roster>,
    http_addr: SocketAddr,
    http_task: tokio::task::JoinHandle<()>,
    http_stop: watch::Sender<bool>,
    /// Writes the audit log; finished before the bus stops.
    audit_writer: Option<crate::observe::audit::Writer>,
    // Dropped last: connectors drain into it.
    embedded: Option<EmbeddedNats>,
    /// Held while the host runs: one host per `data_dir`.
    _lock: std::fs::File,
}

/// Take `data_dir` for this host, or say which host has it.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, HostError> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create [host].data_dir {}", data_dir.display()))?;
    embedded::lock(data_dir, "host.lock").map_err(in_use_is_usage)
}

/// A store or data_dir another host holds is the user's to sort out (exit 2).
fn in_use_is_usage(error: anyhow::Error) -> HostError {
    match error.downcast::<embedded::InUse>() {
        Ok(in_use) => HostError::Usage(in_use.to_string()),
        Err(error) => HostError::Runtime(error),
    }
}

/// The embedded server's link to the hub, with its password resolved.
fn leaf(edge: &crate::config::EdgeConfig, config: &Config) -> Result<embedded::Leaf, HostError> {
    let user_password = match (&edge.user, &edge.password) {
        (Some(user), Some(secret)) => {
            let password = crate::capability::resolve_secrets(
                std::slice::from_ref(secret),
                config.secrets_file.as_deref(),
            )
            .map_err(|e| HostError::Usage(format!("{}: {e:#}", config.file.display())))?
            .remove(secret)
            .ok_or_else(|| {
                HostError::Usage(format!(
                    "{}: [bus].leaf_password names the secret {secret:?}, which has no value (set PLEXUS_SECRET_{} or put it in [host].secrets_file)",
                    config.file.display(),
                    secret.to_ascii_uppercase().replace('-', "_")
                ))
            })?;
            Some((user.clone(), password))
        }
        _ => None,
    };
    Ok(embedded::Leaf {
        urls: edge.leaf.clone(),
        user_password,
        creds: edge.creds.clone(),
        tls: edge.tls.clone(),
        domain: edge.domain.clone(),
    })
}

/// Load (compile or fetch from cache) and world-check every connector's plugin,
/// off the async runtime. Nothing is started.
pub async fn load_plugins(runtime: &Runtime, config: &Config) -> Result<Vec<Plugin>, HostError> {
    let runtime = runtime.clone();
    let config = config.clone();
    let task = tokio::task::spawn_blocking(move || {
        let cache = config.data_dir.join("cache");
        config
            .connectors
            .iter()
            .map(|c| {
                let path = match &c.plugin {
                    PluginSource::File(path) => path,
                    PluginSource::Registry(reference) => {
                        return Err(HostError::Usage(format!(
                            "{}: connector \"{}\": plugin {reference} names the bus's registry; a host run from a file takes a plugin path (fleet hosts, `plexus up --bus`, take definitions applied with `plexus apply`)",
                            config.file.display(),
                            c.name
                        )));
                    }
                };
                let plugin = Plugin::load(&runtime, path, c.kind(), Some(&cache)).map_err(
                    |error| HostError::Plugin {
                        file: config.file.clone(),
                        connector: c.name.clone(),
                        error,
                    },
                )?;
                if let Some(pinned) = &c.plugin_digest
                    && *pinned != plugin.digest
                {
                    return Err(HostError::Usage(format!(
                        "{}: connector \"{}\": plugin {} has digest {}, not plugin_digest {pinned}",
                        config.file.display(),
                        c.name,
                        path.display(),
                        plugin.digest
                    )));
                }
                if matches!(plugin.world, crate::plugin::World::Webhook(_))
                    && c.trigger() != Some(&crate::config::Trigger::Http)
                {
                    return Err(HostError::Usage(format!(
                        "{}: connector \"{}\": plugin {} is a webhook source; it needs `listen = \"http\"`",
                        config.file.display(),
                        c.name,
                        c.plugin
                    )));
                }
                Ok(plugin)
            })
            .collect()
    });
    task.await.map_err(|e| HostError::Runtime(e.into()))?
}

impl Host {
    /// Check every plugin, start or connect the bus, serve `/metrics`, start
    /// every connector. Nothing is left running if any step fails.
    pub async fn start(config: Config) -> Result<Host, HostError> {
        let tokens = Arc::new(admin::Tokens::open(&config.tokens).map_err(|e| {
            HostError::Usage(format!("{}: [host].tokens: {e:#}", config.file.display()))
        })?);
        admin::check_exposure(&config.http, &tokens, &config.tokens)
            .map_err(|e| HostError::Usage(format!("{}: {e}", config.file.display())))?;
        let lock = lock_data_dir(&config.data_dir)?;
        let instances = config.connectors.iter().map(|c| c.limits.concurrency).sum();
        let runtime = Runtime::with_capacity(instances)?;
        let plugins = load_plugins(&runtime, &config).await?;

        let limits = bus::Limits::of(&config.bus);
        let (bus, embedded) = match &config.bus.url {
            Some(url) => {
                let auth = bus::Auth::from_config(&config.bus, config.secrets_file.as_deref())
                    .map_err(|e| HostError::Usage(format!("{}: {e:#}", config.file.display())))?;
                // The bus may be starting too (a cluster, a service manager's
                // ordering): wait for it a while, as for its JetStream below.
                let bus = Bus::connect_patiently(
                    url,
                    &auth,
                    config.bus.tls.as_ref(),
                    limits,
                    JETSTREAM_PATIENCE,
                )
                .await?;
                (bus, None)
            }
            None => {
                let binary = embedded::find_binary(config.bus.nats_server.as_deref())?;
                let leaf = match &config.bus.edge {
                    Some(edge) => Some(leaf(edge, &config)?),
                    None => None,
                };
                let server =
                    EmbeddedNats::start(&binary, &config.data_dir.join("nats"), None, leaf)
                        .map_err(in_use_is_usage)?;
                tracing::info!(url = server.url(), "Embedded bus started.");
                (
                    Bus::connect_with(server.url(), &server.auth(), None, limits).await?,
                    Some(server),
                )
            }
        };

        // A cluster started with the host may still be electing its leader.
        bus.wait_for_jetstream(JETSTREAM_PATIENCE).await?;
        let metrics = Arc::new(Metrics::default());
        let writer = crate::observe::audit::writer_name(&config.data_dir);
        let (audit, audit_writer) =
            bus::patiently("open the audit log", JETSTREAM_PATIENCE, || {
                crate::observe::Audit::start(
                    bus.js.clone(),
                    &writer,
                    Some(metrics.clone()),
                    bus.limits.replicas,
                )
            })
            .await?;
        let inbound = Arc::new(Inbound::default());
        let sla = Arc::new(crate::observe::sla::Board::default());
        let spans = match &config.observe.otlp {
            Some(url) => Some(Arc::new(
                crate::observe::otel::Spans::start(url, &config.observe.service_name)
                    .map_err(|e| HostError::Usage(format!("{}: {e:#}", config.file.display())))?,
            )),
            None => None,
        };
        let roster = Arc::new(Roster::default());
        let (http_stop, stopped) = watch::channel(false);
        let admin = admin::Admin {
            metrics: metrics.clone(),
            inbound: inbound.clone(),
            roster: roster.clone(),
            js: bus.js.clone(),
            tokens,
            audit: audit.clone(),
            sla: sla.clone(),
        };
        let (http_addr, http_task) = admin::serve(&config.http, admin, stopped).await?;
        tracing::info!(address = %http_addr, "Serving /metrics.");
        // For `plexus ls` and `plexus status` beside this host; best effort.
        let address_file = status::address_file(&config.data_dir);
        if let Err(error) = std::fs::create_dir_all(&config.data_dir)
            .and_then(|()| std::fs::write(&address_file, http_addr.to_string()))
        {
            tracing::warn!(file = %address_file.display(), %error, "Cannot record the admin address; `plexus ls` needs a fixed [host].http port.");
        }

        let shared = Shared {
            facility: config
                .bus
                .edge
                .as_ref()
                .map(|e| Arc::from(e.facility.as_str())),
            bus,
            metrics,
            inbound,
            secrets_file: config.secrets_file.clone(),
            audit,
            sla,
            spans,
        };
        let mut host = Host {
            runtime,
            shared,
            config: config.clone(),
            connectors: BTreeMap::new(),
            roster,
            http_addr,
            http_task,
            http_stop,
            embedded,
            audit_writer: Some(audit_writer),
            _lock: lock,
        };
        let wanted = config.connectors.iter().cloned().zip(plugins).collect();
        let started = reconcile::apply(&mut host.connectors, wanted, &host.shared)
            .await
            .into_result();
        host.shared.metrics.set_connectors(host.connectors.len());
        host.roster.publish(host.connectors.values());
        if let Err(error) = started {
            host.shutdown().await;
            return Err(error.into());
        }
        Ok(host)
    }

    /// Move to `config`: start added connectors, stop removed ones, swap changed
    /// ones to a new instance pool. Untouched connectors keep running. A config
    /// that fails validation or plugin loading changes nothing.
    pub async fn reload(&mut self, config: Config) -> Result<reconcile::Changes, HostError> {
        if config.bus != self.config.bus
            || config.data_dir != self.config.data_dir
            || config.http != self.config.http
        {
            tracing::warn!("[bus] and [host] changes take effect at the next restart.");
        }
        let plugins = match load_plugins(&self.runtime, &config).await {
            Ok(plugins) => plugins,
            Err(error) => {
                self.shared.metrics.reload(false);
                self.shared
                    .audit
                    .record("reload", "host", &format!("refused: {error}"));
                return Err(error);
            }
        };
        let wanted = config.connectors.iter().cloned().zip(plugins).collect();
        let result = reconcile::apply(&mut self.connectors, wanted, &self.shared)
            .await
            .into_result();
        self.shared.metrics.set_connectors(self.connectors.len());
        self.roster.publish(self.connectors.values());
        self.shared.metrics.reload(result.is_ok());
        let detail = match &result {
            Ok(changes) => format!(
                "applied: added {:?}, swapped {:?}, removed {:?}",
                changes.added, changes.swapped, changes.removed
            ),
            Err(error) => format!("refused: {error:#}"),
        };
        self.shared.audit.record("reload", "host", &detail);
        self.config = config;
        Ok(result?)
    }

    /// Run exactly `wanted` (a fleet host's placed definitions with their
    /// plugins): start, swap and stop connectors to match. A connector
    /// that cannot start is reported in the result; the others go on.
    pub async fn run_connectors(
        &mut self,
        wanted: Vec<(ConnectorSpec, Plugin)>,
    ) -> reconcile::Changes {
        let changes = reconcile::apply(&mut self.connectors, wanted, &self.shared).await;
        self.shared.metrics.set_connectors(self.connectors.len());
        self.roster.publish(self.connectors.values());
        if !changes.is_empty() {
            self.shared.audit.record(
                "reload",
                "fleet",
                &format!(
                    "applied: added {:?}, swapped {:?}, removed {:?}, failed {:?}",
                    changes.added, changes.swapped, changes.removed, changes.failed
                ),
            );
        }
        changes
    }

    /// The running connector `name`: its spec and plugin.
    pub fn running(&self, name: &str) -> Option<(&ConnectorSpec, &Plugin)> {
        self.connectors.get(name).map(|r| (&r.spec, &r.plugin))
    }

    /// The engine plugins are compiled for.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The settings the host started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every running connector with its counts and lag, as `GET /connectors` reports.
    pub async fn report(&self) -> Vec<status::ConnectorStatus> {
        self.roster
            .report(&self.shared.metrics, &self.shared.bus.js)
            .await
    }

    /// The address `/metrics` is served on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Record a refused reload (a config that did not validate) in the audit log.
    pub fn reload_refused(&self, reason: &str) {
        self.shared.metrics.reload(false);
        self.shared
            .audit
            .record("reload", "host", &format!("refused: {reason}"));
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The host's connection to the bus.
    pub fn bus(&self) -> &Bus {
        &self.shared.bus
    }

    /// The embedded bus's URL, when this host started one.
    pub fn bus_url(&self) -> Option<&str> {
        self.embedded.as_ref().map(EmbeddedNats::url)
    }

    /// Names of the running connectors.
    pub fn connectors(&self) -> impl Iterator<Item = &str> {
        self.connectors.keys().map(String::as_str)
    }

    /// Stop taking records, finish and ack in-flight ones, then stop the
    /// admin endpoint and the embedded bus.
    pub async fn shutdown(mut self) {
        let running = std::mem::take(&mut self.connectors);
        futures::future::join_all(running.into_values().map(Running::stop)).await;
        // Bounded: a bus that is down must not keep the host from stopping.
        match tokio::time::timeout(FLUSH_PATIENCE, self.shared.bus.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "Flushing the bus connection failed."),
            Err(_) => {
                tracing::warn!("The bus did not take the last writes within {FLUSH_PATIENCE:?}.")
            }
        }
        let _ = self.http_stop.send(true);
        let _ = (&mut self.http_task).await;
        if let Some(writer) = self.audit_writer.take() {
            writer.finish().await;
        }
        // The connectors have let go of their handles: send the last spans.
        if let Some(spans) = self
            .shared
            .spans
            .take()
            .and_then(|s| Arc::try_unwrap(s).ok())
        {
            spans.shutdown().await;
        }
        let _ = std::fs::remove_file(status::address_file(&self.config.data_dir));
        tracing::info!("Host stopped.");
    }
}
