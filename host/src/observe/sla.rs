//! Service levels in business terms: a connector's `sla` says how fresh its
//! data must be and how late it may arrive. A watcher per connector with an
//! SLA checks both and, when one is breached or recovers, publishes an
//! `sla-breach/1` record to `plexus.sla.<connector>` (keyed
//! `<connector>:<kind>`, `status` `open` then `resolved`), sets
//! `plexus_sla_breached` and shows it on the dashboard.
//!
//! - **Freshness** (transactional connectors): no record taken in for
//!   `freshness`. It clears with the next record.
//! - **Latency**: the 99th percentile, over the last five minutes, of the
//!   time from a record's first hop (`Plexus-Origin-Time`) to this connector
//!   taking it, above `latency_p99`. It clears when the percentile is back
//!   under the target, or no record has come for five minutes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::json;
use tokio::sync::watch;

use super::Metrics;
use crate::bus::headers;
use crate::config::Sla;

/// Subjects breach records are published under: `plexus.sla.<connector>`.
pub const SUBJECT_PREFIX: &str = "plexus.sla";
/// The schema of breach records.
pub const SCHEMA: &str = "sla-breach/1";
/// How far back the latency percentile looks.
const WINDOW: Duration = Duration::from_secs(300);
/// Latency samples kept per connector, newest first out of the window.
const SAMPLES: usize = 8192;

/// A connector's recent end-to-end latencies.
#[derive(Debug, Default)]
pub struct Latencies(Mutex<VecDeque<(Instant, u64)>>);

impl Latencies {
    /// One record's latency, in milliseconds.
    pub fn record(&self, ms: u64) {
        let mut samples = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back((Instant::now(), ms));
    }

    /// The 99th percentile of the samples within `window`, in milliseconds;
    /// `None` when there are none.
    pub fn p99(&self, window: Duration) -> Option<u64> {
        let mut samples = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while samples.front().is_some_and(|(at, _)| at.elapsed() > window) {
            samples.pop_front();
        }
        let mut ms: Vec<u64> = samples.iter().map(|(_, ms)| *ms).collect();
        drop(samples);
        if ms.is_empty() {
            return None;
        }
        ms.sort_unstable();
        // The nearest-rank percentile.
        let rank = (ms.len() * 99).div_ceil(100).max(1);
        Some(ms[rank - 1])
    }
}

/// The breaches a host has seen, for its dashboard: the latest record of each.
#[derive(Debug, Default)]
pub struct Board(Mutex<BTreeMap<String, serde_json::Value>>);

impl Board {
    fn set(&self, id: &str, record: serde_json::Value) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), record);
    }

    /// Every breach record, open ones first, then by id.
    pub fn all(&self) -> Vec<serde_json::Value> {
        let mut all: Vec<serde_json::Value> = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|b| {
            (
                b["status"] != "open",
                b["breach_id"].as_str().map(str::to_owned),
            )
        });
        all
    }
}

/// Watches one connector's SLA.
pub struct Watcher {
    /// The connector.
    pub connector: String,
    /// Its SLA.
    pub sla: Sla,
    /// Its latencies, recorded as it takes records.
    pub latencies: Option<Arc<Latencies>>,
    /// For its records-in count and the breach gauge.
    pub metrics: Arc<Metrics>,
    /// Where breach records go.
    pub js: jetstream::Context,
    /// An edge host's facility, tied to its breaches.
    pub facility: Option<Arc<str>>,
    /// The dashboard's view.
    pub board: Arc<Board>,
    /// What the gauge shows per kind, so a retried publish counts a breach once.
    pub metrics_shown: Mutex<BTreeMap<&'static str, bool>>,
}

/// One SLA's state.
struct Check {
    kind: &'static str,
    target: Duration,
    /// When the open breach opened.
    opened_at: Option<String>,
}

