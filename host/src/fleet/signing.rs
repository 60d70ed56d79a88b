//! Plugin signatures: ed25519 over a component's SHA-256 digest.
//!
//! A key pair is made by `plexus keygen`: the private key goes to a file
//! (mode 0600) that `plexus deploy --sign` reads, the public key
//! (`ed25519:<hex>`) to the hosts' `[host].trusted_keys`. What is signed is
//! `plexus-plugin:v1:<name>@<version>:<world>:sha256:<hex digest>`: a
//! signature vouches for those bytes as that release of that plugin, and
//! cannot be moved to another name, version or world.

use std::path::Path;

use anyhow::Context as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

const PREFIX: &str = "ed25519:";

/// What a signature covers: one release of one plugin.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// The plugin's name.
    pub name: &'a str,
    /// Its version.
    pub version: &'a str,
    /// The world it exports.
    pub world: &'a str,
    /// Hex SHA-256 of its component.
    pub digest: &'a str,
}

impl Release<'_> {
    fn message(&self) -> String {
        format!(
            "plexus-plugin:v1:{}@{}:{}:sha256:{}",
            self.name, self.version, self.world, self.digest
        )
    }
}

/// A trusted public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// `ed25519:<64 hex digits>`.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let hex = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("a public key looks like {PREFIX}<64 hex digits>"))?;
        let bytes: [u8; 32] = decode_hex(hex)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("a public key looks like {PREFIX}<64 hex digits>"))?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| "not a valid ed25519 public key".into())
    }

    /// Whether `signature` (hex) signs `release`.
    pub fn verifies(&self, release: &Release<'_>, signature: &str) -> bool {
        let Some(bytes) = decode_hex(signature).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            return false;
        };
        self.0
            .verify(release.message().as_bytes(), &Signature::from_bytes(&bytes))
            .is_ok()
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}", encode_hex(self.0.as_bytes()))
    }
}

/// A private key, read from its file.
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> anyhow::Result<PrivateKey> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(PrivateKey(SigningKey::from_bytes(&seed)))
    }

    /// Read a key file written by [`PrivateKey::save`].
    pub fn load(file: &Path) -> anyhow::Result<PrivateKey> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the signing key {}", file.display()))?;
        let seed: [u8; 32] = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("ed25519-private:"))
            .and_then(decode_hex)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} is not a signing key made by `plexus keygen`",
                    file.display()
                )
            })?;
        Ok(PrivateKey(SigningKey::from_bytes(&seed)))
    }

    /// Write the key to a new file only its owner can read.
    pub fn save(&self, file: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .with_context(|| format!("cannot create {}", file.display()))?;
        writeln!(
            out,
            "# Plexus plugin signing key. Keep it secret; hosts trust {}\ned25519-private:{}",
            self.public(),
            encode_hex(self.0.as_bytes())
        )
        .with_context(|| format!("cannot write {}", file.display()))
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Sign `release`; hex.
    pub fn sign(&self, release: &Release<'_>) -> String {
        encode_hex(&self.0.sign(release.message().as_bytes()).to_bytes())
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_its_digest_under_its_key() -> anyhow::Result<()> {
        let key = PrivateKey::generate()?;
        let other = PrivateKey::generate()?;
        let digest = "ab".repeat(32);
        let release = Release {
            name: "x12",
            version: "1.3.0",
            world: "transform",
            digest: &digest,
        };
        let signature = key.sign(&release);
        let public = PublicKey::parse(&key.public().to_string()).map_err(anyhow::Error::msg)?;
        assert!(public.verifies(&release, &signature));
        let other_digest = "cd".repeat(32);
        for moved in [
            Release {
                digest: &other_digest,
                ..release
            },
            Release {
                version: "1.2.0",
                ..release
            },
            Release {
                name: "x13",
                ..release
            },
            Release {
                world: "sink",
                ..release
            },
        ] {
            assert!(!public.verifies(&moved, &signature), "{moved:?}");
        }
        assert!(!other.public().verifies(&release, &signature));
        assert!(!public.verifies(&release, "zz"));
        Ok(())
    }

    #[test]
    fn malformed_public_keys_are_refused() {
        assert!(PublicKey::parse("ed25519:abc").is_err());
        assert!(PublicKey::parse(&"ab".repeat(32)).is_err());
    }
}
