//! The one wasmtime [`Engine`] of a host: pooling allocation, epoch
//! interruption ticking from one background thread, and the shared linker.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::capability::{self, PluginState};

/// How often the epoch advances. A plugin call yields to the scheduler at every
/// tick and is interrupted at the first tick past its deadline, so this is also
/// the precision of `limits.timeout`.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The largest linear memory any instance may have; `limits.memory` caps each
/// connector below this. Virtual address space only, reserved by the pool.
const MAX_MEMORY: usize = 4 << 30;

/// Engine plus linker, shared by every connector of a host.
#[derive(Clone)]
pub struct Runtime {
    /// The engine all components are compiled for.
    pub engine: Engine,
    /// WASI (nothing granted) plus the Plexus imports.
    pub linker: Arc<Linker<PluginState>>,
}

impl Runtime {
    /// Build the engine and start its epoch ticker.
    pub fn new() -> anyhow::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::new();
        pool.max_memory_size(MAX_MEMORY);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plexus-epoch".into())
            .spawn(move || {
                // Stops by itself once the last clone of the engine is dropped.
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        let mut linker = Linker::new(&engine);
        capability::add_to_linker(&mut linker)?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
        })
    }
}
