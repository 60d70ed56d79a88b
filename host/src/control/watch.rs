//! Notice config changes: SIGHUP, or the config file or a plugin file changing on disk.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

/// How often the files are looked at. Polling metadata works the same on every
/// file system and editor (rename-on-save included), and a reload is rare.
const POLL: Duration = Duration::from_millis(500);

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// A watched file changed.
    FileChanged,
}

/// The files to watch; replace the list after each reload.
pub type Watched = Arc<Mutex<Vec<PathBuf>>>;

/// Send a [`Trigger`] whenever a watched file changes or the process gets SIGHUP.
pub fn spawn(files: Watched) -> anyhow::Result<mpsc::Receiver<Trigger>> {
    let (tx, rx) = mpsc::channel(4);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let on_signal = tx.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if on_signal.send(Trigger::Signal).await.is_err() {
                break;
            }
        }
    });
    // The baseline is taken now, not in the task: a change made right after
    // this returns must count as a change.
    let mut last = fingerprint(&files);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            let now = fingerprint(&files);
            if now != last {
                last = now;
                if tx.send(Trigger::FileChanged).await.is_err() {
                    break;
                }
            }
        }
    });
    Ok(rx)
}

/// Size and modification time of each file (`None` while missing, e.g. mid-save).
fn fingerprint(files: &Watched) -> Vec<Option<(u64, SystemTime)>> {
    let files = files.lock().map(|f| f.clone()).unwrap_or_default();
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}
