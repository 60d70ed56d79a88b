//! Per-connector counters and the plugin call-duration histogram, in
//! Prometheus text format.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `plexus_records_in_total` | connector | records taken from the bus, or produced by a source plugin |
//! | `plexus_records_out_total` | connector | records published (duplicates dropped by the bus included) |
//! | `plexus_errors_total` | connector, kind | `retryable`, `permanent`, `timeout`, `memory`, `trap`, `instantiate`, `publish` |
//! | `plexus_dlq_total` | connector | records dead-lettered |
//! | `plexus_plugin_call_seconds` | connector | duration of one plugin call |
//! | `plexus_connectors` | — | connectors running |
//! | `plexus_reloads_total` | result | config reloads applied (`ok`) or rejected (`error`) |
//! | `plexus_capability_denied_total` | connector, capability | refused `http` requests and `secrets` reads |
//! | `plexus_key_collisions_total` | connector | records whose source key was seen before with different content (both kept) |
//! | `plexus_audit_dropped_total` | — | audit records dropped because the audit queue was full |
//! | `plexus_sla_breached` | connector, kind | 1 while the connector's `freshness` or `latency` SLA is breached |
//! | `plexus_sla_breaches_total` | connector, kind | SLA breaches opened |
//! | `plexus_auth_failures_total` | endpoint | refused requests and connections: `admin` (no or wrong token, wrong role), `mllp` (address not allowed, TLS failed, too many connections) |

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorLabel {
    connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    connector: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

type CallHistogram = Family<ConnectorLabel, Histogram, fn() -> Histogram>;

/// Every `kind` label `plexus_errors_total` takes: the plugin's own verdicts,
/// the faults of `plugin::Fault`, and failed publishes.
const ERROR_KINDS: [&str; 8] = [
    "retryable",
    "permanent",
    "timeout",
    "memory",
    "trap",
    "instantiate",
    "released",
    "publish",
];

/// One connector's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Records taken in.
    pub records_in: u64,
    /// Records published.
    pub records_out: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Errors by kind; kinds that never happened are left out.
    pub errors: std::collections::BTreeMap<String, u64>,
}

