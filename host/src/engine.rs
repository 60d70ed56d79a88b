//! The one wasmtime [`Engine`] of a host: pooling allocation, epoch
//! interruption ticking from one background thread, the shared linker, and
//! the thread connectors on probation make their calls on.

use std::sync::{Arc, OnceLock};
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

/// The one thread on which connectors on probation — whose calls keep faulting
/// — make their calls, at the lowest priority the OS has (`SCHED_IDLE` on Linux):
/// a looping plugin or a memory bomb then gets only the CPU that nothing else
/// wants, so its neighbours keep their latency while it still makes progress.
/// Started on first use; if it cannot be, probation calls stay on the caller's
/// runtime, which costs only that isolation.
pub fn probation_thread() -> tokio::runtime::Handle {
    static THREAD: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let thread = THREAD.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("plexus-probation")
            .on_thread_start(lowest_priority)
            .enable_all()
            .build()
            .inspect_err(|error| {
                tracing::warn!(%error, "Cannot start the probation thread; runaway connectors stay on the bus workers.");
            })
            .ok()
    });
    match thread {
        Some(thread) => thread.handle().clone(),
        None => tokio::runtime::Handle::current(),
    }
}

/// Put the calling thread in Linux's `SCHED_IDLE` class: it runs only when no
/// ordinary thread wants the core, and any waking thread preempts it at once.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread and `param` is a valid sched_param
    // for SCHED_IDLE, which takes priority 0; lowering needs no privilege.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "Cannot lower the probation thread's priority.");
    }
}

/// Elsewhere the probation thread keeps the ordinary priority.
#[cfg(not(target_os = "linux"))]
fn lowest_priority() {}

/// Engine plus linker, shared by every connector of a host.
#[derive(Clone)]
pub struct Runtime {
    /// The engine all components are compiled for.
    pub engine: Engine,
    /// WASI (nothing granted) plus the Plexus imports.
    pub linker: Arc<Linker<PluginState>>,
}

/// Plugin instances the pool holds at least, whatever the config asks.
const MIN_INSTANCES: u32 = 1000;

impl Runtime {
    /// Build the engine with the least capacity and start its epoch ticker.
    pub fn new() -> anyhow::Result<Runtime> {
        Runtime::with_capacity(0)
    }

    /// Build the engine with room for `instances` plugin instances at once
    /// (every connector's `limits.concurrency`, added up) twice over — a swap
    /// runs the old and new versions side by side — and start its epoch
    /// ticker. The pool is shared by every connector: sized too small, a
    /// healthy connector could not instantiate.
    pub fn with_capacity(instances: usize) -> anyhow::Result<Runtime> {
        let wanted =
            u32::try_from(instances.saturating_mul(2).saturating_add(100)).unwrap_or(u32::MAX);
        let components = wanted.max(MIN_INSTANCES);
        let mut pool = PoolingAllocationConfig::new();
        pool.max_memory_size(MAX_MEMORY)
            .total_component_instances(components)
            // A component holds a few core instances (the program and WASI
            // adapter shims) and one or two memories and tables.
            .total_core_instances(components.saturating_mul(4))
            .total_memories(components.saturating_mul(2))
            .total_tables(components.saturating_mul(4))
            .total_stacks(components);
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn own_policy() -> i32 {
        // SAFETY: pid 0 is the calling thread; no memory is passed.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[tokio::test]
    async fn probation_runs_at_the_lowest_priority_and_other_calls_do_not() {
        let probation = probation_thread().spawn(async { own_policy() });
        assert_eq!(probation.await.ok(), Some(libc::SCHED_IDLE));
        assert_eq!(own_policy(), libc::SCHED_OTHER);
    }
}
