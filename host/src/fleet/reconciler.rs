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
use super::membership::{HEARTBEAT_EVERY, Heartbeat, Membership};
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
    labels: BTreeMap<String, String>,
    started_at: String,
    /// Placed connectors that need a lease.
    lease_wanted: BTreeSet<String>,
    /// Leases held after the last pass.
    held: BTreeSet<String>,
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
        let membership = crate::bus::patiently("join the fleet", patience, || {
            Membership::join(&bus, id, ttl)
        })
        .await?;
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
            labels,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            lease_wanted: BTreeSet::new(),
            held: BTreeSet::new(),
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
        let mut renew = tokio::time::interval(self.membership.renew_every());
        let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        // After a connector failed to start (often a bus hiccup), try again
        // sooner than the resync, backing off while it keeps failing.
        let mut retry_in = RETRY_FIRST;
        let mut armed = false;
        let retry = tokio::time::sleep(RESYNC_EVERY);
        tokio::pin!(retry);
        for timer in [&mut renew, &mut beat, &mut resync] {
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
                _ = renew.tick() => {
                    let held = self.membership.hold(&self.lease_wanted).await;
                    if held != self.held {
                        self.sync().await;
                    }
                }
                _ = beat.tick() => self.beat().await,
                _ = resync.tick() => {
                    if events.is_none() {
                        events = self.definitions.watch_all().await.ok();
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
            mut membership,
            ..
        } = self;
        host.shutdown().await;
        // Bounded: with the bus down, the leases and heartbeat expire anyway.
        if tokio::time::timeout(Duration::from_secs(5), membership.leave())
            .await
            .is_err()
        {
            tracing::warn!("Could not give up the leases; they expire after their TTL.");
        }
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
                return;
            }
        };
        let mut failed = BTreeMap::new();
        let mut placed: Vec<ConnectorSpec> = Vec::new();
        for (name, (_, text)) in &all {
            let source = PathBuf::from(format!("kv {}/{name}", super::CONNECTORS));
            match self.host.config().definition(&source, text) {
                Ok(spec) if spec.placed_on(&self.labels) => placed.push(spec),
                Ok(_) => {}
                Err(error) => {
                    failed.insert(name.clone(), error.to_string());
                }
            }
        }
        self.lease_wanted = placed
            .iter()
            .filter(|s| s.needs_lease())
            .map(|s| s.name.clone())
            .collect();
        self.held = self.membership.hold(&self.lease_wanted).await;

        let mut wanted = Vec::new();
        for spec in placed {
            if spec.needs_lease() && !self.held.contains(&spec.name) {
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
                    }
                    failed.insert(spec.name.clone(), reason);
                }
            }
        }
        let changes = self.host.run_connectors(wanted).await;
        self.start_failed = !changes.failed.is_empty();
        for (name, reason) in &changes.failed {
            failed.insert(name.clone(), reason.clone());
        }
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
        if !entry.fits(spec.kind) {
            return Err(format!(
                "plugin {reference} is a {} plugin, not a {}",
                entry.world, spec.kind
            ));
        }
        let fleet = &self.host.config().fleet;
        entry.check_signature(&fleet.trusted_keys, fleet.require_signed)?;
        if let Some((running, plugin)) = self.host.running(&spec.name)
            && plugin.digest == entry.digest
            && running.kind == spec.kind
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
        let kind = spec.kind;
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
            leases: self.held.iter().cloned().collect(),
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
