//! Customers (CRM): shoppers' accounts, their sign-in sessions, address books and groups.
//! Owns `customers`, `customer_sessions`, `customer_addresses`, `customer_groups`,
//! `customer_group_members`.
//!
//! **Personal data.** Every personal field (e-mail, first and last name, phone, each address)
//! is stored only sealed under the customer's own data key ([`backroom_vault`]), created with
//! the customer in the same transaction, each value bound to its place (`cus_…/email`,
//! `cus_…/addr_…`). The e-mail is found through its keyed hash (`email_index`), unique among
//! live customers. Nothing personal goes to a log line, an event or an error body: the
//! request types' `Debug` prints nothing of them, and service functions are instrumented with
//! ids only.
//!
//! **Erasure** ([`Customers::erase`]) destroys the customer's data key (crypto-shredding:
//! every copy of their sealed fields, backups included, becomes unreadable) and, in the same
//! transaction, clears the e-mail index, the sealed fields and the password hash, deletes the
//! address book, destroys the keys of the orders of their account (which keep their lines,
//! prices and totals), revokes every session and writes `customer.erased`. The row stays
//! (orders name it), showing `erased: true`. Erasing again answers the first erasure.
//!
//! **Passwords** are argon2id hashes on a bounded pool ([`password`]); **sessions** are
//! random tokens of which only a SHA-256 is stored ([`token`]), expiring after the session
//! lifetime; **sign-in failures** are limited per e-mail and per client address ([`limit`]).

pub mod limit;
pub mod model;
pub mod password;
pub mod token;
pub mod validate;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use backroom_db::outbox::{self, CustomerCreated, CustomerErased, Event};
use backroom_db::sql::{self, in_list};
use backroom_db::writer::Done;
use backroom_db::{Conn, Db, is_unique_violation, storage};
use backroom_kernel::error::Problems;
use backroom_kernel::id::CustomerId;
use backroom_kernel::{Code, Error, Page, PageRequest, Result, id, now};
use backroom_vault::{DataKey, Vault};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use limit::LoginLimiter;
pub use model::*;
pub use password::Hasher;

/// How long a session lasts by default (`BACKROOM_CUSTOMER_SESSION_TTL`).
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The most addresses one customer keeps.
pub const MAX_ADDRESSES: i64 = 50;

/// The most customers added to a group in one request.
pub const MAX_MEMBERS_PER_REQUEST: usize = 1000;

/// The module's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long a session token works after sign-in.
    pub session_ttl: Duration,
    /// Password hashes run at once.
    pub hash_permits: usize,
    /// Password hashes waiting for a turn before sign-ins are shed.
    pub hash_queue: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { session_ttl: SESSION_TTL, hash_permits: password::permits(), hash_queue: password::QUEUE }
    }
}

/// Why a sign-in was refused.
#[derive(Debug)]
pub enum LoginError {
    /// A wrong password, or an e-mail no live customer has: the same answer for both.
    InvalidCredentials,
    /// The login-failure limit ([`limit`]): retry after this long.
    RateLimited { retry_after: Duration },
    /// Anything else (storage, a shed hash).
    Other(Error),
}

impl From<Error> for LoginError {
    fn from(e: Error) -> Self {
        LoginError::Other(e)
    }
}

fn email_taken() -> Error {
    Error::refused(Code::EmailTaken, "a customer with this email exists; sign in instead")
}

/// The context a customer's field is sealed in: the ciphertext opens only there.
fn ctx(id: &CustomerId, field: &str) -> String {
    format!("{id}/{field}")
}

/// An address's fields as they are sealed together.
#[derive(Serialize, Deserialize)]
struct AddressFields {
    name: String,
    line1: String,
    line2: Option<String>,
    city: String,
    region: Option<String>,
    postal_code: String,
    country: String,
    phone: Option<String>,
}

struct CustomerRow {
    id: CustomerId,
    key_id: String,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    erased_at: Option<DateTime<Utc>>,
}

backroom_db::from_row!(CustomerRow {
    id,
    key_id,
    email,
    first_name,
    last_name,
    phone,
    created_at,
    updated_at,
    erased_at
});

const CUSTOMER_COLUMNS: &str = "id, key_id, email, first_name, last_name, phone, created_at, updated_at, erased_at";

