//! All of Backroom's cryptography, in one crate: the master key, per-subject data keys,
//! sealed personal fields and the keyed e-mail index. Owns the `data_keys` table.
//!
//! Envelope encryption:
//!
//! - The **master key** (32 bytes) comes from `BACKROOM_MASTER_KEY` (base64) or from a key file
//!   created once in the data directory ([`MasterKey::load_or_create`]). It never touches the
//!   database; it only wraps data keys.
//! - Each subject whose personal data we keep (a customer, a guest's order) gets its own random
//!   **data key**, stored in `data_keys` wrapped (encrypted) by the master key and inserted in
//!   the same write as the subject ([`NewKey::insert`]).
//! - Every personal field is **sealed** under its subject's data key ([`DataKey::seal`]) with
//!   a context (`"ord_…/personal"`, `"cus_…/email"`) as associated data, so a sealed value
//!   copied into another row or field does not open.
//! - **Erasure** destroys the data key ([`Vault::destroy`]): every field sealed under it becomes
//!   unreadable at once, wherever it was copied (crypto-shredding); the rows keep their
//!   non-personal columns.
//! - **Look-ups by e-mail** use [`Vault::email_index`], an HMAC-SHA-256 of the trimmed,
//!   lower-cased address under a random index key that is itself stored wrapped in
//!   `data_keys`, so rotating the master key rewraps it and no index has to be recomputed.
//!
//! The cipher is XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`): its 192-bit nonces are
//! drawn at random for every seal, so there is no nonce state to keep. Stored forms are text:
//! `v1:<base64url(nonce ‖ ciphertext ‖ tag)>` for sealed fields and
//! `v1:<master key id>:<base64url(…)>` for wrapped keys.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backroom_db::{Conn, Db, storage};
use backroom_kernel::{Error, Result, id, now};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::Mac;
use rand::RngCore;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2_11::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The name of the key file created in the data directory when `BACKROOM_MASTER_KEY` is unset.
pub const KEY_FILE: &str = "master.key";

/// The id of the data key whose bytes key the e-mail index.
const EMAIL_INDEX_KEY: &str = "dk_email_index";

const NONCE: usize = 24;

fn random32() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    k
}

/// Encrypts `plain` under `key` with `aad` as associated data: `nonce ‖ ciphertext ‖ tag`.
fn encrypt(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    let mut nonce = [0u8; NONCE];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad })
        .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
    let mut out = Vec::with_capacity(NONCE + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens what [`encrypt`] made; `None` when the key, the context or the bytes are wrong.
fn decrypt(key: &[u8; 32], aad: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < NONCE + 16 {
        return None;
    }
    let (nonce, sealed) = data.split_at(NONCE);
    let nonce: [u8; NONCE] = nonce.try_into().ok()?;
    XChaCha20Poly1305::new(&(*key).into()).decrypt(&XNonce::from(nonce), Payload { msg: sealed, aad }).ok()
}

/// The key that wraps every data key. Zeroed when dropped; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    bytes: [u8; 32],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id())
    }
}

