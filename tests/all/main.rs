//! Integration tests: real `nats-server` processes, real plugins built for
//! wasm32-wasip2, the host in-process or as the `plexus` binary.

mod support;

mod config_errors;
mod delivery;
mod faults;
mod lifecycle;
mod reload;
