//! What a fleet host does: watch the connector definitions in the bus, keep
//! the ones placed on it (by label) and, for connectors one host at a time
//! may run, the ones it holds the lease of; fetch, check and compile their
//! plugins off the hot path; and start, swap and stop connectors to match.
//! It writes a heartbeat with what it runs, and on the way out stops its
//! connectors before it gives up its leases.
//!
//! Every pass reads the whole bucket (level-triggered): a missed or
//! coalesced watch event costs nothing but latency, and a periodic pass
//! catches anything the watch could not deliver.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::watch;

use super::definitions;
use super::membership::{HEARTBEAT_EVERY, Heartbeat, LeaseAsk, Leases, Membership};
use super::registry::Registry;
use crate::config::{ConnectorSpec, PluginSource};
use crate::host::Host;
use crate::plugin::Plugin;

/// How often a host re-reads everything even without a watch event.
const RESYNC_EVERY: Duration = Duration::from_secs(15);
/// The first retry after a connector failed to start.
const RETRY_FIRST: Duration = Duration::from_millis(500);

/// A host taking its connectors from the bus.
pub struct Reconciler {
    host: Host,
    registry: Registry,
    definitions: async_nats::jetstream::kv::Store,
    membership: Membership,
    leases: Leases,
    labels: BTreeMap<String, String>,
    started_at: String,
    /// Leased connectors that could not start here, and until when this
    /// host leaves their lease to others.
    stood_down: BTreeMap<String, tokio::time::Instant>,
    /// Placed connectors that cannot run here, and why.
    failed: BTreeMap<String, String>,
    /// Whether the last pass could not start a connector.
    start_failed: bool,
}

impl Reconciler {
    /// Join the fleet as `id` with `host` (started with no connectors).
    pub async fn join(host: Host, id: &str) -> anyhow::Result<Reconciler> {
        let bus = host.bus().clone();
        let config = host.config();
        let labels = config.fleet.labels.clone();
        let ttl = config.fleet.lease_ttl;
        let patience = Duration::from_secs(60);
        let membership =
            crate::bus::patiently("join the fleet", patience, || Membership::join(&bus, id))
                .await?;
        let leases =
            crate::bus::patiently("keep leases", patience, || Leases::start(&bus, id, ttl)).await?;
        let registry =
            crate::bus::patiently("open the registry", patience, || Registry::open(&bus)).await?;
        let definitions = crate::bus::patiently("open the definitions", patience, || {
            definitions::bucket(&bus)
        })
        .await?;
        Ok(Reconciler {
            registry,
            definitions,
            membership,
            leases,
            labels,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            stood_down: BTreeMap::new(),
            failed: BTreeMap::new(),
            start_failed: false,
            host,
        })
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Reconcile until `stop` turns true, then stop the connectors and
    /// leave the fleet.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut events = self.definitions.watch_all().await.ok();
        // A plugin deployed after the definition naming it (or an index
        // entry changed) is looked at at once, not at the next resync.
        let mut deployed = self.registry.watch().await.ok();
        let mut held = self.leases.watch();
        let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        // After a connector failed to start (often a bus hiccup), try again
        // sooner than the resync, backing off while it keeps failing.
        let mut retry_in = RETRY_FIRST;
        let mut armed = false;
        let retry = tokio::time::sleep(RESYNC_EVERY);
        tokio::pin!(retry);
        for timer in [&mut beat, &mut resync] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        self.sync().await;
        self.beat().await;
        loop {
            if !self.start_failed {
                armed = false;
                retry_in = RETRY_FIRST;
            } else if !armed {
                retry.as_mut().reset(tokio::time::Instant::now() + retry_in);
                retry_in = (retry_in * 2).min(RESYNC_EVERY);
                armed = true;
            }
            tokio::select! {
                _ = stop.changed() => break,
                event = next_event(&mut events) => match event {
                    Some(Ok(_)) => self.sync().await,
                    Some(Err(error)) => tracing::warn!(%error, "Watching the connector definitions failed; re-reading them."),
                    None => {
                        // The watch ended (the bus went away): the resync
                        // timer re-reads and watches again.
                        events = None;
                    }
                },
                event = next_event(&mut deployed) => match event {
                    Some(Ok(_)) if !self.failed.is_empty() => self.sync().await,
                    Some(_) => {}
                    None => deployed = None,
                },
                changed = held.changed() => {
                    if changed.is_ok() {
                        self.sync().await;
                    }
                }
                _ = beat.tick() => self.beat().await,
                _ = resync.tick() => {
                    if events.is_none() {
                        events = self.definitions.watch_all().await.ok();
                    }
                    if deployed.is_none() {
                        deployed = self.registry.watch().await.ok();
                    }
                    self.sync().await;
                }
                () = &mut retry, if armed => {
                    armed = false;
                    self.sync().await;
                }
            }
        }
        let Reconciler {
            host,
            membership,
            leases,
            ..
        } = self;
        // Connectors first: a lease is given up only once its connector has stopped.
        host.shutdown().await;
        leases.release_all().await;
        // Bounded: with the bus down, the heartbeat expires anyway.
        let _ = tokio::time::timeout(Duration::from_secs(5), membership.leave()).await;
    }