impl Watcher {
    /// Check until `stopped`.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut checks = Vec::new();
        if let Some(target) = self.sla.freshness {
            checks.push(Check {
                kind: "freshness",
                target,
                opened_at: None,
            });
        }
        if let Some(target) = self.sla.latency_p99 {
            checks.push(Check {
                kind: "latency",
                target,
                opened_at: None,
            });
        }
        let every = checks
            .iter()
            .map(|c| (c.target / 4).clamp(Duration::from_millis(250), Duration::from_secs(5)))
            .min()
            .unwrap_or(Duration::from_secs(5));
        let mut seen = self.metrics.counts(&self.connector).records_in;
        let mut last_record = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stopped.changed() => return,
            }
            let count = self.metrics.counts(&self.connector).records_in;
            if count != seen {
                seen = count;
                last_record = Instant::now();
            }
            for check in &mut checks {
                let observed = match check.kind {
                    "freshness" => Some(last_record.elapsed()),
                    _ => self
                        .latencies
                        .as_ref()
                        .and_then(|l| l.p99(WINDOW))
                        .map(Duration::from_millis),
                };
                let breached = observed.is_some_and(|o| o > check.target);
                if breached != check.opened_at.is_some() {
                    self.publish(check, breached, observed.unwrap_or_default())
                        .await;
                }
            }
        }
    }

    /// The breach record for `check` opening (`breached`) or resolving at `now`.
    fn record(
        &self,
        check: &Check,
        breached: bool,
        observed: Duration,
        now: &str,
    ) -> serde_json::Value {
        let opened_at = check.opened_at.clone().unwrap_or_else(|| now.to_owned());
        let (target, seen) = (shown(check.target), shown(observed));
        let detail = match (check.kind, breached) {
            ("freshness", true) => format!("no record for {seen}; expected one within {target}"),
            ("freshness", false) => format!("records flow again (freshness target {target})"),
            (_, true) => {
                format!("end-to-end p99 {seen} over the last five minutes; target {target}")
            }
            (_, false) => format!("end-to-end p99 back within {target}"),
        };
        let mut record = json!({
            "breach_id": format!("{}:{}", self.connector, check.kind),
            "status": if breached { "open" } else { "resolved" },
            "connector": self.connector,
            "kind": check.kind,
            "class": self.sla.class.as_str(),
            "target": target,
            "observed": seen,
            "detail": detail,
            "opened_at": opened_at,
        });
        if !breached {
            record["resolved_at"] = now.into();
        }
        if let Some(facility) = &self.facility {
            record["facility"] = json!({"identifiers": [], "name": facility.as_ref()});
        }
        record
    }

    /// Publish the breach opening or resolving; on failure the state stays,
    /// so the next check tries again.
    async fn publish(&self, check: &mut Check, breached: bool, observed: Duration) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let record = self.record(check, breached, observed, &now);
        let (id, opened_at, detail) = (
            record["breach_id"].as_str().unwrap_or_default().to_owned(),
            record["opened_at"].as_str().unwrap_or_default().to_owned(),
            record["detail"].as_str().unwrap_or_default().to_owned(),
        );
        let mut h = async_nats::HeaderMap::new();
        let status = if breached { "open" } else { "resolved" };
        h.insert(
            headers::MSG_ID,
            format!("sla:{id}:{opened_at}:{status}").as_str(),
        );
        h.insert(headers::KEY, id.as_str());
        h.insert(headers::SCHEMA, SCHEMA);
        h.insert(headers::CONTENT_TYPE, "application/json");
        let subject = format!("{SUBJECT_PREFIX}.{}", self.connector);
        // The gauge and the dashboard say it at once, whether or not the
        // bus takes the record now (when it is down is when this matters).
        if self
            .metrics_shown
            .lock()
            .map(|mut shown| shown.insert(check.kind, breached) != Some(breached))
            .unwrap_or(true)
        {
            self.metrics.sla(&self.connector, check.kind, breached);
        }
        self.board.set(&id, record.clone());
        let stored = match self
            .js
            .publish_with_headers(subject, h, record.to_string().into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        };
        if let Err(error) = stored {
            tracing::warn!(connector = %self.connector, kind = check.kind, error = format!("{error:#}"), "Cannot publish the SLA breach; will try again.");
            return;
        }
        if breached {
            tracing::warn!(connector = %self.connector, kind = check.kind, %detail, "SLA breached.");
            check.opened_at = Some(opened_at);
        } else {
            tracing::info!(connector = %self.connector, kind = check.kind, %detail, "SLA met again.");
            check.opened_at = None;
        }
    }
}

/// A duration as people read it: whole seconds from a second up.
fn shown(d: Duration) -> String {
    let d = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn watcher(facility: Option<&str>) -> Watcher {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .unwrap();
        Watcher {
            connector: "lab-feed".into(),
            sla: Sla {
                freshness: Some(Duration::from_secs(900)),
                latency_p99: None,
                class: crate::config::SlaClass::Transactional,
            },
            latencies: None,
            metrics: Arc::default(),
            js: jetstream::new(client),
            facility: facility.map(Arc::from),
            board: Arc::default(),
            metrics_shown: Mutex::default(),
        }
    }

    #[tokio::test]
    async fn breach_records_satisfy_their_schema() {
        let contracts = crate::contract::Contracts::compile(&[SCHEMA.into()]).unwrap();
        let check = |record: serde_json::Value| {
            let mut r = crate::bindings::PluginRecord {
                key: String::new(),
                payload: record.to_string().into_bytes(),
                schema: None,
                content_type: None,
                headers: Vec::new(),
                topic: None,
            };
            assert_eq!(contracts.check(&mut r), Ok(()), "{record}");
        };
        let w = watcher(Some("St Mary's")).await;
        let mut c = Check {
            kind: "freshness",
            target: Duration::from_secs(900),
            opened_at: None,
        };
        let open = w.record(
            &c,
            true,
            Duration::from_millis(961_400),
            "2026-12-03T10:00:00Z",
        );
        assert_eq!(
            open["detail"],
            "no record for 16m 1s; expected one within 15m"
        );
        assert_eq!(open["breach_id"], "lab-feed:freshness");
        assert_eq!(open["facility"]["name"], "St Mary's");
        check(open);
        c.opened_at = Some("2026-12-03T10:00:00Z".into());
        let resolved = w.record(&c, false, Duration::ZERO, "2026-12-03T10:05:00Z");
        assert_eq!(
            (
                resolved["opened_at"].as_str(),
                resolved["resolved_at"].as_str()
            ),
            (Some("2026-12-03T10:00:00Z"), Some("2026-12-03T10:05:00Z"))
        );
        check(resolved);
        check(watcher(None).await.record(
            &Check {
                kind: "latency",
                target: Duration::from_secs(2),
                opened_at: None,
            },
            true,
            Duration::from_millis(2300),
            "2026-12-03T10:00:00Z",
        ));
    }

    #[test]
    fn the_p99_is_the_nearest_rank_within_the_window() {
        let l = Latencies::default();
        assert_eq!(l.p99(WINDOW), None);
        for ms in 1..=100 {
            l.record(ms);
        }
        assert_eq!(l.p99(WINDOW), Some(99));
        l.record(5000);
        assert_eq!(l.p99(WINDOW), Some(100), "one slow record in 101 is the 1%");
        l.record(5000);
        assert_eq!(l.p99(WINDOW), Some(5000));
        assert_eq!(
            l.p99(Duration::ZERO),
            None,
            "nothing within an empty window"
        );
    }
}