/// All of a host's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    records_in: Family<ConnectorLabel, Counter>,
    records_out: Family<ConnectorLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    dlq: Family<ConnectorLabel, Counter>,
    call_seconds: CallHistogram,
    connectors: Gauge<i64, AtomicI64>,
    reloads: Family<ResultLabel, Counter>,
    denied: Family<CapabilityLabels, Counter>,
    collisions: Family<ConnectorLabel, Counter>,
    auth_failures: Family<EndpointLabel, Counter>,
    audit_dropped: Counter,
    forward_waiting: Gauge<i64, AtomicI64>,
    hub_link: Gauge<i64, AtomicI64>,
    sla_breached: Family<SlaLabels, Gauge<i64, AtomicI64>>,
    sla_breaches: Family<SlaLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlaLabels {
    connector: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapabilityLabels {
    connector: String,
    capability: String,
}

fn call_histogram() -> Histogram {
    // 10µs .. ~5s: plugin calls are microseconds when healthy, seconds when not.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-5, 3.0, 13,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("plexus");
        let m = Metrics {
            records_in: Family::default(),
            records_out: Family::default(),
            errors: Family::default(),
            dlq: Family::default(),
            call_seconds: Family::new_with_constructor(call_histogram as fn() -> Histogram),
            connectors: Gauge::default(),
            reloads: Family::default(),
            denied: Family::default(),
            collisions: Family::default(),
            auth_failures: Family::default(),
            audit_dropped: Counter::default(),
            forward_waiting: Gauge::default(),
            hub_link: Gauge::default(),
            sla_breached: Family::default(),
            sla_breaches: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "records_in",
            "Records taken from the bus",
            m.records_in.clone(),
        );
        registry.register("records_out", "Records published", m.records_out.clone());
        registry.register(
            "errors",
            "Failed records and plugin faults, by kind",
            m.errors.clone(),
        );
        registry.register(
            "dlq",
            "Records sent to the dead-letter subject",
            m.dlq.clone(),
        );
        registry.register(
            "plugin_call_seconds",
            "Duration of one plugin call",
            m.call_seconds.clone(),
        );
        registry.register("connectors", "Connectors running", m.connectors.clone());
        registry.register("reloads", "Configuration reloads", m.reloads.clone());
        registry.register(
            "capability_denied",
            "Capability uses refused by the grants",
            m.denied.clone(),
        );
        registry.register(
            "key_collisions",
            "Source records whose key was seen before with different content",
            m.collisions.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests and connections refused for who sent them",
            m.auth_failures.clone(),
        );
        registry.register(
            "audit_dropped",
            "Audit records dropped because the audit queue was full",
            m.audit_dropped.clone(),
        );
        registry.register(
            "forward_waiting",
            "Edge hosts: records stored here and not yet forwarded to the hub",
            m.forward_waiting.clone(),
        );
        registry.register(
            "hub_link_up",
            "Edge hosts: 1 while the hub answers, 0 while it does not",
            m.hub_link.clone(),
        );
        registry.register(
            "sla_breached",
            "1 while a connector's SLA (freshness or latency) is breached",
            m.sla_breached.clone(),
        );
        registry.register(
            "sla_breaches",
            "SLA breaches opened",
            m.sla_breaches.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Count one record taken from the bus.
    pub fn record_in(&self, connector: &str) {
        self.records_in(connector, 1);
    }

    /// Count records taken in (from the bus, or from a source plugin).
    pub fn records_in(&self, connector: &str, n: u64) {
        self.records_in.get_or_create(&label(connector)).inc_by(n);
    }

    /// Count records published.
    pub fn records_out(&self, connector: &str, n: u64) {
        self.records_out.get_or_create(&label(connector)).inc_by(n);
    }

    /// Count one error of `kind`.
    pub fn error(&self, connector: &str, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                connector: connector.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Count one dead-lettered record.
    pub fn dead_lettered(&self, connector: &str) {
        self.dlq.get_or_create(&label(connector)).inc();
    }

    /// Observe one plugin call.
    pub fn plugin_call(&self, connector: &str, seconds: f64) {
        self.call_seconds
            .get_or_create(&label(connector))
            .observe(seconds);
    }

    /// Set how many records wait to be forwarded to the hub, and whether it answers.
    pub fn set_forwarding(&self, waiting: u64, link_up: bool) {
        self.forward_waiting
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.hub_link.set(i64::from(link_up));
    }

    /// Set whether `connector`'s `kind` SLA is breached; counts each breach opened.
    pub fn sla(&self, connector: &str, kind: &str, breached: bool) {
        let labels = SlaLabels {
            connector: connector.to_owned(),
            kind: kind.to_owned(),
        };
        self.sla_breached
            .get_or_create(&labels)
            .set(i64::from(breached));
        if breached {
            self.sla_breaches.get_or_create(&labels).inc();
        }
    }

    /// Set how many connectors run.
    pub fn set_connectors(&self, n: usize) {
        self.connectors.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Count a reload; `ok` false when it was rejected.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// Count a refused capability use.
    pub fn denied(&self, connector: &str, capability: &str) {
        self.denied
            .get_or_create(&CapabilityLabels {
                connector: connector.to_owned(),
                capability: capability.to_owned(),
            })
            .inc();
    }

    /// Count a source key reused for different content.
    pub fn key_collision(&self, connector: &str) {
        self.collisions.get_or_create(&label(connector)).inc();
    }

    /// Source key collisions of `connector` so far.
    pub fn key_collisions(&self, connector: &str) -> u64 {
        self.collisions
            .get(&label(connector))
            .map_or(0, |c| c.get())
    }

    /// Count an audit record that could not be queued.
    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    /// Count a refused request or connection at `endpoint` (`admin`, `mllp`).
    pub fn auth_failure(&self, endpoint: &str) {
        self.auth_failures
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_owned(),
            })
            .inc();
    }

    /// The counts of one connector, as `plexus ls` shows them.
    pub fn counts(&self, connector: &str) -> Counts {
        let label = label(connector);
        let value =
            |family: &Family<ConnectorLabel, Counter>| family.get(&label).map_or(0, |c| c.get());
        let errors = ERROR_KINDS
            .iter()
            .filter_map(|kind| {
                let n = self
                    .errors
                    .get(&ErrorLabels {
                        connector: connector.to_owned(),
                        kind: (*kind).to_owned(),
                    })?
                    .get();
                Some(((*kind).to_owned(), n))
            })
            .collect();
        Counts {
            records_in: value(&self.records_in),
            records_out: value(&self.records_out),
            dead_lettered: value(&self.dlq),
            errors,
        }
    }

    /// Everything, in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn label(connector: &str) -> ConnectorLabel {
    ConnectorLabel {
        connector: connector.to_owned(),
    }
}
