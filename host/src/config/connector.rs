//! One `[[connector]]`: its role, grants, limits, delivery policy and, for a
//! listener, its transport; validated into a [`ConnectorSpec`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::BusConfig;
use super::grants::{FileGrant, Grants, Origin};
use super::schedule::Schedule;
use super::values::{DAY, HOUR, Subject, SubjectFilter, check_subject, duration, size};

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

/// Where a connector's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A `.wasm` file, resolved against the config file's directory.
    File(PathBuf),
    /// `name@version` in the bus's plugin registry (`plexus deploy`).
    Registry(PluginRef),
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::File(path) => write!(f, "{}", path.display()),
            PluginSource::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// A plugin in the registry: `name@version`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginRef {
    /// `[a-z0-9-]+`.
    pub name: String,
    /// `[A-Za-z0-9._-]+`, e.g. `1.3.0`.
    pub version: String,
}

impl PluginRef {
    /// `name@version`, or why not. A path (anything with `/` or ending in
    /// `.wasm`) is not a reference.
    pub fn parse(text: &str) -> Option<Result<PluginRef, String>> {
        if text.contains('/') || text.ends_with(".wasm") {
            return None;
        }
        let (name, version) = text.split_once('@')?;
        Some(PluginRef::new(name, version))
    }

    /// A reference from its parts, checked.
    pub fn new(name: &str, version: &str) -> Result<PluginRef, String> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!("plugin name {name:?} must be 1 to 64 of [a-z0-9-]"));
        }
        if version.is_empty()
            || version.len() > 64
            || version.starts_with('.')
            || version.ends_with('.')
            || version.contains("..")
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(format!(
                "plugin version {version:?} must be 1 to 64 of [A-Za-z0-9._-], like 1.3.0"
            ));
        }
        Ok(PluginRef {
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// What a connector does, with exactly the settings its role takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Brings records in and publishes them to `to`.
    Source {
        /// Subject published to.
        to: Subject,
        /// What makes it take records in.
        trigger: Trigger,
    },
    /// Maps records consumed from `from` and publishes them to `to`.
    Transform {
        /// Subject filter consumed.
        from: SubjectFilter,
        /// Subject published to.
        to: Subject,
    },
    /// Delivers records consumed from `from` to an outside system.
    Sink {
        /// Subject filter consumed.
        from: SubjectFilter,
    },
}

/// What makes a source take records in.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Polled on a schedule (`schedule = "30s"` or cron).
    Schedule(Schedule),
    /// Fed by `POST /ingest/<name>` on the admin endpoint (`listen = "http"`).
    Http,
    /// An MLLP listener (`listen = "mllp://…"` or `"mllp+tls://…"`).
    Mllp(Listener),
}

/// One validated `[[connector]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorSpec {
    /// Unique name.
    pub name: String,
    /// Its role and the subjects and trigger that go with it.
    pub role: Role,
    /// The component: a file, or `name@version` in the registry.
    pub plugin: PluginSource,
    /// The component's SHA-256 it must have (`plexus apply` pins it).
    pub plugin_digest: Option<String>,
    /// Strings handed to the plugin.
    pub config: BTreeMap<String, String>,
    /// Schema ids emitted.
    pub emits: Vec<String>,
    /// Capabilities granted.
    pub grants: Grants,
    /// Resource limits.
    pub limits: Limits,
    /// Retry and dead-letter policy.
    pub delivery: Delivery,
    /// Host labels a fleet host must carry to run it; empty runs anywhere.
    pub placement: BTreeMap<String, String>,
    /// What the business expects of it: freshness and latency targets.
    pub sla: Option<Sla>,
}

/// `sla = { freshness = "15m", latency_p99 = "2s", class = "transactional" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sla {
    /// A transactional connector taking no record for this long is in breach.
    pub freshness: Option<Duration>,
    /// End-to-end latency (from the record's first hop to this connector
    /// taking it) whose 99th percentile must stay under this.
    pub latency_p99: Option<Duration>,
    /// `transactional` or `informational`.
    pub class: SlaClass,
}

/// How much a connector's data matters when it is late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlaClass {
    /// Orders, receipts, invoices: silence is a problem.
    Transactional,
    /// Reference data, reports: silence is normal; only latency counts.
    Informational,
}

impl SlaClass {
    /// As written in config and in breach records.
    pub fn as_str(self) -> &'static str {
        match self {
            SlaClass::Transactional => "transactional",
            SlaClass::Informational => "informational",
        }
    }
}

