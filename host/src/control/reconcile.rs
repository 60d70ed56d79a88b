//! Bring the running connectors in line with a config.
//!
//! A changed connector (its spec or its plugin's digest) is swapped by starting
//! the new version on the same durable consumer first and only then draining
//! the old one: records keep flowing, nothing taken is dropped, and outputs of
//! a record processed by both are de-duplicated by their deterministic ids.
//! An MLLP listener is the exception: its port can be bound once, so the old
//! version stops first and senders reconnect (they resend what was not acked).

use std::collections::BTreeMap;

use crate::config::Config;
use crate::connector::{Running, Shared};
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
    shared: &Shared,
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
        let existing = running.get(&spec.name);
        if existing.is_some_and(|r| r.spec == *spec && r.digest == plugin.digest) {
            continue;
        }
        let swapping = existing.is_some();
        // A listener's port is held by one version at a time: stop the old one first.
        let needs_gap = existing.is_some_and(Running::binds_a_port) || spec.listener.is_some();
        let mut stopped = None;
        if needs_gap && let Some(old) = running.remove(&spec.name) {
            let (spec, plugin) = (old.spec.clone(), old.plugin.clone());
            old.stop().await;
            stopped = Some((spec, plugin));
        }
        let new = match Running::start(spec.clone(), plugin, shared).await {
            Ok(new) => new,
            Err(error) => {
                // The old version goes back on its port rather than leaving it closed.
                if let Some((old_spec, old_plugin)) = stopped {
                    match Running::start(old_spec, old_plugin, shared).await {
                        Ok(old) => {
                            tracing::warn!(connector = %spec.name, error = format!("{error:#}"), "New version failed to start; the old one is back on its listener.");
                            running.insert(spec.name.clone(), old);
                        }
                        Err(again) => {
                            tracing::error!(connector = %spec.name, error = format!("{again:#}"), "Neither the new nor the old version could start; the connector is stopped.");
                            changes.removed.push(spec.name.clone());
                        }
                    }
                }
                return Err(error);
            }
        };
        if let Some(old) = running.insert(spec.name.clone(), new) {
            old.stop().await;
        }
        if swapping {
            tracing::info!(connector = %spec.name, "Connector swapped to its new version.");
            changes.swapped.push(spec.name.clone());
        } else {
            changes.added.push(spec.name.clone());
        }
    }
    Ok(changes)
}
