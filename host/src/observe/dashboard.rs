//! `GET /` on the admin endpoint: one page an operator can leave open. Each
//! connector with its counts and lag, and what needs a look (errors, dead
//! letters, a growing backlog) marked; the page reloads itself every few
//! seconds. Plain HTML, no scripts, nothing fetched from elsewhere.

use std::fmt::Write as _;

use super::status::ConnectorStatus;

/// How often the page reloads itself, in seconds.
const REFRESH_SECONDS: u32 = 5;
/// Records waiting above which a connector's lag is marked.
const LAG_WARNING: u64 = 1000;

/// The page for `connectors`.
pub fn render(connectors: &[ConnectorStatus]) -> String {
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
    format!(
        "<!doctype html>\n<html><head><meta charset=utf-8>\
         <meta http-equiv=refresh content={REFRESH_SECONDS}><title>Plexus</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}\
         .n{{text-align:right}}.look{{background:#fde2e1;font-weight:bold}}</style></head>\n\
         <body><h1>Plexus</h1>\n<table>\n<tr><th>connector</th><th>kind</th><th>version</th>\
         <th>route</th><th>in</th><th>out</th><th>errors</th><th>dead letters</th><th>lag</th></tr>\n\
         {rows}</table>\n<p>Counts since the host started; lag is records not yet settled. \
         <code>plexus dlq ls</code> shows dead letters; <a href=/metrics>/metrics</a> has the rest.</p>\n\
         </body></html>\n"
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
        };
        let page = render(&[connector("fine", 0, 0), connector("<odd>", 1, 5000)]);
        assert!(page.contains("<td>fine</td>"));
        assert!(page.contains("<td>&lt;odd&gt;</td>"));
        assert!(page.contains("raw.&gt; &rarr; canon"));
        assert!(page.contains("<td class=\"n look\">1</td><td class=\"n look\">5000</td>"));
        assert!(page.contains("<td class=\"n\">0</td><td class=\"n\">0</td>"));
        assert!(render(&[]).contains("no connectors running"));
    }
}
