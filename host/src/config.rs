//! `plexus.toml`: parsing and validation.
//!
//! Everything an operator can get wrong is caught here, before anything starts,
//! and reported with the file, the connector and the reason.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `[bus].url` | NATS server to connect to | absent: start an embedded `nats-server` |
//! | `[bus].nats_server` | `nats-server` binary for the embedded bus | `$PLEXUS_NATS_SERVER`, then `PATH` |
//! | `[host].data_dir` | embedded bus store and compiled-plugin cache | `.plexus` beside the config |
//! | `[host].http` | address of `/metrics`, `/ingest/<name>` and the admin API | `127.0.0.1:7700` |
//! | `[host].secrets_file` | TOML table of secret values (after `PLEXUS_SECRET_<NAME>`) | none |
//! | `[[connector]].name` | unique, `[a-z0-9-]+` | required |
//! | `kind` | `source`, `transform` or `sink` | required |
//! | `plugin` | path to the `.wasm` component, relative to the config file | required |
//! | `from` | subject filter consumed (transforms, sinks) | required there |
//! | `to` | subject published to (sources, transforms) | required there |
//! | `schedule` | a source's interval (`"30s"`) or cron expression (5 or 6 fields) | |
//! | `listen` | a source fed from outside: `"http"` (`POST /ingest/<name>`) or `"mllp://0.0.0.0:2575"` | |
//! | `config` | string table handed to the plugin | empty |
//! | `emits` | schema ids the connector emits | empty |
//! | `grants.http` | outbound origins, `scheme://host[:port]` | none |
//! | `grants.files` | directories, `path:ro` or `path:rw`; the plugin sees each at the path as written | none |
//! | `grants.secrets` | secret names the plugin may read | none |
//! | `limits.memory` | linear memory cap per instance | `64MiB` |
//! | `limits.timeout` | wall-clock budget per plugin call | `2s` |
//! | `limits.concurrency` | instances working in parallel | `4` |
//! | `delivery.max_deliver` | attempts before dead-lettering | `5` |
//! | `delivery.backoff` | delays between attempts; the last repeats | `["1s", "5s", "30s"]` |
//! | `delivery.ack_wait` | how long the bus waits for an ack before redelivering | `30s` |
//! | `delivery.dlq` | dead-letter subject | `dlq.<name>` |
//! | `delivery.ordered` | transforms and sinks: one record at a time, in stream order (a retried record comes back after later ones); for stateful plugins that need it | `false` |

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A config that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The connector at fault, when there is one.
    pub connector: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(name) = &self.connector {
            write!(f, ": connector \"{name}\"")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// A connector's role, which must match the world its plugin exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Brings records in.
    Source,
    /// Maps records.
    Transform,
    /// Delivers records out.
    Sink,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Source => "source",
            Kind::Transform => "transform",
            Kind::Sink => "sink",
        })
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it was read from.
    pub file: PathBuf,
    /// NATS URL; `None` starts an embedded server.
    pub bus_url: Option<String>,
    /// `nats-server` binary for the embedded bus, if set.
    pub nats_server: Option<PathBuf>,
    /// Store and cache directory.
    pub data_dir: PathBuf,
    /// Admin/metrics listen address.
    pub http: String,
    /// TOML table of secret values, after `PLEXUS_SECRET_<NAME>`.
    pub secrets_file: Option<PathBuf>,
    /// Connectors in file order.
    pub connectors: Vec<ConnectorSpec>,
}

/// One validated `[[connector]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorSpec {
    /// Unique name.
    pub name: String,
    /// Role.
    pub kind: Kind,
    /// Resolved path of the component.
    pub plugin: PathBuf,
    /// Subject filter consumed.
    pub from: Option<String>,
    /// Subject published to.
    pub to: Option<String>,
    /// Source schedule.
    pub schedule: Option<String>,
    /// Source listener.
    pub listen: Option<String>,
    /// Strings handed to the plugin.
    pub config: BTreeMap<String, String>,
    /// Schema ids emitted.
    pub emits: Vec<String>,
    /// Capabilities granted.
    pub grants: Grants,
    /// Host directory of each `grants.files` entry, in order (relative ones
    /// resolved against the config file's directory).
    pub file_dirs: Vec<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
    /// Retry and dead-letter policy.
    pub delivery: Delivery,
}

