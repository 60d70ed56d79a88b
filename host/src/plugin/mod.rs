//! Plugins: loading components, checking their world against the connector's
//! kind, and keeping warm instances.

pub mod cache;
pub mod local;
mod pool;

use std::path::{Path, PathBuf};

use wasmtime::component::Component;

use crate::bindings::{
    sink::SinkPre, source::SourcePre, transform::TransformPre, webhook::WebhookPre,
};
use crate::capability::PluginState;
use crate::config::Kind;
use crate::engine::Runtime;

pub use pool::{Fault, FaultKind, Pool};

/// Why a plugin cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin {path}: cannot read: {source}")]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a valid component for this engine.
    #[error("plugin {path}: not a loadable WebAssembly component: {reason}")]
    Compile {
        /// The plugin file.
        path: PathBuf,
        /// What the compiler said.
        reason: String,
    },
    /// Imports something the host does not provide.
    #[error("plugin {path}: needs an import this host does not grant: {reason}")]
    Imports {
        /// The plugin file.
        path: PathBuf,
        /// Which import.
        reason: String,
    },
    /// Does not export the world of the connector's kind.
    #[error(
        "plugin {path} is not a {kind} plugin: it does not export the `{kind}` world ({reason})"
    )]
    World {
        /// The plugin file.
        path: PathBuf,
        /// The connector's kind.
        kind: Kind,
        /// What is missing.
        reason: String,
    },
}

/// A compiled component, checked against one world.
#[derive(Clone)]
pub struct Plugin {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Hex SHA-256 of the wasm bytes.
    pub digest: String,
    /// Ready to instantiate as its world.
    pub world: World,
}

/// A plugin pre-linked as the world its connector kind requires.
#[derive(Clone)]
pub enum World {
    /// `world transform`.
    Transform(TransformPre<PluginState>),
    /// `world source`.
    Source(SourcePre<PluginState>),
    /// `world sink`.
    Sink(SinkPre<PluginState>),
    /// `world webhook`: a source fed by HTTP requests it verifies itself.
    Webhook(WebhookPre<PluginState>),
}

impl Plugin {
    /// Read, compile (or fetch from the cache) and link `path` as a `kind` plugin.
    /// CPU-heavy on a cache miss: call it off the async runtime.
    pub fn load(
        runtime: &Runtime,
        path: &Path,
        kind: Kind,
        cache_dir: Option<&Path>,
    ) -> Result<Plugin, LoadError> {
        let wasm = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let digest = cache::digest(&wasm);
        let (component, pre) = prelink(runtime, path, &wasm, cache_dir)?;
        let world_error = |e: wasmtime::Error| LoadError::World {
            path: path.to_owned(),
            kind,
            reason: format!("{e}; it exports: {}", exports(runtime, &component)),
        };
        let world = match kind {
            Kind::Transform => World::Transform(TransformPre::new(pre).map_err(world_error)?),
            // A source polls or decodes (`world source`), or verifies and
            // decodes HTTP requests (`world webhook`).
            Kind::Source => match SourcePre::new(pre.clone()) {
                Ok(source) => World::Source(source),
                Err(not_source) => match WebhookPre::new(pre) {
                    Ok(webhook) => World::Webhook(webhook),
                    Err(_) => return Err(world_error(not_source)),
                },
            },
            Kind::Sink => World::Sink(SinkPre::new(pre).map_err(world_error)?),
        };
        Ok(Plugin {
            path: path.to_owned(),
            digest,
            world,
        })
    }

    /// The world `wasm` exports (`transform`, `source`, `webhook` or
    /// `sink`), compiled to find out. CPU-heavy: call it off the async runtime.
    pub fn world_of(
        runtime: &Runtime,
        path: &Path,
        wasm: &[u8],
    ) -> Result<&'static str, LoadError> {
        let (component, pre) = prelink(runtime, path, wasm, None)?;
        if TransformPre::new(pre.clone()).is_ok() {
            Ok("transform")
        } else if SourcePre::new(pre.clone()).is_ok() {
            Ok("source")
        } else if WebhookPre::new(pre.clone()).is_ok() {
            Ok("webhook")
        } else if SinkPre::new(pre).is_ok() {
            Ok("sink")
        } else {
            Err(LoadError::Compile {
                path: path.to_owned(),
                reason: format!(
                    "it exports none of the Plexus worlds (transform, source, webhook, sink); it exports: {}",
                    exports(runtime, &component)
                ),
            })
        }
    }

    /// The first 12 hex digits of the digest: the version in `Plexus-Hops`.
    pub fn version(&self) -> &str {
        &self.digest[..12]
    }
}

/// Compile `wasm` (or take it from the cache) and link it against the
/// host's imports.
fn prelink(
    runtime: &Runtime,
    path: &Path,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> Result<(Component, wasmtime::component::InstancePre<PluginState>), LoadError> {
    let component =
        cache::load(&runtime.engine, path, wasm, cache_dir).map_err(|e| LoadError::Compile {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?;
    let pre = runtime
        .linker
        .instantiate_pre(&component)
        .map_err(|e| LoadError::Imports {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?;
    Ok((component, pre))
}

fn exports(runtime: &Runtime, component: &Component) -> String {
    let names: Vec<String> = component
        .component_type()
        .exports(&runtime.engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}
