//! The fleet's control plane, kept in the bus: the plugin registry
//! (`registry`), connector definitions (`definitions`), signatures
//! (`signing`), host heartbeats and leases (`membership`), and what a fleet
//! host does with all of them (`reconciler`).
//!
//! | bucket | kind | written by | read by |
//! |---|---|---|---|
//! | `plexus-plugins` | object store, one object per SHA-256 digest | `plexus deploy` | hosts |
//! | `plexus-registry` | kv, `name.version` → digest, world, signature | `plexus deploy` | `plexus apply`, hosts |
//! | `plexus-connectors` | kv, connector name → its `[[connector]]` table | `plexus apply`, `plexus rm` | hosts (watched) |
//! | `plexus-hosts` | kv with a TTL, host id → heartbeat | each host | `plexus hosts`, `ls`, `status` |
//! | `plexus-edges` | kv, edge host id → its last heartbeat (kept) | edge hosts | `plexus hosts`, `status` |
//! | `plexus-leases` | kv with a TTL, connector name → holder | hosts (an edge keeps its own, in its domain) | hosts, `plexus ls` |

pub mod definitions;
pub mod known;
pub mod membership;
pub mod reconciler;
pub mod registry;
pub mod signing;

use anyhow::Context as _;
use async_nats::jetstream::kv;

use crate::bus::Bus;

/// Object store of plugin components, named by digest.
pub const PLUGINS: &str = "plexus-plugins";
/// The registry's index: `name.version` → [`registry::Entry`].
pub const REGISTRY: &str = "plexus-registry";
/// Connector definitions, one key per connector.
pub const CONNECTORS: &str = "plexus-connectors";
/// Heartbeats, one key per host.
pub const HOSTS: &str = "plexus-hosts";
/// The last heartbeat of each edge host, kept while its link is down.
pub const EDGES: &str = "plexus-edges";
/// Leases on connectors one host at a time may run.
pub const LEASES: &str = "plexus-leases";

/// A control-plane bucket, created with the bus's limits if it does not
/// exist (and only then: a lookup that fails otherwise is an error).
/// `history` keeps earlier revisions (definitions: for `plexus apply`'s
/// revision check and for looking back); `ttl` expires keys not rewritten.
pub(crate) async fn bucket(
    bus: &Bus,
    name: &str,
    history: i64,
    ttl: Option<std::time::Duration>,
) -> anyhow::Result<kv::Store> {
    if let Some(store) = existing(bus, name).await? {
        return Ok(store);
    }
    bus.js
        .create_key_value(kv::Config {
            bucket: name.to_owned(),
            history,
            max_age: ttl.unwrap_or_default(),
            max_bytes: bus.limits.bucket_max_bytes,
            num_replicas: bus.limits.replicas,
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create kv bucket {name}"))
}

/// The bucket `name` if it exists; `None` if it does not (yet).
pub(crate) async fn existing(bus: &Bus, name: &str) -> anyhow::Result<Option<kv::Store>> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::GetStreamErrorKind;
    match bus.js.get_stream(format!("KV_{name}")).await {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(anyhow::anyhow!("cannot look up kv bucket {name}: {e}")),
    }
    let store = bus
        .js
        .get_key_value(name)
        .await
        .with_context(|| format!("cannot open kv bucket {name}"))?;
    Ok(Some(store))
}

/// The keys of `store`, read to the end.
pub(crate) async fn keys(store: &kv::Store) -> anyhow::Result<Vec<String>> {
    use futures::TryStreamExt as _;
    let keys = store
        .keys()
        .await
        .context("cannot list keys")?
        .try_collect()
        .await
        .context("cannot list keys")?;
    Ok(keys)
}
