//! The host side of every WIT import: what a plugin may reach, and nothing more.
//!
//! Each store carries a [`PluginState`]: WASI with nothing inherited (no
//! environment, no stdio, no sockets) but the granted directories, `wasi:http`
//! behind the grant check of [`http`], the connector's config, kv bucket and
//! secrets, and the per-call deadline and memory cap the engine enforces.

mod config;
mod http;
mod http_send;
mod kv;
mod log;
mod secrets;

pub use kv::bucket_name as kv_bucket_name;
pub use secrets::{redact, resolve as resolve_secrets};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::bindings;
use crate::config::{ConnectorSpec, Grants};
use crate::observe::{Audit, Metrics};

/// What every instance of one connector shares.
#[derive(Debug)]
pub struct ConnectorContext {
    /// The connector's name, for logs and errors.
    pub name: String,
    /// The `config` table from `plexus.toml`.
    pub config: BTreeMap<String, String>,
    /// The connector's kv bucket; `None` where no bus is connected (`plexus check`).
    pub kv: Option<async_nats::jetstream::kv::Store>,
    /// Capabilities granted.
    pub grants: Grants,
    /// Values of the granted secrets the host could resolve.
    pub secrets: BTreeMap<String, String>,
    /// Where refusals are counted.
    pub metrics: Arc<Metrics>,
    /// Where refusals are recorded.
    pub audit: Audit,
}

impl ConnectorContext {
    /// Resolve a connector's grants and secrets.
    pub fn new(
        spec: &ConnectorSpec,
        kv: Option<async_nats::jetstream::kv::Store>,
        secrets_file: Option<&Path>,
        metrics: Arc<Metrics>,
        audit: Audit,
    ) -> anyhow::Result<Self> {
        let secrets = secrets::resolve(&spec.grants.secrets, secrets_file)?;
        for name in spec
            .grants
            .secrets
            .iter()
            .filter(|n| !secrets.contains_key(*n))
        {
            tracing::warn!(connector = %spec.name, secret = %name, "Granted secret has no value (set PLEXUS_SECRET_<NAME> or [host].secrets_file).");
        }
        Ok(ConnectorContext {
            name: spec.name.clone(),
            config: spec.config.clone(),
            kv,
            grants: spec.grants.clone(),
            secrets,
            metrics,
            audit,
        })
    }

    /// Record a refused capability use: a warning for the operator and a count.
    pub fn denied(&self, capability: &str, what: &str) {
        let what = redact(&self.secrets, what);
        tracing::warn!(connector = %self.name, capability, request = %what, "Capability denied.");
        self.metrics.denied(&self.name, capability);
        self.audit.record(
            "capability_denied",
            &self.name,
            &format!("{capability}: {what}"),
        );
    }
}

/// The data of one `Store`: one warm instance of one connector.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_gate: http::HttpGate,
    pub(crate) memory: MemoryCap,
    pub(crate) connector: Arc<ConnectorContext>,
    /// When the current call must stop; checked at every epoch tick.
    pub(crate) deadline: Instant,
}

impl PluginState {
    /// Fresh state for a new instance, capped at `memory` bytes of linear
    /// memory. WASI inherits nothing: no environment, no stdio, no network
    /// sockets; only the granted directories are visible.
    pub fn new(connector: Arc<ConnectorContext>, memory: usize) -> anyhow::Result<Self> {
        let mut wasi = WasiCtx::builder();
        for grant in &connector.grants.files {
            // The grant was checked as this real path; a symlink put in its
            // way since (by a plugin with write access nearby) is refused.
            if grant.host.canonicalize().ok().as_deref() != Some(grant.host.as_path()) {
                anyhow::bail!(
                    "grants.files {}: the directory is no longer at the path that was granted (a link was put in its way)",
                    grant.host.display()
                );
            }
            let perms = if grant.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&grant.host, &grant.guest, perms)
                .map_err(|e| anyhow::anyhow!("grants.files {}: {e}", grant.host.display()))?;
        }
        Ok(PluginState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_gate: http::HttpGate::new(connector.clone()),
            memory: MemoryCap {
                limit: memory,
                hit: false,
            },
            connector,
            deadline: Instant::now(),
        })
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps an instance's linear memory, and remembers that it did so the error
/// can say "memory limit" rather than a bare trap.
#[derive(Debug)]
pub struct MemoryCap {
    limit: usize,
    /// Set once a grow was refused.
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} MiB reached (asked for {} MiB)",
                self.limit >> 20,
                desired.div_ceil(1 << 20)
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Add WASI p2, `wasi:http` and the Plexus imports to `linker`. What a
/// plugin may actually reach is decided per store by its grants.
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    bindings::host::Imports::add_to_linker::<_, HasSelf<PluginState>>(linker, |state| state)
}
