//! A fleet host's presence: its heartbeat in `plexus-hosts` and its leases
//! in `plexus-leases`, both kv buckets whose keys expire when not rewritten.
//!
//! A lease is a key named after the connector holding the holder's id. It
//! is taken with `create` (only if absent, or expired) and renewed with
//! `update` against the revision last written, a third of the TTL apart.
//! A holder that cannot renew for two thirds of the TTL lets go on its own,
//! before anyone else can take it, so two hosts never run it at once.

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
    let store = hosts_bucket(bus).await?;
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

/// The holder of each lease.
pub async fn lease_holders(bus: &Bus, ttl: Duration) -> anyhow::Result<BTreeMap<String, String>> {
    let store = leases_bucket(bus, ttl).await?;
    let mut holders = BTreeMap::new();
    for key in super::keys(&store).await? {
        if let Some(value) = store.get(&key).await.context("cannot read a lease")? {
            holders.insert(key, String::from_utf8_lossy(&value).into_owned());
        }
    }
    Ok(holders)
}

async fn leases_bucket(bus: &Bus, ttl: Duration) -> anyhow::Result<kv::Store> {
    super::bucket(bus, super::LEASES, 1, Some(ttl)).await
}

/// This host's heartbeat and leases.
pub struct Membership {
    id: String,
    hosts: kv::Store,
    leases: kv::Store,
    ttl: Duration,
    /// Held leases: revision last written and when.
    held: BTreeMap<String, (u64, Instant)>,
}

impl Membership {
    /// Join the fleet as `id`, with leases that expire `ttl` after renewal
    /// (the bucket's own TTL wins if it was made shorter by another host).
    pub async fn join(bus: &Bus, id: &str, ttl: Duration) -> anyhow::Result<Membership> {
        let hosts = hosts_bucket(bus).await?;
        let leases = leases_bucket(bus, ttl).await?;
        let bucket_ttl = leases
            .status()
            .await
            .context("cannot read the lease bucket")?
            .max_age();
        let ttl = if bucket_ttl.is_zero() {
            ttl
        } else {
            ttl.min(bucket_ttl)
        };
        Ok(Membership {
            id: id.to_owned(),
            hosts,
            leases,
            ttl,
            held: BTreeMap::new(),
        })
    }

    /// This host's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How often leases are renewed.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Write the heartbeat.
    pub async fn beat(&self, beat: &Heartbeat) -> anyhow::Result<()> {
        let value = serde_json::to_vec(beat).context("cannot encode the heartbeat")?;
        self.hosts
            .put(&self.id, value.into())
            .await
            .context("cannot write the heartbeat")?;
        Ok(())
    }

    /// Hold exactly the leases in `wanted` that can be had: renew those
    /// held, try to take the others, let go of the rest. Returns what is held.
    pub async fn hold(&mut self, wanted: &BTreeSet<String>) -> BTreeSet<String> {
        let now = Instant::now();
        let unwanted: Vec<String> = self
            .held
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for name in unwanted {
            if let Some((revision, _)) = self.held.remove(&name) {
                let _ = self
                    .leases
                    .delete_expect_revision(&name, Some(revision))
                    .await;
            }
        }
        let value = Bytes::from(self.id.clone());
        for name in wanted {
            match self.held.get(name).copied() {
                Some((revision, renewed)) => {
                    match self.leases.update(name, value.clone(), revision).await {
                        Ok(revision) => {
                            self.held.insert(name.clone(), (revision, now));
                        }
                        Err(error) => {
                            let lost = error.kind() == kv::UpdateErrorKind::WrongLastRevision;
                            if lost || now.duration_since(renewed) > self.ttl * 2 / 3 {
                                tracing::warn!(connector = %name, %error, "Lease lost; stopping the connector here.");
                                self.held.remove(name);
                            }
                        }
                    }
                }
                None => {
                    if let Ok(revision) = self.leases.create(name, value.clone()).await {
                        tracing::info!(connector = %name, "Lease taken.");
                        self.held.insert(name.clone(), (revision, now));
                    }
                }
            }
        }
        self.held.keys().cloned().collect()
    }

    /// Give up every lease and the heartbeat: another host takes over now
    /// rather than after the TTL.
    pub async fn leave(&mut self) {
        for (name, (revision, _)) in std::mem::take(&mut self.held) {
            let _ = self
                .leases
                .delete_expect_revision(&name, Some(revision))
                .await;
        }
        let _ = self.hosts.delete(&self.id).await;
    }
}
