//! Changing a running host: reconciling connectors with a new config, and
//! noticing when the config changes (SIGHUP or the file).

pub mod reconcile;
pub mod watch;
