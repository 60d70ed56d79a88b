//! The connector's `config` table from `plexus.toml` (strings only).

use crate::wit::host::plexus::connector::config as host;

/// The value of `key`, if the operator set it.
pub fn get(key: &str) -> Option<String> {
    host::get(key)
}

/// Every key and value, sorted by key.
pub fn all() -> Vec<(String, String)> {
    host::get_all()
}
