//! The definitions a fleet host last read, and the registry entries of
//! their plugins, kept in `data_dir/fleet/known.json`: a host that cannot
//! reach the control plane (an edge whose WAN link is down) runs these,
//! also after a restart, with the plugin files cached beside them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::registry::Entry;

/// What was last read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// Definitions by connector: (revision, TOML text).
    pub definitions: BTreeMap<String, (u64, String)>,
    /// Registry entries by `name@version`.
    pub plugins: BTreeMap<String, Entry>,
    /// When they were read (RFC 3339).
    pub read_at: String,
}

/// The file under `data_dir`.
pub fn file(data_dir: &Path) -> PathBuf {
    data_dir.join("fleet").join("known.json")
}

impl Known {
    /// What the file holds; nothing if there is no file (or it cannot be read,
    /// which is said).
    pub fn load(data_dir: &Path) -> Known {
        let path = file(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(file = %path.display(), %error, "The last known definitions cannot be read; starting without them.");
                Known::default()
            }),
            Err(_) => Known::default(),
        }
    }

    /// Write atomically (a new file renamed over the old, synced first), so
    /// a crash leaves the old or the new, never half of one.
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        let path = file(data_dir);
        let dir = path.parent().unwrap_or(data_dir);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let partial = path.with_extension("json.partial");
        use std::os::unix::fs::OpenOptionsExt as _;
        // Definitions name grants and secrets: readable by the host's user only.
        let mut out = std::fs::File::options()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        out.write_all(&serde_json::to_vec_pretty(self)?)
            .and_then(|()| out.sync_all())
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Known::load(dir.path()), Known::default());
        let known = Known {
            definitions: BTreeMap::from([("a".into(), (3, "name = \"a\"".into()))]),
            plugins: BTreeMap::new(),
            read_at: "2026-12-03T10:00:00Z".into(),
        };
        known.save(dir.path()).unwrap();
        assert_eq!(Known::load(dir.path()), known);
        std::fs::write(file(dir.path()), b"{not json").unwrap();
        assert_eq!(Known::load(dir.path()), Known::default());
    }
}
