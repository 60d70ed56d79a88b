//! Bring the running connectors in line with a config.
//!
//! A changed connector (its spec or its plugin's digest) is swapped by starting
//! the new version on the same durable consumer first and only then draining
//! the old one: records keep flowing, nothing taken is dropped, and outputs of
//! a record processed by both are de-duplicated by their deterministic ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bus::Bus;
use crate::config::Config;
use crate::connector::Running;
use crate::observe::Metrics;
use crate::plugin::Plugin;

/// What a reconcile did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Connectors started.
    pub added: Vec<String>,
    /// Connectors swapped to a new version.
    pub swapped: Vec<String>,
    /// Connectors stopped.
    pub removed: Vec<String>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.swapped.is_empty() && self.removed.is_empty()
    }
}

/// Apply `config` (whose plugins are already loaded, in connector order).
/// Stops at the first connector that fails to start, leaving the others as
/// they were.
pub async fn apply(
    running: &mut BTreeMap<String, Running>,
    config: &Config,
    plugins: Vec<Plugin>,
    bus: &Bus,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Changes> {
    let mut changes = Changes::default();

    let wanted: Vec<&str> = config.connectors.iter().map(|c| c.name.as_str()).collect();
    let gone: Vec<String> = running
        .keys()
        .filter(|n| !wanted.contains(&n.as_str()))
        .cloned()
        .collect();
    for name in gone {
        if let Some(old) = running.remove(&name) {
            old.stop().await;
            changes.removed.push(name);
        }
    }

    for (spec, plugin) in config.connectors.iter().zip(plugins) {
        let unchanged = running
            .get(&spec.name)
            .is_some_and(|r| r.spec == *spec && r.digest == plugin.digest);
        if unchanged {
            continue;
        }
        let new = Running::start(spec.clone(), plugin, bus, metrics.clone()).await?;
        match running.insert(spec.name.clone(), new) {
            Some(old) => {
                old.stop().await;
                tracing::info!(connector = %spec.name, "Connector swapped to its new version.");
                changes.swapped.push(spec.name.clone());
            }
            None => changes.added.push(spec.name.clone()),
        }
    }
    Ok(changes)
}
