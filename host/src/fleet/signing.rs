//! Plugin signatures: ed25519 over a component's SHA-256 digest.
//!
//! A key pair is made by `plexus keygen`: the private key goes to a file
//! (mode 0600) that `plexus deploy --sign` reads, the public key
//! (`ed25519:<hex>`) to the hosts' `[host].trusted_keys`. What is signed is
//! `plexus-plugin:sha256:<hex digest>`, so a signature made for a plugin
//! can mean nothing else.

use std::path::Path;

use anyhow::Context as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

const PREFIX: &str = "ed25519:";

/// What is signed for a component with this digest.
fn message(digest: &str) -> String {
    format!("plexus-plugin:sha256:{digest}")
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

    /// Whether `signature` (hex) signs the component with `digest`.
    pub fn verifies(&self, digest: &str, signature: &str) -> bool {
        let Some(bytes) = decode_hex(signature).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            return false;
        };
        self.0
            .verify(message(digest).as_bytes(), &Signature::from_bytes(&bytes))
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

    /// Sign the component with `digest`; hex.
    pub fn sign(&self, digest: &str) -> String {
        encode_hex(&self.0.sign(message(digest).as_bytes()).to_bytes())
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
        let signature = key.sign(&digest);
        let public = PublicKey::parse(&key.public().to_string()).map_err(anyhow::Error::msg)?;
        assert!(public.verifies(&digest, &signature));
        assert!(!public.verifies(&"cd".repeat(32), &signature));
        assert!(!other.public().verifies(&digest, &signature));
        assert!(!public.verifies(&digest, "zz"));
        Ok(())
    }

    #[test]
    fn malformed_public_keys_are_refused() {
        assert!(PublicKey::parse("ed25519:abc").is_err());
        assert!(PublicKey::parse(&"ab".repeat(32)).is_err());
    }
}
