//! Running a plugin outside a host, on sample inputs: what `plexus test` and
//! the benchmarks use. No bus: the plugin's kv is unavailable and nothing is
//! granted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{Fault, LoadError, Plugin, Pool};
use crate::bindings::{PluginError, PluginRecord};
use crate::capability::ConnectorContext;
use crate::config::{Kind, Limits};
use crate::engine::Runtime;
use crate::observe::Metrics;

/// One record a plugin produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Business key.
    pub key: String,
    /// Subject suffix, if any.
    pub topic: Option<String>,
    /// Schema id, if any.
    pub schema: Option<String>,
    /// MIME type, if any.
    pub content_type: Option<String>,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// Why a local call produced no records.
#[derive(Debug)]
pub enum Failure {
    /// The plugin refused the record for good.
    Permanent(String),
    /// The plugin asked for the record to be tried again.
    Retryable(String),
    /// The instance trapped, timed out or hit its memory cap.
    Fault(Fault),
    /// Sinks are not run locally.
    Unsupported,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Permanent(reason) => write!(f, "permanent error: {reason}"),
            Failure::Retryable(reason) => write!(f, "retryable error: {reason}"),
            Failure::Fault(fault) => write!(f, "{fault}"),
            Failure::Unsupported => {
                f.write_str("sinks deliver to outside systems; run them in a host")
            }
        }
    }
}

/// A transform (or a source's `decode`) loaded for local runs.
pub struct LocalPlugin {
    pool: Pool,
    kind: Kind,
    /// The loaded plugin.
    pub plugin: Plugin,
}

impl LocalPlugin {
    /// Load `path` as a transform or source, with `config` handed to the plugin.
    pub fn load(
        runtime: &Runtime,
        path: &Path,
        kind: Kind,
        config: BTreeMap<String, String>,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let plugin = Plugin::load(runtime, path, kind, None)?;
        Ok(Self::ready(plugin, kind, config, limits))
    }

    /// The same compiled plugin with another config: fresh instances, no
    /// recompilation.
    pub fn reconfigured(&self, config: BTreeMap<String, String>, limits: Limits) -> Self {
        Self::ready(self.plugin.clone(), self.kind, config, limits)
    }

    fn ready(plugin: Plugin, kind: Kind, config: BTreeMap<String, String>, limits: Limits) -> Self {
        let context = Arc::new(ConnectorContext {
            name: "local".into(),
            config,
            kv: None,
            grants: crate::config::Grants::default(),
            secrets: BTreeMap::new(),
            metrics: Arc::new(Metrics::default()),
            audit: crate::observe::Audit::disabled(),
        });
        LocalPlugin {
            pool: Pool::new(plugin.world.clone(), context, limits),
            kind,
            plugin,
        }
    }

    /// Run one input through `transform` (or `decode` for a source).
    pub async fn call(&self, key: &str, payload: &[u8]) -> Result<Vec<Output>, Failure> {
        let result = match self.kind {
            Kind::Transform => {
                let input = PluginRecord {
                    key: key.to_owned(),
                    payload: payload.to_vec(),
                    headers: Vec::new(),
                    schema: None,
                    content_type: None,
                    topic: None,
                };
                self.pool.transform(input).await
            }
            // A webhook source gets each input as a request without headers
            // (so one that checks signatures refuses it, and says why).
            Kind::Source if self.pool.is_webhook() => {
                use crate::bindings::{WebhookRefusal, WebhookRequest};
                let request = WebhookRequest {
                    headers: Vec::new(),
                    body: payload.to_vec(),
                };
                match self.pool.receive(request).await {
                    Ok(Ok(records)) => Ok(Ok(records)),
                    Ok(Err(
                        WebhookRefusal::Unauthenticated(reason) | WebhookRefusal::Invalid(reason),
                    )) => Ok(Err(PluginError::Permanent(reason))),
                    Ok(Err(WebhookRefusal::Unavailable(reason))) => {
                        Ok(Err(PluginError::Retryable(reason)))
                    }
                    Err(fault) => Err(fault),
                }
            }
            Kind::Source => {
                self.pool
                    .decode(bytes::Bytes::copy_from_slice(payload))
                    .await
            }
            Kind::Sink => return Err(Failure::Unsupported),
        };
        match result {
            Ok(Ok(records)) => Ok(records
                .into_iter()
                .map(|r| Output {
                    key: r.key,
                    topic: r.topic,
                    schema: r.schema,
                    content_type: r.content_type,
                    payload: r.payload,
                })
                .collect()),
            Ok(Err(PluginError::Permanent(reason))) => Err(Failure::Permanent(reason)),
            Ok(Err(PluginError::Retryable(reason))) => Err(Failure::Retryable(reason)),
            Err(fault) => Err(Failure::Fault(fault)),
        }
    }
}
