//! The plugin registry: components in an object store by SHA-256 digest,
//! and an index `name@version` → digest, world, signature, who and when.
//!
//! A `name@version` is written once: deploying it again with the same bytes
//! changes nothing, with other bytes is refused. Hosts fetch a component
//! by digest, check its bytes against the digest and its signature against
//! their trusted keys, and keep it on disk by digest.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use async_nats::jetstream::{kv, object_store};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;

use super::signing::{PrivateKey, PublicKey, Release};
use crate::bus::Bus;
use crate::config::{Kind, PluginRef};

/// The largest component the registry takes.
pub const MAX_PLUGIN_BYTES: usize = 256 << 20;

/// One deployed `name@version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Hex SHA-256 of the component: its object's name.
    pub digest: String,
    /// The world it exports: `transform`, `source`, `webhook` or `sink`.
    pub world: String,
    /// Its size in bytes.
    pub size: u64,
    /// Hex ed25519 signature over the digest, if signed.
    #[serde(default)]
    pub signature: Option<String>,
    /// The public key that signed it.
    #[serde(default)]
    pub signer: Option<String>,
    /// RFC 3339 time of the deploy.
    pub uploaded_at: String,
    /// Who deployed it.
    pub uploader: String,
}

impl Entry {
    /// `name@version`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Whether a connector of `kind` can run this plugin.
    pub fn fits(&self, kind: Kind) -> bool {
        match kind {
            Kind::Source => self.world == "source" || self.world == "webhook",
            Kind::Transform => self.world == "transform",
            Kind::Sink => self.world == "sink",
        }
    }

    /// What its signature covers.
    pub fn release(&self) -> Release<'_> {
        Release {
            name: &self.name,
            version: &self.version,
            world: &self.world,
            digest: &self.digest,
        }
    }

    /// Whether the entry is well-formed: its digest 64 hex digits (it names
    /// files), its world one of the four.
    pub fn check(&self) -> Result<(), String> {
        let hex = self.digest.len() == 64
            && self
                .digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(format!(
                "plugin {}: its index entry's digest {:?} is not a SHA-256",
                self.reference(),
                self.digest
            ));
        }
        if !["transform", "source", "webhook", "sink"].contains(&self.world.as_str()) {
            return Err(format!(
                "plugin {}: its index entry names no known world ({:?})",
                self.reference(),
                self.world
            ));
        }
        Ok(())
    }

    /// Check the signature against `trusted` keys. Required when `required`
    /// or when any key is trusted (a host that trusts keys means them); a
    /// signature that does not verify is refused either way.
    pub fn check_signature(&self, trusted: &[String], required: bool) -> Result<(), String> {
        if !required && trusted.is_empty() {
            // A host that trusts no key checks no signature.
            return Ok(());
        }
        let Some(signature) = &self.signature else {
            return Err(format!(
                "plugin {} is not signed, and this host accepts only plugins signed by its [host].trusted_keys; deploy it with `plexus deploy --sign KEY`",
                self.reference()
            ));
        };
        let verified = trusted
            .iter()
            .filter_map(|k| PublicKey::parse(k).ok())
            .any(|k| k.verifies(&self.release(), signature));
        if verified {
            Ok(())
        } else {
            Err(format!(
                "plugin {} is signed by {}, which is not a key this host trusts ([host].trusted_keys), or the signature does not cover this name, version, world and digest {}",
                self.reference(),
                self.signer.as_deref().unwrap_or("an unnamed key"),
                self.digest
            ))
        }
    }
}

/// The index key of `name@version`: `name.version` (names have no dots).
pub fn key(reference: &PluginRef) -> String {
    format!("{}.{}", reference.name, reference.version)
}

/// Why a deploy was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The name@version holds other bytes.
    #[error(
        "{reference} is already deployed with digest {existing}, and these bytes have digest {new}; a version is written once: deploy these under a new --version"
    )]
    Conflict {
        /// name@version.
        reference: String,
        /// What it holds.
        existing: String,
        /// What was offered.
        new: String,
    },
    /// The bus failed.
    #[error("{0:#}")]
    Bus(#[from] anyhow::Error),
}

/// What a deploy did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deployed {
    /// Stored.
    New(Entry),
    /// The same bytes were already there under this name@version.
    Unchanged(Entry),
}

/// The registry's two buckets.
pub struct Registry {
    index: kv::Store,
    objects: object_store::ObjectStore,
}

