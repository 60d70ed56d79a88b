//! `plexus:connector/secrets`: granted secrets, resolved by the host from
//! `PLEXUS_SECRET_<NAME>` in its environment, then from `[host].secrets_file`
//! (a TOML table of `NAME = "value"`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::bindings::host::plexus::connector::secrets::{Host, SecretError};
use crate::capability::PluginState;

/// Resolve the values of `names`; names with no value are left out (the
/// plugin gets `not-found`).
pub fn resolve(names: &[String], file: Option<&Path>) -> anyhow::Result<BTreeMap<String, String>> {
    let from_file: BTreeMap<String, String> = match file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("secrets file {}: {e}", file.display()))?;
            toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("secrets file {}: {}", file.display(), e.message()))?
        }
        None => BTreeMap::new(),
    };
    Ok(names
        .iter()
        .filter_map(|name| {
            let env = std::env::var(format!(
                "PLEXUS_SECRET_{}",
                name.to_ascii_uppercase().replace('-', "_")
            ))
            .ok();
            env.or_else(|| from_file.get(name).cloned())
                .map(|v| (name.clone(), v))
        })
        .collect())
}

/// Replace every granted secret value in `text` with `[redacted]`, so a plugin
/// that puts one in an error cannot leak it into logs or dead letters.
pub fn redact(secrets: &BTreeMap<String, String>, text: &str) -> String {
    let mut out = text.to_owned();
    for value in secrets.values().filter(|v| v.len() >= 4) {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), "[redacted]");
        }
    }
    out
}

impl Host for PluginState {
    fn get(&mut self, name: String) -> Result<String, SecretError> {
        if !self.connector.grants.secrets.contains(&name) {
            self.connector
                .denied("secrets", &format!("secret {name:?} is not granted"));
            return Err(SecretError::NotGranted(name));
        }
        self.connector
            .secrets
            .get(&name)
            .cloned()
            .ok_or(SecretError::NotFound(name))
    }
}
