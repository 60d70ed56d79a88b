//! The operator's pages on the admin endpoint, server-rendered HTML with no
//! scripts and nothing fetched from elsewhere, so they work behind any
//! firewall without a build step:
//!
//! - `GET /` — each connector with its counts and lag, what needs a look
//!   (errors, dead letters, a growing backlog) marked, and the SLA breaches;
//!   it reloads itself every few seconds.
//! - `GET /exceptions` — open exceptions grouped by facility, category and
//!   code with the money at risk summed and the oldest's age, then each one
//!   with its documents and a link to its lineage.
//! - `GET /dead-letters` — each connector's dead letters with the reason,
//!   and a button that replays one (`POST …/dead-letters/replay`, which
//!   needs the `operate` role).
//! - `GET /trace?id=<msg-id or source record id>` — a record's hops.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::exceptions::Standing;
use super::status::ConnectorStatus;
use crate::bus::dead_letters::DeadLetter;

/// How often the overview reloads itself, in seconds.
const REFRESH_SECONDS: u32 = 5;
/// Records waiting above which a connector's lag is marked.
const LAG_WARNING: u64 = 1000;

/// A whole page: the navigation, `title` and `body`.
fn page(title: &str, refresh: bool, body: &str) -> String {
    let refresh = if refresh {
        format!("<meta http-equiv=refresh content={REFRESH_SECONDS}>")
    } else {
        String::new()
    };
    format!(
        "<!doctype html>\n<html><head><meta charset=utf-8>{refresh}<title>Plexus: {title}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}}\
         .n{{text-align:right}}.look{{background:#fde2e1;font-weight:bold}}nav a{{margin-right:1.2em}}\
         form{{margin:0}}</style></head>\n\
         <body><nav><a href=/>Connectors</a><a href=/exceptions>Exceptions</a><a href=/dead-letters>Dead letters</a></nav>\n\
         <h1>{title}</h1>\n{body}</body></html>\n"
    )
}

/// The overview: `connectors` and the SLA `breaches`.
pub fn render(connectors: &[ConnectorStatus], breaches: &[serde_json::Value]) -> String {
    let mut rows = String::new();
    for c in connectors {
        let errors: u64 = c.counts.errors.values().sum();
        let by_kind: Vec<String> = c
            .counts
            .errors
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let lag = c.lag.map_or_else(|| "-".to_owned(), |n| n.to_string());
        let route = format!(
            "{} &rarr; {}",
            escape(c.from.as_deref().unwrap_or("")),
            escape(c.to.as_deref().unwrap_or(""))
        );
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{route}</td>\
             <td class=n>{}</td><td class=n>{}</td><td class=\"n{}\" title=\"{}\">{errors}</td>\
             <td class=\"n{}\">{}</td><td class=\"n{}\">{lag}</td></tr>",
            escape(&c.name),
            escape(&c.kind),
            escape(&c.version),
            c.counts.records_in,
            c.counts.records_out,
            mark(errors > 0),
            escape(&by_kind.join(", ")),
            mark(c.counts.dead_lettered > 0),
            c.counts.dead_lettered,
            mark(c.lag.unwrap_or(0) > LAG_WARNING),
        );
    }
    if connectors.is_empty() {
        rows.push_str("<tr><td colspan=9>no connectors running</td></tr>\n");
    }
    let mut sla = String::new();
    for b in breaches {
        let field = |name: &str| escape(b[name].as_str().unwrap_or(""));
        let _ = writeln!(
            sla,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if b["status"] == "open" { "look" } else { "" },
            field("breach_id"),
            field("status"),
            field("class"),
            field("target"),
            field("observed"),
            escape(b["facility"]["name"].as_str().unwrap_or("")),
            field("opened_at"),
            field("detail"),
        );
    }
    if breaches.is_empty() {
        sla.push_str("<tr><td colspan=8>no SLA breached since the host started</td></tr>\n");
    }
    page(
        "Connectors",
        true,
        &format!(
            "<table>\n<tr><th>connector</th><th>kind</th><th>version</th>\
             <th>route</th><th>in</th><th>out</th><th>errors</th><th>dead letters</th><th>lag</th></tr>\n\
             {rows}</table>\n<h2>Service levels</h2>\n<table>\n<tr><th>breach</th><th>status</th><th>class</th>\
             <th>target</th><th>observed</th><th>facility</th><th>since</th><th>detail</th></tr>\n{sla}</table>\n\
             <p>Counts since the host started; lag is records not yet settled. \
             <a href=/metrics>/metrics</a> has the rest.</p>\n"
        ),
    )
}

