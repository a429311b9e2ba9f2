//! Staff authentication and authorisation. Owns `api_keys`.
//!
//! An API key is 32 random bytes shown once (`bk_` + 64 hex digits); only its SHA-256 is
//! stored, so a leaked database does not leak keys. (A fast hash is right here: the key has
//! 256 bits of entropy, so there is nothing to brute-force, unlike a password.)
//!
//! What each role may do is decided in one place, [`Role::allows`]; full RBAC with custom
//! roles and scopes grows from there.

use std::fmt;

use backroom_db::{Db, on_conn, storage};
use backroom_kernel::{Error, Result, id, now};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A staff role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including managing API keys.
    Owner,
    /// Everything but managing API keys.
    Admin,
    /// Catalog and stock: read and write.
    Editor,
    /// Read only (catalog, stock, orders).
    Viewer,
}

/// Something a staff member may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    CatalogRead,
    CatalogWrite,
    InventoryRead,
    InventoryWrite,
    OrdersRead,
    /// The outbox and other operational views.
    OpsRead,
    KeysManage,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Editor, Role::Viewer];

    /// The one place that decides what a role may do.
    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Owner => true,
            Role::Admin => !matches!(p, KeysManage),
            Role::Editor => matches!(p, CatalogRead | CatalogWrite | InventoryRead | InventoryWrite),
            Role::Viewer => matches!(p, CatalogRead | InventoryRead | OrdersRead),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling: the key's id (`bootstrap` for `BACKROOM_ADMIN_TOKEN`) and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
}

impl Principal {
    /// `Err(Forbidden)` unless the role allows `p`.
    pub fn require(&self, p: Permission) -> std::result::Result<(), Forbidden> {
        if self.role.allows(p) { Ok(()) } else { Err(Forbidden) }
    }
}

/// The caller's role lacks a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden;

/// A stored API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: RoleText,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A role as read from the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct RoleText(pub Role);

impl TryFrom<String> for RoleText {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        Role::parse(&s).map(RoleText).ok_or_else(|| format!("unknown role {s}"))
    }
}

/// SHA-256 of a token, hex encoded.
fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two equal-length strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The auth service.
#[derive(Debug, Clone)]
pub struct Auth {
    db: Db,
    /// SHA-256 of `BACKROOM_ADMIN_TOKEN`, when set.
    bootstrap_hash: Option<String>,
}

impl Auth {
    pub fn new(db: Db, bootstrap_token: Option<&str>) -> Self {
        Self { db, bootstrap_hash: bootstrap_token.filter(|t| !t.is_empty()).map(hash) }
    }

    /// Creates a key with `role`; returns it and the secret, which is never shown again.
    #[tracing::instrument(skip(self))]
    pub async fn create_key(&self, name: &str, role: Role) -> Result<(ApiKey, String)> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::field("name", "must be 1–100 characters"));
        }
        backroom_kernel::check_display(name).map_err(|e| Error::field("name", e.to_string()))?;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("bk_{}", hex::encode(secret));
        let key = ApiKey {
            id: id::new("key"),
            name: name.to_owned(),
            role: RoleText(role),
            created_at: now(),
            revoked_at: None,
        };
        let mut tx = self.db.begin().await?;
        on_conn!(&mut tx.conn(), c => sqlx::query(
            "INSERT INTO api_keys (id, name, role, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(role.as_str())
        .bind(hash(&token))
        .bind(key.created_at)
        .execute(&mut *c)
        .await
        .map(|_| ())
        .map_err(storage))?;
        tx.commit().await?;
        Ok((key, token))
    }

    /// The principal a bearer token stands for, or `None` for an unknown or revoked key.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        if token.is_empty() || token.len() > 200 {
            return Ok(None);
        }
        let h = hash(token);
        if let Some(b) = &self.bootstrap_hash
            && constant_time_eq(b.as_bytes(), h.as_bytes())
        {
            return Ok(Some(Principal { key_id: "bootstrap".into(), role: Role::Owner }));
        }
        let mut r = self.db.read().await?;
        let row: Option<(String, String)> = on_conn!(&mut r.conn(), c => sqlx::query_as(
            "SELECT id, role FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&h)
        .fetch_optional(&mut *c)
        .await
        .map_err(storage))?;
        Ok(row.and_then(|(key_id, role)| Role::parse(&role).map(|role| Principal { key_id, role })))
    }

    /// All keys, newest first, without secrets.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let mut r = self.db.read().await?;
        on_conn!(&mut r.conn(), c => sqlx::query_as(
            "SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY id DESC",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(storage))
    }

    /// Revokes a key; it stops working at once.
    #[tracing::instrument(skip(self))]
    pub async fn revoke_key(&self, id: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        let n = on_conn!(&mut tx.conn(), c => sqlx::query(
            "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        .map_err(storage))?;
        if n == 0 {
            return Err(Error::not_found("api key"));
        }
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_they_should() {
        use Permission::*;
        assert!(Role::Owner.allows(KeysManage));
        assert!(!Role::Admin.allows(KeysManage));
        assert!(Role::Editor.allows(InventoryWrite));
        assert!(Role::Viewer.allows(CatalogRead));
        assert!(!Role::Viewer.allows(CatalogWrite));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