impl Registry {
    /// Open (creating on first use) the registry on `bus`.
    pub async fn open(bus: &Bus) -> anyhow::Result<Registry> {
        let index = super::bucket(bus, super::REGISTRY, 1, None).await?;
        let objects = match bus.js.get_object_store(super::PLUGINS).await {
            Ok(store) => store,
            Err(_) => bus
                .js
                .create_object_store(object_store::Config {
                    bucket: super::PLUGINS.to_owned(),
                    description: Some("Plexus plugin components by SHA-256 digest".into()),
                    max_bytes: bus.limits.stream_max_bytes,
                    num_replicas: bus.limits.replicas,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot create object store {}", super::PLUGINS))?,
        };
        Ok(Registry { index, objects })
    }

    /// Store `wasm` as `reference`, exporting `world`, signed with `signing_key` if given.
    pub async fn deploy(
        &self,
        reference: &PluginRef,
        wasm: &[u8],
        world: &str,
        signing_key: Option<&PrivateKey>,
        uploader: &str,
    ) -> Result<Deployed, DeployError> {
        let digest = crate::plugin::cache::digest(wasm);
        // Refuse before writing anything.
        if let Some(existing) = self.lookup(reference).await? {
            return if existing.digest == digest {
                Ok(Deployed::Unchanged(existing))
            } else {
                Err(DeployError::Conflict {
                    reference: reference.to_string(),
                    existing: existing.digest,
                    new: digest,
                })
            };
        }
        let mut entry = Entry {
            name: reference.name.clone(),
            version: reference.version.clone(),
            digest: digest.clone(),
            world: world.to_owned(),
            size: wasm.len() as u64,
            signature: None,
            signer: None,
            uploaded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            uploader: uploader.to_owned(),
        };
        if let Some(key) = signing_key {
            entry.signature = Some(key.sign(&entry.release()));
            entry.signer = Some(key.public().to_string());
        }
        // Store the bytes unless the right ones are there already: an object
        // someone put under this digest with other bytes is replaced.
        if self.read(&entry).await.is_err() {
            let mut bytes = wasm;
            self.objects
                .put(digest.as_str(), &mut bytes)
                .await
                .with_context(|| format!("cannot store the component in {}", super::PLUGINS))?;
        }
        let value = serde_json::to_vec(&entry).context("cannot encode the index entry")?;
        match self.index.create(key(reference), value.into()).await {
            Ok(_) => Ok(Deployed::New(entry)),
            // Another deploy of the same name@version won the race.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.lookup(reference).await? {
                    Some(existing) if existing.digest == digest => {
                        Ok(Deployed::Unchanged(existing))
                    }
                    Some(existing) => Err(DeployError::Conflict {
                        reference: reference.to_string(),
                        existing: existing.digest,
                        new: digest,
                    }),
                    None => Err(DeployError::Bus(anyhow::anyhow!(
                        "{reference} changed while it was being deployed; run the deploy again"
                    ))),
                }
            }
            Err(e) => {
                Err(
                    anyhow::anyhow!("cannot write {} to {}: {e}", reference, super::REGISTRY)
                        .into(),
                )
            }
        }
    }

    /// Changes to the index from now on.
    pub async fn watch(&self) -> anyhow::Result<kv::Watch> {
        self.index
            .watch_all()
            .await
            .with_context(|| format!("cannot watch {}", super::REGISTRY))
    }

    /// The index entry of `reference`, if deployed.
    pub async fn lookup(&self, reference: &PluginRef) -> anyhow::Result<Option<Entry>> {
        let Some(value) = self
            .index
            .get(key(reference))
            .await
            .with_context(|| format!("cannot read {} from {}", reference, super::REGISTRY))?
        else {
            return Ok(None);
        };
        let entry: Entry = serde_json::from_slice(&value).with_context(|| {
            format!(
                "the index entry of {reference} in {} is unreadable",
                super::REGISTRY
            )
        })?;
        // An entry copied under another key would carry its signature there.
        if entry.name != reference.name || entry.version != reference.version {
            anyhow::bail!(
                "the index entry under {reference} in {} describes {}; it was moved, and is refused",
                super::REGISTRY,
                entry.reference()
            );
        }
        Ok(Some(entry))
    }

    /// Every deployed plugin.
    pub async fn entries(&self) -> anyhow::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for key in super::keys(&self.index).await? {
            if let Some(value) = self
                .index
                .get(&key)
                .await
                .context("cannot read the registry")?
                && let Ok(entry) = serde_json::from_slice(&value)
            {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// The component's bytes, checked against the entry's digest.
    pub async fn read(&self, entry: &Entry) -> anyhow::Result<Vec<u8>> {
        entry.check().map_err(anyhow::Error::msg)?;
        let mut object = self.objects.get(&entry.digest).await.with_context(|| {
            format!(
                "plugin {}: its component {} is missing from {}",
                entry.reference(),
                entry.digest,
                super::PLUGINS
            )
        })?;
        let mut wasm = Vec::new();
        (&mut object)
            .take(MAX_PLUGIN_BYTES as u64 + 1)
            .read_to_end(&mut wasm)
            .await
            .with_context(|| format!("plugin {}: cannot read its component", entry.reference()))?;
        let digest = crate::plugin::cache::digest(&wasm);
        if digest != entry.digest {
            anyhow::bail!(
                "plugin {}: the stored component has digest {digest}, not {} as deployed: it was altered; deploy it again under a new version",
                entry.reference(),
                entry.digest
            );
        }
        Ok(wasm)
    }

    /// The component on disk under `cache_dir`, fetched and checked if it
    /// is not there yet. Blocking file work is small next to compiling.
    pub async fn fetch(&self, entry: &Entry, cache_dir: &Path) -> anyhow::Result<PathBuf> {
        if let Some(file) = cached(entry, cache_dir).await {
            return Ok(file);
        }
        let file = cache_dir.join(format!("{}.wasm", entry.digest));
        let wasm = self.read(entry).await?;
        tokio::fs::create_dir_all(cache_dir)
            .await
            .with_context(|| format!("cannot create {}", cache_dir.display()))?;
        let partial = cache_dir.join(format!("{}.wasm.partial", entry.digest));
        tokio::fs::write(&partial, &wasm)
            .await
            .with_context(|| format!("cannot write {}", partial.display()))?;
        tokio::fs::rename(&partial, &file)
            .await
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(file)
    }
}

/// The component of `entry` in `cache_dir`, if it is there with its digest.
pub async fn cached(entry: &Entry, cache_dir: &Path) -> Option<PathBuf> {
    let file = cache_dir.join(format!("{}.wasm", entry.digest));
    let wasm = tokio::fs::read(&file).await.ok()?;
    (crate::plugin::cache::digest(&wasm) == entry.digest).then_some(file)
}
