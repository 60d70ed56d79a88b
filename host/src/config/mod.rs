//! `plexus.toml`: parsing and validation, once, at the edge.
//!
//! Everything an operator can get wrong is caught here, before anything starts,
//! and reported with the file, the connector and the reason. What leaves this
//! module is typed: sizes in bytes, durations, addresses, CIDR blocks.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `[bus].url` | NATS server to connect to (`nats://` or `tls://`) | absent: start an embedded `nats-server` |
//! | `[bus].nats_server` | `nats-server` binary for the embedded bus | `$PLEXUS_NATS_SERVER`, then `PATH` |
//! | `[bus].creds` | NATS credentials file (JWT + nkey seed) | none |
//! | `[bus].nkey` | name of the secret holding an nkey seed | none |
//! | `[bus].user`, `[bus].password` | user name, and the name of the secret holding its password | none |
//! | `[bus].tls` | `{ ca, cert, key }` PEM files: the CA to trust, and a client certificate | none |
//! | `[bus].duplicate_window` | how long JetStream remembers a message id; redeliveries and retries must fall inside it | `2m` |
//! | `[bus].stream_max_bytes` | size limit of each stream the host creates; when full, publishes are refused (nothing old is dropped) | `1GiB` |
//! | `[bus].stream_max_age` | age limit of each stream the host creates | `30days` |
//! | `[bus].bucket_max_bytes` | size limit of each kv bucket the host creates | `64MiB` |
//! | `[bus].replicas` | copies a NATS cluster keeps of each stream, bucket and object store the host creates (1–5) | `1` |
//! | `[bus].leaf` | an edge host: the hub's leaf node URL(s), `nats-leaf://hub.example.org:7422` or `tls://…`; the embedded bus joins the hub as a leaf node and the host joins the fleet | none |
//! | `[bus].leaf_creds` | credentials file for the leaf connection | none |
//! | `[bus].leaf_user`, `[bus].leaf_password` | user name for the leaf connection, and the name of the secret holding its password | none |
//! | `[bus].leaf_tls` | `{ ca, cert, key }` PEM files for the leaf connection | none |
//! | `[bus].domain` | the edge's JetStream domain, where its records are stored first | `[host].labels.facility` |
//! | `[bus].hub_domain` | the hub's JetStream domain (its servers set `jetstream { domain: … }`) | `hub` |
//! | `[host].data_dir` | embedded bus store, compiled-plugin cache, tokens | `.plexus` beside the config |
//! | `[host].http` | address of the admin endpoint: dashboard, `/metrics`, `/connectors`, `/ingest/<name>` | `127.0.0.1:7700` |
//! | `[host].tokens` | the admin endpoint's bearer tokens, stored hashed (`plexus token create`) | `<data_dir>/tokens.toml` |
//! | `[host].secrets_file` | TOML table of secret values (after `PLEXUS_SECRET_<NAME>`) | none |
//! | `[host].labels` | this host's labels, matched by a fleet definition's `placement` (`plexus up --label` adds) | none |
//! | `[host].trusted_keys` | public keys (`plexus keygen`) whose plugin signatures this host accepts | none |
//! | `[host].require_signed` | refuse registry plugins without a signature by a trusted key | `false` |
//! | `[host].grant_roots` | the only directories a connector definition from the bus may grant (`grants.files`); none by default | none |
//! | `[host].lease_ttl` | how long a fleet lease (scheduled source, MLLP listener) outlives its holder's last renewal (2s–1h) | `10s` |
//! | `[[connector]].name` | unique, `[a-z0-9-]+` | required |
//! | `kind` | `source`, `transform` or `sink` | required |
//! | `plugin` | path to the `.wasm` component, relative to the config file, or `name@version` in the bus's registry (`plexus deploy`) | required |
//! | `from` | subject filter consumed (transforms, sinks) | required there |
//! | `to` | subject published to (sources, transforms) | required there |
//! | `schedule` | a source's interval (`"30s"`) or cron expression (5 or 6 fields) | |
//! | `listen` | a source fed from outside: `"http"` (`POST /ingest/<name>`), `"mllp://0.0.0.0:2575"` or `"mllp+tls://0.0.0.0:2575"` | |
//! | `config` | string table handed to the plugin | empty |
//! | `emits` | schema ids the connector emits | empty |
//! | `grants.http` | outbound origins, `scheme://host[:port]` | none |
//! | `grants.files` | directories, `path:ro` or `path:rw`; the plugin sees each at the path as written; never `data_dir` or the secrets file | none |
//! | `grants.secrets` | secret names the plugin may read | none |
//! | `limits.memory` | linear memory cap per instance (1MiB–4GiB) | `64MiB` |
//! | `limits.timeout` | wall-clock budget per plugin call (at most 1h) | `2s` |
//! | `limits.concurrency` | instances working in parallel (1–256) | `4` |
//! | `limits.outputs` | records one call may return | `10000` |
//! | `limits.output_bytes` | payload bytes one call may return | `64MiB` |
//! | `delivery.max_deliver` | attempts before dead-lettering | `5` |
//! | `delivery.backoff` | delays between attempts; the last repeats | `["1s", "5s", "30s"]` |
//! | `delivery.ack_wait` | how long the bus waits for an ack before redelivering | `30s` |
//! | `delivery.dlq` | dead-letter subject | `dlq.<name>` |
//! | `delivery.ordered` | transforms and sinks: one record at a time, in stream order (a retried record comes back after later ones); for stateful plugins that need it | `false` |
//! | `tls.cert`, `tls.key` | an `mllp+tls://` listener's certificate chain and key (PEM) | required there |
//! | `tls.client_ca` | when set, MLLP clients must present a certificate from this CA | none |
//! | `listener.allow` | addresses or CIDR blocks an MLLP listener accepts; others are refused at connect | any |
//! | `listener.max_connections` | an MLLP listener's open connections; one more closes the connection silent longest | `64` |
//! | `listener.idle_timeout` | an MLLP connection silent this long is closed | `5m` |
//! | `listener.frame_timeout` | a message begun must be complete within this | `30s` |
//! | `plugin_digest` | the SHA-256 the plugin must have; `plexus apply` pins it, and a host refuses other bytes | none |
//! | `placement` | labels a fleet host must carry to run the connector, e.g. `{ facility = "st-marys" }` | any host |