/// Capabilities granted to a connector (least privilege: empty by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Outbound HTTP origins.
    #[serde(default)]
    pub http: Vec<String>,
    /// Host directories with `:ro` or `:rw`.
    #[serde(default)]
    pub files: Vec<String>,
    /// Secret names.
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// Per-instance limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap in bytes.
    pub memory: usize,
    /// Wall-clock budget per call.
    pub timeout: Duration,
    /// Instances working in parallel.
    pub concurrency: usize,
}

/// Retry and dead-letter policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Attempts before dead-lettering.
    pub max_deliver: u32,
    /// Delay before each retry; the last one repeats.
    pub backoff: Vec<Duration>,
    /// Redelivery timeout for unacknowledged records.
    pub ack_wait: Duration,
    /// Dead-letter subject.
    pub dlq: String,
    /// One record at a time, in stream order.
    pub ordered: bool,
}

impl Delivery {
    /// The delay before redelivering a record that has been delivered `deliveries` times.
    pub fn backoff_after(&self, deliveries: u32) -> Duration {
        let i = (deliveries.max(1) - 1) as usize;
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    bus: RawBus,
    #[serde(default)]
    host: RawHost,
    /// Deserialized one by one, so an error can name its connector.
    #[serde(default, rename = "connector")]
    connectors: Vec<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBus {
    url: Option<String>,
    nats_server: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHost {
    data_dir: Option<PathBuf>,
    http: Option<String>,
    secrets_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnector {
    name: String,
    kind: Kind,
    plugin: String,
    from: Option<String>,
    to: Option<String>,
    schedule: Option<String>,
    listen: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    emits: Vec<String>,
    #[serde(default)]
    grants: Grants,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    delivery: RawDelivery,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<String>,
    timeout: Option<String>,
    concurrency: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    max_deliver: Option<u32>,
    backoff: Option<Vec<String>>,
    ack_wait: Option<String>,
    dlq: Option<String>,
    ordered: Option<bool>,
}

impl Config {
    /// Read and validate a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_owned(),
            connector: None,
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(file, &text)
    }

    /// Validate config text as if read from `file` (relative paths resolve against its directory).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let err = |connector: Option<&str>, reason: String| ConfigError {
            file: file.to_owned(),
            connector: connector.map(str::to_owned),
            reason,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| err(None, e.to_string().trim_end().to_owned()))?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };

        let http = raw.host.http.unwrap_or_else(|| "127.0.0.1:7700".into());
        if http.parse::<std::net::SocketAddr>().is_err() {
            return Err(err(
                None,
                format!("[host].http {http:?} is not an address like 127.0.0.1:7700"),
            ));
        }
        if let Some(url) = raw.bus.url.as_deref().filter(|u| u.contains("://"))
            && !(url.starts_with("nats://") || url.starts_with("tls://"))
        {
            return Err(err(
                None,
                format!("[bus].url {url:?} must be a nats:// or tls:// URL"),
            ));
        }

        let mut connectors = Vec::with_capacity(raw.connectors.len());
        for (i, value) in raw.connectors.into_iter().enumerate() {
            let label = value
                .get("name")
                .and_then(toml::Value::as_str)
                .map_or_else(|| format!("#{}", i + 1), str::to_owned);
            let c = RawConnector::deserialize(value)
                .map_err(|e| err(Some(&label), e.message().to_owned()))?;
            let spec = validate_connector(c, &resolve)
                .map_err(|(name, reason)| err(Some(&name), reason))?;
            if connectors
                .iter()
                .any(|other: &ConnectorSpec| other.name == spec.name)
            {
                return Err(err(
                    Some(&spec.name),
                    "the name is used by another connector".into(),
                ));
            }
            connectors.push(spec);
        }

        Ok(Config {
            file: file.to_owned(),
            bus_url: raw.bus.url,
            nats_server: raw.bus.nats_server.map(|p| resolve(&p)),
            data_dir: resolve(&raw.host.data_dir.unwrap_or_else(|| ".plexus".into())),
            http,
            secrets_file: raw.host.secrets_file.map(|p| resolve(&p)),
            connectors,
        })
    }
}

