//! Connector definitions in the bus: `plexus apply` and `plexus rm`.
//!
//! The file applied is the fleet's whole desired state: connectors in it
//! are added or changed, connectors in the bucket but not in it removed.
//! Every apply and rm first moves a generation counter from the revision it
//! read to the next (compare-and-set), so of two operators who planned
//! against the same state only the first writes; the second is told to
//! re-run. Each key is then written against the revision read too.

use std::collections::BTreeMap;

use anyhow::Context as _;
use async_nats::jetstream::kv;
use bytes::Bytes;

use super::registry::Registry;
use crate::bus::Bus;
use crate::config::{Config, ConnectorSpec, Definition, Grants, PluginSource};

/// The key holding the apply generation; no connector name has a dot.
const GENERATION: &str = "apply.generation";

/// What an apply does to one connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// New in the bus.
    Added,
    /// Its definition changes.
    Changed,
    /// Gone from the file: deleted from the bus.
    Removed,
    /// Same as in the bus.
    Unchanged,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Added => "added",
            Action::Changed => "changed",
            Action::Removed => "removed",
            Action::Unchanged => "unchanged",
        })
    }
}

/// One connector's part of a plan.
#[derive(Debug, Clone)]
pub struct Change {
    /// The connector.
    pub name: String,
    /// What happens to it.
    pub action: Action,
    /// Capabilities it gains: grants added, limits raised.
    pub widened: Vec<String>,
    /// Capabilities it loses.
    pub narrowed: Vec<String>,
    /// The new definition's text (not for removals).
    text: Option<String>,
    /// The revision read (0: absent).
    revision: u64,
}

/// An apply, planned against the bucket as read.
#[derive(Debug)]
pub struct Plan {
    /// Per connector, in name order.
    pub changes: Vec<Change>,
    generation: u64,
    generation_revision: u64,
}

impl Plan {
    /// Whether any connector gains a capability.
    pub fn widens(&self) -> bool {
        self.changes.iter().any(|c| !c.widened.is_empty())
    }

    /// Whether any connector is removed (its records stop flowing).
    pub fn removes(&self) -> bool {
        self.changes.iter().any(|c| c.action == Action::Removed)
    }

    /// Whether anything would be written.
    pub fn is_empty(&self) -> bool {
        self.changes.iter().all(|c| c.action == Action::Unchanged)
    }
}

/// Why an apply or rm wrote nothing (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Something the operator fixes: an unknown plugin, a wrong world.
    #[error("{0}")]
    Refused(String),
    /// Someone else changed the definitions since they were read.
    #[error(
        "the connector definitions changed since this apply read them (another operator's apply or rm); nothing more was written: run it again to see the new plan"
    )]
    Stale,
    /// The bus failed.
    #[error("{0:#}")]
    Bus(#[from] anyhow::Error),
}

/// The definitions bucket.
pub async fn bucket(bus: &Bus) -> anyhow::Result<kv::Store> {
    super::bucket(bus, super::CONNECTORS, 8, None).await
}

/// Every connector definition in the bus: name → (revision, text).
pub async fn read_all(store: &kv::Store) -> anyhow::Result<BTreeMap<String, (u64, String)>> {
    let mut all = BTreeMap::new();
    for key in super::keys(store).await? {
        if key.contains('.') {
            continue;
        }
        // A key listed but not readable is a failed read, not an absent
        // definition: hosts must not stop what they run on a partial view.
        let entry = store
            .entry(&key)
            .await
            .with_context(|| format!("cannot read {}/{key}", super::CONNECTORS))?;
        if let Some(entry) = entry
            && entry.operation == kv::Operation::Put
        {
            all.insert(
                key,
                (
                    entry.revision,
                    String::from_utf8_lossy(&entry.value).into_owned(),
                ),
            );
        }
    }
    Ok(all)
}

