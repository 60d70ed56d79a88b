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
//!
//! What a pass read is kept (`known`): when the control plane cannot be
//! read — an edge whose link to the hub is down — the host runs the last
//! definitions it read, after a restart too, and says so. An edge's
//! control plane is the hub's JetStream domain; its leases stay in its own
//! (they guard listeners on this site's machines), and it forwards what
//! its connectors publish (`crate::edge`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::watch;

use super::definitions;
use super::known::Known;
use super::membership::{HEARTBEAT_EVERY, Heartbeat, LeaseAsk, Leases, Membership};
use super::registry::{self, Entry, Registry};
use crate::bus::Bus;
use crate::config::{ConnectorSpec, PluginSource};
use crate::edge::Forwarder;
use crate::host::Host;
use crate::plugin::Plugin;

/// How often a host re-reads everything even without a watch event.
const RESYNC_EVERY: Duration = Duration::from_secs(15);
/// The first retry after a connector failed to start.
const RETRY_FIRST: Duration = Duration::from_millis(500);

/// The longest one read of the control plane may take.
const CONTROL_CALL: Duration = Duration::from_secs(10);
/// How long an edge waits for the hub when it starts before running the
/// last known definitions.
const HUB_PATIENCE: Duration = Duration::from_secs(5);

/// The control plane's buckets, once opened.
struct Control {
    registry: Registry,
    definitions: async_nats::jetstream::kv::Store,
    membership: Membership,
}

impl Control {
    async fn open(bus: &Bus, id: &str, edge: bool) -> anyhow::Result<Control> {
        Ok(Control {
            membership: Membership::join(bus, id, edge).await?,
            registry: Registry::open(bus).await?,
            definitions: definitions::bucket(bus).await?,
        })
    }
}

