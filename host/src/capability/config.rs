//! `plexus:connector/config`: the connector's `config` table, read-only.

use crate::bindings::host::plexus::connector::config::Host;
use crate::capability::PluginState;

impl Host for PluginState {
    fn get(&mut self, key: String) -> Option<String> {
        self.connector.config.get(&key).cloned()
    }

    fn get_all(&mut self) -> Vec<(String, String)> {
        self.connector
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