/// Check `definitions` against the registry, pin each plugin's digest, and
/// plan them against the bus.
pub async fn plan(bus: &Bus, definitions: &[Definition]) -> Result<Plan, ApplyError> {
    let registry = Registry::open(bus).await?;
    let mut checked = BTreeMap::new();
    let mut definitions = definitions.to_vec();
    for definition in &mut definitions {
        let spec = &definition.spec;
        let PluginSource::Registry(reference) = &spec.plugin else {
            return Err(ApplyError::Refused(format!(
                "connector \"{}\": a definition in the bus names a deployed plugin as name@version",
                spec.name
            )));
        };
        let Some(entry) = registry.lookup(reference).await? else {
            return Err(ApplyError::Refused(format!(
                "connector \"{}\": plugin {reference} is not deployed (`plexus deploy <file.wasm> --name {} --version {}`)",
                spec.name, reference.name, reference.version
            )));
        };
        entry
            .check()
            .map_err(|e| ApplyError::Refused(format!("connector \"{}\": {e}", spec.name)))?;
        if !entry.fits(spec.kind()) {
            return Err(ApplyError::Refused(format!(
                "connector \"{}\": plugin {reference} is a {} plugin, not a {}",
                spec.name,
                entry.world,
                spec.kind()
            )));
        }
        if entry.world == "webhook" && spec.trigger() != Some(&crate::config::Trigger::Http) {
            return Err(ApplyError::Refused(format!(
                "connector \"{}\": plugin {reference} is a webhook source; it needs `listen = \"http\"`",
                spec.name
            )));
        }
        if let Some(pinned) = &spec.plugin_digest
            && *pinned != entry.digest
        {
            return Err(ApplyError::Refused(format!(
                "connector \"{}\": plugin_digest {pinned} is not the digest of {reference} in the registry ({})",
                spec.name, entry.digest
            )));
        }
        // Read each component once: bytes altered in the store are caught
        // here, before any host is told to run them.
        if !checked.contains_key(&entry.digest) {
            let bytes = registry.read(&entry).await;
            match bytes {
                Ok(_) => {}
                Err(e) if format!("{e:#}").contains("it was altered") => {
                    return Err(ApplyError::Refused(format!(
                        "connector \"{}\": {e:#}",
                        spec.name
                    )));
                }
                Err(e) => return Err(ApplyError::Bus(e)),
            }
            checked.insert(entry.digest.clone(), ());
        }
        definition.pin(&entry.digest);
    }

    let store = bucket(bus).await?;
    // The generation first: a commit that lands after this read makes this
    // plan's claim fail, so nothing read below can be stale unnoticed.
    let (generation, generation_revision) = generation(&store).await?;
    let current = read_all(&store).await?;
    let parse_old = |name: &str, text: &str| -> Option<ConnectorSpec> {
        let file = std::path::PathBuf::from(format!("kv {}/{name}", super::CONNECTORS));
        Config::parse_definition_text(&file, text).ok()
    };
    let mut changes = Vec::new();
    for definition in &definitions {
        let name = &definition.spec.name;
        let (action, widened, narrowed, revision) = match current.get(name) {
            None => (
                Action::Added,
                widening(None, &definition.spec),
                Vec::new(),
                0,
            ),
            Some((revision, text)) => {
                let old = parse_old(name, text);
                if old.as_ref() == Some(&definition.spec) {
                    (Action::Unchanged, Vec::new(), Vec::new(), *revision)
                } else {
                    let widened = widening(old.as_ref(), &definition.spec);
                    let narrowed = old
                        .as_ref()
                        .map(|old| {
                            widening(Some(&definition.spec), old)
                                .into_iter()
                                .map(|w| w.replace(" + ", " - "))
                                .collect()
                        })
                        .unwrap_or_default();
                    (Action::Changed, widened, narrowed, *revision)
                }
            }
        };
        let text = definition
            .text()
            .map_err(|e| ApplyError::Refused(format!("connector \"{name}\": {e}")))?;
        changes.push(Change {
            name: name.clone(),
            action,
            widened,
            narrowed,
            text: Some(text),
            revision,
        });
    }
    for (name, (revision, _)) in &current {
        if !definitions.iter().any(|d| &d.spec.name == name) {
            changes.push(Change {
                name: name.clone(),
                action: Action::Removed,
                widened: Vec::new(),
                narrowed: Vec::new(),
                text: None,
                revision: *revision,
            });
        }
    }
    changes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Plan {
        changes,
        generation,
        generation_revision,
    })
}

