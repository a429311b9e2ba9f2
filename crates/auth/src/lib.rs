//! Staff authentication and authorisation. Owns `api_keys`.
//!
//! An API key is 32 random bytes shown once (`bk_` + 64 hex digits); only its SHA-256 is
//! stored, so a leaked database does not leak keys. (A fast hash is right here: the key has
//! 256 bits of entropy, so there is nothing to brute-force, unlike a password.)
//!
//! What each role may do is decided in one place, [`Role::grants`]; full RBAC with custom
//! roles and scopes grows from there. Owns `audit_log` too ([`audit`]).

pub mod audit;

use std::fmt;

use backroom_db::{Db, on_conn, storage};
use backroom_kernel::{Error, Result, id, now};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A staff role. What each may do is [`Role::grants`], the one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, owner keys included.
    Owner,
    /// Everything but owner keys.
    Admin,
    /// The catalog, stock, prices, promotions, regions, taxes and shipping options; reads
    /// orders without their personal fields.
    Editor,
    /// Orders, fulfilment, refunds and returns; reads customers, the catalog and stock.
    Orders,
    /// Reads customers and orders, exports a customer's data; reads the catalog and stock.
    Support,
    /// Reads everything but customers, keys and the outbox; orders without their personal
    /// fields.
    Viewer,
}

/// Something a staff member may be allowed to do. Each `/admin` route names the one it needs
/// on its registration line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    CatalogRead,
    CatalogWrite,
    InventoryRead,
    InventoryWrite,
    PricesRead,
    PricesWrite,
    PromotionsRead,
    PromotionsWrite,
    RegionsRead,
    RegionsWrite,
    TaxesRead,
    TaxesWrite,
    ShippingRead,
    ShippingWrite,
    OrdersRead,
    /// Orders after the sale: cancel, fulfil, refund, returns.
    OrdersWrite,
    /// Customers and their groups, without anything a customer wrote about themselves being
    /// hidden: see [`Permission::PersonalDataRead`].
    CustomersRead,
    /// Customer groups and their members, erasing a customer.
    CustomersWrite,
    /// `GET /admin/customers/{id}/export`: every personal field of a customer.
    CustomersExport,
    /// Names, e-mails, phones and addresses (of customers, and on orders). A role without it
    /// reads orders with those fields `null`.
    PersonalDataRead,
    /// The audit log of staff writes.
    AuditRead,
    /// The outbox and other operational views. Event payloads may hold personal data, so
    /// only roles that may see everything have it.
    OpsRead,
    /// Webhook endpoints and their delivery history. Deliveries carry orders with their
    /// personal fields to the endpoint's URL, so only roles that may see everything have it.
    WebhooksRead,
    /// Create, change, delete webhook endpoints, rotate their secrets, retry deliveries.
    WebhooksWrite,
    /// API keys of every role but `owner`: list, create, revoke.
    KeysManage,
    /// API keys with the `owner` role. Only owners hold it, so only an owner mints or
    /// revokes another owner ([`Principal::may_grant`]).
    OwnerKeys,
}

impl Permission {
    /// Every permission, in the order of the documented table.
    pub const ALL: &'static [Permission] = &[
        Permission::CatalogRead,
        Permission::CatalogWrite,
        Permission::InventoryRead,
        Permission::InventoryWrite,
        Permission::PricesRead,
        Permission::PricesWrite,
        Permission::PromotionsRead,
        Permission::PromotionsWrite,
        Permission::RegionsRead,
        Permission::RegionsWrite,
        Permission::TaxesRead,
        Permission::TaxesWrite,
        Permission::ShippingRead,
        Permission::ShippingWrite,
        Permission::OrdersRead,
        Permission::OrdersWrite,
        Permission::CustomersRead,
        Permission::CustomersWrite,
        Permission::CustomersExport,
        Permission::PersonalDataRead,
        Permission::AuditRead,
        Permission::OpsRead,
        Permission::WebhooksRead,
        Permission::WebhooksWrite,
        Permission::KeysManage,
        Permission::OwnerKeys,
    ];

    /// What the permission lets a staff member do, one line for the documentation.
    pub const fn describe(self) -> &'static str {
        use Permission::*;
        match self {
            CatalogRead => "read products, variants and categories",
            CatalogWrite => "create, change and delete products, variants and categories",
            InventoryRead => "read stock, its ledger and stock locations",
            InventoryWrite => "set stock, create stock locations",
            PricesRead => "read price lists",
            PricesWrite => "change price lists",
            PromotionsRead => "read promotions",
            PromotionsWrite => "change promotions",
            RegionsRead => "read regions",
            RegionsWrite => "change regions",
            TaxesRead => "read tax rates",
            TaxesWrite => "change tax rates",
            ShippingRead => "read shipping options",
            ShippingWrite => "change shipping options",
            OrdersRead => "read orders",
            OrdersWrite => "cancel, fulfil, refund orders, handle returns",
            CustomersRead => "read customers and customer groups",
            CustomersWrite => "change customer groups, erase a customer",
            CustomersExport => "export a customer's personal data",
            PersonalDataRead => "see names, e-mails, phones and addresses (on orders too; `null` otherwise)",
            AuditRead => "read the audit log",
            OpsRead => "read the outbox (its event payloads may hold personal data)",
            WebhooksRead => "read webhook endpoints and their deliveries",
            WebhooksWrite => "create, change and delete webhook endpoints, rotate their secrets, retry deliveries",
            KeysManage => "list, create and revoke API keys (no higher role than one's own)",
            OwnerKeys => "create and revoke `owner` keys",
        }
    }
}

