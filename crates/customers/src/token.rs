//! Customer session tokens: 32 random bytes shown once (`cst_` + 64 hex digits); only their
//! SHA-256 is stored, as for API keys. A fast hash is right here: the token has 256 bits of
//! entropy, so there is nothing to brute-force.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The prefix of every customer token.
pub const PREFIX: &str = "cst_";

/// The longest token looked up; a longer one is no token of ours.
pub const MAX_LEN: usize = 200;

/// A new token.
pub fn generate() -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("{PREFIX}{}", hex::encode(secret))
}

/// SHA-256 of a token, hex encoded: what is stored and looked up.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` could be one of ours (cheap refusal before any look-up).
pub fn plausible(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_LEN
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = generate();
        let b = generate();
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 64, "{a}");
        assert_ne!(a, b);
        let h = hash(&a);
        assert_eq!(h.len(), 64);
        assert!(h.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(!h.contains(&a[PREFIX.len()..]), "the hash does not hold the secret");
        // SHA-256 of "abc".
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    proptest! {
        #[test]
        fn hashing_is_deterministic_and_tells_tokens_apart(a in "[ -~]{1,80}", b in "[ -~]{1,80}") {
            prop_assert_eq!(hash(&a), hash(&a));
            if a != b {
                prop_assert_ne!(hash(&a), hash(&b));
            }
        }
    }
}