mod connector;
mod edge;
mod grants;
mod schedule;
pub mod values;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use connector::{
    ConnectorSpec, Delivery, Kind, Limits, Listener, ListenerTls, PluginRef, PluginSource, Role,
    Sla, SlaClass, Trigger,
};
pub use edge::EdgeConfig;
pub use grants::{FileGrant, Grants, Origin};
pub use schedule::Schedule;
pub use values::{Subject, SubjectFilter, check_subject, parse_bytes, subject_matches};

use values::{DAY, HOUR, YEAR, duration, size};

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

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it was read from.
    pub file: PathBuf,
    /// How to reach the bus and what the host creates on it.
    pub bus: BusConfig,
    /// Store and cache directory.
    pub data_dir: PathBuf,
    /// Admin endpoint address.
    pub http: String,
    /// The admin endpoint's token file.
    pub tokens: PathBuf,
    /// TOML table of secret values, after `PLEXUS_SECRET_<NAME>`.
    pub secrets_file: Option<PathBuf>,
    /// Connectors in file order.
    pub connectors: Vec<ConnectorSpec>,
    /// What a fleet host runs and trusts.
    pub fleet: FleetConfig,
    /// `[observe]`: where spans go.
    pub observe: ObserveConfig,
}

/// `[observe]`: telemetry beyond `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObserveConfig {
    /// `otlp`: the collector's OTLP/HTTP traces URL
    /// (`http://collector:4318/v1/traces`); spans are exported only when set.
    pub otlp: Option<String>,
    /// `service_name`: the `service.name` spans carry (default `plexus`).
    pub service_name: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawObserve {
    otlp: Option<String>,
    service_name: Option<String>,
}

/// `[observe]` checked: an OTLP URL must be plain `http://host[:port]/path`.
fn observe(raw: RawObserve) -> Result<ObserveConfig, String> {
    if let Some(url) = &raw.otlp {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("[observe].otlp {url:?} must be an http:// URL (for TLS, run a local collector that forwards)")
        })?;
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() || !rest.contains('/') || rest.chars().any(char::is_whitespace) {
            return Err(format!(
                "[observe].otlp {url:?} must name a host and the traces path, like http://collector:4318/v1/traces"
            ));
        }
    }
    Ok(ObserveConfig {
        otlp: raw.otlp,
        service_name: raw.service_name.unwrap_or_else(|| "plexus".into()),
    })
}

