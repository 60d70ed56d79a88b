//! The `plexus` command line: one file per subcommand.

mod check;
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
    after_help = "Examples:\n  plexus check -c demo/plexus.toml   validate a config and its plugins\n  plexus up -c demo/plexus.toml      run until Ctrl-C; SIGHUP or editing the file reloads\n\nExit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid config.\nLogs go to stderr; set PLEXUS_LOG (e.g. PLEXUS_LOG=debug) to change the level."
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
    Up(ConfigArg),
    /// Validate the config and every plugin (world, imports, limits) without running anything.
    Check(ConfigArg),
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
                Command::Up(args) => up::run(&args.config).await,
                Command::Check(args) => check::run(&args.config).await,
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
