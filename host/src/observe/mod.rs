//! What operators see: Prometheus metrics, the running connectors' status,
//! a dashboard of it, and the admin HTTP endpoint serving them.

mod dashboard;
pub mod http;
pub mod metrics;
pub mod status;

pub use metrics::Metrics;
