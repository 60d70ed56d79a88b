//! What operators see: Prometheus metrics and the admin HTTP endpoint.

pub mod http;
pub mod metrics;

pub use metrics::Metrics;
