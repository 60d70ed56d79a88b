//! `plexus check`: validate a config and its plugins without starting anything.

use std::path::Path;

use crate::config::Config;
use crate::engine::Runtime;
use crate::host::{HostError, load_plugins};

pub(super) async fn run(file: &Path) -> Result<(), HostError> {
    let config = Config::load(file)?;
    let tokens = crate::admin::Tokens::open(&config.tokens).map_err(|e| {
        HostError::Usage(format!("{}: [host].tokens: {e:#}", config.file.display()))
    })?;
    crate::admin::check_exposure(&config.http, &tokens, &config.tokens)
        .map_err(|e| HostError::Usage(format!("{}: {e}", config.file.display())))?;
    let runtime = Runtime::new()?;
    let plugins = load_plugins(&runtime, &config).await?;
    println!(
        "{}: ok, {} connector(s)",
        file.display(),
        config.connectors.len()
    );
    for (spec, plugin) in config.connectors.iter().zip(&plugins) {
        let route = match (spec.from(), spec.to()) {
            (Some(from), Some(to)) => format!("{from} -> {to}"),
            (Some(from), None) => format!("{from} ->"),
            (None, Some(to)) => format!("-> {to}"),
            (None, None) => String::new(),
        };
        println!(
            "  {} ({}, plugin {}@{}) {route}",
            spec.name,
            spec.kind(),
            plugin.path.display(),
            plugin.version()
        );
    }
    Ok(())
}
