//! SHA-256 digests as hex, for cache keys and the config hash on pod templates.

use sha2::{Digest, Sha256};

/// The hex SHA-256 of `parts`, each followed by a NUL byte (so ("ab", "c") ≠ ("a", "bc")).
pub fn sha256_hex<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
