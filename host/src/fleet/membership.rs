//! A fleet host's presence: its heartbeat in `plexus-hosts` and its leases
//! in `plexus-leases`, both kv buckets whose keys expire when not rewritten.
//!
//! A lease is a key named after the connector holding the holder's id. It
//! is taken with `create` (only if absent, or expired) and renewed with
//! `update` against the revision last written, a third of the TTL apart.
//! A task of its own renews every quarter of the TTL, whatever the host is
//! doing. A holder that cannot renew for half the TTL lets go on its own
//! and its connector is stopped in the other half, before anyone else can
//! take the lease; a lease is given up only once its connector has stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::bus::Bus;
use crate::observe::status::ConnectorStatus;

/// How often a host writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A heartbeat not renewed for this long is gone: its host is down.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(10);

/// What a host says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Its id (`plexus up --id`, default: hostname and a random suffix).
    pub id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The plexus version it runs.
    pub version: String,
    /// Its admin endpoint.
    pub admin: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it wrote this (RFC 3339).
    pub at: String,
    /// The connectors it runs, with their counts.
    pub connectors: Vec<ConnectorStatus>,
    /// Connectors placed on it that it cannot run, and why.
    #[serde(default)]
    pub failed: BTreeMap<String, String>,
    /// The leases it holds.
    #[serde(default)]
    pub leases: Vec<String>,
    /// An edge host's link to the hub and what waits to be forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<crate::edge::ForwardState>,
}

/// A host id: its name and a random suffix, so two hosts on one machine differ.
pub fn default_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|n| n.trim().to_owned())
        .unwrap_or_default();
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let mut suffix = [0u8; 3];
    let _ = getrandom::fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    if name.is_empty() {
        format!("host-{suffix}")
    } else {
        format!("{name}-{suffix}")
    }
}

/// Whether `id` can be a kv key and a readable name.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("host id {id:?} must be 1 to 64 of [A-Za-z0-9_-]"));
    }
    Ok(())
}

/// The heartbeat bucket.
pub async fn hosts_bucket(bus: &Bus) -> anyhow::Result<kv::Store> {
    super::bucket(bus, super::HOSTS, 1, Some(HEARTBEAT_TTL)).await
}

/// Every live host's last heartbeat, by id.
pub async fn heartbeats(bus: &Bus) -> anyhow::Result<Vec<Heartbeat>> {
    let Some(store) = super::existing(bus, super::HOSTS).await? else {
        return Ok(Vec::new());
    };
    let mut beats = Vec::new();
    for key in super::keys(&store).await? {
        if let Some(value) = store.get(&key).await.context("cannot read a heartbeat")?
            && let Ok(beat) = serde_json::from_slice::<Heartbeat>(&value)
        {
            beats.push(beat);
        }
    }
    beats.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(beats)
}

/// The last heartbeat of every edge host, kept (no TTL): an edge whose link
/// is down is shown as such, not forgotten.
pub async fn edges(bus: &Bus) -> anyhow::Result<Vec<Heartbeat>> {
    let Some(store) = super::existing(bus, super::EDGES).await? else {
        return Ok(Vec::new());
    };
    let mut beats = Vec::new();
    for key in super::keys(&store).await? {
        if let Some(value) = store
            .get(&key)
            .await
            .context("cannot read an edge's heartbeat")?
            && let Ok(beat) = serde_json::from_slice::<Heartbeat>(&value)
        {
            beats.push(beat);
        }
    }
    beats.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(beats)
}

async fn leases_bucket(bus: &Bus, ttl: Duration) -> anyhow::Result<kv::Store> {
    super::bucket(bus, super::LEASES, 1, Some(ttl)).await
}

/// This host's heartbeat.
pub struct Membership {
    id: String,
    hosts: kv::Store,
    /// An edge's: where its last heartbeat is kept.
    edges: Option<kv::Store>,
}

impl Membership {
    /// Join the fleet as `id` (an `edge` host's heartbeat is also kept).
    pub async fn join(bus: &Bus, id: &str, edge: bool) -> anyhow::Result<Membership> {
        let edges = if edge {
            Some(super::bucket(bus, super::EDGES, 1, None).await?)
        } else {
            None
        };
        Ok(Membership {
            id: id.to_owned(),
            hosts: hosts_bucket(bus).await?,
            edges,
        })
    }

    /// This host's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Write the heartbeat.
    pub async fn beat(&self, beat: &Heartbeat) -> anyhow::Result<()> {
        let value = serde_json::to_vec(beat).context("cannot encode the heartbeat")?;
        let value = bytes::Bytes::from(value);
        if let Some(edges) = &self.edges {
            edges
                .put(&self.id, value.clone())
                .await
                .context("cannot write the heartbeat")?;
        }
        self.hosts
            .put(&self.id, value)
            .await
            .context("cannot write the heartbeat")?;
        Ok(())
    }

    /// Take the heartbeat down: the host is gone now, not after the TTL
    /// (an edge that stops on purpose is not shown as cut off).
    pub async fn leave(&self) {
        if let Some(edges) = &self.edges {
            let _ = edges.delete(&self.id).await;
        }
        let _ = self.hosts.delete(&self.id).await;
    }
}

/// What the reconciler asks of the lease keeper: the leases it wants (to
/// start those connectors) and those whose connectors still run here (kept
/// until they have stopped, then let go).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseAsk {
    /// Connectors placed here that need a lease.
    pub want: BTreeSet<String>,
    /// Leased connectors running here now.
    pub running: BTreeSet<String>,
}

