//! Integration tests: real `nats-server` processes, real plugins built for
//! wasm32-wasip2, the host in-process or as the `plexus` binary.

// Tests may panic: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod admin;
mod audit;
mod boundary;
mod browser;
mod bus_auth;
mod config_errors;
mod connectors;
mod contracts;
mod dashboard;
mod dead_letters;
mod delivery;
mod edge;
mod edges;
mod faults;
mod fleet;
mod flow;
mod formats;
mod lifecycle;
mod lineage;
mod listeners;
mod matching;
mod plugins;
mod rebinding;
mod reload;
mod scaffold;
mod service_levels;
mod soak;
mod status;
mod telemetry;
mod webhook;
