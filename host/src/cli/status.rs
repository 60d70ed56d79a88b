//! `plexus ls` and `plexus status`: what the config's running host reports
//! about its connectors, read from its admin endpoint (`GET /connectors`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::config::Config;
use crate::host::HostError;
use crate::observe::status::{ConnectorStatus, address_file};

/// How long `plexus status` watches the counters to tell the rates.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// How long the host may take to answer.
const PATIENCE: Duration = Duration::from_secs(10);

/// One line per running connector.
pub(super) async fn list(file: &Path, token: Option<&str>) -> Result<(), HostError> {
    let config = Config::load(file)?;
    let connectors = fetch(&config, token).await?;
    let mut rows = vec![HEADINGS.map(str::to_owned).to_vec()];
    rows.extend(connectors.iter().map(|c| row(c).to_vec()));
    print_rows(&rows);
    Ok(())
}

/// The columns of `plexus ls`.
pub(super) const HEADINGS: [&str; 8] = [
    "CONNECTOR",
    "KIND",
    "VERSION",
    "IN",
    "OUT",
    "ERRORS",
    "DLQ",
    "LAG",
];

/// One connector's line of `plexus ls`, under [`HEADINGS`].
pub(super) fn row(c: &ConnectorStatus) -> [String; 8] {
    [
        c.name.clone(),
        c.kind.clone(),
        c.version.clone(),
        c.counts.records_in.to_string(),
        c.counts.records_out.to_string(),
        c.counts.errors.values().sum::<u64>().to_string(),
        c.counts.dead_lettered.to_string(),
        c.lag.map_or_else(|| "-".to_owned(), |n| n.to_string()),
    ]
}

/// Rows as aligned columns, two spaces apart.
pub(super) fn print_rows(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// Connectors in full — the one named, or all — with rates over [`RATE_WINDOW`].
pub(super) async fn show(
    file: &Path,
    name: Option<&str>,
    token: Option<&str>,
) -> Result<(), HostError> {
    let config = Config::load(file)?;
    let chosen = |connectors: Vec<ConnectorStatus>| -> Vec<ConnectorStatus> {
        connectors
            .into_iter()
            .filter(|c| name.is_none_or(|n| c.name == n))
            .collect()
    };
    let before = chosen(fetch(&config, token).await?);
    if let (Some(name), true) = (name, before.is_empty()) {
        let configured = config.connectors.iter().any(|c| c.name == name);
        return Err(HostError::Usage(if configured {
            format!(
                "connector {name:?} is in {} but its host does not run it (see the host's log)",
                file.display()
            )
        } else {
            format!(
                "the host of {} runs no connector named {name:?} (see `plexus ls`)",
                file.display()
            )
        }));
    }
    tokio::time::sleep(RATE_WINDOW).await;
    let now = chosen(fetch(&config, token).await?);
    for (i, connector) in now.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let earlier = before.iter().find(|c| c.name == connector.name);
        print_one(connector, Some(earlier.unwrap_or(connector)));
    }
    Ok(())
}

/// One connector in full; with `before` (read [`RATE_WINDOW`] earlier), rates too.
pub(super) fn print_one(now: &ConnectorStatus, before: Option<&ConnectorStatus>) {
    let per_second =
        |later: u64, earlier: u64| later.saturating_sub(earlier) as f64 / RATE_WINDOW.as_secs_f64();
    println!("{} ({})", now.name, now.kind);
    println!("  plugin        {} @ {}", now.plugin, now.version);
    let route = match (&now.from, &now.to) {
        (Some(from), Some(to)) => format!("{from} -> {to}"),
        (Some(from), None) => format!("{from} ->"),
        (None, Some(to)) => format!("-> {to}"),
        (None, None) => "-".to_owned(),
    };
    println!("  route         {route}");
    match before {
        Some(before) => println!(
            "  records       {} in, {} out; now {:.0}/s in, {:.0}/s out",
            now.counts.records_in,
            now.counts.records_out,
            per_second(now.counts.records_in, before.counts.records_in),
            per_second(now.counts.records_out, before.counts.records_out)
        ),
        None => println!(
            "  records       {} in, {} out",
            now.counts.records_in, now.counts.records_out
        ),
    }
    let errors: Vec<String> = now
        .counts
        .errors
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    println!(
        "  errors        {}{}",
        now.counts.errors.values().sum::<u64>(),
        if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join(", "))
        }
    );
    println!(
        "  dead letters  {} on {} (plexus dlq ls {})",
        now.counts.dead_lettered, now.dlq, now.name
    );
    if let Some(lag) = now.lag {
        println!("  lag           {lag} record(s) waiting or in flight");
    }
}

/// The admin endpoint of the config's host: the address the host recorded
/// in its `data_dir`, else `[host].http`; and where that came from.
pub(super) fn admin_address(config: &Config) -> (String, String) {
    let recorded = address_file(&config.data_dir);
    match std::fs::read_to_string(&recorded) {
        Ok(text) => (text.trim().to_owned(), recorded.display().to_string()),
        Err(_) => (config.http.clone(), "[host].http".to_owned()),
    }
}

/// The running connectors, from the host's admin endpoint.
async fn fetch(config: &Config, token: Option<&str>) -> Result<Vec<ConnectorStatus>, HostError> {
    let (addr, from) = admin_address(config);
    let body = call(&addr, "GET", "/connectors", token)
        .await
        .map_err(|error| {
            anyhow!(
                "no host answers at {addr} (from {from}): {error:#}; is `plexus up -c {}` running?",
                config.file.display()
            )
        })?;
    Ok(serde_json::from_str(&body)
        .with_context(|| format!("the host at {addr} sent an unreadable status"))?)
}

/// A plain HTTP/1.0 request to the host's own admin endpoint; the body of a 200.
pub(super) async fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<String> {
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!(
                    "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(PATIENCE, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {PATIENCE:?}"))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some("200") => {}
        Some("401") if token.is_none() => {
            return Err(anyhow!(
                "{path}: {status}: the host wants a token; set PLEXUS_TOKEN or pass --token-file (make one with `plexus token create --role read`)"
            ));
        }
        Some("401" | "403") => {
            return Err(anyhow!("{path}: {status}: {}", body.trim()));
        }
        _ => return Err(anyhow!("{path}: {status}: {}", body.trim())),
    }
    Ok(body.to_owned())
}
