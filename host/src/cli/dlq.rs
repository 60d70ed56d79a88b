//! `plexus dlq`: list a connector's dead letters and replay them, on the bus
//! of the config's host (`[bus].url`, or the embedded bus of a running
//! `plexus up` with that config).

use std::path::Path;

use anyhow::anyhow;

use crate::bus::dead_letters::DeadLetters;
use crate::bus::{Bus, embedded};
use crate::config::{Config, ConnectorSpec};
use crate::host::HostError;

/// Print the dead letters of `connector`, or of every connector.
pub(super) async fn list(file: &Path, connector: Option<&str>) -> Result<(), HostError> {
    let config = Config::load(file)?;
    let chosen = chosen(&config, connector)?;
    let bus = connect(&config).await?;
    for spec in chosen {
        let letters = DeadLetters::open(&bus.js, &spec.delivery.dlq)
            .await?
            .list(&spec.name)
            .await?;
        println!(
            "{}: {} dead letter{} on {}",
            spec.name,
            letters.len(),
            if letters.len() == 1 { "" } else { "s" },
            spec.delivery.dlq
        );
        for letter in &letters {
            let identity = if letter.identity.is_empty() {
                "(identity not kept)"
            } else {
                &letter.identity
            };
            println!(
                "  #{}  {}  {identity}  from {}  after {} deliver{}",
                letter.sequence,
                letter.time,
                letter.original_subject,
                letter.deliveries,
                if letter.deliveries == "1" { "y" } else { "ies" }
            );
            println!("      {}", letter.error);
        }
    }
    Ok(())
}

/// Replay the dead letters of `connector` (only the sequences in `only`, if
/// any), oldest first; stop at the first that cannot be replayed.
pub(super) async fn replay(file: &Path, connector: &str, only: &[u64]) -> Result<(), HostError> {
    let config = Config::load(file)?;
    let spec = chosen(&config, Some(connector))?[0];
    let bus = connect(&config).await?;
    let dead = DeadLetters::open(&bus.js, &spec.delivery.dlq).await?;
    let letters = dead.list(&spec.name).await?;
    if let Some(missing) = only
        .iter()
        .find(|seq| !letters.iter().any(|l| l.sequence == **seq))
    {
        return Err(HostError::Usage(format!(
            "connector {connector:?} has no dead letter #{missing} on {} (see `plexus dlq ls {connector}`)",
            spec.delivery.dlq
        )));
    }
    let mut replayed = 0;
    for letter in letters
        .iter()
        .filter(|l| only.is_empty() || only.contains(&l.sequence))
    {
        dead.replay(letter).await.map_err(|error| {
            anyhow!(
                "dead letter #{} of {connector:?}: {error:#} ({replayed} replayed before it)",
                letter.sequence
            )
        })?;
        replayed += 1;
    }
    println!(
        "{connector}: replayed {replayed} dead letter{} from {}",
        if replayed == 1 { "" } else { "s" },
        spec.delivery.dlq
    );
    Ok(())
}

/// The connector named, or every connector when none is.
fn chosen<'a>(config: &'a Config, name: Option<&str>) -> Result<Vec<&'a ConnectorSpec>, HostError> {
    let Some(name) = name else {
        return Ok(config.connectors.iter().collect());
    };
    match config.connectors.iter().find(|c| c.name == name) {
        Some(spec) => Ok(vec![spec]),
        None => {
            let names: Vec<&str> = config.connectors.iter().map(|c| c.name.as_str()).collect();
            Err(HostError::Usage(format!(
                "{}: no connector named {name:?} (it has: {})",
                config.file.display(),
                names.join(", ")
            )))
        }
    }
}

/// The bus the config's host uses.
async fn connect(config: &Config) -> Result<Bus, HostError> {
    let url = match &config.bus_url {
        Some(url) => url.clone(),
        None => {
            let store = config.data_dir.join("nats");
            embedded::running_url(&store).ok_or_else(|| {
                anyhow!(
                    "{}: no [bus].url, and no host with this config is running (its embedded bus would have left a ports file in {}); start it with `plexus up -c {}`",
                    config.file.display(),
                    store.join("ports").display(),
                    config.file.display()
                )
            })?
        }
    };
    Ok(Bus::connect(&url).await?)
}
