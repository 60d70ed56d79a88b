//! The `plexus` binary: a thin shell over the `plexus_host` library.

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PLEXUS_LOG")
                // The NATS client's connection chatter only when asked for.
                .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    plexus_host::cli::Cli::parse().run()
}