impl ConnectorSpec {
    /// Its role's kind, which its plugin's world must match.
    pub fn kind(&self) -> Kind {
        match self.role {
            Role::Source { .. } => Kind::Source,
            Role::Transform { .. } => Kind::Transform,
            Role::Sink { .. } => Kind::Sink,
        }
    }

    /// The subject filter consumed (transforms and sinks).
    pub fn from(&self) -> Option<&str> {
        match &self.role {
            Role::Transform { from, .. } | Role::Sink { from } => Some(from),
            Role::Source { .. } => None,
        }
    }

    /// The subject published to (sources and transforms).
    pub fn to(&self) -> Option<&str> {
        match &self.role {
            Role::Source { to, .. } | Role::Transform { to, .. } => Some(to),
            Role::Sink { .. } => None,
        }
    }

    /// A source's trigger.
    pub fn trigger(&self) -> Option<&Trigger> {
        match &self.role {
            Role::Source { trigger, .. } => Some(trigger),
            _ => None,
        }
    }

    /// An MLLP listener's settings.
    pub fn listener(&self) -> Option<&Listener> {
        match self.trigger() {
            Some(Trigger::Mllp(listener)) => Some(listener),
            _ => None,
        }
    }

    /// Whether one host at a time must run it: a scheduled source (two
    /// would poll twice) or an MLLP listener (senders hold one connection).
    /// A transform or sink shares its durable consumer; HTTP ingest is
    /// answered by whichever host a client reaches.
    pub fn needs_lease(&self) -> bool {
        matches!(
            self.trigger(),
            Some(Trigger::Schedule(_) | Trigger::Mllp(_))
        )
    }

    /// Whether a host labelled `labels` may run it.
    pub fn placed_on(&self, labels: &BTreeMap<String, String>) -> bool {
        self.placement
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    }
}

/// An MLLP listener: where, with what TLS, from whom, and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The address bound.
    pub addr: SocketAddr,
    /// TLS, for `mllp+tls://`.
    pub tls: Option<ListenerTls>,
    /// Peers allowed to connect; empty allows any.
    pub allow: Vec<ipnet::IpNet>,
    /// Connections open at once; more are refused at accept.
    pub max_connections: usize,
    /// A connection silent this long between messages is closed.
    pub idle_timeout: Duration,
    /// A message begun must be complete within this long, or the connection is closed.
    pub frame_timeout: Duration,
}

/// Certificates of a TLS listener (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by this CA.
    pub client_ca: Option<PathBuf>,
}