/// A host taking its connectors from the bus.
pub struct Reconciler {
    host: Host,
    id: String,
    /// Where the control plane is: the hub's domain for an edge.
    control_bus: Bus,
    /// Its buckets; `None` until an edge first reaches the hub.
    control: Option<Control>,
    /// What was last read from it.
    known: Known,
    /// Registry entries looked up in this pass, kept with the definitions.
    entries: BTreeMap<String, Entry>,
    /// Since when the definitions could not be read (said once).
    unreadable: bool,
    forwarder: Option<Forwarder>,
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
        let edge = config.bus.edge.clone();
        let control_bus = match &edge {
            Some(edge) => bus.in_domain(&edge.hub_domain),
            None => bus.clone(),
        };
        let leases =
            crate::bus::patiently("keep leases", patience, || Leases::start(&bus, id, ttl)).await?;
        let control = match &edge {
            // An edge starts whether or not the hub answers.
            Some(_) => {
                match tokio::time::timeout(HUB_PATIENCE, Control::open(&control_bus, id, true))
                    .await
                {
                    Ok(Ok(control)) => Some(control),
                    Ok(Err(error)) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "The hub's control plane cannot be read; running the last known definitions until it can."
                        );
                        None
                    }
                    Err(_) => {
                        tracing::warn!(
                            "The hub does not answer; running the last known definitions until it does."
                        );
                        None
                    }
                }
            }
            None => Some(
                crate::bus::patiently("join the fleet", patience, || {
                    Control::open(&control_bus, id, false)
                })
                .await?,
            ),
        };
        let forwarder = edge.as_ref().map(|edge| {
            Forwarder::start(
                bus.clone(),
                control_bus.clone(),
                edge,
                host.metrics().clone(),
            )
        });
        Ok(Reconciler {
            id: id.to_owned(),
            known: Known::load(&config.data_dir),
            entries: BTreeMap::new(),
            unreadable: false,
            control_bus,
            control,
            forwarder,
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
        let (mut events, mut deployed) = self.watches().await;
        let mut held = self.leases.watch();
        // An edge whose link comes back reads the hub at once.
        let mut link = match &self.forwarder {
            Some(forwarder) => forwarder.watch(),
            None => watch::channel(crate::edge::ForwardState::default()).1,
        };
        let mut link_up = link.borrow().link_up;
        let mut watching_link = self.forwarder.is_some();
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
                changed = link.changed(), if watching_link => {
                    if changed.is_err() {
                        // The forwarding task ended; the resync still runs.
                        watching_link = false;
                        continue;
                    }
                    let up = link.borrow_and_update().link_up;
                    if up && !link_up {
                        (events, deployed) = self.watches().await;
                        self.sync().await;
                        self.beat().await;
                    } else if !up && link_up {
                        // Say at once that the last known definitions run.
                        self.sync().await;
                    }
                    link_up = up;
                }
                _ = beat.tick() => self.beat().await,
                _ = resync.tick() => {
                    if events.is_none() || deployed.is_none() {
                        let (e, d) = self.watches().await;
                        events = events.or(e);
                        deployed = deployed.or(d);
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
            control,
            leases,
            forwarder,
            ..
        } = self;
        if let Some(forwarder) = forwarder {
            forwarder.stop().await;
        }
        // Connectors first: a lease is given up only once its connector has stopped.
        host.shutdown().await;
        leases.release_all().await;
        // Bounded: with the bus down, the heartbeat expires anyway.
        if let Some(control) = control {
            let _ = tokio::time::timeout(Duration::from_secs(5), control.membership.leave()).await;
        }
    }

    /// The control plane's buckets, opened now if they were not yet (an
    /// edge that started while the hub did not answer), and watches on the
    /// definitions and the registry.
    async fn watches(&mut self) -> (Option<Watch>, Option<Watch>) {
        if self.control.is_none() {
            match tokio::time::timeout(
                HUB_PATIENCE,
                Control::open(&self.control_bus, &self.id, self.forwarder.is_some()),
            )
            .await
            {
                Ok(Ok(control)) => {
                    tracing::info!("The control plane answers.");
                    self.control = Some(control);
                }
                _ => return (None, None),
            }
        }
        let Some(control) = &self.control else {
            return (None, None);
        };
        // A plugin deployed after the definition naming it (or an index
        // entry changed) is looked at at once, not at the next resync.
        (
            control.definitions.watch_all().await.ok(),
            control.registry.watch().await.ok(),
        )
    }

    /// One pass: read, place, lease, load, run.
    pub async fn sync(&mut self) {
        let read = match &self.control {
            // Bounded: a link that drops mid-read must not hold the host.
            Some(control) => {
                tokio::time::timeout(CONTROL_CALL, definitions::read_all(&control.definitions))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {CONTROL_CALL:?}")))
            }
            None => Err(anyhow::anyhow!("the control plane has not answered yet")),
        };
        let fresh = read.is_ok();
        let all = match read {
            Ok(all) => {
                if self.unreadable {
                    self.unreadable = false;
                    println!("plexus: fleet: the definitions can be read again");
                }
                all
            }
            Err(error) => {
                if !self.unreadable {
                    self.unreadable = true;
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "Cannot read the connector definitions."
                    );
                    // One line on stdout: operators and tests follow it.
                    println!(
                        "plexus: fleet: cannot read the definitions ({error:#}); running the last known ones ({} connector(s), read {})",
                        self.known.definitions.len(),
                        if self.known.read_at.is_empty() {
                            "never"
                        } else {
                            &self.known.read_at
                        }
                    );
                }
                self.known.definitions.clone()
            }
        };
        self.entries.clear();
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
        if let Some(forwarder) = &self.forwarder {
            // What this site's connectors publish goes to the hub.
            forwarder
                .settle(
                    wanted
                        .iter()
                        .filter_map(|(spec, _)| spec.to().map(|to| to.to_string()))
                        .collect(),
                )
                .await;
        }
        let changes = self.host.run_connectors(wanted).await;
        self.start_failed = !changes.failed.is_empty();
        if fresh {
            self.remember(all);
        }
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

    /// Keep what this pass read, for when it cannot be read.
    fn remember(&mut self, definitions: BTreeMap<String, (u64, String)>) {
        let mut plugins = std::mem::take(&mut self.entries);
        // Entries not looked up this pass (their connector runs elsewhere,
        // or failed) are kept while a definition still names them.
        for (reference, entry) in &self.known.plugins {
            plugins
                .entry(reference.clone())
                .or_insert_with(|| entry.clone());
        }
        let named: BTreeSet<String> = definitions
            .values()
            .filter_map(|(_, text)| text.parse::<toml::Table>().ok())
            .filter_map(|t| t.get("plugin").and_then(|p| p.as_str()).map(str::to_owned))
            .collect();
        plugins.retain(|reference, _| named.contains(reference));
        if definitions == self.known.definitions && plugins == self.known.plugins {
            return;
        }
        self.known = Known {
            definitions,
            plugins,
            read_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        if let Err(error) = self.known.save(&self.host.config().data_dir) {
            tracing::warn!(
                error = format!("{error:#}"),
                "Cannot keep the definitions read; after a restart without the control plane this host would run nothing."
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
    async fn plugin(&mut self, spec: &ConnectorSpec) -> Result<Plugin, String> {
        let PluginSource::Registry(reference) = &spec.plugin else {
            return Err(format!(
                "plugin {}: definitions in the bus name a deployed plugin as name@version",
                spec.plugin
            ));
        };
        let looked_up = match &self.control {
            // Definitions from the cache: so are their plugins' entries.
            _ if self.unreadable => Err(anyhow::anyhow!("the control plane cannot be read")),
            Some(control) => tokio::time::timeout(CONTROL_CALL, control.registry.lookup(reference))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {CONTROL_CALL:?}"))),
            None => Err(anyhow::anyhow!("the registry has not answered yet")),
        };
        let entry = match looked_up {
            Ok(found) => {
                found.ok_or_else(|| format!("plugin {reference} is not in the registry"))?
            }
            // The registry cannot be read: the entry last read for the
            // digest the definition pins will do.
            Err(error) => self
                .known
                .plugins
                .get(&reference.to_string())
                .filter(|e| spec.plugin_digest.as_deref() == Some(e.digest.as_str()))
                .cloned()
                .ok_or_else(|| format!("{error:#}"))?,
        };
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
            self.entries.insert(reference.to_string(), entry);
            return Ok(plugin.clone());
        }
        self.entries.insert(reference.to_string(), entry.clone());
        let dir = self.host.config().data_dir.join("plugins");
        let file = match (&self.control, registry::cached(&entry, &dir).await) {
            (_, Some(file)) => file,
            (Some(control), None) => {
                tokio::time::timeout(CONTROL_CALL * 12, control.registry.fetch(&entry, &dir))
                    .await
                    .map_err(|_| {
                        format!(
                            "plugin {reference} was not fetched within {:?}",
                            CONTROL_CALL * 12
                        )
                    })?
                    .map_err(|e| format!("{e:#}"))?
            }
            (None, None) => {
                return Err(format!(
                    "plugin {reference} is not cached here and the registry has not answered yet"
                ));
            }
        };
        let runtime = self.host.runtime().clone();
        let cache = self.host.config().data_dir.join("cache");
        let kind = spec.kind();
        tokio::task::spawn_blocking(move || Plugin::load(&runtime, &file, kind, Some(&cache)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    async fn beat(&mut self) {
        let beat = Heartbeat {
            id: self.id.clone(),
            labels: self.labels.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            admin: self.host.http_addr().to_string(),
            started_at: self.started_at.clone(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            connectors: self.host.report().await,
            failed: self.failed.clone(),
            leases: self.leases.held().into_iter().collect(),
            edge: self.forwarder.as_ref().map(Forwarder::state),
        };
        let Some(control) = &self.control else {
            return;
        };
        // Bounded: a hub that stopped answering must not hold up the loop.
        match tokio::time::timeout(HEARTBEAT_EVERY, control.membership.beat(&beat)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = format!("{error:#}"), "Cannot write the heartbeat.")
            }
            Err(_) => tracing::warn!("The heartbeat was not taken in time."),
        }
    }
}

type Watch = async_nats::jetstream::kv::Watch;

async fn next_event(
    events: &mut Option<Watch>,
) -> Option<Result<async_nats::jetstream::kv::Entry, async_nats::jetstream::kv::WatcherError>> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}