/// Money in cents, from a decimal string (`"123.4"`, `"-5"`).
fn cents(amount: &str) -> i128 {
    let (sign, digits) = amount
        .strip_prefix('-')
        .map_or((1, amount), |rest| (-1, rest));
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let fraction: String = fraction.chars().chain("00".chars()).take(2).collect();
    // Amounts are the matcher's own two-decimal strings; a crafted one
    // saturates rather than overflowing.
    let whole = whole.parse::<i128>().unwrap_or_else(|_| {
        if !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()) {
            i128::MAX / 100 // too many digits: as large as it gets
        } else {
            0
        }
    });
    let fraction = fraction.parse::<i128>().unwrap_or(0);
    sign * whole.saturating_mul(100).saturating_add(fraction)
}

fn money(cents: i128) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    // Thousands grouped, for reading sums at a glance.
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02}", cents % 100)
}

/// How long ago `since` (RFC 3339) was, at `now`, as people say it.
fn age(since: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(since) = chrono::DateTime::parse_from_rfc3339(since) else {
        return "?".into();
    };
    let secs = (now - since.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// Facility, category, code and currency.
type GroupKey = (String, String, String, String);
/// How many, the money at risk in cents, and when the oldest opened.
type Group = (usize, i128, String);

/// Open exceptions, grouped and one by one.
pub fn exceptions(standing: &[&Standing], now: chrono::DateTime<chrono::Utc>) -> String {
    let open: Vec<&&Standing> = standing
        .iter()
        .filter(|s| s.record["status"] == "open")
        .collect();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let facility = |r: &serde_json::Value| {
        r["facility"]["name"].as_str().map_or_else(
            || text(&r["facility"]["identifiers"][0]["value"]),
            str::to_owned,
        )
    };
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let mut total: BTreeMap<String, i128> = BTreeMap::new();
    for s in &open {
        let r = &s.record;
        let currency = text(&r["exposure"]["currency"]);
        let amount = cents(r["exposure"]["amount"].as_str().unwrap_or("0"));
        let sum = total.entry(currency.clone()).or_default();
        *sum = sum.saturating_add(amount);
        let g = groups
            .entry((
                facility(r),
                text(&r["category"]),
                text(&r["code"]),
                currency,
            ))
            .or_insert((0, 0, text(&r["opened_at"])));
        g.0 += 1;
        g.1 = g.1.saturating_add(amount);
        if text(&r["opened_at"]) < g.2 {
            g.2 = text(&r["opened_at"]);
        }
    }
    let mut grouped = String::new();
    for ((facility, category, code, currency), (n, amount, oldest)) in &groups {
        let _ = writeln!(
            grouped,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{n}</td><td class=n>{} {}</td><td>{}</td></tr>",
            escape(facility),
            escape(category),
            escape(code),
            money(*amount),
            escape(currency),
            age(oldest, now)
        );
    }
    if groups.is_empty() {
        grouped.push_str("<tr><td colspan=6>no open exceptions</td></tr>\n");
    }
    let at_risk: Vec<String> = total
        .iter()
        .map(|(currency, amount)| format!("{} {}", money(*amount), escape(currency)))
        .collect();
    let mut each = String::new();
    for s in &open {
        let r = &s.record;
        let refs: Vec<String> = r["refs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            // A document (`invoice:<supplier>:<number>`) is found by its key
            // (`<supplier>:<number>`).
            .map(|d| {
                let number = d.split_once(':').map_or(d, |(_, key)| key);
                format!("<a href=\"/trace?id={}\">{}</a>", attr(number), escape(d))
            })
            .collect();
        let lines: Vec<&str> = r["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let _ = writeln!(
            each,
            "<tr><td><a href=\"/trace?id={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=n>{} {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            attr(&s.msg_id),
            escape(&text(&r["exception_id"])),
            escape(&text(&r["severity"])),
            escape(&facility(r)),
            escape(&text(&r["category"])),
            escape(&lines.join(", ")),
            money(cents(r["exposure"]["amount"].as_str().unwrap_or("0"))),
            escape(&text(&r["exposure"]["currency"])),
            age(&text(&r["opened_at"]), now),
            escape(&text(&r["detail"])),
            refs.join(" "),
        );
    }
    page(
        "Exceptions",
        false,
        &format!(
            "<p>{} open, <strong>{}</strong> at risk.</p>\n\
             <table>\n<tr><th>facility</th><th>category</th><th>code</th><th>open</th><th>at risk</th><th>oldest</th></tr>\n{grouped}</table>\n\
             <h2>Each open exception</h2>\n<table>\n<tr><th>exception (lineage)</th><th>severity</th><th>facility</th><th>category</th>\
             <th>lines</th><th>at risk</th><th>age</th><th>detail</th><th>documents</th></tr>\n{each}</table>\n",
            open.len(),
            if at_risk.is_empty() {
                "0.00".to_owned()
            } else {
                at_risk.join(" + ")
            },
        ),
    )
}

/// Dead letters per connector, each with a replay button (transforms and
/// sinks; a source's dead letters are kept for inspection).
pub fn dead_letters(
    connectors: &[(ConnectorStatus, Vec<DeadLetter>)],
    note: Option<&str>,
) -> String {
    let mut body = String::new();
    if let Some(note) = note {
        let _ = writeln!(body, "<p class=look>{}</p>", escape(note));
    }
    for (c, letters) in connectors {
        let _ = writeln!(
            body,
            "<h2>{} <small>({} on <code>{}</code>)</small></h2>",
            escape(&c.name),
            letters.len(),
            escape(&c.dlq)
        );
        if letters.is_empty() {
            body.push_str("<p>none</p>\n");
            continue;
        }
        body.push_str("<table>\n<tr><th>#</th><th>when</th><th>record</th><th>deliveries</th><th>reason</th><th></th></tr>\n");
        for l in letters {
            let replay = if c.kind == "source" {
                String::new()
            } else {
                format!(
                    "<form method=post action=\"/connectors/{}/dead-letters/replay?seq={}\"><button>Replay</button></form>",
                    attr(&c.name),
                    l.sequence
                )
            };
            let _ = writeln!(
                body,
                "<tr><td>{}</td><td>{}</td><td><a href=\"/trace?id={}\">{}</a></td><td class=n>{}</td><td>{}</td><td>{replay}</td></tr>",
                l.sequence,
                escape(&l.time),
                attr(&l.identity),
                escape(&l.identity),
                escape(&l.deliveries),
                escape(&l.error),
            );
        }
        body.push_str("</table>\n");
    }
    if connectors.is_empty() {
        body.push_str("<p>no connectors running</p>\n");
    }
    page("Dead letters", false, &body)
}

/// A record's lineage, hop by hop (`plexus trace` prints the same).
pub fn trace(id: &str, hops: &[super::lineage::Hop]) -> String {
    let mut rows = String::new();
    for h in hops {
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&h.time),
            escape(&h.outcome),
            escape(&h.subject),
            escape(&h.connector),
            escape(&h.plugin),
            escape(&h.msg_id),
            escape(&h.detail),
        );
    }
    if hops.is_empty() {
        rows.push_str("<tr><td colspan=7>no record with this id is on the bus</td></tr>\n");
    }
    page(
        "Lineage",
        false,
        &format!(
            "<p>Record <code>{}</code></p>\n<table>\n<tr><th>time</th><th>outcome</th><th>subject</th><th>connector</th><th>plugin</th><th>message id</th><th>detail</th></tr>\n{rows}</table>\n",
            escape(id)
        ),
    )
}

fn mark(look: bool) -> &'static str {
    if look { " look" } else { "" }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A value inside a URL query in an attribute.
fn attr(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'@') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::Counts;

    #[test]
    fn marks_what_needs_a_look_and_escapes_names() {
        let connector = |name: &str, dead_lettered, lag| ConnectorStatus {
            name: name.into(),
            kind: "transform".into(),
            plugin: "x.wasm".into(),
            version: "0123456789ab".into(),
            from: Some("raw.>".into()),
            to: Some("canon".into()),
            dlq: "dlq.x".into(),
            counts: Counts {
                records_in: 10,
                records_out: 9,
                dead_lettered,
                errors: [("permanent".to_owned(), dead_lettered)].into(),
            },
            lag: Some(lag),
            emits: Vec::new(),
        };
        let page = render(&[connector("fine", 0, 0), connector("<odd>", 1, 5000)], &[]);
        assert!(page.contains("<td>fine</td>"));
        assert!(page.contains("<td>&lt;odd&gt;</td>"));
        assert!(page.contains("raw.&gt; &rarr; canon"));
        assert!(page.contains("<td class=\"n look\">1</td><td class=\"n look\">5000</td>"));
        assert!(page.contains("<td class=\"n\">0</td><td class=\"n\">0</td>"));
        assert!(render(&[], &[]).contains("no connectors running"));
    }

    #[test]
    fn money_is_summed_in_cents_and_shown_grouped() {
        assert_eq!(cents("123.4"), 12_340);
        assert_eq!(cents("-5"), -500);
        assert_eq!(cents("0.05"), 5);
        assert_eq!(money(cents("1234567.8") + cents("0.25")), "1,234,568.05");
        assert_eq!(money(-150), "-1.50");
        assert!(
            cents("9".repeat(60).as_str()) > i128::MAX / 200,
            "saturates"
        );
        assert!(money(i128::MIN).starts_with('-'));
    }

    #[test]
    fn open_exceptions_are_grouped_with_their_exposure_summed() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let exception = |id: &str, status: &str, code: &str, amount: &str, opened: &str| Standing {
            record: serde_json::json!({
                "exception_id": id, "status": status, "code": code, "severity": "critical",
                "facility": {"identifiers": [], "name": "St Mary's <North>"}, "category": "unspsc:42",
                "exposure": {"amount": amount, "currency": "USD"}, "lines": ["1"],
                "opened_at": opened, "detail": "d", "refs": ["invoice:S:INV 1"],
            }),
            msg_id: format!("m-{id}"),
        };
        let all = [
            exception(
                "a",
                "open",
                "price_mismatch",
                "10.50",
                "2026-12-03T11:00:00Z",
            ),
            exception(
                "b",
                "open",
                "price_mismatch",
                "4.50",
                "2026-12-01T12:00:00Z",
            ),
            exception(
                "c",
                "resolved",
                "price_mismatch",
                "99.00",
                "2026-12-01T12:00:00Z",
            ),
        ];
        let page = exceptions(&all.iter().collect::<Vec<_>>(), now);
        assert!(
            page.contains("2 open, <strong>15.00 USD</strong> at risk"),
            "{page}"
        );
        assert!(page.contains("<td>St Mary&#39;s".replace("&#39;", "'").as_str()));
        assert!(page.contains("&lt;North&gt;"), "escaped");
        assert!(
            page.contains("<td class=n>2</td><td class=n>15.00 USD</td><td>2d 0h</td>"),
            "{page}"
        );
        assert!(page.contains("href=\"/trace?id=S:INV%201\""), "{page}");
        assert!(!page.contains(">c<"), "resolved ones are not listed");
    }
}