/// What a role is granted: the rows of [`Role::grants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Every permission.
    All,
    /// Every permission but these.
    AllBut(&'static [Permission]),
    /// These permissions only.
    Only(&'static [Permission]),
}

impl Grant {
    const fn allows(self, p: Permission) -> bool {
        let (list, listed_means) = match self {
            Grant::All => return true,
            Grant::AllBut(list) => (list, false),
            Grant::Only(list) => (list, true),
        };
        let mut i = 0;
        while i < list.len() {
            if list[i] as u8 == p as u8 {
                return listed_means;
            }
            i += 1;
        }
        !listed_means
    }
}

impl Role {
    pub const ALL: [Role; 6] = [Role::Owner, Role::Admin, Role::Editor, Role::Orders, Role::Support, Role::Viewer];

    /// The one table of what each role may do.
    pub const fn grants(self) -> Grant {
        use Permission::*;
        match self {
            Role::Owner => Grant::All,
            Role::Admin => Grant::AllBut(&[OwnerKeys]),
            Role::Editor => Grant::Only(&[
                CatalogRead,
                CatalogWrite,
                InventoryRead,
                InventoryWrite,
                PricesRead,
                PricesWrite,
                PromotionsRead,
                PromotionsWrite,
                RegionsRead,
                RegionsWrite,
                TaxesRead,
                TaxesWrite,
                ShippingRead,
                ShippingWrite,
                OrdersRead,
            ]),
            Role::Orders => {
                Grant::Only(&[OrdersRead, OrdersWrite, CustomersRead, PersonalDataRead, CatalogRead, InventoryRead])
            }
            Role::Support => {
                Grant::Only(&[OrdersRead, CustomersRead, CustomersExport, PersonalDataRead, CatalogRead, InventoryRead])
            }
            Role::Viewer => Grant::Only(&[
                CatalogRead,
                InventoryRead,
                PricesRead,
                PromotionsRead,
                RegionsRead,
                TaxesRead,
                ShippingRead,
                OrdersRead,
                AuditRead,
            ]),
        }
    }

    /// Whether the role may do `p`: [`Role::grants`].
    pub const fn allows(self, p: Permission) -> bool {
        self.grants().allows(p)
    }

    /// Whether this role may do everything `other` may: a key of this role may create and
    /// revoke keys of `other` (with [`Permission::KeysManage`]).
    pub fn covers(self, other: Role) -> bool {
        Permission::ALL.iter().all(|&p| !other.allows(p) || self.allows(p))
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Orders => "orders",
            Role::Support => "support",
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

/// Who did something as staff. Today always an API key; staff users who sign in with a
/// password will be another kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An API key, by id (`bootstrap` for `BACKROOM_ADMIN_TOKEN`).
    ApiKey(String),
}

impl Actor {
    /// The kind, as the audit log writes it (`api_key`).
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::ApiKey(_) => "api_key",
        }
    }

    /// The id of the key (or, later, the staff user).
    pub fn id(&self) -> &str {
        match self {
            Actor::ApiKey(id) => id,
        }
    }
}

/// Who is calling, and with which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub actor: Actor,
    pub role: Role,
}

impl Principal {
    /// The bootstrap key (`BACKROOM_ADMIN_TOKEN`): an owner.
    pub fn bootstrap() -> Self {
        Principal { actor: Actor::ApiKey("bootstrap".into()), role: Role::Owner }
    }

    /// Whether the role allows `p`.
    pub fn may(&self, p: Permission) -> bool {
        self.role.allows(p)
    }

    /// `Err(Forbidden)` unless the role allows `p`.
    pub fn require(&self, p: Permission) -> std::result::Result<(), Forbidden> {
        if self.may(p) { Ok(()) } else { Err(Forbidden) }
    }