/// Where a master key came from, for `serve` to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `BACKROOM_MASTER_KEY`.
    Environment,
    /// An existing key file.
    File(PathBuf),
    /// A key file created now: back it up.
    Created(PathBuf),
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self { bytes: random32() }
    }

    /// 32 bytes, base64 (standard alphabet, padding optional; surrounding space ignored).
    pub fn from_base64(text: &str) -> Result<Self> {
        let t = text.trim();
        let bytes = STANDARD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t.trim_end_matches('=')))
            .map_err(|_| Error::internal("the master key is not base64"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| Error::internal(format!("the master key has {} bytes, not 32", b.len())))?;
        Ok(Self { bytes })
    }

    /// The key in base64, for a key file or a backup.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// A short public name of the key (the first 8 hex digits of a hash of it), stored with
    /// every wrapped key so a wrong master key is named, not mistaken for corruption.
    pub fn id(&self) -> String {
        let d = Sha256::new().chain_update(b"backroom master key id\0").chain_update(self.bytes).finalize();
        hex8(&d)
    }

    /// The key from `env_value` (`BACKROOM_MASTER_KEY`) when given; otherwise from
    /// `<data_dir>/master.key`, created (mode 0600, never overwritten) on first use.
    pub fn load_or_create(env_value: Option<&str>, data_dir: &Path) -> Result<(Self, KeySource)> {
        if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
            return Self::from_base64(v)
                .map(|k| (k, KeySource::Environment))
                .map_err(|e| Error::internal(format!("BACKROOM_MASTER_KEY: {e}")));
        }
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let key = Self::from_base64(&text).map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
                Ok((key, KeySource::File(path)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                write_new_key_file(&path, &key)?;
                Ok((key, KeySource::Created(path)))
            }
            Err(e) => Err(Error::internal(format!("reading {}: {e}", path.display()))),
        }
    }

    fn wrap(&self, key_id: &str, key: &[u8; 32]) -> String {
        format!("v1:{}:{}", self.id(), URL_SAFE_NO_PAD.encode(encrypt(&self.bytes, key_id.as_bytes(), key)))
    }

    fn unwrap(&self, key_id: &str, wrapped: &str) -> Result<[u8; 32]> {
        let mut parts = wrapped.splitn(3, ':');
        let (Some("v1"), Some(master), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::internal(format!("data key {key_id} is not in a known format")));
        };
        if master != self.id() {
            return Err(Error::internal(format!(
                "data key {key_id} was wrapped by master key {master}, but this process has master key {}: \
                 is BACKROOM_MASTER_KEY (or the data directory's {KEY_FILE}) the right one? Several processes on \
                 one database need the same key: set BACKROOM_MASTER_KEY for all of them",
                self.id()
            )));
        }
        let data =
            URL_SAFE_NO_PAD.decode(body).map_err(|_| Error::internal(format!("data key {key_id} is damaged")))?;
        let plain = decrypt(&self.bytes, key_id.as_bytes(), &data)
            .ok_or_else(|| Error::internal(format!("data key {key_id} does not open with master key {master}")))?;
        plain.try_into().map_err(|_| Error::internal(format!("data key {key_id} has the wrong length")))
    }
}

fn hex8(d: &[u8]) -> String {
    d.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Writes a new key file readable by its owner only; refuses to replace an existing one.
fn write_new_key_file(path: &Path, key: &MasterKey) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| Error::internal(format!("creating {}: {e}", path.display())))?;
    f.write_all(format!("{}\n", key.to_base64()).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))
}

/// One subject's key. Seals and opens its personal fields.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey {
    bytes: [u8; 32],
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(…)")
    }
}

impl DataKey {
    /// Seals `plain` for the place named by `context` (e.g. `"cus_…/email"`).
    pub fn seal(&self, context: &str, plain: &str) -> String {
        format!("v1:{}", URL_SAFE_NO_PAD.encode(encrypt(&self.bytes, context.as_bytes(), plain.as_bytes())))
    }

    /// Opens what [`DataKey::seal`] made for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String> {
        let refuse = || Error::internal(format!("a sealed field of {context} does not open"));
        let body = sealed.strip_prefix("v1:").ok_or_else(refuse)?;
        let data = URL_SAFE_NO_PAD.decode(body).map_err(|_| refuse())?;
        let plain = decrypt(&self.bytes, context.as_bytes(), &data).ok_or_else(refuse)?;
        String::from_utf8(plain).map_err(|_| refuse())
    }

    /// Seals `value` as JSON.
    pub fn seal_json<T: Serialize>(&self, context: &str, value: &T) -> Result<String> {
        let mut json = serde_json::to_string(value).map_err(Error::internal)?;
        let sealed = self.seal(context, &json);
        json.zeroize();
        Ok(sealed)
    }

    /// Opens a value sealed by [`DataKey::seal_json`].
    pub fn open_json<T: DeserializeOwned>(&self, context: &str, sealed: &str) -> Result<T> {
        let mut json = self.open(context, sealed)?;
        let value = serde_json::from_str(&json).map_err(|e| Error::internal(format!("sealed field of {context}: {e}")));
        json.zeroize();
        value
    }
}

/// A data key made by [`Vault::new_key`], to be stored with [`NewKey::insert`] in the same write
/// as the subject it protects.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// `dk_…`: what the subject's row stores as its `key_id`.
    pub id: String,
    pub key: DataKey,
    wrapped: String,
}

