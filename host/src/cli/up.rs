//! `plexus up`: run a host until SIGINT/SIGTERM, reloading on change.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::control::watch;
use crate::host::{Host, HostError};

pub(super) async fn run(
    file: &Path,
    labels: Vec<(String, String)>,
    id: Option<String>,
) -> Result<(), HostError> {
    let config = Config::load(file)?;
    if config.bus.edge.is_some() {
        if labels.iter().any(|(key, _)| key == "facility") {
            return Err(HostError::Usage(format!(
                "{}: an edge host's facility is its identity and JetStream domain; set it in [host].labels, not with --label",
                file.display()
            )));
        }
        return run_fleet_host(config, labels, id).await;
    }
    if !labels.is_empty() || id.is_some() {
        return Err(HostError::Usage(
            "--label and --id are for fleet hosts (--bus) and edge hosts ([bus].leaf)".into(),
        ));
    }
    let watched: watch::Watched = Arc::new(Mutex::new(watched_files(&config)));
    // Watch from the moment the config was read: an edit made while the host
    // starts is picked up as soon as it is running.
    let mut triggers = watch::spawn(watched.clone())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(anyhow::Error::from)?;
    let mut host = Host::start(config).await?;
    // One line on stdout when ready: scripts and tests wait for it.
    println!(
        "plexus: up with {} connector(s); metrics at http://{}/metrics{}",
        host.connectors().count(),
        host.http_addr(),
        host.bus_url()
            .map(|u| format!("; embedded bus at {u}"))
            .unwrap_or_default()
    );

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            Some(trigger) = triggers.recv() => {
                tracing::info!(?trigger, "Reloading the config.");
                let result = match Config::load(file) {
                    Ok(config) => {
                        if let Ok(mut files) = watched.lock() {
                            *files = watched_files(&config);
                        }
                        host.reload(config).await
                    }
                    Err(error) => {
                        host.reload_refused(&error.to_string());
                        Err(error.into())
                    }
                };
                match result {
                    Ok(changes) => println!(
                        "plexus: reloaded; added {:?}, swapped {:?}, removed {:?}",
                        changes.added, changes.swapped, changes.removed
                    ),
                    Err(error) => {
                        tracing::error!(%error, "Reload refused; the running connectors are unchanged.");
                        println!("plexus: reload refused: {error}");
                    }
                }
            }
        }
    }
    tracing::info!("Shutting down: finishing in-flight records.");
    host.shutdown().await;
    Ok(())
}

fn watched_files(config: &Config) -> Vec<std::path::PathBuf> {
    std::iter::once(config.file.clone())
        .chain(config.connectors.iter().filter_map(|c| match &c.plugin {
            crate::config::PluginSource::File(path) => Some(path.clone()),
            crate::config::PluginSource::Registry(_) => None,
        }))
        .collect()
}

/// `plexus up --bus …`: a fleet host. Its connectors come from the bus;
/// the config file (if there is one) gives only [host] and [bus].
pub(super) async fn run_fleet(
    file: &Path,
    bus: &super::fleet::BusArgs,
    labels: Vec<(String, String)>,
    id: Option<String>,
) -> Result<(), HostError> {
    let mut config = if file.exists() {
        Config::load(file)?
    } else if file == Path::new("plexus.toml") {
        Config::defaults(&std::env::current_dir().map_err(anyhow::Error::from)?)
    } else {
        return Err(HostError::Usage(format!(
            "{}: no such config file",
            file.display()
        )));
    };
    if !config.connectors.is_empty() {
        return Err(HostError::Usage(format!(
            "{}: a fleet host (--bus) takes its connectors from the bus; move the [[connector]] tables to a file for `plexus apply`, or run without --bus",
            file.display()
        )));
    }
    if config.bus.edge.is_some() {
        return Err(HostError::Usage(format!(
            "{}: an edge host ([bus].leaf) runs its own bus joined to the hub; start it without --bus",
            file.display()
        )));
    }
    config.bus.url = bus.bus.clone();
    if let Some(creds) = &bus.creds {
        config.bus.creds = Some(creds.clone());
    }
    if let Some(ca) = &bus.ca {
        config.bus.tls = Some(crate::config::BusTls {
            ca: Some(ca.clone()),
            cert: None,
            key: None,
        });
    }
    if bus.replicas > 1 {
        config.bus.replicas = usize::from(bus.replicas);
    }
    run_fleet_host(config, labels, id).await
}

/// Run a host that takes its connectors from the fleet's definitions: one
/// started with `--bus`, or an edge host (`[bus].leaf`).
async fn run_fleet_host(
    mut config: Config,
    labels: Vec<(String, String)>,
    id: Option<String>,
) -> Result<(), HostError> {
    config.fleet.labels.extend(labels);
    let id = id.unwrap_or_else(crate::fleet::membership::default_id);
    crate::fleet::membership::check_id(&id).map_err(HostError::Usage)?;

    let mut terminate = signal(SignalKind::terminate()).map_err(anyhow::Error::from)?;
    let host = Host::start(config).await?;
    let reconciler = crate::fleet::reconciler::Reconciler::join(host, &id).await?;
    let edge = match &reconciler.host().config().bus.edge {
        Some(edge) => format!(
            "; edge of the hub at {} in domain {:?}",
            edge.leaf.join(","),
            edge.domain
        ),
        None => String::new(),
    };
    println!(
        "plexus: up in the fleet as {id} (labels {:?}); metrics at http://{}/metrics{edge}",
        reconciler.host().config().fleet.labels,
        reconciler.host().http_addr(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(reconciler.run(stopped));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("Shutting down: finishing in-flight records, then leaving the fleet.");
    let _ = stop.send(true);
    let _ = running.await;
    Ok(())
}
