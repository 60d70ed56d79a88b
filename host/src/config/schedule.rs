//! When a scheduled source polls: every interval (`"30s"`, `"5m"`) or on a
//! cron expression (5 fields, or 6 with seconds first).

use std::str::FromStr as _;
use std::time::Duration;

/// A parsed `schedule`.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Poll now, then every interval after the previous poll began.
    Every(Duration),
    /// Poll at each time the expression matches (UTC).
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    /// Parse an interval or a cron expression.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        if let Ok(every) = humantime::parse_duration(text) {
            if every.is_zero() {
                return Err("the interval must be longer than zero".into());
            }
            if every > super::values::YEAR {
                return Err("the interval must be at most a year".into());
            }
            return Ok(Schedule::Every(every));
        }
        let fields = text.split_whitespace().count();
        let expression = match fields {
            5 => format!("0 {text}"),
            6 => text.to_owned(),
            _ => {
                return Err(
                    "not an interval like \"30s\" or a cron expression of 5 or 6 fields".into(),
                );
            }
        };
        cron::Schedule::from_str(&expression)
            .map(|s| Schedule::Cron(Box::new(s)))
            .map_err(|e| format!("bad cron expression: {e}"))
    }

    /// How long to wait before the next poll; `first` is the poll at start-up.
    pub fn delay(&self, first: bool) -> Duration {
        match self {
            Schedule::Every(_) if first => Duration::ZERO,
            Schedule::Every(every) => *every,
            Schedule::Cron(cron) => cron
                .upcoming(chrono::Utc)
                .next()
                .and_then(|next| (next - chrono::Utc::now()).to_std().ok())
                .unwrap_or(Duration::from_secs(60)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_cron() {
        assert!(
            matches!(Schedule::parse("30s"), Ok(Schedule::Every(d)) if d == Duration::from_secs(30))
        );
        assert!(matches!(
            Schedule::parse("*/5 * * * *"),
            Ok(Schedule::Cron(_))
        ));
        assert!(matches!(
            Schedule::parse("0 */5 * * * *"),
            Ok(Schedule::Cron(_))
        ));
        assert!(Schedule::parse("0s").is_err());
        assert!(Schedule::parse("every tuesday").is_err());
        assert!(Schedule::parse("* * * * 99").is_err());
        let delay = Schedule::parse("* * * * * *").unwrap().delay(false);
        assert!(delay <= Duration::from_secs(1));
    }
}
