//! `plexus:connector/kv`: the connector's own JetStream KV bucket.

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};

use crate::bindings::host::plexus::connector::kv::{Entry, Host, KvError};
use crate::capability::PluginState;

/// Bucket name for a connector's state.
pub fn bucket_name(connector: &str) -> String {
    format!("plexus-kv-{connector}")
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
}

impl PluginState {
    fn bucket(&self, key: &str) -> Result<&kv::Store, KvError> {
        if !valid_key(key) {
            return Err(KvError::InvalidKey(format!(
                "{key:?} is not a valid key ([A-Za-z0-9_=./-], no leading or trailing dot)"
            )));
        }
        self.connector
            .kv
            .as_ref()
            .ok_or_else(|| KvError::Unavailable("no bus is connected".into()))
    }
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

impl Host for PluginState {
    async fn get(&mut self, key: String) -> Result<Option<Entry>, KvError> {
        let entry = self.bucket(&key)?.entry(key).await.map_err(unavailable)?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .map(|e| Entry {
                value: e.value.to_vec(),
                revision: e.revision,
            }))
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<u64, KvError> {
        self.bucket(&key)?
            .put(key, value.into())
            .await
            .map_err(unavailable)
    }

    async fn delete(&mut self, key: String) -> Result<(), KvError> {
        self.bucket(&key)?.delete(key).await.map_err(unavailable)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        value: Vec<u8>,
        revision: Option<u64>,
    ) -> Result<u64, KvError> {
        let bucket = self.bucket(&key)?;
        match revision {
            None => bucket
                .create(key, value.into())
                .await
                .map_err(|e| match e.kind() {
                    CreateErrorKind::AlreadyExists => KvError::RevisionMismatch,
                    _ => unavailable(e),
                }),
            Some(revision) => bucket
                .update(key, value.into(), revision)
                .await
                .map_err(|e| match e.kind() {
                    UpdateErrorKind::WrongLastRevision => KvError::RevisionMismatch,
                    _ => unavailable(e),
                }),
        }
    }
}
