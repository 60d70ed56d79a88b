//! The `plexus` command line: one file per subcommand.

mod audit;
mod check;
mod dlq;
mod fleet;
mod new;
mod status;
mod test;
mod token;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Plexus runs sandboxed WebAssembly connectors on NATS JetStream.
#[derive(Debug, Parser)]
#[command(
    name = "plexus",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  plexus check -c demo/plexus.toml   validate a config and its plugins\n  plexus up -c demo/plexus.toml      run until Ctrl-C; SIGHUP or editing the file reloads\n  plexus test x12.wasm -i order.x12  run a plugin on a sample file\n  plexus ls -c demo/plexus.toml      what a running host runs: counts, errors, lag\n  plexus dlq ls -c demo/plexus.toml  list dead letters; `plexus dlq replay <connector>` sends them back\n  plexus new transform st-marys-po   scaffold a plugin project\n  plexus token create --role read    a token for the dashboard and /metrics (PLEXUS_TOKEN for ls/status)\n\nA fleet, through its bus (--bus URL or PLEXUS_BUS):\n  plexus up --bus nats://n1:4222 --label facility=st-marys   a host that runs what is placed on it\n  plexus deploy x12.wasm --name x12 --version 1.3.0 --sign release.key\n  plexus apply -c connectors.toml --dry-run                  what would change, grant by grant\n  plexus hosts; plexus ls --bus nats://n1:4222               the fleet: hosts, connectors, counts\n\nExit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid config.\nLogs go to stderr; set PLEXUS_LOG (e.g. PLEXUS_LOG=debug) to change the level."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a host: start (or connect to) the bus, load and run the connectors.
    ///
    /// Reloads the config on SIGHUP and whenever the config or a plugin file
    /// changes; stops gracefully on SIGINT/SIGTERM.
    Up(UpArgs),
    /// Validate the config and every plugin (world, imports, limits) without running anything.
    Check(ConfigArg),
    /// Run a plugin on sample inputs and print the records it produces.
    ///
    /// Transforms get each file as one record; sources (`--kind source`) get it
    /// through `decode`, as a listener would hand it over. No bus: kv is
    /// unavailable and nothing is granted.
    Test(TestArgs),
    /// List the connectors a running host runs: kind, plugin version,
    /// records in and out, errors, dead letters and lag.
    Ls(AdminArgs),
    /// Connectors of a running host in full — the one named, or all: plugin,
    /// route, counts, rates over a second, errors by kind, dead letters and lag.
    Status(StatusArgs),
    /// Inspect and replay dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Every hop of a record: connector, plugin version, subject, time and
    /// outcome (received, published, dead-lettered, replayed).
    ///
    /// ID is a message id (`Nats-Msg-Id`), a source record id, or a
    /// business key (`Plexus-Key`, e.g. an exception id). Every record that
    /// descends from the same source record (the same `Plexus-Trace`) is
    /// shown, oldest first, read from the most recent records of each stream.
    Trace {
        /// The record's message id, source record id or key.
        id: String,
        #[command(flatten)]
        config: ConfigArg,
        /// The fleet's bus instead of the config's.
        #[command(flatten)]
        bus: fleet::BusArgs,
    },
    /// The tamper-evident audit log: list it, or verify its hash chains.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Bearer tokens for the admin endpoint (dashboard, /metrics,
    /// /connectors, /ingest), stored hashed in [host].tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Put a plugin component in the fleet's registry as name@version.
    ///
    /// Stored by SHA-256 digest; the index records its world, signature,
    /// time and uploader. A name@version is written once: the same bytes
    /// again change nothing, other bytes are refused.
    Deploy(DeployArgs),
    /// Make the connector definitions in the bus those of a file.
    ///
    /// Validated as `plexus check` does (plugins as name@version, deployed,
    /// of the right world; paths are the hosts'). Connectors in the bus but
    /// not in the file are removed. An apply that widens a capability
    /// (a grant added, a limit raised, a listener opened) needs --approve.
    /// If someone else applied since this one read the bus, nothing more is
    /// written and you are told to re-run.
    Apply(ApplyArgs),
    /// Delete one connector definition from the bus; every host stops it.
    Rm {
        /// The connector.
        name: String,
        #[command(flatten)]
        bus: fleet::BusArgs,
    },
    /// The fleet's live hosts: labels, connectors, leases, failures.
    Hosts(fleet::BusArgs),
    /// Make an ed25519 key pair for signing plugins (`plexus deploy --sign`).
    Keygen {
        /// Where to write the private key (created, mode 0600).
        #[arg(long, short, default_value = "plexus-signing.key")]
        out: PathBuf,
    },
    /// Scaffold a plugin project: a crate on plexus-sdk for wasm32-wasip2 with
    /// a working example of its kind, a unit test and the connector block to
    /// run it.
    New(NewArgs),
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Join a fleet: take connectors from the definitions in this bus
    /// (`plexus apply`) instead of the config file, whose [host] and [bus]
    /// settings still apply and which must have no [[connector]]. Given
    /// here only, never taken from $PLEXUS_BUS: joining a fleet is explicit.
    #[arg(long = "bus", value_name = "URL")]
    fleet_bus: Option<String>,
    /// A NATS credentials file for the fleet's bus.
    #[arg(long, value_name = "FILE", requires = "fleet_bus")]
    creds: Option<PathBuf>,
    /// The CA that signed the fleet's NATS servers' certificates (PEM).
    #[arg(long, value_name = "FILE", requires = "fleet_bus")]
    ca: Option<PathBuf>,
    /// A label for placement, `key=value` (e.g. facility=st-marys); repeatable.
    /// For fleet hosts (--bus) and edge hosts ([bus].leaf).
    #[arg(long = "label", value_parser = test::key_value)]
    labels: Vec<(String, String)>,
    /// This host's id in the fleet (default: hostname and a random suffix).
    /// For fleet hosts (--bus) and edge hosts ([bus].leaf).
    #[arg(long)]
    id: Option<String>,
}

