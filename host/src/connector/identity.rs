//! The identity of a record entering Plexus through a source: where it came
//! from, the plugin's key, and a digest of its content.
//!
//! A key alone is not an identity: two labs whose senders both number
//! messages from 1001, or one sender whose counter restarts, would have a
//! later message dropped as a duplicate of an earlier one after it was
//! acknowledged. With the origin (an MLLP sender's MSH-3/MSH-4, an HTTP
//! sender's token) and the content in the identity, an identical
//! retransmission still gets the same id, and JetStream drops it, while a
//! different message that reuses a key is stored. Such a reuse — the same
//! key from another sender, or with other content — is logged and counted in
//! `plexus_key_collisions_total`.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

/// Keys remembered per connector to notice reuse; past this the memory
/// starts over (reuse is reported, never acted on).
const REMEMBERED: usize = 100_000;

/// The identity of a source record: `[<origin>|]<key>#<digest>`, the digest
/// taken over the origin, the key and the content (so no two different
/// records share one, whatever their keys hold). `key` is the plugin's key,
/// or for a record without one, its place in the message it came in.
pub(super) fn of(origin: &str, key: &str, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update((origin.len() as u64).to_le_bytes());
    h.update(origin.as_bytes());
    h.update((key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.update(payload);
    let digest = h.finalize();
    let mut id = String::with_capacity(origin.len() + key.len() + 34);
    if !origin.is_empty() {
        escape_into(&mut id, origin);
        id.push('|');
    }
    escape_into(&mut id, key);
    id.push('#');
    for b in &digest[..16] {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Append `text` with control characters and `%` percent-encoded: an
/// identity travels in headers, which cannot hold line breaks.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_control() || c == '%' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        } else {
            out.push(c);
        }
    }
}

/// Notices a key that comes back with different content.
#[derive(Default)]
pub(super) struct Collisions {
    /// Per key, the identities it has had (the latest few).
    seen: Mutex<HashMap<u64, Vec<u64>>>,
}

/// Identities remembered per key.
const PER_KEY: usize = 8;

impl Collisions {
    /// Remember `key` with the `identity` it has; true if the key was seen
    /// before with other identities (other content, or another sender) and
    /// not with this one.
    pub(super) fn reused(&self, key: &str, identity: &str) -> bool {
        let slot = fingerprint(&[key.as_bytes()]);
        let content = fingerprint(&[identity.as_bytes()]);
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.len() >= REMEMBERED && !seen.contains_key(&slot) {
            seen.clear();
        }
        let identities = seen.entry(slot).or_default();
        if identities.contains(&content) {
            return false;
        }
        let reused = !identities.is_empty();
        if identities.len() == PER_KEY {
            identities.remove(0);
        }
        identities.push(content);
        reused
    }
}

fn fingerprint(parts: &[&[u8]]) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    // Fixed keys: the same input maps to the same slot for the process's life.
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    for part in parts {
        h.write(part);
        h.write_u8(0);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_tell_origins_and_contents_apart() {
        let a = of("LAB-A^GEN", "1001", b"MSH|order for ward 3");
        assert_eq!(a, of("LAB-A^GEN", "1001", b"MSH|order for ward 3"));
        assert_ne!(a, of("LAB-B^GEN", "1001", b"MSH|order for ward 3"));
        assert_ne!(a, of("LAB-A^GEN", "1001", b"MSH|order for ward 4"));
        assert!(a.starts_with("LAB-A^GEN|1001#") && a.len() == "LAB-A^GEN|1001#".len() + 32);
        // The separator cannot be forged by a key: the digest covers both.
        assert_ne!(of("", "a|b", b"x"), of("a", "b", b"x"));
        // Line breaks never reach a header.
        let broken = of("LAB\r", "A\nB", b"x");
        assert!(broken.starts_with("LAB%0d|A%0aB#"), "{broken}");
        assert!(!broken.contains(['\r', '\n']));
    }

    #[test]
    fn a_reused_key_with_new_content_is_noticed() {
        let c = Collisions::default();
        let first = of("LAB-A", "1001", b"one");
        assert!(!c.reused("1001", &first));
        assert!(
            !c.reused("1001", &first),
            "an identical resend is no collision"
        );
        assert!(
            c.reused("1001", &of("LAB-B", "1001", b"one")),
            "another sender"
        );
        assert!(
            c.reused("1001", &of("LAB-B", "1001", b"two")),
            "other content"
        );
        assert!(
            !c.reused("1001", &first),
            "a resend of an earlier one is no new collision"
        );
        assert!(!c.reused("1002", &of("LAB-B", "1002", b"two")));
    }
}