    /// One pass: read, place, lease, load, run.
    pub async fn sync(&mut self) {
        let all = match definitions::read_all(&self.definitions).await {
            Ok(all) => all,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "Cannot read the connector definitions; keeping what runs."
                );
                // Except what runs under a lease no longer held.
                let held = self.leases.held();
                let keep: Vec<_> = self
                    .host
                    .connectors()
                    .filter_map(|name| self.host.running(name))
                    .filter(|(spec, _)| !spec.needs_lease() || held.contains(&spec.name))
                    .map(|(spec, plugin)| (spec.clone(), plugin.clone()))
                    .collect();
                let changes = self.host.run_connectors(keep).await;
                if !changes.removed.is_empty() {
                    println!(
                        "plexus: fleet applied; added [], swapped [], removed {:?}, failed []",
                        changes.removed
                    );
                }
                self.leases.ask(LeaseAsk {
                    want: held,
                    running: self.running_leased(),
                });
                return;
            }
        };
        let mut failed = BTreeMap::new();
        let mut placed: Vec<ConnectorSpec> = Vec::new();
        // Connectors whose new definition this host cannot take keep running as they are.
        let mut kept: Vec<String> = Vec::new();
        for (name, (_, text)) in &all {
            let source = PathBuf::from(format!("kv {}/{name}", super::CONNECTORS));
            match self.host.config().definition(&source, text) {
                Ok(spec) if spec.name != *name => {
                    kept.push(name.clone());
                    failed.insert(
                        name.clone(),
                        format!(
                            "{}: defines connector \"{}\", not \"{name}\"",
                            source.display(),
                            spec.name
                        ),
                    );
                }
                Ok(spec) if spec.placed_on(&self.labels) => placed.push(spec),
                Ok(_) => {}
                Err(error) => {
                    failed.insert(name.clone(), error.to_string());
                    kept.push(name.clone());
                }
            }
        }
        let now = tokio::time::Instant::now();
        self.stood_down.retain(|_, until| *until > now);
        let want: BTreeSet<String> = placed
            .iter()
            .filter(|s| s.needs_lease() && !self.stood_down.contains_key(&s.name))
            .map(|s| s.name.clone())
            .collect();
        self.leases.ask(LeaseAsk {
            want: want.clone(),
            running: self.running_leased(),
        });
        let held = self.leases.held();

        let mut wanted = Vec::new();
        for name in &kept {
            if let Some((spec, plugin)) = self.host.running(name)
                && (!spec.needs_lease() || held.contains(name))
            {
                wanted.push((spec.clone(), plugin.clone()));
            }
        }
        for spec in placed {
            if spec.needs_lease() && !held.contains(&spec.name) {
                continue;
            }
            match self.plugin(&spec).await {
                Ok(plugin) => wanted.push((spec, plugin)),
                Err(reason) => {
                    tracing::error!(connector = %spec.name, %reason, "Cannot run the connector here.");
                    // What runs keeps running until a definition that can
                    // replace it arrives.
                    if let Some((spec, plugin)) = self.host.running(&spec.name) {
                        wanted.push((spec.clone(), plugin.clone()));
                    } else if spec.needs_lease() {
                        // Another host may be able to: leave it the lease.
                        self.stood_down
                            .insert(spec.name.clone(), now + RESYNC_EVERY);
                    }
                    failed.insert(spec.name.clone(), reason);
                }
            }
        }
        let changes = self.host.run_connectors(wanted).await;
        self.start_failed = !changes.failed.is_empty();
        for (name, reason) in &changes.failed {
            if held.contains(name) && self.host.running(name).is_none() {
                self.stood_down.insert(name.clone(), now + RESYNC_EVERY);
            }
            failed.insert(name.clone(), reason.clone());
        }
        // Leases of connectors this pass stopped, or could not start, go now.
        let want = want
            .into_iter()
            .filter(|n| !self.stood_down.contains_key(n))
            .collect();
        self.leases.ask(LeaseAsk {
            want,
            running: self.running_leased(),
        });
        let failures_changed = failed != self.failed;
        if failures_changed {
            for (name, reason) in &failed {
                if self.failed.get(name) != Some(reason) {
                    println!("plexus: fleet: connector \"{name}\" cannot run here: {reason}");
                }
            }
            self.failed = failed;
        }
        if !changes.is_empty() || failures_changed {
            // The fleet view shows a change before the host announces it.
            self.beat().await;
        }
        if !changes.is_empty() {
            // One line on stdout per change: operators and tests follow it.
            println!(
                "plexus: fleet applied; added {:?}, swapped {:?}, removed {:?}, failed {:?}",
                changes.added,
                changes.swapped,
                changes.removed,
                changes.failed.iter().map(|(n, _)| n).collect::<Vec<_>>()
            );
        }
    }

    /// Running connectors that hold a lease.
    fn running_leased(&self) -> BTreeSet<String> {
        self.host
            .connectors()
            .filter(|name| {
                self.host
                    .running(name)
                    .is_some_and(|(spec, _)| spec.needs_lease())
            })
            .map(str::to_owned)
            .collect()
    }

    /// The plugin for `spec`: the running one if the digest is the same,
    /// else fetched from the registry, checked and compiled.
    async fn plugin(&self, spec: &ConnectorSpec) -> Result<Plugin, String> {
        let PluginSource::Registry(reference) = &spec.plugin else {
            return Err(format!(
                "plugin {}: definitions in the bus name a deployed plugin as name@version",
                spec.plugin
            ));
        };
        let entry = self
            .registry
            .lookup(reference)
            .await
            .map_err(|e| format!("{e:#}"))?
            .ok_or_else(|| format!("plugin {reference} is not in the registry"))?;
        if !entry.fits(spec.kind()) {
            return Err(format!(
                "plugin {reference} is a {} plugin, not a {}",
                entry.world,
                spec.kind()
            ));
        }
        entry.check()?;
        if let Some(pinned) = &spec.plugin_digest
            && *pinned != entry.digest
        {
            return Err(format!(
                "plugin {reference} now names digest {} in the registry, not {pinned} as applied; its index entry was rewritten, so nothing runs until it is applied again",
                entry.digest
            ));
        }
        if entry.world == "webhook" && spec.trigger() != Some(&crate::config::Trigger::Http) {
            return Err(format!(
                "plugin {reference} is a webhook source; it needs `listen = \"http\"`"
            ));
        }
        let fleet = &self.host.config().fleet;
        entry.check_signature(&fleet.trusted_keys, fleet.require_signed)?;
        if let Some((running, plugin)) = self.host.running(&spec.name)
            && plugin.digest == entry.digest
            && running.kind() == spec.kind()
        {
            return Ok(plugin.clone());
        }
        let data_dir = &self.host.config().data_dir;
        let file = self
            .registry
            .fetch(&entry, &data_dir.join("plugins"))
            .await
            .map_err(|e| format!("{e:#}"))?;
        let runtime = self.host.runtime().clone();
        let cache = data_dir.join("cache");
        let kind = spec.kind();
        tokio::task::spawn_blocking(move || Plugin::load(&runtime, &file, kind, Some(&cache)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    async fn beat(&mut self) {
        let beat = Heartbeat {
            id: self.membership.id().to_owned(),
            labels: self.labels.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            admin: self.host.http_addr().to_string(),
            started_at: self.started_at.clone(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            connectors: self.host.report().await,
            failed: self.failed.clone(),
            leases: self.leases.held().into_iter().collect(),
        };
        if let Err(error) = self.membership.beat(&beat).await {
            tracing::warn!(error = format!("{error:#}"), "Cannot write the heartbeat.");
        }
    }
}

async fn next_event(
    events: &mut Option<async_nats::jetstream::kv::Watch>,
) -> Option<Result<async_nats::jetstream::kv::Entry, async_nats::jetstream::kv::WatcherError>> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}
