//! `plexus audit`: read and verify the audit log on the config's bus.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::host::HostError;
use crate::observe::audit;

/// Walk every chain; exit 1 naming the first broken link.
pub(super) async fn verify(file: &Path) -> Result<(), HostError> {
    let config = Config::load(file)?;
    let bus = super::connect_bus(&config).await?;
    let (stored, aged_out) = audit::read(&bus.js, None).await?;
    match audit::verify(&stored, aged_out) {
        Ok(verified) => {
            println!(
                "{}: ok, {} record(s) in {} chain(s)",
                audit::STREAM,
                verified.records,
                verified.chains
            );
            Ok(())
        }
        Err(broken) => Err(anyhow::anyhow!("{}: {broken}", audit::STREAM).into()),
    }
}

/// Print the records, oldest first.
pub(super) async fn list(file: &Path, since: Option<Duration>) -> Result<(), HostError> {
    let config = Config::load(file)?;
    let bus = super::connect_bus(&config).await?;
    let since = since.and_then(|ago| SystemTime::now().checked_sub(ago));
    for stored in audit::read(&bus.js, since).await?.0 {
        match stored.record {
            Ok(r) => println!(
                "{}  {:<18} {:<24} {:<16} {}",
                r.time, r.event, r.writer, r.actor, r.detail
            ),
            Err(error) => println!("#{}  (unreadable: {error})", stored.sequence),
        }
    }
    Ok(())
}
