//! `plexus:connector/log`: plugin log lines into the host's tracing, tagged with the connector.

use crate::bindings::host::plexus::connector::log::{Host, Level};
use crate::capability::PluginState;

/// Longer lines are cut so a plugin cannot flood the host's log with one call.
const MAX_LINE: usize = 4096;

impl Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        let mut message = super::redact(&self.connector.secrets, &message);
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let connector = self.connector.name.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "plugin", connector, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", connector, "{message}"),
            Level::Info => tracing::info!(target: "plugin", connector, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", connector, "{message}"),
            Level::Error => tracing::error!(target: "plugin", connector, "{message}"),
        }
    }
}