impl NewKey {
    /// Stores the wrapped key in the caller's transaction or writer job.
    pub async fn insert(&self, conn: &mut Conn<'_>) -> Result<()> {
        backroom_db::sql::query("INSERT INTO data_keys (id, wrapped, created_at) VALUES ($1, $2, $3)")
            .bind(&self.id)
            .bind(&self.wrapped)
            .bind(now())
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(storage)
    }
}

/// The vault: the master key and the e-mail index key. Cheap to clone.
#[derive(Clone)]
pub struct Vault(Arc<Inner>);

struct Inner {
    master: MasterKey,
    index_key: DataKey,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vault({:?})", self.0.master)
    }
}

impl Vault {
    /// Opens the vault on `db` with `master`: loads the e-mail index key, creating it on the
    /// first start. A master key that does not open the stored keys is refused here, at start,
    /// with a message that names both keys' ids.
    pub async fn open(db: &Db, master: MasterKey) -> Result<Self> {
        let fresh = random32();
        let mut tx = db.begin().await?;
        backroom_db::sql::query(
            "INSERT INTO data_keys (id, wrapped, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(EMAIL_INDEX_KEY)
        .bind(master.wrap(EMAIL_INDEX_KEY, &fresh))
        .bind(now())
        .execute(&mut tx.conn())
        .await
        .map_err(storage)?;
        let wrapped: String = backroom_db::sql::query("SELECT wrapped FROM data_keys WHERE id = $1")
            .bind(EMAIL_INDEX_KEY)
            .fetch_scalar(&mut tx.conn())
            .await
            .map_err(storage)?;
        tx.commit().await?;
        let index_key = DataKey { bytes: master.unwrap(EMAIL_INDEX_KEY, &wrapped)? };
        Ok(Self(Arc::new(Inner { master, index_key })))
    }

    /// The master key's public id (see [`MasterKey::id`]).
    pub fn master_id(&self) -> String {
        self.0.master.id()
    }

    /// A fresh data key, wrapped by the master key; store it with [`NewKey::insert`].
    pub fn new_key(&self) -> NewKey {
        let id = id::new("dk");
        let key = DataKey { bytes: random32() };
        let wrapped = self.0.master.wrap(&id, &key.bytes);
        NewKey { id, key, wrapped }
    }

    /// The data keys with these ids; a destroyed (or never stored) key is absent from the map.
    pub async fn keys(&self, conn: &mut Conn<'_>, ids: &[String]) -> Result<HashMap<String, DataKey>> {
        let mut wanted: Vec<&String> = ids.iter().collect();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let sql =
            format!("SELECT id, wrapped FROM data_keys WHERE id IN {}", backroom_db::sql::in_list(wanted.len(), 1));
        let rows: Vec<(String, String)> = backroom_db::sql::query(sql)
            .bind_all(wanted.iter().map(|s| s.as_str()))
            .fetch_all(conn)
            .await
            .map_err(storage)?;
        rows.into_iter()
            .map(|(id, wrapped)| {
                let bytes = self.0.master.unwrap(&id, &wrapped)?;
                Ok((id, DataKey { bytes }))
            })
            .collect()
    }

    /// One data key; `None` when destroyed.
    pub async fn key(&self, conn: &mut Conn<'_>, id: &str) -> Result<Option<DataKey>> {
        Ok(self.keys(conn, &[id.to_owned()]).await?.remove(id))
    }

    /// Destroys a data key in the caller's transaction: every field sealed under it becomes
    /// unreadable. `false` when it was already gone.
    pub async fn destroy(conn: &mut Conn<'_>, id: &str) -> Result<bool> {
        if id == EMAIL_INDEX_KEY {
            return Err(Error::internal("the e-mail index key is not a subject's key"));
        }
        let n = backroom_db::sql::query("DELETE FROM data_keys WHERE id = $1")
            .bind(id)
            .execute(conn)
            .await
            .map_err(storage)?;
        Ok(n > 0)
    }

    /// The keyed hash (hex) of an e-mail address, trimmed and lower-cased: what look-ups by
    /// e-mail compare, so the address itself is never stored in clear.
    pub fn email_index(&self, email: &str) -> String {
        let norm = email.trim().to_lowercase();
        let mut mac = <hmac::Hmac<Sha256>>::new_from_slice(&self.0.index_key.bytes).expect("HMAC takes any key length");
        mac.update(norm.as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The keyed hash (hex) of `value` for `purpose` (such as `risk/token`), as it is: for
    /// values compared only for equality and never shown (risk signals' client addresses and
    /// payment tokens). The purpose keeps the hashes of different kinds of value apart, and
    /// apart from [`Vault::email_index`].
    pub fn keyed_hash(&self, purpose: &str, value: &str) -> String {
        let mut mac = <hmac::Hmac<Sha256>>::new_from_slice(&self.0.index_key.bytes).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Rewraps every stored data key from `old` to `new` in one transaction; the sealed fields
    /// and the e-mail index stay as they are. Run with the store stopped
    /// (`backroom master-key rotate`); returns how many keys were rewrapped.
    pub async fn rotate(db: &Db, old: &MasterKey, new: &MasterKey) -> Result<u64> {
        let mut tx = db.begin().await?;
        let rows: Vec<(String, String)> = backroom_db::sql::query("SELECT id, wrapped FROM data_keys ORDER BY id")
            .fetch_all(&mut tx.conn())
            .await
            .map_err(storage)?;
        let mut n = 0;
        for (id, wrapped) in rows {
            let mut bytes = match old.unwrap(&id, &wrapped) {
                Ok(b) => b,
                // Already rewrapped by an interrupted earlier run: leave it.
                Err(_) if new.unwrap(&id, &wrapped).is_ok() => continue,
                Err(e) => return Err(e),
            };
            backroom_db::sql::query("UPDATE data_keys SET wrapped = $2 WHERE id = $1")
                .bind(&id)
                .bind(new.wrap(&id, &bytes))
                .execute(&mut tx.conn())
                .await
                .map_err(storage)?;
            bytes.zeroize();
            n += 1;
        }
        tx.commit().await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sealed_fields_open_only_with_their_key_and_context() {
        let k = DataKey { bytes: random32() };
        let other = DataKey { bytes: random32() };
        let s = k.seal("cus_1/email", "ana@example.com");
        assert!(!s.contains("ana"));
        assert_eq!(k.open("cus_1/email", &s).unwrap(), "ana@example.com");
        assert!(k.open("cus_2/email", &s).is_err(), "another row's context");
        assert!(other.open("cus_1/email", &s).is_err(), "another key");
        assert!(k.open("cus_1/email", "v1:AAAA").is_err());
        assert!(k.open("cus_1/email", "garbage").is_err());
        assert_ne!(k.seal("c", "x"), k.seal("c", "x"), "a fresh nonce every time");
    }

    #[test]
    fn wrapped_keys_name_their_master_key() {
        let (m1, m2) = (MasterKey::generate(), MasterKey::generate());
        let w = m1.wrap("dk_1", &[7; 32]);
        assert_eq!(m1.unwrap("dk_1", &w).unwrap(), [7; 32]);
        let e = m2.unwrap("dk_1", &w).unwrap_err();
        let e = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
        assert!(e.contains(&m1.id()) && e.contains(&m2.id()), "{e}");
        assert!(m1.unwrap("dk_2", &w).is_err(), "bound to its id");
    }

    #[test]
    fn master_keys_parse_from_base64_of_32_bytes() {
        let k = MasterKey::generate();
        assert_eq!(MasterKey::from_base64(&format!(" {}\n", k.to_base64())).unwrap().bytes, k.bytes);
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(!format!("{k:?}").contains(&k.to_base64()));
    }

    #[test]
    fn the_key_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, s1) = MasterKey::load_or_create(None, dir.path()).unwrap();
        assert!(matches!(s1, KeySource::Created(_)));
        let (k2, s2) = MasterKey::load_or_create(Some(""), dir.path()).unwrap();
        assert!(matches!(s2, KeySource::File(_)));
        assert_eq!(k1.bytes, k2.bytes);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let env = MasterKey::generate();
        let (k3, s3) = MasterKey::load_or_create(Some(&env.to_base64()), dir.path()).unwrap();
        assert_eq!((k3.bytes, s3), (env.bytes, KeySource::Environment));
        assert!(MasterKey::load_or_create(Some("bad"), dir.path()).is_err());
    }

    proptest! {
        #[test]
        fn any_text_round_trips(text in ".{0,300}", ctx in "[a-z_0-9/]{1,30}") {
            let k = DataKey { bytes: random32() };
            let s = k.seal(&ctx, &text);
            prop_assert_eq!(k.open(&ctx, &s).unwrap(), text);
        }
    }
}
