//! The connector's own key-value bucket, shared by all its instances and
//! kept across restarts. Use [`compare_and_swap`] for read-modify-write.

use crate::wit::host::plexus::connector::kv as host;

pub use host::{Entry, KvError};

/// The current value of `key`, if any.
pub fn get(key: &str) -> Result<Option<Entry>, KvError> {
    host::get(key)
}

/// Store `value` under `key`; returns the new revision.
pub fn put(key: &str, value: &[u8]) -> Result<u64, KvError> {
    host::put(key, value)
}

/// Remove `key`.
pub fn delete(key: &str) -> Result<(), KvError> {
    host::delete(key)
}

/// Store `value` only if `key` is still at `revision` (`None`: only if absent).
pub fn compare_and_swap(key: &str, value: &[u8], revision: Option<u64>) -> Result<u64, KvError> {
    host::compare_and_swap(key, value, revision)
}
