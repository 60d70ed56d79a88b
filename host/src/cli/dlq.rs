//! `plexus dlq`: list a connector's dead letters and replay them, on the bus
//! of the config's host (`[bus].url`, or the embedded bus of a running
//! `plexus up` with that config), or with `--bus` on the fleet's bus, for
//! the connectors defined there.

use std::path::Path;

use crate::bus::Bus;
use crate::bus::dead_letters::DeadLetters;
use crate::config::{Config, ConnectorSpec};
use crate::host::HostError;

/// Where the dead letters are: a bus and the connectors it carries.
pub(super) struct Target {
    bus: Bus,
    connectors: Vec<ConnectorSpec>,
    /// Where the connectors were read, for messages.
    place: String,
}

impl Target {
    /// The config's host.
    pub(super) async fn of_config(file: &Path) -> Result<Target, HostError> {
        let config = Config::load(file)?;
        let bus = super::connect_bus(&config).await?;
        Ok(Target {
            bus,
            connectors: config.connectors,
            place: file.display().to_string(),
        })
    }

    /// The fleet: connectors as defined in the bus.
    pub(super) async fn of_fleet(args: &super::fleet::BusArgs) -> Result<Target, HostError> {
        let bus = args.connect().await?;
        let mut connectors = Vec::new();
        if let Some(store) = crate::fleet::existing(&bus, crate::fleet::CONNECTORS).await? {
            for (name, (_, text)) in crate::fleet::definitions::read_all(&store).await? {
                let source =
                    std::path::PathBuf::from(format!("kv {}/{name}", crate::fleet::CONNECTORS));
                connectors.push(Config::parse_definition_text(&source, &text)?);
            }
        }
        Ok(Target {
            bus,
            connectors,
            place: "the fleet's bus".into(),
        })
    }
}

/// Print the dead letters of `connector`, or of every connector.
pub(super) async fn list(target: &Target, connector: Option<&str>) -> Result<(), HostError> {
    let bus = &target.bus;
    for spec in chosen(target, connector)? {
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
pub(super) async fn replay(
    target: &Target,
    connector: &str,
    only: &[u64],
) -> Result<(), HostError> {
    let spec = chosen(target, Some(connector))?[0];
    if spec.kind() == crate::config::Kind::Source {
        return Err(HostError::Usage(format!(
            "{connector:?} is a source: its dead letters are records it could not publish, kept for inspection (`plexus dlq ls {connector}`). Correct them where they came from and let the source take them again"
        )));
    }
    let bus = &target.bus;
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
    let (audit, writer) = crate::observe::Audit::start(
        bus.js.clone(),
        &super::cli_writer(),
        None,
        bus.limits.replicas,
    )
    .await?;
    let actor = super::os_user();
    let mut replayed = 0;
    for letter in letters
        .iter()
        .filter(|l| only.is_empty() || only.contains(&l.sequence))
    {
        let result = dead.replay(letter).await;
        if let Err(error) = result {
            writer.finish().await;
            return Err(anyhow::anyhow!(
                "dead letter #{} of {connector:?}: {error:#} ({replayed} replayed before it)",
                letter.sequence
            )
            .into());
        }
        audit.record(
            "replay",
            &actor,
            &format!(
                "connector {connector}: dead letter #{} ({}) sent back to {}",
                letter.sequence, letter.identity, letter.original_subject
            ),
        );
        replayed += 1;
    }
    drop(audit);
    writer.finish().await;
    println!(
        "{connector}: replayed {replayed} dead letter{} from {}",
        if replayed == 1 { "" } else { "s" },
        spec.delivery.dlq
    );
    Ok(())
}

/// Ask the running host to replay, with an `operate` token: it records the
/// replay in the audit log under the token's name.
pub(super) async fn replay_by_host(
    file: &Path,
    connector: &str,
    only: &[u64],
    token: &str,
) -> Result<(), HostError> {
    let config = Config::load(file)?;
    if !config.connectors.iter().any(|c| c.name == connector) {
        return Err(HostError::Usage(format!(
            "{}: no connector named {connector:?}",
            file.display()
        )));
    }
    let (addr, from) = super::status::admin_address(&config);
    let base = format!("/connectors/{connector}/dead-letters/replay");
    let paths: Vec<String> = if only.is_empty() {
        vec![base]
    } else {
        only.iter().map(|seq| format!("{base}?seq={seq}")).collect()
    };
    let mut replayed = 0u64;
    for path in paths {
        let body = super::status::call(&addr, "POST", &path, Some(token))
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "the host at {addr} (from {from}) did not replay: {error:#} ({replayed} replayed before)"
                )
            })?;
        let answer: serde_json::Value = serde_json::from_str(&body)
            .map_err(|_| anyhow::anyhow!("the host at {addr} answered {body:?}"))?;
        replayed += answer["replayed"].as_u64().unwrap_or(0);
    }
    println!(
        "{connector}: replayed {replayed} dead letter{} (by the host at {addr})",
        if replayed == 1 { "" } else { "s" }
    );
    Ok(())
}

/// The connector named, or every connector when none is.
fn chosen<'a>(target: &'a Target, name: Option<&str>) -> Result<Vec<&'a ConnectorSpec>, HostError> {
    let Some(name) = name else {
        return Ok(target.connectors.iter().collect());
    };
    match target.connectors.iter().find(|c| c.name == name) {
        Some(spec) => Ok(vec![spec]),
        None => {
            let names: Vec<&str> = target.connectors.iter().map(|c| c.name.as_str()).collect();
            Err(HostError::Usage(format!(
                "{}: no connector named {name:?} (it has: {})",
                target.place,
                names.join(", ")
            )))
        }
    }
}
