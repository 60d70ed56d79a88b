//! What `GET /connectors` (and so `plexus ls` / `plexus status`) reports: each
//! running connector's plugin version, route, counts and lag. The host
//! publishes its roster after every start and reload; counts come from the
//! metrics and lag from the connector's durable consumer, read on request.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use async_nats::jetstream;
use serde::{Deserialize, Serialize};

use super::Metrics;
use super::metrics::Counts;
use crate::config::Kind;
use crate::connector::Running;

/// Where a host writes the address of its admin endpoint, under its
/// `data_dir`, for commands run beside it (the configured port may be 0).
pub fn address_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.addr")
}

/// One running connector, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorStatus {
    /// Its name.
    pub name: String,
    /// transform, source or sink.
    pub kind: String,
    /// The plugin file.
    pub plugin: String,
    /// The first 12 hex digits of the plugin's digest, as in `Plexus-Hops`.
    pub version: String,
    /// Subject filter consumed (transforms and sinks).
    pub from: Option<String>,
    /// Subject published to (sources and transforms).
    pub to: Option<String>,
    /// Where its dead letters go.
    pub dlq: String,
    /// Its counters since the host started.
    pub counts: Counts,
    /// Records on `from` not yet settled (waiting or in flight); `None` for
    /// sources and when the bus cannot tell right now.
    pub lag: Option<u64>,
    /// Schema ids it emits.
    #[serde(default)]
    pub emits: Vec<String>,
}

/// The running connectors, as the host last published them.
#[derive(Debug, Default)]
pub struct Roster(RwLock<Vec<ConnectorStatus>>);

impl Roster {
    /// Replace the roster with what runs now (counts and lag are filled per request).
    pub fn publish<'a>(&self, running: impl Iterator<Item = &'a Running>) {
        let entries = running
            .map(|r| ConnectorStatus {
                name: r.spec.name.clone(),
                kind: r.spec.kind().to_string(),
                plugin: r.spec.plugin.to_string(),
                version: r.digest.chars().take(12).collect(),
                from: r.spec.from().map(str::to_owned),
                to: r.spec.to().map(str::to_owned),
                dlq: r.spec.delivery.dlq.clone(),
                counts: Counts::default(),
                lag: match r.spec.kind() {
                    Kind::Source => None,
                    Kind::Transform | Kind::Sink => Some(0),
                },
                emits: r.spec.emits.clone(),
            })
            .collect();
        if let Ok(mut roster) = self.0.write() {
            *roster = entries;
        }
    }

    /// The running connector `name`, as last published (counts not filled).
    pub fn get(&self, name: &str) -> Option<ConnectorStatus> {
        self.0.read().ok()?.iter().find(|c| c.name == name).cloned()
    }

    /// Every running connector with its current counts and lag.
    pub async fn report(&self, metrics: &Metrics, js: &jetstream::Context) -> Vec<ConnectorStatus> {
        let mut entries = self.0.read().map(|r| r.clone()).unwrap_or_default();
        for entry in &mut entries {
            entry.counts = metrics.counts(&entry.name);
            if let (Some(_), Some(from)) = (entry.lag, &entry.from) {
                entry.lag = lag(js, from, &entry.name).await;
            }
        }
        entries
    }
}

/// Records the connector's durable consumer has not settled yet.
async fn lag(js: &jetstream::Context, from: &str, name: &str) -> Option<u64> {
    let stream = js.stream_by_subject(from).await.ok()?;
    let info = js
        .get_stream_no_info(&stream)
        .await
        .ok()?
        .consumer_info(crate::bus::consumer_name(name))
        .await
        .ok()?;
    Some(info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX))
}
