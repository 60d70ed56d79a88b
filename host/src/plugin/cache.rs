//! Compile a component once per content digest and keep the native artifact in
//! `<data_dir>/cache`, so restarts and reloads skip Cranelift.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Load `wasm` (read from `source`), from the cache when it was compiled before.
/// Returns the component and the hex SHA-256 of the wasm bytes.
pub fn load(
    engine: &Engine,
    source: &Path,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> anyhow::Result<Component> {
    let Some(dir) = cache_dir else {
        return Ok(Component::new(engine, wasm)?);
    };
    let artifact = artifact_path(engine, dir, &digest(wasm));
    if artifact.is_file() {
        match deserialize(engine, &artifact) {
            Ok(component) => return Ok(component),
            Err(error) => {
                tracing::warn!(plugin = %source.display(), artifact = %artifact.display(), %error, "Cached artifact unusable; recompiling.");
            }
        }
    }
    let bytes = engine.precompile_component(wasm)?;
    std::fs::create_dir_all(dir)?;
    // Write then rename, so a crash never leaves a truncated artifact behind.
    let partial = artifact.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, &bytes)?;
    std::fs::rename(&partial, &artifact)?;
    Ok(deserialize(engine, &artifact)?)
}

/// Hex SHA-256 of the component bytes: the plugin's identity.
pub fn digest(wasm: &[u8]) -> String {
    Sha256::digest(wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn artifact_path(engine: &Engine, dir: &Path, digest: &str) -> PathBuf {
    // The engine's compatibility hash keeps artifacts of other wasmtime
    // versions or settings from ever being loaded.
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the artifact was written by `precompile_component` of an engine
    // with the same compatibility hash (it is in the file name), into the
    // host's own data directory, and renamed into place only once complete.
    unsafe { Component::deserialize_file(engine, artifact) }
}
