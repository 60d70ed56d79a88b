//! The value types of `plexus.toml`: sizes, durations and subjects, each
//! parsed and range-checked once, here.

use std::time::Duration;

/// Parse `64MiB`, `512KiB`, `1GiB`, `1048576` (bytes). Decimal `MB` means 10^6.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| "expected a number with a unit like 64MiB".to_string())?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown unit {other:?} (use KiB, MiB or GiB)")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| "too large".to_string())
}

/// A size for `key` between `min` and `max` bytes, or `default` when unset.
pub fn size(
    text: Option<&str>,
    default: usize,
    key: &str,
    min: usize,
    max: usize,
) -> Result<usize, String> {
    let Some(text) = text else {
        return Ok(default);
    };
    let bytes = parse_bytes(text).map_err(|e| format!("{key} {text:?}: {e}"))?;
    if bytes < min || bytes > max {
        return Err(format!(
            "{key} {text:?} must be between {} and {}",
            human_bytes(min),
            human_bytes(max)
        ));
    }
    Ok(bytes)
}

/// `1048576` → `1MiB`, for messages.
pub fn human_bytes(bytes: usize) -> String {
    for (unit, scale) in [
        ("TiB", 1usize << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

/// A duration for `key` (like `"2s"`, `"500ms"`, `"7days"`), more than zero
/// and at most `max`, or `default` when unset. The bound keeps every later
/// `Instant + duration` from overflowing.
pub fn duration(
    text: Option<&str>,
    default: Duration,
    key: &str,
    max: Duration,
) -> Result<Duration, String> {
    let Some(text) = text else {
        return Ok(default);
    };
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!("{key} {text:?} must be longer than zero")),
        Ok(d) if d > max => Err(format!(
            "{key} {text:?} is longer than the most it may be, {}",
            humantime::format_duration(max)
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{key} {text:?} is not a duration like \"2s\" or \"500ms\": {e}"
        )),
    }
}

/// One hour, one day, thirty days, a year: the bounds durations are checked against.
pub const HOUR: Duration = Duration::from_secs(3600);
/// One day.
pub const DAY: Duration = Duration::from_secs(86_400);
/// A year.
pub const YEAR: Duration = Duration::from_secs(365 * 86_400);

/// Check a NATS subject; wildcards only where the subject is a filter.
pub fn check_subject(subject: &str, filter: bool) -> Result<(), String> {
    if subject.is_empty() {
        return Err("empty subject".into());
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err("empty token (two dots, or a dot at either end)".into());
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("whitespace is not allowed".into());
        }
        let wildcard = *token == "*" || *token == ">";
        if !wildcard && (token.contains('*') || token.contains('>')) {
            return Err(format!("wildcard inside token {token:?}"));
        }
        if wildcard && !filter {
            return Err("wildcards are only allowed in `from`".into());
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err("`>` must be the last token".into());
        }
    }
    Ok(())
}

/// A literal NATS subject a connector publishes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject(String);

impl Subject {
    /// `text`, if it is a subject without wildcards.
    pub fn parse(text: &str) -> Result<Subject, String> {
        check_subject(text, false)?;
        Ok(Subject(text.to_owned()))
    }
}

/// A subject filter a connector consumes: `*` matches one token, `>` the rest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectFilter(String);

impl SubjectFilter {
    /// `text`, if it is a subject filter.
    pub fn parse(text: &str) -> Result<SubjectFilter, String> {
        check_subject(text, true)?;
        Ok(SubjectFilter(text.to_owned()))
    }

    /// Whether it takes records published to `subject`.
    pub fn matches(&self, subject: &Subject) -> bool {
        subject_matches(&self.0, &subject.0)
    }
}

impl std::ops::Deref for Subject {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for SubjectFilter {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for SubjectFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether the filter `pattern` matches the literal `subject`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert!(check_subject("raw.st-marys.po", false).is_ok());
        assert!(check_subject("raw.*.po", true).is_ok());
        assert!(check_subject("raw.>", true).is_ok());
        assert!(check_subject("raw.>", false).is_err());
        assert!(check_subject("raw..po", true).is_err());
        assert!(check_subject("raw.>.po", true).is_err());
        assert!(check_subject("raw.p*", true).is_err());
        assert!(check_subject("raw po", true).is_err());
        assert!(subject_matches("raw.>", "raw.a.b"));
        assert!(subject_matches("raw.*", "raw.a"));
        assert!(!subject_matches("raw.*", "raw.a.b"));
        assert!(!subject_matches("raw.a", "raw"));
    }

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("64 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
        assert_eq!(human_bytes(64 << 20), "64MiB");
    }

    #[test]
    fn durations_are_bounded() {
        let max = Duration::from_secs(60);
        assert_eq!(
            duration(Some("2s"), max, "k", max),
            Ok(Duration::from_secs(2))
        );
        assert_eq!(duration(None, max, "k", max), Ok(max));
        let e = duration(Some("300000000000years"), max, "limits.timeout", max).unwrap_err();
        assert!(
            e.contains("limits.timeout") && e.contains("longer than the most"),
            "{e}"
        );
        assert!(duration(Some("0s"), max, "k", max).is_err());
        assert!(duration(Some("soon"), max, "k", max).is_err());
    }
}