/// `[connector.grants]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrants {
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
    /// Records one call may return (a poll, a decode, a transform).
    pub outputs: usize,
    /// Bytes of payload one call may return, all records together.
    pub output_bytes: usize,
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
pub(super) struct RawConnector {
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
    grants: RawGrants,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    delivery: RawDelivery,
    tls: Option<RawTls>,
    listener: Option<RawListener>,
    #[serde(default)]
    placement: BTreeMap<String, String>,
    plugin_digest: Option<String>,
    sla: Option<RawSla>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSla {
    freshness: Option<String>,
    latency_p99: Option<String>,
    class: Option<SlaClass>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListener {
    #[serde(default)]
    allow: Vec<String>,
    max_connections: Option<usize>,
    idle_timeout: Option<String>,
    frame_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<String>,
    timeout: Option<String>,
    concurrency: Option<usize>,
    outputs: Option<usize>,
    output_bytes: Option<String>,
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

pub(super) fn validate(
    c: RawConnector,
    site: &Site<'_>,
) -> Result<ConnectorSpec, (String, String)> {
    let name = c.name.clone();
    let fail = |reason: String| (name.clone(), reason);
    let bus = site.bus;
    // On the hosts a definition's paths are their own: absolute, and
    // checked there, not on the machine that applies it.
    let resolve = |p: &Path| -> PathBuf {
        if site.local {
            (site.resolve)(p)
        } else {
            p.to_owned()
        }
    };
    let resolve = &resolve;
    // A definition from the bus (off the host, or on it: grant_roots set).
    let from_bus = !site.local || site.grant_roots.is_some();
    let check_path = |what: &str, p: &Path| -> Result<(), (String, String)> {
        if from_bus && !p.is_absolute() {
            return Err(fail(format!(
                "{what} {} must be an absolute path on the hosts that run the connector",
                p.display()
            )));
        }
        Ok(())
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(fail("name must be one or more of [a-z0-9-]".into()));
    }

    let plugin = match PluginRef::parse(&c.plugin) {
        Some(reference) => PluginSource::Registry(reference.map_err(fail)?),
        None if !site.local => {
            return Err(fail(format!(
                "plugin {:?}: a definition in the bus names a deployed plugin as name@version (`plexus deploy {} --name … --version …`)",
                c.plugin, c.plugin
            )));
        }
        None => {
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
            PluginSource::File(plugin)
        }
    };
    if let Some(digest) = &c.plugin_digest {
        let hex = digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(fail(format!(
                "plugin_digest {digest:?} must be a SHA-256 in 64 lower-case hex digits"
            )));
        }
    }
    for (key, value) in &c.placement {
        if key.is_empty() || value.is_empty() {
            return Err(fail("placement keys and values must not be empty".into()));
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
    let from = c
        .from
        .as_deref()
        .map(|from| SubjectFilter::parse(from).map_err(|e| fail(format!("from {from:?}: {e}"))))
        .transpose()?;
    let to =
        c.to.as_deref()
            .map(|to| Subject::parse(to).map_err(|e| fail(format!("to {to:?}: {e}"))))
            .transpose()?;
    if let (Some(from), Some(to)) = (&from, &to)
        && from.matches(to)
    {
        return Err(fail(format!(
            "to \"{to}\" is matched by from \"{from}\": the connector would consume its own output"
        )));
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
    let mut files = Vec::with_capacity(c.grants.files.len());
    for file in &c.grants.files {
        let (dir, writable) = match (file.strip_suffix(":ro"), file.strip_suffix(":rw")) {
            (Some(dir), _) => (dir, false),
            (_, Some(dir)) => (dir, true),
            _ => {
                return Err(fail(format!(
                    "grants.files {file:?} must end in :ro or :rw"
                )));
            }
        };
        check_path("grants.files", Path::new(dir))?;
        let host = resolve(Path::new(dir));
        if site.local && !host.is_dir() {
            return Err(fail(format!(
                "grants.files {file:?}: {} is not a directory",
                host.display()
            )));
        }
        // Checked and kept as the real path: a symlink on the way that is
        // swapped later cannot move the grant (PluginState checks again).
        let host = if site.local {
            check_file_grant(file, &host, site).map_err(fail)?;
            canonical(&host)
        } else {
            host
        };
        files.push(FileGrant {
            host,
            guest: dir.to_owned(),
            writable,
        });
    }
    let http = c
        .grants
        .http
        .iter()
        .map(|origin| {
            Origin::parse(origin).map_err(|e| fail(format!("grants.http {origin:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for secret in &c.grants.secrets {
        if site.reserved_secrets.contains(secret) {
            return Err(fail(format!(
                "grants.secrets {secret:?} is the host's own bus credential ([bus].nkey or [bus].password); a plugin may not read it"
            )));
        }
    }
    let grants = Grants {
        http,
        files,
        secrets: c.grants.secrets,
    };
    let schedule = c
        .schedule
        .as_deref()
        .map(|text| Schedule::parse(text).map_err(|e| fail(format!("schedule {text:?}: {e}"))))
        .transpose()?;
    let listener = match c.listen.as_deref().filter(|l| *l != "http") {
        Some(listen) => {
            if let Some(tls) = &c.tls {
                check_path("tls.cert", &tls.cert)?;
                check_path("tls.key", &tls.key)?;
                if let Some(ca) = &tls.client_ca {
                    check_path("tls.client_ca", ca)?;
                }
            }
            Some(
                listener(
                    listen,
                    c.tls,
                    c.listener.unwrap_or_default(),
                    resolve,
                    site.local,
                )
                .map_err(fail)?,
            )
        }
        None => {
            if c.tls.is_some() || c.listener.is_some() {
                return Err(fail(
                    "[connector.tls] and [connector.listener] belong to an MLLP listener (`listen = \"mllp://…\"` or \"mllp+tls://…\")".into(),
                ));
            }
            None
        }
    };

    let limits = Limits {
        memory: size(
            c.limits.memory.as_deref(),
            64 << 20,
            "limits.memory",
            1 << 20,
            4 << 30,
        )
        .map_err(fail)?,
        timeout: duration(
            c.limits.timeout.as_deref(),
            Duration::from_secs(2),
            "limits.timeout",
            HOUR,
        )
        .map_err(fail)?,
        concurrency: c.limits.concurrency.unwrap_or(4),
        outputs: c.limits.outputs.unwrap_or(10_000),
        output_bytes: size(
            c.limits.output_bytes.as_deref(),
            64 << 20,
            "limits.output_bytes",
            1 << 10,
            1 << 30,
        )
        .map_err(fail)?,
    };
    if !(1..=256).contains(&limits.concurrency) {
        return Err(fail(format!(
            "limits.concurrency {} must be between 1 and 256",
            limits.concurrency
        )));
    }
    if !(1..=1_000_000).contains(&limits.outputs) {
        return Err(fail(format!(
            "limits.outputs {} must be between 1 and 1000000",
            limits.outputs
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
            .map(|s| duration(Some(s), Duration::ZERO, "delivery.backoff", DAY))
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
        ack_wait: duration(
            c.delivery.ack_wait.as_deref(),
            Duration::from_secs(30),
            "delivery.ack_wait",
            DAY,
        )
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
    // A record redelivered (after ack_wait) or retried (after a backoff step)
    // re-publishes its outputs; JetStream drops them as duplicates only
    // within its window.
    let window = bus.duplicate_window;
    if c.kind != Kind::Sink {
        if delivery.ack_wait >= window {
            return Err(fail(format!(
                "delivery.ack_wait ({}) must be shorter than [bus].duplicate_window ({}), or a redelivered record's outputs could be stored twice",
                humantime::format_duration(delivery.ack_wait),
                humantime::format_duration(window)
            )));
        }
        if let Some(step) = delivery.backoff.iter().find(|step| **step >= window) {
            return Err(fail(format!(
                "delivery.backoff step {} must be shorter than [bus].duplicate_window ({}), or a retried record's outputs could be stored twice",
                humantime::format_duration(*step),
                humantime::format_duration(window)
            )));
        }
    }

    let sla = match c.sla {
        None => None,
        Some(raw) => {
            let sla = Sla {
                freshness: match raw.freshness.as_deref() {
                    Some(text) => Some(
                        duration(Some(text), Duration::ZERO, "sla.freshness", 30 * DAY)
                            .map_err(fail)?,
                    ),
                    None => None,
                },
                latency_p99: match raw.latency_p99.as_deref() {
                    Some(text) => Some(
                        duration(Some(text), Duration::ZERO, "sla.latency_p99", DAY)
                            .map_err(fail)?,
                    ),
                    None => None,
                },
                class: raw.class.unwrap_or(SlaClass::Transactional),
            };
            if sla.freshness.is_none() && sla.latency_p99.is_none() {
                return Err(fail(
                    "sla needs `freshness` or `latency_p99` (or both)".into(),
                ));
            }
            if sla.freshness.is_some() && sla.class == SlaClass::Informational {
                return Err(fail("sla.freshness applies to a transactional connector; an informational one is expected to fall quiet".into()));
            }
            Some(sla)
        }
    };

    // Each role takes exactly its own settings, checked above.
    let missing = |field: &str| fail(format!("a {} needs `{field}`", c.kind));
    let role = match c.kind {
        Kind::Transform => Role::Transform {
            from: from.ok_or_else(|| missing("from"))?,
            to: to.ok_or_else(|| missing("to"))?,
        },
        Kind::Sink => Role::Sink {
            from: from.ok_or_else(|| missing("from"))?,
        },
        Kind::Source => Role::Source {
            to: to.ok_or_else(|| missing("to"))?,
            trigger: match (schedule, listener) {
                (Some(schedule), _) => Trigger::Schedule(schedule),
                (None, Some(listener)) => Trigger::Mllp(listener),
                (None, None) => Trigger::Http,
            },
        },
    };

    Ok(ConnectorSpec {
        name: c.name,
        role,
        plugin,
        plugin_digest: c.plugin_digest,
        config: c.config,
        emits: c.emits,
        grants,
        limits,
        delivery,
        placement: c.placement,
        sla,
    })
}

/// Directories no grant may reach, whoever asks: the kernel's views of
/// processes and devices (a plugin reading `/proc/<pid>/environ` would read
/// the host's secrets).
const SYSTEM_DIRS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Whether granting `host` (written `grant`) is allowed on this host: never
/// over its own state or the system's, and for a definition from the bus
/// only inside `[host].grant_roots`.
fn check_file_grant(grant: &str, host: &Path, site: &Site<'_>) -> Result<(), String> {
    let system = SYSTEM_DIRS
        .iter()
        .map(|d| ("a system directory", Path::new(*d)));
    let own = site.protected.iter().map(|(what, p)| (*what, p.as_path()));
    for (what, protected) in own.chain(system) {
        if overlaps(host, protected) {
            return Err(format!(
                "grants.files {grant:?} reaches {what} {}, which holds the host's own state or the system's; grant a directory apart from it",
                protected.display()
            ));
        }
    }
    if let Some(roots) = site.grant_roots {
        let real = canonical(host);
        if !roots.iter().any(|root| real.starts_with(canonical(root))) {
            return Err(format!(
                "grants.files {grant:?}: a definition from the bus may grant only directories under this host's [host].grant_roots ({})",
                if roots.is_empty() {
                    "none are set".to_owned()
                } else {
                    roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        }
    }
    Ok(())
}

/// Where a definition is validated: on the host that runs it (`local`:
/// its files must exist here, and no grant may reach the host's own
/// state), or on an operator's machine applying it to the bus.
pub(super) struct Site<'a> {
    /// Makes relative paths absolute (against the config file's directory).
    pub(super) resolve: &'a dyn Fn(&Path) -> PathBuf,
    /// The bus settings a definition's delivery policy must fit.
    pub(super) bus: &'a BusConfig,
    /// The host's own files and directories, which no grant may reach:
    /// data_dir, the config file, secrets, tokens, bus credentials.
    pub(super) protected: Vec<(&'static str, PathBuf)>,
    /// For a definition from the bus: the only directories it may grant.
    pub(super) grant_roots: Option<&'a [PathBuf]>,
    /// Secret names a plugin may not be granted (the bus credentials).
    pub(super) reserved_secrets: Vec<String>,
    /// Whether this is the machine that runs it.
    pub(super) local: bool,
}

/// A path as written: off the host, paths are the hosts' own.
fn as_given(path: &Path) -> PathBuf {
    path.to_owned()
}

impl<'a> Site<'a> {
    /// An operator's machine applying definitions to the bus: paths are the
    /// hosts' (absolute, unchecked here), the bus's defaults.
    pub(super) fn operator(bus: &'a BusConfig) -> Site<'a> {
        Site {
            resolve: &as_given,
            bus,
            protected: Vec::new(),
            grant_roots: None,
            reserved_secrets: Vec::new(),
            local: false,
        }
    }
}

/// Whether a granted directory contains `protected` or lies inside it.
fn overlaps(granted: &Path, protected: &Path) -> bool {
    let granted = canonical(granted);
    let protected = canonical(protected);
    protected.starts_with(&granted) || granted.starts_with(&protected)
}

/// The real path of `path`, following symlinks as far as it exists.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => canonical(parent).join(name),
        _ => path.to_owned(),
    }
}

fn listener(
    listen: &str,
    tls: Option<RawTls>,
    raw: RawListener,
    resolve: &dyn Fn(&Path) -> PathBuf,
    local: bool,
) -> Result<Listener, String> {
    let (addr, secure) = if let Some(addr) = listen.strip_prefix("mllp+tls://") {
        (addr, true)
    } else if let Some(addr) = listen.strip_prefix("mllp://") {
        (addr, false)
    } else {
        return Err(format!(
            "listen {listen:?} must be \"http\", \"mllp://<address>:<port>\" or \"mllp+tls://<address>:<port>\""
        ));
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("listen {listen:?}: {addr} is not an address like 0.0.0.0:2575"))?;
    let tls = match (tls, secure) {
        (Some(tls), true) => {
            let tls = ListenerTls {
                cert: resolve(&tls.cert),
                key: resolve(&tls.key),
                client_ca: tls.client_ca.as_deref().map(resolve),
            };
            for (key, file) in [
                ("cert", Some(&tls.cert)),
                ("key", Some(&tls.key)),
                ("client_ca", tls.client_ca.as_ref()),
            ] {
                if let Some(file) = file
                    && local
                    && !file.is_file()
                {
                    return Err(format!(
                        "tls.{key} {} is not a readable file",
                        file.display()
                    ));
                }
            }
            Some(tls)
        }
        (None, true) => {
            return Err(format!(
                "listen {listen:?} needs [connector.tls] with `cert` and `key`"
            ));
        }
        (Some(_), false) => {
            return Err(format!(
                "[connector.tls] is set but listen {listen:?} is not mllp+tls://"
            ));
        }
        (None, false) => None,
    };
    let allow = raw
        .allow
        .iter()
        .map(|cidr| {
            cidr.parse::<ipnet::IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("listener.allow {cidr:?} is not an address or a CIDR block like 10.20.0.0/16"))
        })
        .collect::<Result<_, _>>()?;
    let max_connections = raw.max_connections.unwrap_or(64);
    if !(1..=10_000).contains(&max_connections) {
        return Err(format!(
            "listener.max_connections {max_connections} must be between 1 and 10000"
        ));
    }
    Ok(Listener {
        addr,
        tls,
        allow,
        max_connections,
        idle_timeout: duration(
            raw.idle_timeout.as_deref(),
            Duration::from_secs(300),
            "listener.idle_timeout",
            DAY,
        )?,
        frame_timeout: duration(
            raw.frame_timeout.as_deref(),
            Duration::from_secs(30),
            "listener.frame_timeout",
            HOUR,
        )?,
    })
}
