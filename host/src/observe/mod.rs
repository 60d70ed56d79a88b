//! What operators see: Prometheus metrics, the running connectors' status,
//! and the admin HTTP endpoint serving both.

pub mod http;
pub mod metrics;
pub mod status;

pub use metrics::Metrics;