/// `[host]` keys for a host in a fleet: its labels, the keys it trusts to
/// sign plugins, and how long it holds a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Labels matched against a definition's `placement` (`--label` adds).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Public keys (`ed25519:<hex>`, from `plexus keygen`) whose signatures count.
    pub trusted_keys: Vec<String>,
    /// Refuse plugins without a signature by a trusted key.
    pub require_signed: bool,
    /// How long a lease on a scheduled source or listener outlives its
    /// holder's last renewal.
    pub lease_ttl: Duration,
    /// The only directories a definition from the bus may grant.
    pub grant_roots: Vec<PathBuf>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            labels: Default::default(),
            trusted_keys: Vec::new(),
            require_signed: false,
            lease_ttl: Duration::from_secs(10),
            grant_roots: Vec::new(),
        }
    }
}

/// `[bus]`: where the bus is, how the host proves who it is, and the limits
/// of what it creates there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// NATS URL; `None` starts an embedded server.
    pub url: Option<String>,
    /// `nats-server` binary for the embedded bus, if set.
    pub nats_server: Option<PathBuf>,
    /// Credentials file.
    pub creds: Option<PathBuf>,
    /// Secret holding an nkey seed.
    pub nkey: Option<String>,
    /// User name.
    pub user: Option<String>,
    /// Secret holding the user's password.
    pub password: Option<String>,
    /// TLS towards the server.
    pub tls: Option<BusTls>,
    /// JetStream's duplicate window on the streams the host creates.
    pub duplicate_window: Duration,
    /// Size limit of each stream the host creates.
    pub stream_max_bytes: usize,
    /// Age limit of each stream the host creates.
    pub stream_max_age: Duration,
    /// Size limit of each kv bucket the host creates.
    pub bucket_max_bytes: usize,
    /// Copies a cluster keeps of each stream and bucket the host creates.
    pub replicas: usize,
    /// An edge host: its embedded bus is a leaf node of the hub.
    pub edge: Option<EdgeConfig>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: None,
            nats_server: None,
            creds: None,
            nkey: None,
            user: None,
            password: None,
            tls: None,
            duplicate_window: Duration::from_secs(120),
            stream_max_bytes: 1 << 30,
            stream_max_age: 30 * DAY,
            bucket_max_bytes: 64 << 20,
            replicas: 1,
            edge: None,
        }
    }
}

/// `path` resolved, if it is a readable file; `key` names it in the error.
fn readable_file(
    path: Option<PathBuf>,
    key: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Option<PathBuf>, String> {
    let path = path.map(|p| resolve(&p));
    if let Some(file) = &path
        && !file.is_file()
    {
        return Err(format!("{key} {} is not a readable file", file.display()));
    }
    Ok(path)
}

impl BusTls {
    /// The files resolved and checked; `key` (`[bus].tls`) names them in errors.
    fn resolved(self, key: &str, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<BusTls, String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(format!("{key} `cert` and `key` go together"));
        }
        Ok(BusTls {
            ca: readable_file(self.ca, &format!("{key}.ca"), resolve)?,
            cert: readable_file(self.cert, &format!("{key}.cert"), resolve)?,
            key: readable_file(self.key, &format!("{key}.key"), resolve)?,
        })
    }
}

/// `[bus].tls`: PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusTls {
    /// The CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
    /// A client certificate, for servers that verify clients.
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    pub key: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    bus: RawBus,
    #[serde(default)]
    host: RawHost,
    #[serde(default)]
    observe: RawObserve,
    /// Deserialized one by one, so an error can name its connector.
    #[serde(default, rename = "connector")]
    connectors: Vec<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBus {
    url: Option<String>,
    nats_server: Option<PathBuf>,
    creds: Option<PathBuf>,
    nkey: Option<String>,
    user: Option<String>,
    password: Option<String>,
    tls: Option<BusTls>,
    duplicate_window: Option<String>,
    stream_max_bytes: Option<String>,
    stream_max_age: Option<String>,
    bucket_max_bytes: Option<String>,
    replicas: Option<usize>,
    leaf: Option<String>,
    leaf_creds: Option<PathBuf>,
    leaf_user: Option<String>,
    leaf_password: Option<String>,
    leaf_tls: Option<BusTls>,
    domain: Option<String>,
    hub_domain: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHost {
    data_dir: Option<PathBuf>,
    http: Option<String>,
    tokens: Option<PathBuf>,
    secrets_file: Option<PathBuf>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    trusted_keys: Vec<String>,
    #[serde(default)]
    require_signed: bool,
    lease_ttl: Option<String>,
    #[serde(default)]
    grant_roots: Vec<PathBuf>,
}

/// A file of connector definitions for `plexus apply`: connectors only; the
/// hosts bring their own `[bus]` and `[host]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinitions {
    #[serde(default, rename = "connector")]
    connectors: Vec<toml::Value>,
}

