//! The fleet commands, run from an operator's machine against the bus:
//! `deploy`, `apply`, `rm`, `hosts`, `keygen`, and `ls`/`status` with `--bus`.
//! An operator's rights are those of the NATS credentials they connect with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::status::print_rows;
use crate::bus::{Auth, Bus, Limits};
use crate::config::{BusTls, Config, PluginRef};
use crate::fleet::definitions::{self, Action, ApplyError};
use crate::fleet::membership::{self, Heartbeat};
use crate::fleet::registry::{DeployError, Deployed, MAX_PLUGIN_BYTES, Registry};
use crate::fleet::signing::PrivateKey;
use crate::host::HostError;
use crate::observe::status::ConnectorStatus;

/// How to reach the fleet's bus.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct BusArgs {
    /// The fleet's NATS server(s), e.g. nats://nats-1:4222 (user:password@
    /// in the URL is taken as credentials and never printed).
    #[arg(long, env = "PLEXUS_BUS", value_name = "URL")]
    pub bus: Option<String>,
    /// A NATS credentials file (JWT and nkey seed) for the operator.
    #[arg(long, value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// The CA that signed the server's certificate (PEM), for tls:// servers.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Copies the cluster keeps of the registry and definition buckets when
    /// this command creates them (the first command on a new cluster).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=5))]
    pub replicas: u16,
}

impl BusArgs {
    pub(super) async fn connect(&self) -> Result<Bus, HostError> {
        let url = self.bus.as_deref().ok_or_else(|| {
            HostError::Usage(
                "this command needs the fleet's bus: --bus nats://… (or PLEXUS_BUS)".into(),
            )
        })?;
        let auth = match &self.creds {
            Some(file) if !file.is_file() => {
                return Err(HostError::Usage(format!(
                    "--creds {} is not a readable file",
                    file.display()
                )));
            }
            Some(file) => Auth::Creds(file.clone()),
            None => Auth::None,
        };
        let tls = self.ca.as_ref().map(|ca| BusTls {
            ca: Some(ca.clone()),
            cert: None,
            key: None,
        });
        let limits = Limits {
            replicas: usize::from(self.replicas),
            ..Limits::default()
        };
        Ok(Bus::connect_with(url, &auth, tls.as_ref(), limits).await?)
    }
}

/// `plexus keygen`: a signing key pair.
pub(super) fn keygen(out: &Path) -> Result<(), HostError> {
    let key = PrivateKey::generate()?;
    key.save(out)
        .map_err(|e| HostError::Usage(format!("{e:#}")))?;
    println!("signing key written to {} (mode 0600)", out.display());
    println!("public key: {}", key.public());
    println!("hosts that trust it list it in [host].trusted_keys");
    Ok(())
}

/// `plexus deploy`: put a component in the registry as name@version.
pub(super) async fn deploy(
    file: &Path,
    name: Option<&str>,
    version: Option<&str>,
    sign: Option<&Path>,
    bus: &BusArgs,
) -> Result<(), HostError> {
    let usage = |reason: String| HostError::Usage(reason);
    let meta = std::fs::metadata(file)
        .map_err(|e| usage(format!("plugin {}: cannot read: {e}", file.display())))?;
    if meta.len() > MAX_PLUGIN_BYTES as u64 {
        return Err(usage(format!(
            "plugin {}: {} bytes is more than the registry takes ({MAX_PLUGIN_BYTES})",
            file.display(),
            meta.len()
        )));
    }
    let wasm = std::fs::read(file)
        .map_err(|e| usage(format!("plugin {}: cannot read: {e}", file.display())))?;
    let digest = crate::plugin::cache::digest(&wasm);
    let name_given = name.is_some();
    let name = match name {
        Some(name) => name.to_owned(),
        None => file
            .file_stem()
            .map(|s| s.to_string_lossy().to_ascii_lowercase().replace('_', "-"))
            .unwrap_or_default(),
    };
    let version = version.map_or_else(|| digest[..12].to_owned(), str::to_owned);
    let reference = PluginRef::new(&name, &version).map_err(|reason| {
        usage(format!(
            "plugin {}: {reason}{}",
            file.display(),
            if name_given {
                ""
            } else {
                " (the name comes from the file's name; give one with --name)"
            }
        ))
    })?;
    let key = sign
        .map(PrivateKey::load)
        .transpose()
        .map_err(|e| usage(format!("{e:#}")))?;
    // Compile it once to learn (and check) its world before anything is stored.
    let runtime = crate::engine::Runtime::new()?;
    let path = file.to_owned();
    let world = tokio::task::spawn_blocking(move || {
        crate::plugin::Plugin::world_of(&runtime, &path, &wasm).map(|w| (w, wasm))
    })
    .await
    .map_err(|e| HostError::Runtime(e.into()))?
    .map_err(|e| usage(e.to_string()))?;
    let (world, wasm) = world;
    let bus = bus.connect().await?;
    let registry = Registry::open(&bus).await?;
    match registry
        .deploy(&reference, &wasm, world, key.as_ref(), &super::os_user())
        .await
    {
        Ok(Deployed::New(entry)) => {
            println!(
                "deployed {reference}: sha256 {}, {} world, {} bytes{}",
                entry.digest,
                entry.world,
                entry.size,
                entry
                    .signer
                    .map(|s| format!(", signed by {s}"))
                    .unwrap_or_else(|| ", unsigned".into())
            );
            Ok(())
        }
        Ok(Deployed::Unchanged(entry)) => {
            println!(
                "{reference} is already deployed with these bytes (sha256 {}); nothing changed",
                entry.digest
            );
            Ok(())
        }
        Err(error @ DeployError::Conflict { .. }) => Err(usage(error.to_string())),
        Err(DeployError::Bus(error)) => Err(error.into()),
    }
}

