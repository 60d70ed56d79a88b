//! What operators see: Prometheus metrics, the running connectors' status
//! and a dashboard of it (served by `crate::admin`), and the tamper-evident
//! audit log.

pub mod audit;
pub(crate) mod dashboard;
pub mod metrics;
pub mod status;

pub use audit::Audit;
pub use metrics::Metrics;
