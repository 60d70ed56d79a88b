//! `plexus token`: the admin endpoint's bearer tokens, stored hashed in the
//! config's `[host].tokens`. A running host picks changes up on its next request.

use std::path::Path;

use crate::admin::{Role, tokens};
use crate::config::Config;
use crate::host::HostError;

/// Make a token and print it once; only its digest is kept.
pub(super) fn create(file: &Path, role: &str, name: Option<&str>) -> Result<(), HostError> {
    let config = Config::load(file)?;
    let role = Role::parse(role).map_err(HostError::Usage)?;
    if let Role::Ingest(connector) = &role
        && !config.connectors.iter().any(|c| &c.name == connector)
    {
        return Err(HostError::Usage(format!(
            "{}: no connector named {connector:?} to ingest into",
            config.file.display()
        )));
    }
    let name = name.map_or_else(|| role.to_string().replace(':', "-"), str::to_owned);
    let token = tokens::create(&config.tokens, &role, &name)
        .map_err(|e| HostError::Usage(format!("{e:#}")))?;
    eprintln!(
        "Token {name:?} ({role}) added to {}. It is shown once, here, and stored only as a digest:",
        config.tokens.display()
    );
    println!("{token}");
    Ok(())
}

/// Remove a token by name.
pub(super) fn revoke(file: &Path, name: &str) -> Result<(), HostError> {
    let config = Config::load(file)?;
    if tokens::revoke(&config.tokens, name).map_err(|e| HostError::Usage(format!("{e:#}")))? {
        println!("Token {name:?} revoked.");
        Ok(())
    } else {
        Err(HostError::Usage(format!(
            "{}: no token named {name:?}",
            config.tokens.display()
        )))
    }
}

/// List the tokens' names, roles and ages (never the tokens).
pub(super) fn list(file: &Path) -> Result<(), HostError> {
    let config = Config::load(file)?;
    let entries = tokens::list(&config.tokens).map_err(|e| HostError::Usage(format!("{e:#}")))?;
    if entries.is_empty() {
        println!(
            "No tokens in {}: the admin endpoint answers loopback callers only.",
            config.tokens.display()
        );
    }
    for entry in entries {
        println!("{:<24} {:<24} {}", entry.name, entry.role, entry.created);
    }
    Ok(())
}

/// The token the CLI sends: `--token-file`, else `$PLEXUS_TOKEN`.
pub(super) fn from_env_or_file(file: Option<&Path>) -> Result<Option<String>, HostError> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| HostError::Usage(format!("--token-file {}: {e}", file.display())))?;
        let token = text.trim().to_owned();
        if token.is_empty() {
            return Err(HostError::Usage(format!(
                "--token-file {} is empty",
                file.display()
            )));
        }
        return Ok(Some(token));
    }
    Ok(std::env::var("PLEXUS_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}