/// One connector definition as stored in the bus: validated, and the
/// `[[connector]]` table hosts parse again.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// As validated where it was applied.
    pub spec: ConnectorSpec,
    /// The table as written (plus what `plexus apply` pins).
    pub table: toml::Table,
}

impl Definition {
    /// Pin the plugin's digest, as `plexus apply` does once it has looked
    /// the plugin up: hosts then refuse any other bytes under its name.
    pub fn pin(&mut self, digest: &str) {
        self.spec.plugin_digest = Some(digest.to_owned());
        self.table.insert(
            "plugin_digest".into(),
            toml::Value::String(digest.to_owned()),
        );
    }

    /// The table as TOML text, as stored in the bus.
    pub fn text(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(&self.table)
    }
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
        let bus = bus(raw.bus, &raw.host.labels, &resolve).map_err(|reason| err(None, reason))?;
        if let Some(edge) = &bus.edge
            && !raw.connectors.is_empty()
        {
            return Err(err(
                None,
                format!(
                    "an edge host ([bus].leaf) takes its connectors from the hub's fleet definitions; move the [[connector]] tables to a file for `plexus apply` at the hub, placed with `placement = {{ facility = \"{}\" }}`",
                    edge.facility
                ),
            ));
        }
        let data_dir = resolve(&raw.host.data_dir.unwrap_or_else(|| ".plexus".into()));
        let secrets_file = raw.host.secrets_file.map(|p| resolve(&p));
        let tokens = raw
            .host
            .tokens
            .map_or_else(|| data_dir.join("tokens.toml"), |p| resolve(&p));
        let protected = protected_paths(file, &data_dir, secrets_file.as_deref(), &tokens, &bus);
        let site = connector::Site {
            resolve: &resolve,
            bus: &bus,
            protected,
            grant_roots: None,
            reserved_secrets: reserved_secrets(&bus),
            local: true,
        };
        let connectors = connectors(raw.connectors, &site)
            .map_err(|(name, reason)| err(name.as_deref(), reason))?;
        let fleet = FleetConfig {
            labels: raw.host.labels,
            trusted_keys: raw.host.trusted_keys,
            require_signed: raw.host.require_signed,
            lease_ttl: duration(
                raw.host.lease_ttl.as_deref(),
                FleetConfig::default().lease_ttl,
                "[host].lease_ttl",
                HOUR,
            )
            .map_err(|reason| err(None, reason))?,
            grant_roots: raw.host.grant_roots.iter().map(|p| resolve(p)).collect(),
        };
        if fleet.lease_ttl < Duration::from_secs(2) {
            return Err(err(None, "[host].lease_ttl must be at least 2s".into()));
        }
        for key in &fleet.trusted_keys {
            crate::fleet::signing::PublicKey::parse(key)
                .map_err(|reason| err(None, format!("[host].trusted_keys {key:?}: {reason}")))?;
        }