#[derive(Debug, clap::Args)]
struct DeployArgs {
    /// The plugin component (.wasm).
    plugin: PathBuf,
    /// Its name (default: the file's name without .wasm).
    #[arg(long)]
    name: Option<String>,
    /// Its version (default: the first 12 hex digits of its digest).
    #[arg(long)]
    version: Option<String>,
    /// Sign it with this private key (from `plexus keygen`).
    #[arg(long, value_name = "KEY")]
    sign: Option<PathBuf>,
    #[command(flatten)]
    bus: fleet::BusArgs,
}

#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// The file of [[connector]] definitions.
    #[arg(short, long)]
    config: PathBuf,
    /// Print what would change, grant by grant, and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Allow an apply that widens capabilities.
    #[arg(long)]
    approve: bool,
    #[command(flatten)]
    bus: fleet::BusArgs,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The connector (default: every one).
    connector: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

/// A command that asks a running host's admin endpoint.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// A file holding the admin token to send (default: $PLEXUS_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Ask the fleet through its bus (every host's heartbeat) instead of
    /// one host's admin endpoint.
    #[command(flatten)]
    bus: fleet::BusArgs,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check every chain of the audit log; name the first record that was
    /// altered or removed. Exit 1 if one was.
    Verify(ConfigArg),
    /// Print the audit log, oldest first.
    Ls {
        /// Only records from this long ago on, e.g. `1h`, `7days`.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token and print it once; only its SHA-256 is stored.
    ///
    /// Roles: `read` (dashboard, /connectors, /metrics), `operate`
    /// (everything read may, and state-changing calls), `ingest:<connector>`
    /// (POST /ingest/<connector> only).
    Create {
        /// read, operate or ingest:<connector>.
        #[arg(long)]
        role: String,
        /// What the token is for, e.g. `grafana` (default: the role).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove a token; a running host refuses it from its next request.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The tokens' names, roles and creation times.
    Ls(ConfigArg),
}

#[derive(Debug, clap::Args)]
struct NewArgs {
    /// transform, source or sink.
    #[arg(value_parser = parse_kind)]
    kind: crate::config::Kind,
    /// The plugin's name, e.g. `st-marys-po`: the directory and crate created.
    name: String,
    /// Where to create it (default: the current directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `sdk` directory of a Plexus checkout (default: the one this binary
    /// was built from).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters: sequence, time, record, origin, deliveries and reason.
    Ls {
        /// Only this connector's (default: every connector in the config).
        connector: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// The fleet's connectors, as defined in its bus.
        #[command(flatten)]
        bus: fleet::BusArgs,
    },
    /// Send a connector's dead letters back to it, oldest first, once the
    /// cause is fixed.
    ///
    /// Each goes back to the subject it was consumed from, to this connector
    /// only, with its original identity: its outputs get the ids they would
    /// have had, and a sink sees the same idempotency key. A dead letter is
    /// deleted once its record is stored; one that fails again is
    /// dead-lettered again.
    ///
    /// With an admin token ($PLEXUS_TOKEN or --token-file, role `operate`)
    /// the running host replays them and records it in the audit log under
    /// the token's name; without one, this command replays over the bus
    /// itself, recorded under your user name.
    Replay {
        /// The connector whose dead letters to replay.
        connector: String,
        /// Only these dead letters (numbers from `plexus dlq ls`); repeatable.
        #[arg(long = "seq", value_name = "N")]
        only: Vec<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// The plugin component (.wasm).
    plugin: PathBuf,
    /// Input files, one record each.
    #[arg(short, long = "input", required = true, num_args = 1..)]
    inputs: Vec<PathBuf>,
    /// The plugin's kind.
    #[arg(long, default_value = "transform", value_parser = parse_kind)]
    kind: crate::config::Kind,
    /// A config entry for the plugin, `key=value`; repeatable.
    #[arg(short, long = "config", value_parser = test::key_value)]
    config: Vec<(String, String)>,
}

fn parse_kind(text: &str) -> Result<crate::config::Kind, String> {
    match text {
        "transform" => Ok(crate::config::Kind::Transform),
        "source" => Ok(crate::config::Kind::Source),
        "sink" => Ok(crate::config::Kind::Sink),
        other => Err(format!("{other:?} is not transform, source or sink")),
    }
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The config file.
    #[arg(short, long, default_value = "plexus.toml", env = "PLEXUS_CONFIG")]
    config: PathBuf,
}

impl Cli {
    /// Run the chosen subcommand; prints errors and returns the exit code.
    pub fn run(self) -> ExitCode {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("error: cannot start the async runtime: {error}");
                return ExitCode::from(1);
            }
        };
        let result = runtime.block_on(async {
            match self.command {
                Command::Up(args) if args.fleet_bus.is_some() => {
                    let bus = fleet::BusArgs {
                        bus: args.fleet_bus,
                        creds: args.creds,
                        ca: args.ca,
                        replicas: 1,
                    };
                    up::run_fleet(&args.config.config, &bus, args.labels, args.id).await
                }
                Command::Up(args) => up::run(&args.config.config, args.labels, args.id).await,
                Command::Deploy(args) => {
                    fleet::deploy(
                        &args.plugin,
                        args.name.as_deref(),
                        args.version.as_deref(),
                        args.sign.as_deref(),
                        &args.bus,
                    )
                    .await
                }
                Command::Apply(args) => {
                    fleet::apply(&args.config, args.dry_run, args.approve, &args.bus).await
                }
                Command::Rm { name, bus } => fleet::remove(&name, &bus).await,
                Command::Hosts(bus) => fleet::hosts(&bus).await,
                Command::Keygen { out } => fleet::keygen(&out),
                Command::Ls(args) if args.bus.bus.is_some() => fleet::list(&args.bus).await,
                Command::Status(args) if args.admin.bus.bus.is_some() => {
                    fleet::status(&args.admin.bus, args.connector.as_deref()).await
                }
                Command::Check(args) => check::run(&args.config).await,
                Command::Test(args) => {
                    test::run(&args.plugin, args.kind, &args.inputs, &args.config).await
                }
                Command::Ls(args) => {
                    let token = token::from_env_or_file(args.token_file.as_deref());
                    match token {
                        Ok(token) => status::list(&args.config.config, token.as_deref()).await,
                        Err(e) => Err(e),
                    }
                }
                Command::Status(args) => {
                    let token = token::from_env_or_file(args.admin.token_file.as_deref());
                    match token {
                        Ok(token) => {
                            status::show(
                                &args.admin.config.config,
                                args.connector.as_deref(),
                                token.as_deref(),
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    }
                }
                Command::Token(TokenCommand::Create { role, name, config }) => {
                    token::create(&config.config, &role, name.as_deref())
                }
                Command::Token(TokenCommand::Revoke { name, config }) => {
                    token::revoke(&config.config, &name)
                }
                Command::Token(TokenCommand::Ls(config)) => token::list(&config.config),
                Command::Audit(AuditCommand::Verify(config)) => audit::verify(&config.config).await,
                Command::Audit(AuditCommand::Ls { since, config }) => {
                    audit::list(&config.config, since).await
                }
                Command::Dlq(DlqCommand::Ls {
                    connector,
                    config,
                    bus,
                }) => {
                    let target = if bus.bus.is_some() {
                        dlq::Target::of_fleet(&bus).await
                    } else {
                        dlq::Target::of_config(&config.config).await
                    };
                    match target {
                        Ok(target) => dlq::list(&target, connector.as_deref()).await,
                        Err(e) => Err(e),
                    }
                }
                Command::Dlq(DlqCommand::Replay {
                    connector,
                    only,
                    admin,
                }) if admin.bus.bus.is_some() => match dlq::Target::of_fleet(&admin.bus).await {
                    Ok(target) => dlq::replay(&target, &connector, &only).await,
                    Err(e) => Err(e),
                },
                Command::Dlq(DlqCommand::Replay {
                    connector,
                    only,
                    admin,
                }) => match token::from_env_or_file(admin.token_file.as_deref()) {
                    Ok(Some(token)) => {
                        dlq::replay_by_host(&admin.config.config, &connector, &only, &token).await
                    }
                    Ok(None) => match dlq::Target::of_config(&admin.config.config).await {
                        Ok(target) => dlq::replay(&target, &connector, &only).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                Command::Trace { id, config, bus } => {
                    let connected = if bus.bus.is_some() {
                        bus.connect().await
                    } else {
                        match crate::config::Config::load(&config.config) {
                            Ok(loaded) => connect_bus(&loaded).await,
                            Err(e) => Err(e.into()),
                        }
                    };
                    match connected {
                        Ok(connected) => trace(&connected, &id).await,
                        Err(e) => Err(e),
                    }
                }
                Command::New(args) => new::run(
                    args.kind,
                    &args.name,
                    args.dir.as_deref(),
                    args.sdk.as_deref(),
                ),
            }
        });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(error.exit_code())
            }
        }
    }
}

/// The bus the config's host uses, with its credentials: `[bus]`, or the
/// embedded bus of a running host (whose generated credentials are in its
/// store, readable by the host's user only).
/// Print the hops of the records `id` names.
async fn trace(bus: &crate::bus::Bus, id: &str) -> Result<(), crate::host::HostError> {
    if let Some(reason) = crate::observe::lineage::refuse(id) {
        return Err(crate::host::HostError::Usage(reason));
    }
    let hops = crate::observe::lineage::trace(&bus.js, id).await?;
    if hops.is_empty() {
        return Err(crate::host::HostError::Runtime(anyhow::anyhow!(
            "no record on the bus has the message id, source record id or key {id:?}"
        )));
    }
    let traces: std::collections::BTreeSet<&str> = hops.iter().map(|h| h.trace.as_str()).collect();
    println!(
        "{id}: {} hop{} in {} trace{}",
        hops.len(),
        if hops.len() == 1 { "" } else { "s" },
        traces.len(),
        if traces.len() == 1 { "" } else { "s" }
    );
    for h in &hops {
        let by = if h.plugin.is_empty() {
            h.connector.clone()
        } else {
            format!("{}@{}", h.connector, h.plugin)
        };
        println!(
            "  {}  {:<13}  {:<28}  {:<28}  {}  {}",
            h.time, h.outcome, h.subject, by, h.msg_id, h.detail
        );
    }
    Ok(())
}

pub(super) async fn connect_bus(
    config: &crate::config::Config,
) -> Result<crate::bus::Bus, crate::host::HostError> {
    let limits = crate::bus::Limits::of(&config.bus);
    match &config.bus.url {
        Some(url) => {
            let auth = crate::bus::Auth::from_config(&config.bus, config.secrets_file.as_deref())
                .map_err(|e| {
                crate::host::HostError::Usage(format!("{}: {e:#}", config.file.display()))
            })?;
            Ok(crate::bus::Bus::connect_with(url, &auth, config.bus.tls.as_ref(), limits).await?)
        }
        None => {
            let store = config.data_dir.join("nats");
            let url = crate::bus::embedded::running_url(&store).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no [bus].url, and no host with this config is running (its embedded bus would have left a ports file in {}); start it with `plexus up -c {}`",
                    config.file.display(),
                    store.join("ports").display(),
                    config.file.display()
                )
            })?;
            let auth = crate::bus::embedded::stored_auth(&store).ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot read the embedded bus's credentials in {}; run this as the user the host runs as",
                    store.display()
                )
            })?;
            Ok(crate::bus::Bus::connect_with(&url, &auth, None, limits).await?)
        }
    }
}

/// Who runs this command, for the audit log.
pub(super) fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// The audit chain a CLI command on this machine writes to.
pub(super) fn cli_writer() -> String {
    let user: String = os_user()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("cli-{user}")
}
