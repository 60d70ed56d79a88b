//! `json-filter`: keep, drop or route JSON records by field conditions.
//!
//! | config key | meaning |
//! |---|---|
//! | `keep` | only records matching this condition pass; the rest are dropped |
//! | `drop` | records matching this condition are dropped |
//! | `route.<topic>` | records matching go to `<to>.<topic>`; routes are tried in key order, first match wins |
//! | `default_topic` | topic for records that match no route (default: the connector's `to` itself) |
//!
//! A condition is one or more comparisons joined by `and`:
//! `status == "approved" and total.amount >= 1000`. A comparison is
//! `<path> <op> <value>` with `op` one of `== != > >= < <=`, or `<path> exists`,
//! or `<path> missing`. A path is dot-separated; numbers index arrays
//! (`lines.0.item.description`). Values are JSON (`"text"`, `12.5`, `true`, `null`)
//! or a bare word, read as a string. Decimal strings such as `"12.50"` compare
//! as numbers, as canonical records carry decimals as strings.
//!
//! A payload that is not JSON, or a condition that does not parse, is a
//! permanent error naming the reason.

mod rules;

use std::sync::OnceLock;

use plexus_sdk::{Error, Record, Transform, config};
pub use rules::{Condition, Rules};

struct JsonFilter;

/// Rules are parsed once per instance; a config change gets a new instance pool.
static RULES: OnceLock<Result<Rules, String>> = OnceLock::new();

impl Transform for JsonFilter {
    fn transform(mut input: Record) -> Result<Vec<Record>, Error> {
        let rules = RULES
            .get_or_init(|| Rules::from_config(&config::all()))
            .as_ref()
            .map_err(|e| Error::Permanent(format!("json-filter config: {e}")))?;
        let value: serde_json::Value = serde_json::from_slice(&input.payload)
            .map_err(|e| Error::Permanent(format!("payload is not JSON: {e}")))?;
        match rules.decide(&value) {
            None => Ok(vec![]),
            Some(topic) => {
                input.topic = topic.map(str::to_owned);
                Ok(vec![input])
            }
        }
    }
}

plexus_sdk::export_transform!(JsonFilter);
