//! What operators see: Prometheus metrics, the running connectors' status
//! and a dashboard of it (served by `crate::admin`), and the tamper-evident
//! audit log, and the SLA watchers.

pub mod audit;
pub(crate) mod dashboard;
pub mod exceptions;
pub mod lineage;
pub mod metrics;
pub mod otel;
pub mod sla;
pub mod status;

pub use audit::Audit;
pub use metrics::Metrics;