/// `plexus apply`: make the bus's definitions those of `file`.
pub(super) async fn apply(
    file: &Path,
    dry_run: bool,
    approve: bool,
    bus: &BusArgs,
) -> Result<(), HostError> {
    let definitions = Config::load_definitions(file)?;
    let bus = bus.connect().await?;
    let plan = definitions::plan(&bus, &definitions)
        .await
        .map_err(|e| apply_error(file, e))?;
    for change in &plan.changes {
        println!("{:<24} {}", change.name, change.action);
        for widened in &change.widened {
            println!("    + {widened}");
        }
        for narrowed in &change.narrowed {
            println!("    - {narrowed}");
        }
    }
    let needs_approval = plan.widens() || plan.removes();
    if dry_run {
        println!(
            "dry run: nothing written{}",
            if needs_approval {
                "; this apply widens capabilities (+) or removes connectors and will need --approve"
            } else {
                ""
            }
        );
        return Ok(());
    }
    if needs_approval && !approve {
        return Err(HostError::Usage(format!(
            "{}: refused: this apply {}; review the lines above and run it again with --approve",
            file.display(),
            match (plan.widens(), plan.removes()) {
                (true, true) => "widens capabilities (+) and removes connectors",
                (true, false) => "widens capabilities (+)",
                _ => "removes connectors (the file applied is the whole fleet)",
            }
        )));
    }
    if plan.is_empty() {
        println!("nothing to change");
        return Ok(());
    }
    definitions::commit(&bus, &plan)
        .await
        .map_err(|e| apply_error(file, e))?;
    let count = |action| plan.changes.iter().filter(|c| c.action == action).count();
    println!(
        "applied: {} added, {} changed, {} removed",
        count(Action::Added),
        count(Action::Changed),
        count(Action::Removed)
    );
    Ok(())
}

fn apply_error(file: &Path, error: ApplyError) -> HostError {
    match error {
        ApplyError::Refused(reason) => HostError::Usage(format!("{}: {reason}", file.display())),
        ApplyError::Stale => HostError::Usage(error.to_string()),
        ApplyError::Bus(error) => HostError::Runtime(error),
    }
}

/// `plexus rm`: delete one definition; every host stops the connector.
pub(super) async fn remove(name: &str, bus: &BusArgs) -> Result<(), HostError> {
    let bus = bus.connect().await?;
    match definitions::remove(&bus, name).await {
        Ok(true) => {
            println!("removed {name}; every host running it stops it");
            Ok(())
        }
        Ok(false) => Err(HostError::Usage(format!(
            "there is no connector named {name:?} in the bus (see `plexus ls --bus …`)"
        ))),
        Err(ApplyError::Bus(error)) => Err(error.into()),
        Err(error) => Err(HostError::Usage(error.to_string())),
    }
}

/// `plexus hosts`: every live host, its labels, connectors and leases.
pub(super) async fn hosts(bus: &BusArgs) -> Result<(), HostError> {
    let bus = bus.connect().await?;
    let beats = membership::heartbeats(&bus).await?;
    let mut rows = vec![
        [
            "HOST",
            "LABELS",
            "CONNECTORS",
            "LEASES",
            "FAILED",
            "ADMIN",
            "SEEN",
        ]
        .map(str::to_owned),
    ];
    for beat in &beats {
        let labels: Vec<String> = beat
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let names: Vec<&str> = beat.connectors.iter().map(|c| c.name.as_str()).collect();
        let failed: Vec<&str> = beat.failed.keys().map(String::as_str).collect();
        rows.push([
            beat.id.clone(),
            dash(labels.join(",")),
            dash(names.join(",")),
            dash(beat.leases.join(",")),
            dash(failed.join(",")),
            beat.admin.clone(),
            beat.at.clone(),
        ]);
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.to_vec()).collect();
    print_rows(&rows);
    if beats.is_empty() {
        println!(
            "(no host has sent a heartbeat in the last {:?})",
            membership::HEARTBEAT_TTL
        );
    }
    print_edges(&bus, &beats).await
}

