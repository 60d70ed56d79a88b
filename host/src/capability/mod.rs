//! The host side of every WIT import: what a plugin may reach, and nothing more.
//!
//! Each store carries a [`PluginState`]: WASI with nothing inherited (no
//! environment, no files, no network, no stdio), the connector's config and kv
//! bucket, and the per-call deadline and memory cap the engine enforces.

mod config;
mod kv;

pub use kv::bucket_name as kv_bucket_name;
mod log;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings;

/// What every instance of one connector shares.
#[derive(Debug)]
pub struct ConnectorContext {
    /// The connector's name, for logs and errors.
    pub name: String,
    /// The `config` table from `plexus.toml`.
    pub config: BTreeMap<String, String>,
    /// The connector's kv bucket; `None` where no bus is connected (`plexus check`).
    pub kv: Option<async_nats::jetstream::kv::Store>,
}

/// The data of one `Store`: one warm instance of one connector.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) connector: Arc<ConnectorContext>,
    /// When the current call must stop; checked at every epoch tick.
    pub(crate) deadline: Instant,
}

impl PluginState {
    /// Fresh state for a new instance, capped at `memory` bytes of linear memory.
    pub fn new(connector: Arc<ConnectorContext>, memory: usize) -> Self {
        PluginState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            memory: MemoryCap {
                limit: memory,
                hit: false,
            },
            connector,
            deadline: Instant::now(),
        }
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

/// Add WASI (p2, nothing granted) and the Plexus imports to `linker`.
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    bindings::host::Imports::add_to_linker::<_, HasSelf<PluginState>>(linker, |state| state)
}