/// The leases of one host, kept by a task of their own so that renewals
/// never wait behind a reconcile (a plugin compiling, a connector draining).
pub struct Leases {
    ask: tokio::sync::watch::Sender<LeaseAsk>,
    held: tokio::sync::watch::Receiver<BTreeSet<String>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Leases {
    /// Start keeping leases as `id`, expiring `ttl` after renewal (the
    /// bucket's own TTL wins if another host made it shorter).
    pub async fn start(bus: &Bus, id: &str, ttl: Duration) -> anyhow::Result<Leases> {
        let store = leases_bucket(bus, ttl).await?;
        let bucket_ttl = store
            .status()
            .await
            .context("cannot read the lease bucket")?
            .max_age();
        if bucket_ttl.is_zero() {
            anyhow::bail!(
                "the kv bucket {} has no max age, so a lease of a host that died would never expire; delete the bucket and let a host make it again",
                super::LEASES
            );
        }
        let ttl = ttl.min(bucket_ttl);
        let (ask, asked) = tokio::sync::watch::channel(LeaseAsk::default());
        let (held_tx, held) = tokio::sync::watch::channel(BTreeSet::new());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let keeper = Keeper {
            store,
            id: Bytes::from(id.to_owned()),
            ttl,
            held: BTreeMap::new(),
        };
        let task = tokio::spawn(keeper.run(asked, held_tx, stopped));
        Ok(Leases {
            ask,
            held,
            stop,
            task,
        })
    }

    /// Tell the keeper what to hold.
    pub fn ask(&self, ask: LeaseAsk) {
        self.ask.send_if_modified(|current| {
            let changed = *current != ask;
            *current = ask;
            changed
        });
    }

    /// The leases held now.
    pub fn held(&self) -> BTreeSet<String> {
        self.held.borrow().clone()
    }

    /// A receiver that wakes when the held set changes.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<BTreeSet<String>> {
        self.held.clone()
    }

    /// Let every lease go (call once the connectors have stopped).
    pub async fn release_all(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            tracing::warn!("Could not give up the leases in time; they expire after their TTL.");
        }
    }
}

/// The lease task's state: each held lease's revision and last renewal.
struct Keeper {
    store: kv::Store,
    id: Bytes,
    ttl: Duration,
    held: BTreeMap<String, (u64, Instant)>,
}

impl Keeper {
    async fn run(
        mut self,
        mut asked: tokio::sync::watch::Receiver<LeaseAsk>,
        held: tokio::sync::watch::Sender<BTreeSet<String>>,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.ttl / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tick.tick() => {}
                changed = asked.changed() => if changed.is_err() { break },
            }
            let ask = asked.borrow_and_update().clone();
            self.pass(&ask, &held).await;
        }
        for (name, (revision, _)) in std::mem::take(&mut self.held) {
            let _ = self
                .bounded(self.store.delete_expect_revision(&name, Some(revision)))
                .await;
        }
    }

    /// One round: let go of what is no longer needed, renew the rest, take
    /// what is wanted and free.
    async fn pass(&mut self, ask: &LeaseAsk, held: &tokio::sync::watch::Sender<BTreeSet<String>>) {
        // Say what is held as soon as it changes: a lease let go must stop
        // its connector now, not after the rest of the round.
        let publish = |leases: &BTreeMap<String, (u64, Instant)>| {
            let now: BTreeSet<String> = leases.keys().cloned().collect();
            held.send_if_modified(|current| {
                let changed = *current != now;
                *current = now;
                changed
            });
        };
        let unneeded: Vec<String> = self
            .held
            .keys()
            .filter(|k| !ask.want.contains(*k) && !ask.running.contains(*k))
            .cloned()
            .collect();
        for name in unneeded {
            if let Some((revision, _)) = self.held.remove(&name) {
                let _ = self
                    .bounded(self.store.delete_expect_revision(&name, Some(revision)))
                    .await;
                tracing::info!(connector = %name, "Lease given up.");
            }
        }
        let names: Vec<String> = self.held.keys().cloned().collect();
        let mut dropped = BTreeSet::new();
        for name in names {
            let Some((revision, renewed)) = self.held.get(&name).copied() else {
                continue;
            };
            // The server counts the TTL from when it stores the renewal,
            // which is after it is sent: the send time is the safe side.
            let sent = Instant::now();
            match self
                .bounded(self.store.update(&name, self.id.clone(), revision))
                .await
            {
                Some(Ok(revision)) => {
                    self.held.insert(name, (revision, sent));
                }
                Some(Err(error)) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(connector = %name, "Lease taken by another host; stopping the connector here.");
                    self.held.remove(&name);
                    dropped.insert(name);
                    publish(&self.held);
                }
                // Not renewed: let go at half the TTL, so the connector has
                // the other half to stop before anyone else may take it.
                _ if Instant::now().duration_since(renewed) >= self.ttl / 2 => {
                    tracing::warn!(connector = %name, "Lease not renewed for half its TTL; stopping the connector here.");
                    self.held.remove(&name);
                    dropped.insert(name);
                    publish(&self.held);
                }
                _ => {}
            }
        }
        publish(&self.held);
        for name in &ask.want {
            if self.held.contains_key(name) || dropped.contains(name) {
                continue;
            }
            let sent = Instant::now();
            if let Some(Ok(revision)) = self.bounded(self.store.create(name, self.id.clone())).await
            {
                tracing::info!(connector = %name, "Lease taken.");
                self.held.insert(name.clone(), (revision, sent));
            }
        }
        publish(&self.held);
    }

    /// A bus call that may take at most a quarter of the TTL.
    async fn bounded<T>(&self, call: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout(self.ttl / 4, call).await.ok()
    }
}
