//! Bring the running connectors in line with a config.
//!
//! A changed connector (its spec or its plugin's digest) is swapped by starting
//! the new version on the same durable consumer first and only then draining
//! the old one: records keep flowing, nothing taken is dropped, and outputs of
//! a record processed by both are de-duplicated by their deterministic ids.
//! An MLLP listener is the exception: its port can be bound once, so the old
//! version stops first and senders reconnect (they resend what was not acked).

use std::collections::BTreeMap;

use crate::config::ConnectorSpec;
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
    /// Connectors that could not start, and why; each keeps its old
    /// version running where there was one.
    pub failed: Vec<(String, String)>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.swapped.is_empty()
            && self.removed.is_empty()
            && self.failed.is_empty()
    }

    /// The first failure as an error, for callers that want all or nothing.
    pub fn into_result(self) -> anyhow::Result<Changes> {
        match self.failed.first() {
            Some((name, reason)) => Err(anyhow::anyhow!("connector \"{name}\": {reason}")),
            None => Ok(self),
        }
    }
}

/// Run exactly `wanted` (each with its loaded plugin): stop the others,
/// start the new, swap the changed. A connector that fails to start is
/// reported in [`Changes::failed`] and the rest go on.
pub async fn apply(
    running: &mut BTreeMap<String, Running>,
    wanted: Vec<(ConnectorSpec, Plugin)>,
    shared: &Shared,
) -> Changes {
    let mut changes = Changes::default();
    let names: Vec<String> = wanted.iter().map(|(c, _)| c.name.clone()).collect();
    let gone: Vec<String> = running
        .keys()
        .filter(|n| !names.contains(n))
        .cloned()
        .collect();
    for name in gone {
        if let Some(old) = running.remove(&name) {
            old.stop().await;
            changes.removed.push(name);
        }
    }

    for (spec, plugin) in wanted {
        let spec = &spec;
        let existing = running.get(&spec.name);
        if existing.is_some_and(|r| r.spec == *spec && r.digest == plugin.digest) {
            continue;
        }
        let swapping = existing.is_some();
        // A listener's port is held by one version at a time: stop the old one first.
        let needs_gap = existing.is_some_and(Running::binds_a_port) || spec.listener().is_some();
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
                changes
                    .failed
                    .push((spec.name.clone(), format!("{error:#}")));
                continue;
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
    changes
}
