//! Bearer tokens of the admin endpoint, kept in `[host].tokens` as SHA-256
//! digests, never as the tokens themselves.
//!
//! ```toml
//! [[token]]
//! name = "grafana"
//! role = "read"
//! sha256 = "9f86d0…"
//! created = "2026-12-02T17:00:00Z"
//! ```
//!
//! `plexus token create` writes an entry and prints the token once;
//! `plexus token revoke` removes it. A running host notices the file change
//! on the next request. Tokens are 256 random bits, so a plain SHA-256 is
//! as good as a slow hash: there is nothing to guess.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The dashboard, `/connectors`, `/metrics`.
    Read,
    /// Everything `read` may, and every state-changing call (dead-letter replay).
    Operate,
    /// `POST /ingest/<connector>` for that one connector.
    Ingest(String),
}

impl Role {
    /// Parse `read`, `operate` or `ingest:<connector>`.
    pub fn parse(text: &str) -> Result<Role, String> {
        match text {
            "read" => Ok(Role::Read),
            "operate" => Ok(Role::Operate),
            other => match other.strip_prefix("ingest:") {
                Some(connector)
                    if !connector.is_empty()
                        && connector
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
                {
                    Ok(Role::Ingest(connector.to_owned()))
                }
                _ => Err(format!(
                    "role {text:?} is not read, operate or ingest:<connector>"
                )),
            },
        }
    }

    /// Whether this role grants `wanted`.
    pub fn grants(&self, wanted: &Role) -> bool {
        match (self, wanted) {
            (Role::Operate, Role::Read | Role::Operate) => true,
            (mine, wanted) => mine == wanted,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Read => f.write_str("read"),
            Role::Operate => f.write_str("operate"),
            Role::Ingest(connector) => write!(f, "ingest:{connector}"),
        }
    }
}

/// One token, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Who or what holds it; recorded in the audit log.
    pub name: String,
    /// `read`, `operate` or `ingest:<connector>`.
    pub role: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// When it was made.
    #[serde(default)]
    pub created: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "token")]
    tokens: Vec<Entry>,
}

/// A caller the endpoint knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// The token file as a running host reads it, re-read when it changes.
pub struct Tokens {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

#[derive(Default)]
struct Loaded {
    /// Modification time, size, inode and change time when last read.
    stamp: Option<(SystemTime, u64, u64, i64)>,
    entries: Arc<Vec<(Caller, [u8; 32])>>,
}

impl Tokens {
    /// The tokens in `path` (none if it does not exist yet).
    pub fn open(path: &Path) -> anyhow::Result<Tokens> {
        let tokens = Tokens {
            path: path.to_owned(),
            loaded: Mutex::new(Loaded::default()),
        };
        tokens.refresh()?;
        Ok(tokens)
    }

    /// Whether the token file exists (tokens are then always required,
    /// even if every one was revoked).
    pub fn configured(&self) -> bool {
        let _ = self.refresh_logged();
        self.loaded.lock().is_ok_and(|l| l.stamp.is_some())
    }

    /// Whether any token exists.
    pub fn any(&self) -> bool {
        let _ = self.refresh_logged();
        self.loaded.lock().is_ok_and(|l| !l.entries.is_empty())
    }

    /// The caller `token` belongs to, if any.
    pub fn verify(&self, token: &str) -> Option<Caller> {
        let _ = self.refresh_logged();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let entries = self.loaded.lock().ok()?.entries.clone();
        // Every entry is compared, in full, whatever matches: no early exit to time.
        let mut found = None;
        for (caller, stored) in entries.iter() {
            let same = stored
                .iter()
                .zip(digest.iter())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0;
            if same {
                found = Some(caller.clone());
            }
        }
        found
    }

    fn refresh_logged(&self) -> anyhow::Result<()> {
        self.refresh().inspect_err(|error| {
            tracing::error!(file = %self.path.display(), error = format!("{error:#}"), "Cannot read the token file; the tokens read before stay in force.");
        })
    }