    /// Whether this caller may create or revoke a key of `role`: it manages keys, and `role`
    /// may do nothing it may not (so an `admin` never mints an `owner`).
    pub fn may_grant(&self, role: Role) -> bool {
        self.may(Permission::KeysManage) && self.role.covers(role)
    }
}

/// The caller's role lacks a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden;

impl From<Forbidden> for Error {
    fn from(_: Forbidden) -> Self {
        Error::Refused {
            code: backroom_kernel::Code::Forbidden,
            message: "the key's role lacks the permission".into(),
            details: serde_json::Value::Null,
        }
    }
}

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

    /// [`Auth::create_key`] for a caller: `403 forbidden` when `role` may do something the
    /// caller's role may not ([`Principal::may_grant`]).
    pub async fn create_key_as(&self, caller: &Principal, name: &str, role: Role) -> Result<(ApiKey, String)> {
        if !caller.may_grant(role) {
            return Err(Forbidden.into());
        }
        self.create_key(name, role).await
    }

    /// Creates a key with `role`; returns it and the secret, which is never shown again. No
    /// ceiling: for the command line, which holds the database already.
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
            return Ok(Some(Principal::bootstrap()));
        }
        let mut r = self.db.read().await?;
        let row: Option<(String, String)> = on_conn!(&mut r.conn(), c => sqlx::query_as(
            "SELECT id, role FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&h)
        .fetch_optional(&mut *c)
        .await
        .map_err(storage))?;
        Ok(row.and_then(|(id, role)| Role::parse(&role).map(|role| Principal { actor: Actor::ApiKey(id), role })))
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

    /// Revokes a key; it stops working at once. `403 forbidden` when the key's role may do
    /// something the caller's role may not ([`Principal::may_grant`]).
    #[tracing::instrument(skip(self))]
    pub async fn revoke_key(&self, caller: &Principal, id: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        let role: Option<String> = on_conn!(&mut tx.conn(), c => sqlx::query_scalar(
            "SELECT role FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(storage))?;
        let Some(role) = role else {
            return Err(Error::not_found("api key"));
        };
        if !Role::parse(&role).is_some_and(|r| caller.may_grant(r)) {
            return Err(Forbidden.into());
        }
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
        assert!(Permission::ALL.iter().all(|&p| Role::Owner.allows(p)));
        assert!(Role::Admin.allows(KeysManage) && !Role::Admin.allows(OwnerKeys));
        assert!(Role::Editor.allows(InventoryWrite) && Role::Editor.allows(ShippingWrite));
        assert!(Role::Editor.allows(OrdersRead) && !Role::Editor.allows(PersonalDataRead));
        assert!(!Role::Editor.allows(CustomersRead) && !Role::Editor.allows(KeysManage));
        assert!(Role::Orders.allows(OrdersWrite) && Role::Orders.allows(CustomersRead));
        assert!(Role::Orders.allows(CatalogRead) && !Role::Orders.allows(CatalogWrite));
        assert!(!Role::Orders.allows(CustomersExport) && !Role::Orders.allows(CustomersWrite));
        assert!(Role::Support.allows(CustomersExport) && !Role::Support.allows(OrdersWrite));
        assert!(Role::Viewer.allows(CatalogRead) && Role::Viewer.allows(AuditRead));
        assert!(!Role::Viewer.allows(CatalogWrite) && !Role::Viewer.allows(CustomersRead));
        assert!(!Role::Viewer.allows(PersonalDataRead) && !Role::Viewer.allows(KeysManage));
        for r in [Role::Editor, Role::Orders, Role::Support, Role::Viewer] {
            assert!(!r.allows(AuditRead) || r == Role::Viewer, "{r}");
            for p in Permission::ALL {
                let write = format!("{p:?}").ends_with("Write") || matches!(p, KeysManage | OwnerKeys);
                if r == Role::Viewer {
                    assert!(!write || !r.allows(*p), "a viewer may {p:?}");
                }
            }
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn no_key_mints_a_higher_role() {
        let as_role = |role| Principal { actor: Actor::ApiKey("key_x".into()), role };
        for r in Role::ALL {
            assert!(as_role(Role::Owner).may_grant(r), "owner -> {r}");
            assert_eq!(as_role(Role::Admin).may_grant(r), r != Role::Owner, "admin -> {r}");
            for weak in [Role::Editor, Role::Orders, Role::Support, Role::Viewer] {
                assert!(!as_role(weak).may_grant(r), "{weak} -> {r}");
            }
        }
        assert!(Role::Admin.covers(Role::Editor) && !Role::Editor.covers(Role::Orders));
        assert!(Role::Orders.covers(Role::Orders) && !Role::Orders.covers(Role::Support));
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