        Ok(Config {
            file: file.to_owned(),
            bus,
            data_dir,
            http,
            tokens,
            secrets_file,
            connectors,
            fleet,
            observe: observe(raw.observe).map_err(|reason| err(None, reason))?,
        })
    }

    /// A host's settings with no connectors, for a fleet host started
    /// without a config file: everything at its default, beside `dir`.
    pub fn defaults(dir: &Path) -> Config {
        // An empty text is always a valid config.
        Config::parse(&dir.join("plexus.toml"), "").unwrap_or_else(|_| Config {
            file: dir.join("plexus.toml"),
            bus: BusConfig::default(),
            data_dir: dir.join(".plexus"),
            http: "127.0.0.1:7700".into(),
            tokens: dir.join(".plexus/tokens.toml"),
            secrets_file: None,
            connectors: Vec::new(),
            fleet: FleetConfig::default(),
            observe: ObserveConfig::default(),
        })
    }

    /// Read a file of definitions for `plexus apply`, validated as on an
    /// operator's machine: plugins are `name@version`, paths are the hosts'.
    pub fn load_definitions(file: &Path) -> Result<Vec<Definition>, ConfigError> {
        let err = |connector: Option<&str>, reason: String| ConfigError {
            file: file.to_owned(),
            connector: connector.map(str::to_owned),
            reason,
        };
        let text =
            std::fs::read_to_string(file).map_err(|e| err(None, format!("cannot read: {e}")))?;
        let raw: RawDefinitions =
            toml::from_str(&text).map_err(|e| err(None, e.to_string().trim_end().to_owned()))?;
        let bus = BusConfig::default();
        let site = connector::Site::operator(&bus);
        let tables = raw.connectors.clone();
        let specs = connectors(raw.connectors, &site)
            .map_err(|(name, reason)| err(name.as_deref(), reason))?;
        Ok(specs
            .into_iter()
            .zip(tables)
            .filter_map(|(spec, table)| match table {
                toml::Value::Table(table) => Some(Definition { spec, table }),
                _ => None,
            })
            .collect())
    }

    /// Parse one definition read from the bus (`source` names where, e.g.
    /// `kv plexus-connectors/orders`), validated for this host: its files
    /// must exist here and no grant may reach this host's state.
    pub fn definition(&self, source: &Path, text: &str) -> Result<ConnectorSpec, ConfigError> {
        let site = connector::Site {
            resolve: &|p: &Path| p.to_owned(),
            bus: &self.bus,
            protected: protected_paths(
                &self.file,
                &self.data_dir,
                self.secrets_file.as_deref(),
                &self.tokens,
                &self.bus,
            ),
            grant_roots: Some(&self.fleet.grant_roots),
            reserved_secrets: reserved_secrets(&self.bus),
            local: true,
        };
        one_definition(source, text, &site)
    }

    /// Parse one definition read from the bus as `plexus apply` validates
    /// it: off the hosts, files unchecked.
    pub fn parse_definition_text(source: &Path, text: &str) -> Result<ConnectorSpec, ConfigError> {
        let bus = BusConfig::default();
        one_definition(source, text, &connector::Site::operator(&bus))
    }
}

/// The host's own files, which no grant may reach.
fn protected_paths(
    file: &Path,
    data_dir: &Path,
    secrets_file: Option<&Path>,
    tokens: &Path,
    bus: &BusConfig,
) -> Vec<(&'static str, PathBuf)> {
    let mut paths = vec![
        ("data_dir", data_dir.to_owned()),
        ("the config file", file.to_owned()),
        ("[host].tokens", tokens.to_owned()),
    ];
    paths.extend(secrets_file.map(|p| ("[host].secrets_file", p.to_owned())));
    paths.extend(bus.creds.clone().map(|p| ("[bus].creds", p)));
    if let Some(tls) = &bus.tls {
        for p in [&tls.ca, &tls.cert, &tls.key].into_iter().flatten() {
            paths.push(("[bus].tls", p.clone()));
        }
    }
    if let Some(edge) = &bus.edge {
        paths.extend(edge.creds.clone().map(|p| ("[bus].leaf_creds", p)));
        if let Some(tls) = &edge.tls {
            for p in [&tls.ca, &tls.cert, &tls.key].into_iter().flatten() {
                paths.push(("[bus].leaf_tls", p.clone()));
            }
        }
    }
    paths
}

/// Secrets that hold the host's own bus credentials.
fn reserved_secrets(bus: &BusConfig) -> Vec<String> {
    bus.nkey
        .iter()
        .chain(&bus.password)
        .chain(bus.edge.iter().flat_map(|e| &e.password))
        .cloned()
        .collect()
}

fn one_definition(
    source: &Path,
    text: &str,
    site: &connector::Site<'_>,
) -> Result<ConnectorSpec, ConfigError> {
    let err = |connector: Option<&str>, reason: String| ConfigError {
        file: source.to_owned(),
        connector: connector.map(str::to_owned),
        reason,
    };
    let value: toml::Value =
        toml::from_str(text).map_err(|e| err(None, e.to_string().trim_end().to_owned()))?;
    let mut specs =
        connectors(vec![value], site).map_err(|(name, reason)| err(name.as_deref(), reason))?;
    specs.pop().ok_or_else(|| err(None, "no connector".into()))
}