    /// Re-read the file if it changed since it was last read.
    fn refresh(&self) -> anyhow::Result<()> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt as _;
                Some((
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                    meta.ino(),
                    meta.ctime_nsec() + meta.ctime() * 1_000_000_000,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("{}", self.path.display())),
        };
        let Ok(mut loaded) = self.loaded.lock() else {
            bail!("token table poisoned");
        };
        if stamp.is_some() && loaded.stamp == stamp {
            return Ok(());
        }
        let entries = match stamp {
            None => Vec::new(),
            Some(_) => read(&self.path)?
                .tokens
                .into_iter()
                .filter_map(|entry| {
                    let role = Role::parse(&entry.role).ok()?;
                    let digest = decode_hex(&entry.sha256)?;
                    Some((
                        Caller {
                            name: entry.name,
                            role,
                        },
                        digest,
                    ))
                })
                .collect(),
        };
        *loaded = Loaded {
            stamp,
            entries: Arc::new(entries),
        };
        Ok(())
    }
}

fn read(path: &Path) -> anyhow::Result<File> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write(path: &Path, file: &File) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = format!(
        "# Plexus admin tokens: the SHA-256 of each token, never the token.\n# Managed with `plexus token create` and `plexus token revoke`.\n\n{}",
        toml::to_string(file).context("cannot write the token table")?
    );
    // Written beside, then renamed: a host reading it never sees half a file.
    let partial = path.with_extension("toml.partial");
    let _ = std::fs::remove_file(&partial);
    let mut out = std::fs::File::options()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    out.write_all(text.as_bytes())?;
    out.sync_all()?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Make a token with `role` named `name` in the file at `path`; returns the
/// token, which is stored nowhere.
pub fn create(path: &Path, role: &Role, name: &str) -> anyhow::Result<String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        bail!("token name {name:?} must be letters, digits, '-', '_' or '.'");
    }
    let mut file = read(path)?;
    if file.tokens.iter().any(|t| t.name == name) {
        bail!(
            "a token named {name:?} exists in {}; revoke it first or pick another name",
            path.display()
        );
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token = format!("plx_{}", hex(&secret));
    file.tokens.push(Entry {
        name: name.to_owned(),
        role: role.to_string(),
        sha256: hex(&Sha256::digest(token.as_bytes())),
        created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    });
    write(path, &file)?;
    Ok(token)
}

/// Remove the token named `name`; false if there was none.
pub fn revoke(path: &Path, name: &str) -> anyhow::Result<bool> {
    let mut file = read(path)?;
    let before = file.tokens.len();
    file.tokens.retain(|t| t.name != name);
    if file.tokens.len() == before {
        return Ok(false);
    }
    write(path, &file)?;
    Ok(true)
}

/// The tokens in the file, for `plexus token ls`.
pub fn list(path: &Path) -> anyhow::Result<Vec<Entry>> {
    Ok(read(path)?.tokens)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert_eq!(Role::parse("read"), Ok(Role::Read));
        assert_eq!(
            Role::parse("ingest:lab-a"),
            Ok(Role::Ingest("lab-a".into()))
        );
        assert!(Role::parse("ingest:").is_err());
        assert!(Role::parse("admin").is_err());
        assert!(Role::Operate.grants(&Role::Read));
        assert!(!Role::Read.grants(&Role::Operate));
        assert!(!Role::Operate.grants(&Role::Ingest("a".into())));
        assert!(!Role::Ingest("a".into()).grants(&Role::Ingest("b".into())));
    }

    #[test]
    fn tokens_are_stored_hashed_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let token = create(&path, &Role::Read, "grafana").unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&token));
        let tokens = Tokens::open(&path).unwrap();
        assert_eq!(tokens.verify(&token).unwrap().name, "grafana");
        assert_eq!(tokens.verify("plx_wrong"), None);
        assert!(create(&path, &Role::Read, "grafana").is_err());
        assert!(revoke(&path, "grafana").unwrap());
        assert_eq!(
            tokens.verify(&token),
            None,
            "a revoked token is refused at once"
        );
    }
}