/// The edge hosts: each one's link to the hub and the records it holds that
/// the hub has not stored yet. An edge whose heartbeat is no longer live is
/// shown with its link down and what it last said.
async fn print_edges(bus: &Bus, live: &[Heartbeat]) -> Result<(), HostError> {
    let edges = membership::edges(bus).await?;
    if edges.is_empty() {
        return Ok(());
    }
    println!();
    let mut rows = vec![
        [
            "EDGE",
            "FACILITY",
            "DOMAIN",
            "LINK",
            "WAITING",
            "SINCE",
            "LAST HEARD",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let mut problems = Vec::new();
    for beat in &edges {
        let Some(state) = &beat.edge else { continue };
        let live = live.iter().any(|b| b.id == beat.id);
        let (link, waiting, since) = match (live, state.link_up) {
            (true, true) => ("up", state.waiting.to_string(), state.since.clone()),
            // Not heard from: what waits there now is unknown here; at
            // least what it held then.
            _ => (
                "down",
                format!("{} or more", state.waiting),
                beat.at.clone(),
            ),
        };
        rows.push(vec![
            beat.id.clone(),
            state.facility.clone(),
            state.domain.clone(),
            link.to_owned(),
            waiting,
            since,
            beat.at.clone(),
        ]);
        for (stream, s) in &state.streams {
            if let Some(problem) = &s.problem {
                problems.push(format!(
                    "{}: stream {stream} is not forwarded: {problem}",
                    beat.id
                ));
            }
        }
    }
    print_rows(&rows);
    for problem in problems {
        println!("{problem}");
    }
    Ok(())
}

/// `plexus ls --bus`: every connector across the fleet, counts summed over
/// the hosts that run it.
pub(super) async fn list(bus: &BusArgs) -> Result<(), HostError> {
    let (connectors, hosts, failed) = fleet_view(bus).await?;
    let mut headings = super::status::HEADINGS.map(str::to_owned).to_vec();
    headings.push("HOSTS".into());
    let mut rows = vec![headings];
    for c in &connectors {
        let mut row = super::status::row(c).to_vec();
        row.push(dash(
            hosts.get(&c.name).map(|h| h.join(",")).unwrap_or_default(),
        ));
        rows.push(row);
    }
    print_rows(&rows);
    for (name, reasons) in &failed {
        for (host, reason) in reasons {
            println!("{name}: cannot run on {host}: {reason}");
        }
    }
    Ok(())
}

/// `plexus status --bus [name]`: each connector in full, with its hosts.
pub(super) async fn status(bus: &BusArgs, name: Option<&str>) -> Result<(), HostError> {
    let (connectors, hosts, failed) = fleet_view(bus).await?;
    let chosen: Vec<&ConnectorStatus> = connectors
        .iter()
        .filter(|c| name.is_none_or(|n| c.name == n))
        .collect();
    if let Some(name) = name
        && chosen.is_empty()
        && !failed.contains_key(name)
    {
        return Err(HostError::Usage(format!(
            "no host runs a connector named {name:?} (see `plexus ls --bus …`)"
        )));
    }
    for (i, c) in chosen.iter().enumerate() {
        if i > 0 {
            println!();
        }
        super::status::print_one(c, None);
        println!(
            "  hosts         {}",
            dash(hosts.get(&c.name).map(|h| h.join(", ")).unwrap_or_default())
        );
    }
    for (connector, reasons) in &failed {
        if name.is_none_or(|n| n == connector) {
            for (host, reason) in reasons {
                println!("{connector}: failed on {host}: {reason}");
            }
        }
    }
    if name.is_none() {
        let bus = bus.connect().await?;
        let live = membership::heartbeats(&bus).await?;
        print_edges(&bus, &live).await?;
    }
    Ok(())
}

type FleetView = (
    Vec<ConnectorStatus>,
    BTreeMap<String, Vec<String>>,
    BTreeMap<String, Vec<(String, String)>>,
);

/// Connectors summed over hosts, the hosts running each, and failures.
async fn fleet_view(bus: &BusArgs) -> Result<FleetView, HostError> {
    let bus = bus.connect().await?;
    let beats: Vec<Heartbeat> = membership::heartbeats(&bus).await?;
    let mut merged: BTreeMap<String, ConnectorStatus> = BTreeMap::new();
    let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut failed: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for beat in beats {
        for c in beat.connectors {
            hosts
                .entry(c.name.clone())
                .or_default()
                .push(beat.id.clone());
            match merged.get_mut(&c.name) {
                None => {
                    merged.insert(c.name.clone(), c);
                }
                Some(m) => {
                    m.counts.records_in += c.counts.records_in;
                    m.counts.records_out += c.counts.records_out;
                    m.counts.dead_lettered += c.counts.dead_lettered;
                    for (kind, n) in c.counts.errors {
                        *m.counts.errors.entry(kind).or_default() += n;
                    }
                    // Hosts sharing a consumer see the same lag; versions
                    // differ only mid-upgrade.
                    m.lag = m.lag.max(c.lag);
                    if m.version != c.version && !m.version.contains(&c.version) {
                        m.version = format!("{},{}", m.version, c.version);
                    }
                }
            }
        }
        for (name, reason) in beat.failed {
            failed
                .entry(name)
                .or_default()
                .push((beat.id.clone(), reason));
        }
    }
    Ok((merged.into_values().collect(), hosts, failed))
}

fn dash(text: String) -> String {
    if text.is_empty() { "-".into() } else { text }
}
