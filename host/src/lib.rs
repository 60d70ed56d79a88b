//! Plexus: a host that runs sandboxed WebAssembly connectors on NATS JetStream.
//!
//! The binary `plexus` is a thin CLI over this library, so tests drive the
//! runtime in-process. See `ARCHITECTURE.md` for how a record moves through
//! these modules.

pub mod admin;
mod bindings;
pub mod bus;
pub mod capability;
pub mod cli;
pub mod config;
pub mod connector;
pub mod contract;
pub mod control;
pub mod edge;
pub mod engine;
pub mod fleet;
pub mod host;
pub mod observe;
pub mod plugin;
pub mod tls;
