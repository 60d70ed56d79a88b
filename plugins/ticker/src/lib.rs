//! `ticker`: a source that makes one `clock-tick/1` record, `{"now": "<RFC 3339
//! UTC>"}`, each time the host polls it — so time-based checks (the
//! three-way matcher's SLA watches) run on the connector's `schedule`:
//!
//! ```toml
//! [[connector]]
//! name = "sla-clock"
//! kind = "source"
//! plugin = "ticker.wasm"
//! schedule = "*/5 * * * *"
//! to = "canon.ticks"
//! ```
//!
//! Each tick's key is its time, so two polls in the same second make one tick.

use plexus_sdk::{Error, PollResult, Record, Source, clock};

/// The schema of a tick.
pub const SCHEMA: &str = "clock-tick/1";

struct Ticker;

impl Source for Ticker {
    fn poll(_cursor: Option<String>) -> Result<PollResult, Error> {
        let now = clock::now_rfc3339();
        Ok(PollResult {
            records: vec![tick(&now)],
            cursor: None,
        })
    }
}

/// The tick for `now`.
fn tick(now: &str) -> Record {
    Record::new(now, format!("{{\"now\":\"{now}\"}}"))
        .with_schema(SCHEMA)
        .with_content_type("application/json")
}

plexus_sdk::export_source!(Ticker);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_carries_its_time() {
        let t = tick("2026-11-25T11:30:00Z");
        assert_eq!(t.key, "2026-11-25T11:30:00Z");
        assert_eq!(t.payload, b"{\"now\":\"2026-11-25T11:30:00Z\"}");
        assert_eq!(t.schema.as_deref(), Some("clock-tick/1"));
    }
}
