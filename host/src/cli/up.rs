//! `plexus up`: run a host until SIGINT/SIGTERM, reloading on change.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::control::watch;
use crate::host::{Host, HostError};

pub(super) async fn run(file: &Path) -> Result<(), HostError> {
    let config = Config::load(file)?;
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
        .chain(config.connectors.iter().map(|c| c.plugin.clone()))
        .collect()
}