fn validate_connector(
    c: RawConnector,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<ConnectorSpec, (String, String)> {
    let name = c.name.clone();
    let fail = |reason: String| (name.clone(), reason);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(fail("name must be one or more of [a-z0-9-]".into()));
    }

    let plugin = resolve(Path::new(&c.plugin));
    match std::fs::metadata(&plugin) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(fail(format!("plugin {} is not a file", plugin.display()))),
        Err(e) => {
            return Err(fail(format!(
                "plugin {} cannot be read: {e}",
                plugin.display()
            )));
        }
    }

    let needs =
        |field: &str, value: &Option<String>, wanted: bool| -> Result<(), (String, String)> {
            match (value, wanted) {
                (None, true) => Err(fail(format!("a {} needs `{field}`", c.kind))),
                (Some(_), false) => Err(fail(format!("a {} does not take `{field}`", c.kind))),
                _ => Ok(()),
            }
        };
    match c.kind {
        Kind::Transform => {
            needs("from", &c.from, true)?;
            needs("to", &c.to, true)?;
            needs("schedule", &c.schedule, false)?;
            needs("listen", &c.listen, false)?;
        }
        Kind::Sink => {
            needs("from", &c.from, true)?;
            needs("to", &c.to, false)?;
            needs("schedule", &c.schedule, false)?;
            needs("listen", &c.listen, false)?;
        }
        Kind::Source => {
            needs("from", &c.from, false)?;
            needs("to", &c.to, true)?;
            if c.schedule.is_some() == c.listen.is_some() {
                return Err(fail(
                    "a source needs exactly one of `schedule` or `listen`".into(),
                ));
            }
        }
    }
    if let Some(from) = &c.from {
        check_subject(from, true).map_err(|e| fail(format!("from {from:?}: {e}")))?;
    }
    if let Some(to) = &c.to {
        check_subject(to, false).map_err(|e| fail(format!("to {to:?}: {e}")))?;
        if c.from
            .as_deref()
            .is_some_and(|from| subject_matches(from, to))
        {
            return Err(fail(format!(
                "to {to:?} is matched by from {:?}: the connector would consume its own output",
                c.from.as_deref().unwrap_or_default()
            )));
        }
    }
    for schema in &c.emits {
        if !crate::contract::is_known(schema) {
            let known: Vec<&str> = crate::contract::known().collect();
            return Err(fail(format!(
                "emits {schema:?}: no such schema (known: {})",
                known.join(", ")
            )));
        }
    }
    if !c.emits.is_empty() && c.kind == Kind::Sink {
        return Err(fail(
            "a sink publishes nothing, so it takes no `emits`".into(),
        ));
    }
    for file in &c.grants.files {
        let Some(dir) = file
            .strip_suffix(":ro")
            .or_else(|| file.strip_suffix(":rw"))
        else {
            return Err(fail(format!(
                "grants.files {file:?} must end in :ro or :rw"
            )));
        };
        if !resolve(Path::new(dir)).is_dir() {
            return Err(fail(format!(
                "grants.files {file:?}: {} is not a directory",
                resolve(Path::new(dir)).display()
            )));
        }
    }
    for origin in &c.grants.http {
        crate::capability::Origin::parse(origin)
            .map_err(|e| fail(format!("grants.http {origin:?}: {e}")))?;
    }
    if let Some(schedule) = &c.schedule {
        crate::connector::Schedule::parse(schedule)
            .map_err(|e| fail(format!("schedule {schedule:?}: {e}")))?;
    }
    if let Some(listen) = c.listen.as_deref().filter(|l| *l != "http") {
        let addr = listen.strip_prefix("mllp://").ok_or_else(|| {
            fail(format!(
                "listen {listen:?} must be \"http\" or \"mllp://<address>:<port>\""
            ))
        })?;
        addr.parse::<std::net::SocketAddr>().map_err(|_| {
            fail(format!(
                "listen {listen:?}: {addr} is not an address like 0.0.0.0:2575"
            ))
        })?;
    }

    let limits = Limits {
        memory: match c.limits.memory.as_deref() {
            None => 64 << 20,
            Some(text) => {
                parse_bytes(text).map_err(|e| fail(format!("limits.memory {text:?}: {e}")))?
            }
        },
        timeout: duration(c.limits.timeout.as_deref(), "2s", "limits.timeout").map_err(fail)?,
        concurrency: c.limits.concurrency.unwrap_or(4),
    };
    if limits.memory < (1 << 20) {
        return Err(fail("limits.memory must be at least 1MiB".into()));
    }
    if !(1..=256).contains(&limits.concurrency) {
        return Err(fail(format!(
            "limits.concurrency {} must be between 1 and 256",
            limits.concurrency
        )));
    }

    let backoff = match c.delivery.backoff {
        None => vec![
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(30),
        ],
        Some(steps) => steps
            .iter()
            .map(|s| duration(Some(s), "", "delivery.backoff"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?,
    };
    let max_deliver = c.delivery.max_deliver.unwrap_or(5);
    if max_deliver == 0 {
        return Err(fail("delivery.max_deliver must be at least 1".into()));
    }
    if (max_deliver as usize) < backoff.len() {
        return Err(fail(format!(
            "delivery.max_deliver ({max_deliver}) is less than the {} backoff steps; the later steps could never be used",
            backoff.len()
        )));
    }
    let dlq = c.delivery.dlq.unwrap_or_else(|| format!("dlq.{name}"));
    check_subject(&dlq, false).map_err(|e| fail(format!("delivery.dlq {dlq:?}: {e}")))?;
    let delivery = Delivery {
        max_deliver,
        backoff,
        ack_wait: duration(c.delivery.ack_wait.as_deref(), "30s", "delivery.ack_wait")
            .map_err(fail)?,
        dlq,
        ordered: c.delivery.ordered.unwrap_or(false),
    };
    if delivery.ack_wait <= limits.timeout {
        return Err(fail(format!(
            "delivery.ack_wait ({}) must be longer than limits.timeout ({})",
            humantime::format_duration(delivery.ack_wait),
            humantime::format_duration(limits.timeout)
        )));
    }

    Ok(ConnectorSpec {
        name: c.name,
        kind: c.kind,
        plugin,
        from: c.from,
        to: c.to,
        schedule: c.schedule,
        listen: c.listen,
        config: c.config,
        emits: c.emits,
        file_dirs: c
            .grants
            .files
            .iter()
            .map(|f| resolve(Path::new(f.rsplit_once(':').map_or(f.as_str(), |(d, _)| d))))
            .collect(),
        grants: c.grants,
        limits,
        delivery,
    })
}

fn duration(text: Option<&str>, default: &str, key: &str) -> Result<Duration, String> {
    let text = text.unwrap_or(default);
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{key} {text:?} must be longer than zero")),
        Err(e) => Err(format!(
            "{key} {text:?} is not a duration like \"2s\" or \"500ms\": {e}"
        )),
    }
}

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
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown unit {other:?} (use KiB, MiB or GiB)")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| "too large".to_string())
}

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
    }

    proptest::proptest! {
        /// Fuzz: any text is a config or an error, never a panic.
        #[test]
        fn fuzz_any_text_is_a_config_or_an_error(text in "(\\[\\[connector\\]\\]\n|\\[host\\]\n|[a-z_.]{1,12} = (\"[a-z0-9.>* :/-]{0,16}\"|[0-9]{1,3}|\\[\"[a-z0-9]{0,4}\"\\]|\\{ [a-z]{1,4} = \"x\" \\})\n){0,16}") {
            let _ = Config::parse(Path::new("/tmp/fuzz.toml"), &text);
        }
    }

    #[test]
    fn backoff_repeats_the_last_step() {
        let d = Delivery {
            max_deliver: 5,
            backoff: vec![Duration::from_secs(1), Duration::from_secs(5)],
            ack_wait: Duration::from_secs(30),
            dlq: "dlq.x".into(),
            ordered: false,
        };
        assert_eq!(d.backoff_after(1), Duration::from_secs(1));
        assert_eq!(d.backoff_after(2), Duration::from_secs(5));
        assert_eq!(d.backoff_after(9), Duration::from_secs(5));
    }
}
