//! Wall-clock time for provenance stamps, without a date-time dependency.

/// Now, as an RFC 3339 UTC timestamp (`2026-05-22T08:30:00Z`).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(i64::try_from(secs).unwrap_or(0))
}

/// Seconds since the Unix epoch as an RFC 3339 UTC timestamp.
pub fn rfc3339(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp
/// (`2026-05-22T08:30:00Z`, fractions of a second ignored) or of a calendar
/// date (`2026-05-22`, its midnight); `None` for anything else.
pub fn unix_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d) * 86_400;
    if b.len() == 10 {
        return Some(days);
    }
    if b.len() < 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[b.len() - 1] != b'Z' {
        return None;
    }
    let fraction = &text[19..text.len() - 1];
    if !(fraction.is_empty()
        || fraction.len() > 1
            && fraction.starts_with('.')
            && fraction[1..].bytes().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let (h, min, s) = (number(11..13)?, number(14..16)?, number(17..19)?);
    (h < 24 && min < 60 && s < 61).then_some(days + h * 3600 + min * 60 + s)
}

/// Now as `(YYMMDD, HHMM)`, the X12 envelope date and time.
pub fn now_compact() -> (String, String) {
    let now = now_rfc3339();
    (
        format!("{}{}{}", &now[2..4], &now[5..7], &now[8..10]),
        format!("{}{}", &now[11..13], &now[14..16]),
    )
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_779_438_600), "2026-05-22T08:30:00Z");
        assert_eq!(unix_seconds("2026-05-22T08:30:00Z"), Some(1_779_438_600));
        assert_eq!(
            unix_seconds("2026-05-22T08:30:00.250Z"),
            Some(1_779_438_600)
        );
        assert_eq!(unix_seconds("2026-05-22"), Some(1_779_408_000));
        for bad in [
            "",
            "2026-05-22T08:30:00",
            "2026-13-01",
            "2026-05-22T25:00:00Z",
            "2026-05-22T08:30:00.Z",
            "yesterday",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
        for days in [-1_000_000, -1, 0, 59, 60, 20_000, 1_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
