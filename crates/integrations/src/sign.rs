//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): a secret is `whsec_`
//! and the base64 of its key bytes; a signature is `v1,` and the base64 of the HMAC-SHA256,
//! under those key bytes, of `{webhook-id}.{webhook-timestamp}.{body}`. Several signatures
//! (the current secret's and, for a while after a rotation, the previous one's) are sent
//! space-separated in one `webhook-signature` header; a receiver accepts any that matches.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use rand::RngCore;

/// The prefix of a secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a secret (`whsec_` optional, as the specification's libraries accept).
pub fn key_of(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret)).ok()
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` under `secret`'s key bytes.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = key_of(secret)?;
    let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().filter_map(|s| signature(s, id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signs_like_the_reference_implementation() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(signature(secret, id, 1614265330, body).unwrap(), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let two = header(&[secret, secret], id, 1614265330, body);
        assert_eq!(two.split(' ').count(), 2);
    }

    #[test]
    fn fresh_secrets_are_32_random_bytes() {
        let a = new_secret();
        assert!(a.starts_with("whsec_"));
        assert_eq!(key_of(&a).unwrap().len(), 32);
        assert_ne!(a, new_secret());
    }
}
