//! Parsing and evaluating json-filter conditions; no plugin bindings here so it
//! is unit-tested natively.

use serde_json::Value;

/// All rules of one connector.
#[derive(Debug, Default)]
pub struct Rules {
    keep: Option<Condition>,
    drop: Option<Condition>,
    routes: Vec<(String, Condition)>,
    default_topic: Option<String>,
}

/// Comparisons that must all hold.
#[derive(Debug, PartialEq)]
pub struct Condition(Vec<Comparison>);

#[derive(Debug, PartialEq)]
struct Comparison {
    path: Vec<String>,
    test: Test,
}

#[derive(Debug, PartialEq)]
enum Test {
    Exists,
    Missing,
    Compare(Op, Value),
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Rules {
    /// Build rules from the connector's config pairs.
    pub fn from_config(pairs: &[(String, String)]) -> Result<Rules, String> {
        let mut rules = Rules::default();
        for (key, value) in pairs {
            let parse = |v: &str| Condition::parse(v).map_err(|e| format!("{key}: {e}"));
            match key.as_str() {
                "keep" => rules.keep = Some(parse(value)?),
                "drop" => rules.drop = Some(parse(value)?),
                "default_topic" => rules.default_topic = Some(check_topic(key, value)?),
                _ => match key.strip_prefix("route.") {
                    Some(topic) => rules.routes.push((check_topic(key, topic)?, parse(value)?)),
                    None => {
                        return Err(format!(
                            "unknown key {key:?} (expected keep, drop, route.<topic>, default_topic)"
                        ));
                    }
                },
            }
        }
        rules.routes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rules)
    }

    /// `None` drops the record; `Some(topic)` keeps it, routed to `topic` if any.
    pub fn decide(&self, record: &Value) -> Option<Option<&str>> {
        if self.keep.as_ref().is_some_and(|c| !c.matches(record)) {
            return None;
        }
        if self.drop.as_ref().is_some_and(|c| c.matches(record)) {
            return None;
        }
        let routed = self
            .routes
            .iter()
            .find(|(_, c)| c.matches(record))
            .map(|(t, _)| t.as_str());
        Some(routed.or(self.default_topic.as_deref()))
    }
}

fn check_topic(key: &str, topic: &str) -> Result<String, String> {
    let ok = !topic.is_empty()
        && topic
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(topic.to_owned())
    } else {
        Err(format!(
            "{key}: topic {topic:?} must be one token of [a-z0-9_-]"
        ))
    }
}

impl Condition {
    /// Parse `a == 1 and b exists`.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let parts: Vec<&str> = text.split(" and ").map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("empty comparison in {text:?}"));
        }
        parts
            .into_iter()
            .map(Comparison::parse)
            .collect::<Result<_, _>>()
            .map(Condition)
    }

    /// Whether every comparison holds for `record`.
    pub fn matches(&self, record: &Value) -> bool {
        self.0.iter().all(|c| c.matches(record))
    }
}

impl Comparison {
    fn parse(text: &str) -> Result<Comparison, String> {
        let (path, rest) = text
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{text:?} has no operator"))?;
        let rest = rest.trim_start();
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("bad field path in {text:?}"));
        }
        let test = match rest {
            "exists" => Test::Exists,
            "missing" => Test::Missing,
            _ => {
                let (op, value) = ["==", "!=", ">=", "<=", ">", "<"]
                    .iter()
                    .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v.trim())))
                    .ok_or_else(|| {
                        format!(
                            "unknown operator in {text:?} (expected == != > >= < <= exists missing)"
                        )
                    })?;
                if value.is_empty() {
                    return Err(format!("no value after {op} in {text:?}"));
                }
                let op = match op {
                    "==" => Op::Eq,
                    "!=" => Op::Ne,
                    ">=" => Op::Ge,
                    "<=" => Op::Le,
                    ">" => Op::Gt,
                    _ => Op::Lt,
                };
                let value =
                    serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
                Test::Compare(op, value)
            }
        };
        Ok(Comparison { path, test })
    }

    fn matches(&self, record: &Value) -> bool {
        let found = self.path.iter().try_fold(record, |v, seg| match v {
            Value::Object(map) => map.get(seg),
            Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        });
        match (&self.test, found) {
            (Test::Exists, found) => found.is_some_and(|v| !v.is_null()),
            (Test::Missing, found) => found.is_none_or(Value::is_null),
            (Test::Compare(op, _), None) => *op == Op::Ne,
            (Test::Compare(op, expected), Some(actual)) => compare(*op, actual, expected),
        }
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn compare(op: Op, actual: &Value, expected: &Value) -> bool {
    use std::cmp::Ordering;
    let ordering = match (as_number(actual), as_number(expected)) {
        (Some(a), Some(b)) => a.partial_cmp(&b),
        _ => match (actual, expected) {
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            _ => (actual == expected).then_some(Ordering::Equal),
        },
    };
    match (op, ordering) {
        (Op::Eq, o) => o == Some(Ordering::Equal),
        (Op::Ne, o) => o != Some(Ordering::Equal),
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (_, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(pairs: &[(&str, &str)]) -> Rules {
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Rules::from_config(&pairs).unwrap()
    }

    #[test]
    fn keep_passes_only_matching_records() {
        let r = rules(&[("keep", "status == \"approved\" and total.amount >= 1000")]);
        assert_eq!(
            r.decide(&json!({"status": "approved", "total": {"amount": "1200.00"}})),
            Some(None)
        );
        assert_eq!(
            r.decide(&json!({"status": "approved", "total": {"amount": "999.99"}})),
            None
        );
        assert_eq!(
            r.decide(&json!({"status": "draft", "total": {"amount": "5000"}})),
            None
        );
    }

    #[test]
    fn drop_removes_matching_records() {
        let r = rules(&[("drop", "test exists")]);
        assert_eq!(r.decide(&json!({"test": true})), None);
        assert_eq!(r.decide(&json!({"test": null})), Some(None));
        assert_eq!(r.decide(&json!({})), Some(None));
    }

    #[test]
    fn routes_pick_the_first_match_in_key_order() {
        let r = rules(&[
            ("route.urgent", "priority == high"),
            ("route.big", "lines.0.quantity > 100"),
            ("default_topic", "normal"),
        ]);
        assert_eq!(
            r.decide(&json!({"priority": "high", "lines": [{"quantity": "500"}]})),
            Some(Some("big"))
        );
        assert_eq!(
            r.decide(&json!({"priority": "high", "lines": []})),
            Some(Some("urgent"))
        );
        assert_eq!(r.decide(&json!({"priority": "low"})), Some(Some("normal")));
    }

    #[test]
    fn inequality_holds_for_missing_fields() {
        let c = Condition::parse("facility != \"st-marys\"").unwrap();
        assert!(c.matches(&json!({})));
        assert!(!c.matches(&json!({"facility": "st-marys"})));
    }

    #[test]
    fn bad_config_is_named() {
        let err = Rules::from_config(&[("keep".into(), "status ~ x".into())]).unwrap_err();
        assert!(err.starts_with("keep: unknown operator"), "{err}");
        let err = Rules::from_config(&[("route.Bad Topic".into(), "a exists".into())]).unwrap_err();
        assert!(err.contains("must be one token"), "{err}");
        let err = Rules::from_config(&[("colour".into(), "x".into())]).unwrap_err();
        assert!(err.contains("unknown key \"colour\""), "{err}");
    }
}