struct AddressRow {
    id: String,
    sealed: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

backroom_db::from_row!(AddressRow { id, sealed, created_at, updated_at });

/// Opens a sealed field of a customer; `None` when there is no value or no key (erased).
fn open(key: Option<&DataKey>, id: &CustomerId, field: &str, sealed: Option<&str>) -> Result<Option<String>> {
    match (key, sealed) {
        (Some(k), Some(s)) => k.open(&ctx(id, field), s).map(Some),
        _ => Ok(None),
    }
}

fn admin_view(row: &CustomerRow, key: Option<&DataKey>) -> Result<AdminCustomer> {
    if key.is_none() && row.erased_at.is_none() {
        // A live customer without a key is a bug, never a reason to answer garbage.
        tracing::error!(customer_id = %row.id, "a live customer's data key is missing");
    }
    Ok(AdminCustomer {
        id: row.id.clone(),
        email: open(key, &row.id, "email", row.email.as_deref())?,
        first_name: open(key, &row.id, "first_name", row.first_name.as_deref())?,
        last_name: open(key, &row.id, "last_name", row.last_name.as_deref())?,
        phone: open(key, &row.id, "phone", row.phone.as_deref())?,
        erased: row.erased_at.is_some(),
        erased_at: row.erased_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn open_address(key: Option<&DataKey>, customer: &CustomerId, row: AddressRow) -> Result<Option<CustomerAddress>> {
    let (Some(key), Some(sealed)) = (key, row.sealed.as_deref()) else { return Ok(None) };
    let f: AddressFields = key.open_json(&ctx(customer, &row.id), sealed)?;
    Ok(Some(CustomerAddress {
        id: row.id,
        name: f.name,
        line1: f.line1,
        line2: f.line2,
        city: f.city,
        region: f.region,
        postal_code: f.postal_code,
        country: f.country,
        phone: f.phone,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }))
}

/// Checks an optional text: `None` stays `None`.
fn optional(
    p: &mut Problems,
    field: &str,
    v: Option<&str>,
    check: impl Fn(&str) -> Result<String, String>,
) -> Option<String> {
    v.and_then(|v| validate::field(p, field, check(v)))
}

/// Checks a whole address (a new one, or an existing one with a patch applied).
fn check_address(p: &mut Problems, a: &NewCustomerAddress) -> AddressFields {
    let text = |max: usize| move |v: &str| validate::text(v, max);
    let name = validate::field(p, "name", validate::text(&a.name, 200));
    let line1 = validate::field(p, "line1", validate::text(&a.line1, 200));
    let line2 = optional(p, "line2", a.line2.as_deref(), text(200));
    let city = validate::field(p, "city", validate::text(&a.city, 100));
    let region = optional(p, "region", a.region.as_deref(), text(100));
    let postal_code = validate::field(p, "postal_code", validate::text(&a.postal_code, 20));
    let country = validate::field(p, "country", validate::country(&a.country));
    let phone = optional(p, "phone", a.phone.as_deref(), validate::phone);
    AddressFields {
        name: name.unwrap_or_default(),
        line1: line1.unwrap_or_default(),
        line2,
        city: city.unwrap_or_default(),
        region,
        postal_code: postal_code.unwrap_or_default(),
        country: country.unwrap_or_default(),
        phone,
    }
}

/// The customers service.
#[derive(Clone)]
pub struct Customers {
    db: Db,
    vault: Vault,
    orders: backroom_orders::Orders,
    hasher: Arc<Hasher>,
    limiter: Arc<LoginLimiter>,
    settings: Settings,
}

impl std::fmt::Debug for Customers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Customers").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Customers {
    /// The service over `db`, sealing with `vault`. Makes the password pool (one hash's time).
    pub fn new(db: Db, vault: Vault, settings: Settings) -> Self {
        Customers {
            orders: backroom_orders::Orders::new(db.clone(), vault.clone()),
            db,
            vault,
            hasher: Arc::new(Hasher::new(settings.hash_permits, settings.hash_queue)),
            limiter: Arc::new(LoginLimiter::default()),
            settings,
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// This process's login-failure limit.
    pub fn limiter(&self) -> &LoginLimiter {
        &self.limiter
    }

    // ---- registration and sessions ------------------------------------------------------

    /// Registers a customer: `422` for a bad field (all of them listed), `409 email_taken`
    /// when a live customer has the e-mail.
    #[tracing::instrument(skip_all)]
    pub async fn register(&self, input: &Registration) -> Result<Registered> {
        use validate::{NAME_MAX, field};
        let mut p = Problems::new();
        let email = field(&mut p, "email", validate::email(&input.email));
        field(&mut p, "password", password::check(&input.password));
        let first_name = field(&mut p, "first_name", validate::text(&input.first_name, NAME_MAX));
        let last_name = field(&mut p, "last_name", validate::text(&input.last_name, NAME_MAX));
        let phone = optional(&mut p, "phone", input.phone.as_deref(), validate::phone);
        p.finish()?;
        let (Some(email), Some(first_name), Some(last_name)) = (email, first_name, last_name) else {
            return Err(Error::internal("checked fields missing"));
        };
        let email_index = self.vault.email_index(&email);
        // Cheap refusal before the hash; the unique index decides under a race.
        if self.live_by_email_index(&email_index).await?.is_some() {
            return Err(email_taken());
        }
        let password_hash = self.hasher.hash(&input.password).await?;
        let id = CustomerId::generate();
        let new_key = self.vault.new_key();
        let k = &new_key.key;
        let sealed = [
            k.seal(&ctx(&id, "email"), &email),
            k.seal(&ctx(&id, "first_name"), &first_name),
            k.seal(&ctx(&id, "last_name"), &last_name),
        ];
        let sealed_phone = phone.as_deref().map(|ph| k.seal(&ctx(&id, "phone"), ph));
        let ts = now();
        let job_id = id.clone();
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    new_key.insert(&mut conn).await?;
                    let [email, first_name, last_name] = sealed;
                    sql::query(
                        "INSERT INTO customers (id, key_id, email_index, email, first_name, last_name, phone, \
                         password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                    )
                    .bind(&job_id)
                    .bind(&new_key.id)
                    .bind(&email_index)
                    .bind(email)
                    .bind(first_name)
                    .bind(last_name)
                    .bind(sealed_phone)
                    .bind(password_hash)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| if is_unique_violation(&e) { email_taken() } else { storage(e) })?;
                    let event = Event::CustomerCreated(CustomerCreated {
                        customer_id: job_id.as_str().to_owned(),
                        created_at: ts,
                    });
                    outbox::enqueue(&mut conn, &event).await?;
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        tracing::info!(customer_id = %id, "customer registered");
        Ok(Registered { id, email, first_name, last_name, created_at: ts })
    }

    /// The live customer with this e-mail index, with their password hash.
    async fn live_by_email_index(&self, email_index: &str) -> Result<Option<(CustomerId, Option<String>)>> {
        let mut r = self.db.read_fast().await?;
        sql::query("SELECT id, password_hash FROM customers WHERE email_index = $1 AND erased_at IS NULL")
            .bind(email_index)
            .fetch_optional(&mut r.conn())
            .await
            .map_err(storage)
    }

    /// Signs a customer in from `addr`: a new session, or why not. Wrong passwords and unknown
    /// e-mails cost the same password check and get the same answer; the login-failure limit
    /// ([`limit`]) is checked first.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, credentials: &Credentials, addr: Option<IpAddr>) -> Result<Session, LoginError> {
        let email = credentials.email.trim();
        let email_index = self.vault.email_index(email);
        let attempt = match self.limiter.begin(&email_index, addr) {
            Ok(a) => a,
            Err(retry_after) => {
                metrics::counter!("customer_logins_total", "result" => "rate_limited").increment(1);
                tracing::info!(retry_after = retry_after.as_secs(), "sign-in refused by the login-failure limit");
                return Err(LoginError::RateLimited { retry_after });
            }
        };
        // A password no customer can have is not worth a hash (its length tells nothing of
        // whether the e-mail is registered).
        let plausible = password::check(&credentials.password).is_ok() && validate::email(email).is_ok();
        let found = if plausible { self.live_by_email_index(&email_index).await? } else { None };
        let matched = match &found {
            Some((_, Some(phc))) => self.hasher.verify(&credentials.password, Some(phc.as_str())).await?,
            _ if plausible => self.hasher.verify(&credentials.password, None).await?,
            _ => false,
        };
        let Some((customer_id, _)) = found.filter(|_| matched) else {
            attempt.failed();
            metrics::counter!("customer_logins_total", "result" => "invalid_credentials").increment(1);
            return Err(LoginError::InvalidCredentials);
        };
        let token = token::generate();
        let token_hash = token::hash(&token);
        let ts = now();
        let ttl = chrono::Duration::from_std(self.settings.session_ttl).map_err(Error::internal)?;
        let expires_at = ts + ttl;
        let job_customer = customer_id.clone();
        let created = self
            .db
            .write(move |mut conn| {
                Box::pin(async move {
                    // Only while the customer is not erased (an erasure may have committed since).
                    let n = sql::query(
                        "INSERT INTO customer_sessions (token_hash, customer_id, created_at, expires_at) \
                         SELECT $1, id, $3, $4 FROM customers WHERE id = $2 AND erased_at IS NULL",
                    )
                    .bind(&token_hash)
                    .bind(&job_customer)
                    .bind(ts)
                    .bind(expires_at)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    // The customer's ended sessions are of no more use.
                    sql::query(
                        "DELETE FROM customer_sessions WHERE customer_id = $1 \
                         AND (expires_at <= $2 OR revoked_at IS NOT NULL)",
                    )
                    .bind(&job_customer)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    Ok(Done::Commit(n == 1))
                })
            })
            .await?;
        if !created {
            attempt.failed();
            metrics::counter!("customer_logins_total", "result" => "invalid_credentials").increment(1);
            return Err(LoginError::InvalidCredentials);
        }
        attempt.succeeded();
        metrics::counter!("customer_logins_total", "result" => "success").increment(1);
        tracing::info!(customer_id = %customer_id, "customer signed in");
        Ok(Session { token, expires_at, customer_id })
    }

    /// The customer a bearer token stands for: `None` for a token that is unknown, revoked,
    /// expired, or of an erased customer.
    pub async fn authenticate(&self, token: &str) -> Result<Option<CustomerId>> {
        if !token::plausible(token) {
            return Ok(None);
        }
        let mut r = self.db.read_fast().await?;
        sql::query(
            "SELECT s.customer_id FROM customer_sessions s JOIN customers c ON c.id = s.customer_id \
             WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND c.erased_at IS NULL",
        )
        .bind(token::hash(token))
        .bind(now())
        .fetch_optional::<(CustomerId,)>(&mut r.conn())
        .await
        .map(|row| row.map(|(id,)| id))
        .map_err(storage)
    }

    /// Revokes a session (sign-out); `false` when it was not live.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, token: &str) -> Result<bool> {
        let token_hash = token::hash(token);
        let ts = now();
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    let n = sql::query(
                        "UPDATE customer_sessions SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL",
                    )
                    .bind(&token_hash)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    Ok(Done::Commit(n == 1))
                })
            })
            .await
    }

    // ---- the customer's own data ---------------------------------------------------------

    /// A customer's row and data key (`None` when erased), or `404`.
    async fn row_and_key(&self, conn: &mut Conn<'_>, id: &str) -> Result<(CustomerRow, Option<DataKey>)> {
        let row: CustomerRow = sql::query(format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(storage)?
            .ok_or(Error::not_found("customer"))?;
        let mut keys = self.vault.keys(conn, std::slice::from_ref(&row.key_id)).await?;
        let key = keys.remove(&row.key_id);
        Ok((row, key))
    }

    /// The signed-in customer's profile.
    pub async fn profile(&self, id: &CustomerId) -> Result<Profile> {
        let mut r = self.db.read_fast().await?;
        let (row, key) = self.row_and_key(&mut r.conn(), id.as_str()).await?;
        let c = admin_view(&row, key.as_ref())?;
        match (c.erased, c.email, c.first_name, c.last_name) {
            (false, Some(email), Some(first_name), Some(last_name)) => Ok(Profile {
                id: c.id,
                email,
                first_name,
                last_name,
                phone: c.phone,
                created_at: c.created_at,
                updated_at: c.updated_at,
            }),
            _ => Err(Error::not_found("customer")),
        }
    }

    /// Changes the signed-in customer's names or phone.
    #[tracing::instrument(skip_all, fields(customer_id = %id))]
    pub async fn update_profile(&self, id: &CustomerId, patch: &ProfilePatch) -> Result<Profile> {
        use validate::{NAME_MAX, field};
        let mut p = Problems::new();
        let first_name = optional(&mut p, "first_name", patch.first_name.as_deref(), |v| validate::text(v, NAME_MAX));
        let last_name = optional(&mut p, "last_name", patch.last_name.as_deref(), |v| validate::text(v, NAME_MAX));
        let phone = match &patch.phone {
            Some(Some(v)) => field(&mut p, "phone", validate::phone(v)).map(Some),
            Some(None) => Some(None),
            None => None,
        };
        p.finish()?;
        let key = self.live_key(id).await?;
        let seal = |field: &str, v: &str| key.seal(&ctx(id, field), v);
        let first_name = first_name.map(|v| seal("first_name", &v));
        let last_name = last_name.map(|v| seal("last_name", &v));
        // Outer `Some`: change the phone; inner `None`: remove it.
        let phone = phone.map(|v| v.map(|v| seal("phone", &v)));
        let (job_id, ts) = (id.clone(), now());
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    let n = sql::query(
                        "UPDATE customers SET first_name = COALESCE($2, first_name), \
                         last_name = COALESCE($3, last_name), \
                         phone = CASE WHEN $4 THEN $5 ELSE phone END, updated_at = $6 \
                         WHERE id = $1 AND erased_at IS NULL",
                    )
                    .bind(&job_id)
                    .bind(first_name)
                    .bind(last_name)
                    .bind(phone.is_some())
                    .bind(phone.flatten())
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    if n == 0 {
                        return Err(Error::not_found("customer"));
                    }
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        self.profile(id).await
    }

    /// The key of a live customer, or `404`.
    async fn live_key(&self, id: &CustomerId) -> Result<DataKey> {
        let mut r = self.db.read_fast().await?;
        let (row, key) = self.row_and_key(&mut r.conn(), id.as_str()).await?;
        match (row.erased_at, key) {
            (None, Some(key)) => Ok(key),
            _ => Err(Error::not_found("customer")),
        }
    }

    async fn addresses_with(
        &self,
        conn: &mut Conn<'_>,
        id: &CustomerId,
        key: Option<&DataKey>,
    ) -> Result<Vec<CustomerAddress>> {
        let rows: Vec<AddressRow> = sql::query(
            "SELECT id, sealed, created_at, updated_at FROM customer_addresses WHERE customer_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(conn)
        .await
        .map_err(storage)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.extend(open_address(key, id, row)?);
        }
        Ok(out)
    }

    /// The customer's address book, oldest first.
    pub async fn addresses(&self, id: &CustomerId) -> Result<Vec<CustomerAddress>> {
        let key = self.live_key(id).await?;
        let mut r = self.db.read_fast().await?;
        self.addresses_with(&mut r.conn(), id, Some(&key)).await
    }

    /// One of the customer's addresses: another customer's is `404`, like a missing one.
    async fn address(&self, id: &CustomerId, key: &DataKey, address_id: &str) -> Result<CustomerAddress> {
        let mut r = self.db.read_fast().await?;
        let row: Option<AddressRow> = sql::query(
            "SELECT id, sealed, created_at, updated_at FROM customer_addresses WHERE id = $1 AND customer_id = $2",
        )
        .bind(address_id)
        .bind(id)
        .fetch_optional(&mut r.conn())
        .await
        .map_err(storage)?;
        match row {
            Some(row) => open_address(Some(key), id, row)?.ok_or(Error::not_found("address")),
            None => Err(Error::not_found("address")),
        }
    }

    /// Adds an address to the customer's book (at most [`MAX_ADDRESSES`]).
    #[tracing::instrument(skip_all, fields(customer_id = %id))]
    pub async fn add_address(&self, id: &CustomerId, input: &NewCustomerAddress) -> Result<CustomerAddress> {
        let mut p = Problems::new();
        let fields = check_address(&mut p, input);
        p.finish()?;
        let key = self.live_key(id).await?;
        let address_id = id::new("addr");
        let sealed = key.seal_json(&ctx(id, &address_id), &fields)?;
        let (job_customer, job_address, ts) = (id.clone(), address_id.clone(), now());
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    let n: i64 = sql::query("SELECT COUNT(*) FROM customer_addresses WHERE customer_id = $1")
                        .bind(&job_customer)
                        .fetch_scalar(&mut conn)
                        .await
                        .map_err(storage)?;
                    if n >= MAX_ADDRESSES {
                        return Err(Error::field(
                            "body",
                            format!("a customer keeps at most {MAX_ADDRESSES} addresses; delete one first"),
                        ));
                    }
                    sql::query(
                        "INSERT INTO customer_addresses (id, customer_id, sealed, created_at, updated_at) \
                         SELECT $1, id, $3, $4, $4 FROM customers WHERE id = $2 AND erased_at IS NULL",
                    )
                    .bind(&job_address)
                    .bind(&job_customer)
                    .bind(sealed)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        self.address(id, &key, &address_id).await
    }

    /// Changes fields of one of the customer's addresses.
    #[tracing::instrument(skip_all, fields(customer_id = %id))]
    pub async fn update_address(
        &self,
        id: &CustomerId,
        address_id: &str,
        patch: &CustomerAddressPatch,
    ) -> Result<CustomerAddress> {
        let key = self.live_key(id).await?;
        let current = self.address(id, &key, address_id).await?;
        let merged = NewCustomerAddress {
            name: patch.name.clone().unwrap_or(current.name),
            line1: patch.line1.clone().unwrap_or(current.line1),
            line2: patch.line2.clone().unwrap_or(current.line2),
            city: patch.city.clone().unwrap_or(current.city),
            region: patch.region.clone().unwrap_or(current.region),
            postal_code: patch.postal_code.clone().unwrap_or(current.postal_code),
            country: patch.country.clone().unwrap_or(current.country),
            phone: patch.phone.clone().unwrap_or(current.phone),
        };
        let mut p = Problems::new();
        let fields = check_address(&mut p, &merged);
        p.finish()?;
        let sealed = key.seal_json(&ctx(id, address_id), &fields)?;
        let (job_customer, job_address, ts) = (id.clone(), address_id.to_owned(), now());
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    let n = sql::query(
                        "UPDATE customer_addresses SET sealed = $3, updated_at = $4 WHERE id = $1 AND customer_id = $2",
                    )
                    .bind(&job_address)
                    .bind(&job_customer)
                    .bind(sealed)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    if n == 0 {
                        return Err(Error::not_found("address"));
                    }
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        self.address(id, &key, address_id).await
    }

    /// Deletes one of the customer's addresses.
    #[tracing::instrument(skip_all, fields(customer_id = %id))]
    pub async fn delete_address(&self, id: &CustomerId, address_id: &str) -> Result<()> {
        let (job_customer, job_address) = (id.clone(), address_id.to_owned());
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    let n = sql::query("DELETE FROM customer_addresses WHERE id = $1 AND customer_id = $2")
                        .bind(&job_address)
                        .bind(&job_customer)
                        .execute(&mut conn)
                        .await
                        .map_err(storage)?;
                    if n == 0 {
                        return Err(Error::not_found("address"));
                    }
                    Ok(Done::Commit(()))
                })
            })
            .await
    }

    // ---- staff ---------------------------------------------------------------------------

    /// Customers, newest first; with `email`, only the live customer with that e-mail (an
    /// exact match, trimmed and case-insensitive).
    pub async fn list(&self, email: Option<&str>, page: &PageRequest) -> Result<Page<AdminCustomer>> {
        let mut sql_text = format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE 1 = 1");
        let mut args: Vec<String> = Vec::new();
        if let Some(email) = email {
            args.push(self.vault.email_index(email));
            sql_text.push_str(&format!(" AND email_index = ${}", args.len()));
        }
        if let Some(after) = &page.after {
            args.push(after.0.clone());
            sql_text.push_str(&format!(" AND id < ${}", args.len()));
        }
        sql_text.push_str(&format!(" ORDER BY id DESC LIMIT {}", i64::from(page.limit) + 1));
        let mut r = self.db.read().await?;
        let mut conn = r.conn();
        let rows: Vec<CustomerRow> = sql::query(sql_text).bind_all(args).fetch_all(&mut conn).await.map_err(storage)?;
        let key_ids: Vec<String> = rows.iter().map(|r| r.key_id.clone()).collect();
        let keys = if key_ids.is_empty() { HashMap::new() } else { self.vault.keys(&mut conn, &key_ids).await? };
        let items = rows.iter().map(|row| admin_view(row, keys.get(&row.key_id))).collect::<Result<Vec<_>>>()?;
        Ok(page.finish(items, |c| c.id.as_str().to_owned()))
    }

    async fn groups_with(&self, conn: &mut Conn<'_>, id: &CustomerId) -> Result<Vec<GroupRef>> {
        sql::query(
            "SELECT g.id, g.name FROM customer_groups g JOIN customer_group_members m ON m.group_id = g.id \
             WHERE m.customer_id = $1 ORDER BY g.name, g.id",
        )
        .bind(id)
        .fetch_all(conn)
        .await
        .map_err(storage)
    }

    /// The ids of the groups a customer belongs to (price lists use them).
    pub async fn group_ids(&self, id: &CustomerId) -> Result<Vec<String>> {
        let mut r = self.db.read_fast().await?;
        Ok(self.groups_with(&mut r.conn(), id).await?.into_iter().map(|g| g.id).collect())
    }

    /// A customer's profile, address book and groups, for staff.
    async fn staff_view(&self, id: &str) -> Result<(AdminCustomer, Vec<CustomerAddress>, Vec<GroupRef>)> {
        let mut r = self.db.read().await?;
        let mut conn = r.conn();
        let (row, key) = self.row_and_key(&mut conn, id).await?;
        let customer = admin_view(&row, key.as_ref())?;
        let addresses = self.addresses_with(&mut conn, &row.id, key.as_ref()).await?;
        let groups = self.groups_with(&mut conn, &row.id).await?;
        Ok((customer, addresses, groups))
    }

    /// Every personal field the store holds of a customer: profile, address book, groups, and
    /// the orders of their account (every page, newest first).
    pub async fn export(&self, id: &str) -> Result<CustomerExport> {
        let (customer, addresses, groups) = self.staff_view(id).await?;
        let mut orders = Vec::new();
        let mut page = PageRequest { limit: backroom_kernel::page::MAX_LIMIT, after: None };
        loop {
            let found = self.orders.list_for_customer(customer.id.as_str(), &page).await?;
            orders.extend(found.items);
            match found.next_cursor {
                Some(next) => page.after = Some(backroom_kernel::Cursor::parse(&next)?),
                None => break,
            }
        }
        Ok(CustomerExport { customer, addresses, groups, orders })
    }

    /// One customer for staff, with addresses, groups and `order_count`.
    pub async fn detail(&self, id: &str) -> Result<CustomerDetail> {
        let (customer, addresses, groups) = self.staff_view(id).await?;
        let order_count = self.orders.count_for_customer(customer.id.as_str()).await?;
        Ok(CustomerDetail { customer, addresses, groups, order_count })
    }

    /// Erases a customer's personal data (see the module documentation). Erasing an erased
    /// customer answers the first erasure and changes nothing.
    #[tracing::instrument(skip_all, fields(customer_id = %id))]
    pub async fn erase(&self, id: &str) -> Result<Erasure> {
        let job_id = id.to_owned();
        let ts = now();
        let erased = self
            .db
            .write(move |mut conn| {
                Box::pin(async move {
                    let row: Option<(CustomerId, String, Option<DateTime<Utc>>)> =
                        sql::query("SELECT id, key_id, erased_at FROM customers WHERE id = $1")
                            .bind(&job_id)
                            .fetch_optional(&mut conn)
                            .await
                            .map_err(storage)?;
                    let (id, key_id, erased_at) = row.ok_or(Error::not_found("customer"))?;
                    if let Some(at) = erased_at {
                        return Ok(Done::Commit((Erasure { id, erased: true, erased_at: at }, false)));
                    }
                    Vault::destroy(&mut conn, &key_id).await?;
                    // Their orders keep lines, prices and totals; their personal fields go.
                    backroom_orders::erase_customer(&mut conn, id.as_str()).await?;
                    backroom_cart::erase_customer(&mut conn, id.as_str()).await?;
                    sql::query(
                        "UPDATE customers SET email_index = NULL, email = NULL, first_name = NULL, \
                         last_name = NULL, phone = NULL, password_hash = NULL, erased_at = $2, updated_at = $2 \
                         WHERE id = $1",
                    )
                    .bind(&id)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    sql::query("DELETE FROM customer_addresses WHERE customer_id = $1")
                        .bind(&id)
                        .execute(&mut conn)
                        .await
                        .map_err(storage)?;
                    sql::query(
                        "UPDATE customer_sessions SET revoked_at = $2 WHERE customer_id = $1 AND revoked_at IS NULL",
                    )
                    .bind(&id)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    let event =
                        Event::CustomerErased(CustomerErased { customer_id: id.as_str().to_owned(), erased_at: ts });
                    outbox::enqueue(&mut conn, &event).await?;
                    Ok(Done::Commit((Erasure { id, erased: true, erased_at: ts }, true)))
                })
            })
            .await?;
        let (erasure, now_erased) = erased;
        if now_erased {
            metrics::counter!("customers_erased_total").increment(1);
            tracing::info!(customer_id = %erasure.id, "customer erased");
        }
        Ok(erasure)
    }

    // ---- groups ----------------------------------------------------------------------------

    /// Creates a group; a name in use is `409 conflict`.
    #[tracing::instrument(skip_all)]
    pub async fn create_group(&self, input: &NewGroup) -> Result<CustomerGroup> {
        let name = validate::text(&input.name, 100).map_err(|m| Error::field("name", m))?;
        let group = CustomerGroup { id: id::new("cgrp"), name, customer_count: 0, created_at: now() };
        let job = group.clone();
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    sql::query("INSERT INTO customer_groups (id, name, created_at) VALUES ($1, $2, $3)")
                        .bind(&job.id)
                        .bind(&job.name)
                        .bind(job.created_at)
                        .execute(&mut conn)
                        .await
                        .map_err(|e| {
                            if is_unique_violation(&e) {
                                Error::refused(Code::Conflict, "a customer group has this name")
                            } else {
                                storage(e)
                            }
                        })?;
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        Ok(group)
    }

    /// Groups, newest first.
    pub async fn list_groups(&self, page: &PageRequest) -> Result<Page<CustomerGroup>> {
        let mut q = String::from(
            "SELECT g.id, g.name, (SELECT COUNT(*) FROM customer_group_members m WHERE m.group_id = g.id) \
             AS customer_count, g.created_at FROM customer_groups g",
        );
        let mut args = Vec::new();
        if let Some(after) = &page.after {
            q.push_str(" WHERE g.id < $1");
            args.push(after.0.clone());
        }
        q.push_str(&format!(" ORDER BY g.id DESC LIMIT {}", i64::from(page.limit) + 1));
        let mut r = self.db.read().await?;
        let rows: Vec<CustomerGroup> = sql::query(q).bind_all(args).fetch_all(&mut r.conn()).await.map_err(storage)?;
        Ok(page.finish(rows, |g| g.id.clone()))
    }

    async fn group(conn: &mut Conn<'_>, group_id: &str) -> Result<CustomerGroup> {
        sql::query(
            "SELECT g.id, g.name, (SELECT COUNT(*) FROM customer_group_members m WHERE m.group_id = g.id) \
             AS customer_count, g.created_at FROM customer_groups g WHERE g.id = $1",
        )
        .bind(group_id)
        .fetch_optional(conn)
        .await
        .map_err(storage)?
        .ok_or(Error::not_found("customer group"))
    }

    /// Adds customers to a group (those already in it stay). Ids that are no customer's (or
    /// an erased customer's) are `422`, each named; nothing is added then.
    #[tracing::instrument(skip_all, fields(group_id = %group_id))]
    pub async fn add_to_group(&self, group_id: &str, input: &GroupMembers) -> Result<CustomerGroup> {
        let ids = &input.customer_ids;
        if ids.is_empty() || ids.len() > MAX_MEMBERS_PER_REQUEST {
            return Err(Error::field("customer_ids", format!("must hold 1–{MAX_MEMBERS_PER_REQUEST} ids")));
        }
        let (job_group, job_ids, ts) = (group_id.to_owned(), ids.clone(), now());
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    Self::group(&mut conn, &job_group).await?;
                    let mut unique: Vec<&String> = job_ids.iter().collect();
                    unique.sort();
                    unique.dedup();
                    let found: Vec<(String,)> = sql::query(format!(
                        "SELECT id FROM customers WHERE erased_at IS NULL AND id IN {}",
                        in_list(unique.len(), 1)
                    ))
                    .bind_all(unique.iter().map(|s| s.as_str()))
                    .fetch_all(&mut conn)
                    .await
                    .map_err(storage)?;
                    let found: std::collections::HashSet<String> = found.into_iter().map(|(id,)| id).collect();
                    let mut p = Problems::new();
                    for (i, id) in job_ids.iter().enumerate() {
                        if !found.contains(id) {
                            p.add(format!("customer_ids[{i}]"), "no customer has this id");
                        }
                    }
                    p.finish()?;
                    for chunk in unique.chunks(200) {
                        let mut q = sql::query(format!(
                            "INSERT INTO customer_group_members (group_id, customer_id, created_at) VALUES {} \
                             ON CONFLICT (group_id, customer_id) DO NOTHING",
                            sql::values_list(chunk.len(), 3, 1)
                        ));
                        for id in chunk {
                            q = q.bind(job_group.as_str()).bind(id.as_str()).bind(ts);
                        }
                        q.execute(&mut conn).await.map_err(storage)?;
                    }
                    let group = Self::group(&mut conn, &job_group).await?;
                    Ok(Done::Commit(group))
                })
            })
            .await
    }
}