/// Write a plan: first claim the next generation, then each key against
/// the revision read.
pub async fn commit(bus: &Bus, plan: &Plan) -> Result<(), ApplyError> {
    let store = bucket(bus).await?;
    claim(&store, plan.generation, plan.generation_revision).await?;
    for change in &plan.changes {
        let result = match (change.action, &change.text) {
            (Action::Unchanged, _) => continue,
            (Action::Removed, _) => store
                .delete_expect_revision(&change.name, Some(change.revision))
                .await
                .map_err(|e| {
                    (
                        e.kind() == kv::DeleteErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
            // `create` also takes a key whose last entry is a deletion.
            (Action::Added, Some(text)) => store
                .create(&change.name, Bytes::from(text.clone()))
                .await
                .map(|_| ())
                .map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists,
                        e.to_string(),
                    )
                }),
            (_, Some(text)) => store
                .update(&change.name, Bytes::from(text.clone()), change.revision)
                .await
                .map(|_| ())
                .map_err(|e| {
                    (
                        e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
            (_, None) => continue,
        };
        match result {
            Ok(()) => {}
            Err((true, _)) => return Err(ApplyError::Stale),
            Err((false, e)) => {
                return Err(anyhow::anyhow!(
                    "cannot write {}/{}: {e}",
                    super::CONNECTORS,
                    change.name
                )
                .into());
            }
        }
    }
    Ok(())
}

/// Delete one definition. `Ok(false)` if there was none.
pub async fn remove(bus: &Bus, name: &str) -> Result<bool, ApplyError> {
    let Some(store) = super::existing(bus, super::CONNECTORS).await? else {
        return Ok(false);
    };
    let current = read_all(&store).await?;
    let Some((revision, _)) = current.get(name) else {
        return Ok(false);
    };
    let (generation, generation_revision) = generation(&store).await?;
    claim(&store, generation, generation_revision).await?;
    store
        .delete_expect_revision(name, Some(*revision))
        .await
        .map_err(|e| match e.kind() {
            kv::DeleteErrorKind::WrongLastRevision => ApplyError::Stale,
            _ => anyhow::anyhow!("cannot delete {}/{name}: {e}", super::CONNECTORS).into(),
        })?;
    Ok(true)
}

async fn generation(store: &kv::Store) -> anyhow::Result<(u64, u64)> {
    match store
        .entry(GENERATION)
        .await
        .context("cannot read the apply generation")?
    {
        Some(entry) => {
            let generation = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            Ok((generation, entry.revision))
        }
        None => Ok((0, 0)),
    }
}

async fn claim(store: &kv::Store, generation: u64, revision: u64) -> Result<(), ApplyError> {
    let next = Bytes::from((generation + 1).to_string());
    match store.update(GENERATION, next, revision).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(ApplyError::Stale),
        Err(e) => Err(anyhow::anyhow!("cannot write the apply generation: {e}").into()),
    }
}

/// What `new` may do that `old` (absent: nothing) may not: grants added or
/// made writable, limits raised, a listener opened, moved or opened wider,
/// other subjects read or written, more hosts placed on.
pub fn widening(old: Option<&ConnectorSpec>, new: &ConnectorSpec) -> Vec<String> {
    let mut widened = Vec::new();
    let empty = Grants::default();
    let old_grants = old.map_or(&empty, |o| &o.grants);
    for origin in &new.grants.http {
        if !old_grants.http.contains(origin) {
            widened.push(format!("grants.http + {origin}"));
        }
    }
    for file in &new.grants.files {
        if !old_grants.files.contains(file) {
            widened.push(format!("grants.files + {file}"));
        }
    }
    for secret in &new.grants.secrets {
        if !old_grants.secrets.contains(secret) {
            widened.push(format!("grants.secrets + {secret}"));
        }
    }
    let Some(old) = old else {
        if let Some(listener) = new.listener() {
            widened.push(format!("listens on {}", listener.addr));
        }
        return widened;
    };
    let (a, b) = (&old.limits, &new.limits);
    let raised = [
        ("limits.memory", a.memory as u128, b.memory as u128),
        (
            "limits.timeout",
            a.timeout.as_millis(),
            b.timeout.as_millis(),
        ),
        (
            "limits.concurrency",
            a.concurrency as u128,
            b.concurrency as u128,
        ),
        ("limits.outputs", a.outputs as u128, b.outputs as u128),
        (
            "limits.output_bytes",
            a.output_bytes as u128,
            b.output_bytes as u128,
        ),
    ];
    for (what, before, after) in raised {
        if after > before {
            widened.push(format!("{what} raised"));
        }
    }
    if new.from() != old.from() {
        widened.push(format!("reads {}", new.from().unwrap_or("-")));
    }
    if new.to() != old.to() {
        widened.push(format!("writes {}", new.to().unwrap_or("-")));
    }
    if new.delivery.dlq != old.delivery.dlq {
        widened.push(format!("writes dead letters to {}", new.delivery.dlq));
    }
    match (old.listener(), new.listener()) {
        (_, None) => {}
        (None, Some(listener)) => widened.push(format!("listens on {}", listener.addr)),
        (Some(before), Some(after)) => {
            if before.addr != after.addr {
                widened.push(format!("listens on {}", after.addr));
            }
            let opened = (after.allow.is_empty() && !before.allow.is_empty())
                || after.allow.iter().any(|net| !before.allow.contains(net));
            if opened {
                widened.push("listener.allow opened".into());
            }
            let verified =
                |l: &crate::config::Listener| l.tls.as_ref().and_then(|t| t.client_ca.clone());
            if before.tls.is_some() && after.tls.is_none() {
                widened.push("TLS dropped".into());
            } else if verified(before).is_some() && verified(after) != verified(before) {
                widened.push("client certificate check changed".into());
            }
            if after.max_connections > before.max_connections {
                widened.push("listener.max_connections raised".into());
            }
        }
    }
    if old
        .placement
        .iter()
        .any(|(k, v)| new.placement.get(k) != Some(v))
    {
        widened.push("placement widened".into());
    }
    widened
}
