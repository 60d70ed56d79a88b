//! `plexus test`: run a plugin on sample inputs, print what it produces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{Kind, Limits};
use crate::engine::Runtime;
use crate::host::HostError;
use crate::plugin::local::LocalPlugin;

pub(super) async fn run(
    plugin: &Path,
    kind: Kind,
    inputs: &[PathBuf],
    config: &[(String, String)],
) -> Result<(), HostError> {
    let usage = |reason: String| HostError::Usage(reason);
    let runtime = Runtime::new()?;
    let config: BTreeMap<String, String> = config.iter().cloned().collect();
    let limits = Limits {
        memory: 256 << 20,
        timeout: std::time::Duration::from_secs(10),
        concurrency: 1,
        outputs: 1_000_000,
        output_bytes: 1 << 30,
    };
    let local = LocalPlugin::load(&runtime, plugin, kind, config, limits)
        .map_err(|e| usage(e.to_string()))?;
    let mut failed = 0;
    for input in inputs {
        let bytes =
            std::fs::read(input).map_err(|e| usage(format!("input {}: {e}", input.display())))?;
        let key = input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match local.call(&key, &bytes).await {
            Ok(outputs) => {
                println!("== {}: {} record(s)", input.display(), outputs.len());
                for out in outputs {
                    println!(
                        "-- key {:?}{}{}",
                        out.key,
                        out.topic
                            .map(|t| format!(", topic {t}"))
                            .unwrap_or_default(),
                        out.schema
                            .map(|s| format!(", schema {s}"))
                            .unwrap_or_default()
                    );
                    let text = String::from_utf8_lossy(&out.payload);
                    match serde_json::from_slice::<serde_json::Value>(&out.payload) {
                        Ok(json) => println!(
                            "{}",
                            serde_json::to_string_pretty(&json)
                                .unwrap_or_else(|_| text.into_owned())
                        ),
                        Err(_) => println!("{text}"),
                    }
                }
            }
            Err(reason) => {
                failed += 1;
                println!("== {}: {reason}", input.display());
            }
        }
    }
    if failed > 0 {
        return Err(HostError::Runtime(anyhow::anyhow!(
            "{failed} of {} input(s) failed",
            inputs.len()
        )));
    }
    Ok(())
}

/// Parse `key=value`.
pub(super) fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}