/// Validate `[[connector]]` tables: each on its own, then names and
/// listener addresses across them.
fn connectors(
    tables: Vec<toml::Value>,
    site: &connector::Site<'_>,
) -> Result<Vec<ConnectorSpec>, (Option<String>, String)> {
    let mut connectors: Vec<ConnectorSpec> = Vec::with_capacity(tables.len());
    for (i, value) in tables.into_iter().enumerate() {
        let label = value
            .get("name")
            .and_then(toml::Value::as_str)
            .map_or_else(|| format!("#{}", i + 1), str::to_owned);
        let c = connector::RawConnector::deserialize(value)
            .map_err(|e| (Some(label), e.message().to_owned()))?;
        let spec = connector::validate(c, site).map_err(|(name, reason)| (Some(name), reason))?;
        if connectors.iter().any(|other| other.name == spec.name) {
            return Err((
                Some(spec.name),
                "the name is used by another connector".into(),
            ));
        }
        if let Some(addr) = spec.listener().map(|l| l.addr)
            && let Some(other) = connectors
                .iter()
                .find(|o| o.listener().is_some_and(|l| l.addr == addr))
        {
            return Err((
                Some(spec.name),
                format!("listens on {addr}, as connector \"{}\" does", other.name),
            ));
        }
        connectors.push(spec);
    }
    Ok(connectors)
}

fn bus(
    raw: RawBus,
    labels: &std::collections::BTreeMap<String, String>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<BusConfig, String> {
    let defaults = BusConfig::default();
    let edge = edge::parse(
        edge::RawEdge {
            leaf: raw.leaf,
            creds: raw.leaf_creds,
            user: raw.leaf_user,
            password: raw.leaf_password,
            tls: raw.leaf_tls,
            domain: raw.domain,
            hub_domain: raw.hub_domain,
        },
        raw.url.as_deref(),
        labels,
        resolve,
    )?;
    if let Some(url) = raw.url.as_deref() {
        for one in url.split(',') {
            if one.contains("://") && !(one.starts_with("nats://") || one.starts_with("tls://")) {
                return Err(format!(
                    "[bus].url {:?} must be a nats:// or tls:// URL",
                    crate::bus::redact_url(one)
                ));
            }
        }
    }
    if raw.url.is_none()
        && (raw.creds.is_some()
            || raw.nkey.is_some()
            || raw.user.is_some()
            || raw.password.is_some()
            || raw.tls.is_some())
    {
        return Err(
            "[bus] credentials and tls are for a bus named by [bus].url; the embedded bus makes its own"
                .into(),
        );
    }
    let methods = [raw.creds.is_some(), raw.nkey.is_some(), raw.user.is_some()]
        .iter()
        .filter(|m| **m)
        .count();
    if methods > 1 {
        return Err("[bus] takes one of `creds`, `nkey` or `user` + `password`".into());
    }
    if raw.user.is_some() != raw.password.is_some() {
        return Err("[bus].user and [bus].password go together (password names a secret)".into());
    }
    let creds = readable_file(raw.creds, "[bus].creds", resolve)?;
    let tls = raw
        .tls
        .map(|tls| tls.resolved("[bus].tls", resolve))
        .transpose()?;
    Ok(BusConfig {
        url: raw.url,
        nats_server: raw.nats_server.map(|p| resolve(&p)),
        creds,
        nkey: raw.nkey,
        user: raw.user,
        password: raw.password,
        tls,
        duplicate_window: duration(
            raw.duplicate_window.as_deref(),
            defaults.duplicate_window,
            "[bus].duplicate_window",
            DAY,
        )?,
        stream_max_bytes: size(
            raw.stream_max_bytes.as_deref(),
            defaults.stream_max_bytes,
            "[bus].stream_max_bytes",
            1 << 20,
            1 << 50,
        )?,
        stream_max_age: duration(
            raw.stream_max_age.as_deref(),
            defaults.stream_max_age,
            "[bus].stream_max_age",
            10 * YEAR,
        )?,
        bucket_max_bytes: size(
            raw.bucket_max_bytes.as_deref(),
            defaults.bucket_max_bytes,
            "[bus].bucket_max_bytes",
            1 << 16,
            1 << 40,
        )?,
        replicas: match raw.replicas {
            None => defaults.replicas,
            Some(n @ 1..=5) => n,
            Some(n) => return Err(format!("[bus].replicas {n} must be between 1 and 5")),
        },
        edge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Fuzz: any text is a config or an error, never a panic.
        #[test]
        fn fuzz_any_text_is_a_config_or_an_error(text in "(\\[\\[connector\\]\\]\n|\\[host\\]\n|\\[bus\\]\n|[a-z_.]{1,12} = (\"[a-z0-9.>* :/-]{0,16}\"|[0-9]{1,3}|\\[\"[a-z0-9]{0,4}\"\\]|\\{ [a-z]{1,4} = \"x\" \\})\n){0,16}") {
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
