//! Payments: one trait for every payment provider, the built-in `test` provider, and the
//! payment attempts (owns `payment_attempts`; the test provider owns `test_provider_charges`).
//!
//! Every provider call carries the attempt's idempotency key (P2), so asking twice never
//! charges twice, and a lost answer can be recovered by asking for the status of the key.

pub mod stripe;
mod test_provider;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use backroom_db::{Conn, Db, storage};
use backroom_kernel::id::{AttemptId, OrderId};
use backroom_kernel::{Money, Result, now};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use test_provider::TestProvider;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What to charge.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// The attempt's idempotency key: the same key never charges twice.
    pub idempotency_key: String,
    pub amount: Money,
    /// The storefront's provider token (never card data).
    pub token: String,
    /// Capture at once (sale) rather than only authorise.
    pub capture: bool,
    /// The order the charge pays for (Stripe puts it in metadata).
    pub order_id: String,
}

/// A provider's answer about a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    Authorized {
        reference: String,
    },
    Captured {
        reference: String,
    },
    Declined {
        reason: String,
    },
    Voided,
    Refunded {
        reference: String,
    },
    /// The provider has no charge under this key.
    NotFound,
    /// The customer must act (3-D Secure); `client_secret` goes to the storefront.
    RequiresAction {
        reference: String,
        client_secret: String,
    },
}

/// The provider could not be asked or its answer was lost; the outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    Timeout,
    Unavailable(String),
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderError::Timeout => f.write_str("the provider's answer was lost (timeout)"),
            ProviderError::Unavailable(why) => write!(f, "the provider is unavailable: {why}"),
        }
    }
}

pub type ProviderResult = std::result::Result<ChargeStatus, ProviderError>;

/// A refund to make: `idempotency_key` is the refund's own id (`ref_…`), so asking twice
/// never refunds twice; `charge_key` is the payment attempt's id (the charge's idempotency key).
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub charge_key: String,
    pub amount: Money,
}

/// A provider's answer about a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundStatus {
    Succeeded { reference: String },
    Pending { reference: String },
    Failed { reason: String },
}

pub type RefundResult = std::result::Result<RefundStatus, ProviderError>;

/// A payment provider. Every method is idempotent by `idempotency_key`.
pub trait PaymentProvider: Send + Sync {
    fn name(&self) -> &'static str;
    /// Authorises (and, with `capture`, captures) a charge.
    fn authorize(&self, req: ChargeRequest) -> BoxFuture<'_, ProviderResult>;
    /// Captures an authorised charge.
    fn capture<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult>;
    /// Cancels an authorisation, or makes sure a charge under this key never happens.
    fn void<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult>;
    /// Gives back `amount` of a captured charge (partial refunds allowed).
    fn refund<'a>(&'a self, req: &'a RefundRequest) -> BoxFuture<'a, RefundResult>;
    /// What happened to the charge under this key.
    fn status<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult>;
}

/// The provider names `BACKROOM_PAYMENT_PROVIDERS` may list in this build.
pub const KNOWN_PROVIDERS: &[&str] = &["test", "stripe"];

/// How long a provider call may take by default (`BACKROOM_PROVIDER_TIMEOUT`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The providers this store accepts, by name. Empty unless the operator enables some
/// (`BACKROOM_PAYMENT_PROVIDERS`): a fresh deployment takes no payment it was not told to.
#[derive(Clone, Default)]
pub struct Providers(Vec<Arc<dyn PaymentProvider>>);

impl Providers {
    /// The providers named (each one of [`KNOWN_PROVIDERS`]), every call of each bounded by
    /// `timeout`: an answer that does not come in time is a lost answer
    /// ([`ProviderError::Timeout`]), settled later by recovery.
    /// `stripe` needs its settings: use [`Providers::enabled_with_stripe`] for it.
    pub fn enabled(db: &Db, names: &[String], timeout: Duration) -> std::result::Result<Self, String> {
        Self::enabled_with_stripe(db, names, timeout, None)
    }

    /// [`Providers::enabled`], with Stripe's settings (`BACKROOM_STRIPE_*`) for `stripe`:
    /// naming `stripe` without them is an error that says which setting is missing.
    pub fn enabled_with_stripe(
        db: &Db,
        names: &[String],
        timeout: Duration,
        stripe: Option<&stripe::StripeConfig>,
    ) -> std::result::Result<Self, String> {
        let mut out: Vec<Arc<dyn PaymentProvider>> = Vec::new();
        for name in names {
            let provider: Arc<dyn PaymentProvider> = match name.as_str() {
                "test" => Arc::new(TestProvider::new(db.clone())),
                "stripe" => match stripe {
                    Some(config) => Arc::new(stripe::StripeProvider::new(config.clone())?),
                    None => {
                        return Err(
                            "the payment provider `stripe` is enabled but BACKROOM_STRIPE_SECRET_KEY is not set \
                                    (the secret API key of your Stripe account, sk_live_… or sk_test_…)"
                                .into(),
                        );
                    }
                },
                other => {
                    return Err(format!(
                        "unknown payment provider `{other}`: this build has {}",
                        KNOWN_PROVIDERS.join(", ")
                    ));
                }
            };
            if out.iter().all(|p| p.name() != provider.name()) {
                out.push(Arc::new(Deadline { inner: provider, limit: timeout }));
            }
        }
        Ok(Providers(out))
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn PaymentProvider>> {
        self.0.iter().find(|p| p.name() == name).cloned()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|p| p.name()).collect()
    }
}

/// A provider whose every call is bounded in time. Past the limit the call is dropped and
/// answered [`ProviderError::Timeout`]: the outcome is unknown, and recovery asks again by
/// the same idempotency key, so a slow provider can neither hang a checkout nor charge twice.
struct Deadline {
    inner: Arc<dyn PaymentProvider>,
    limit: Duration,
}

impl Deadline {
    fn bound<'a, T: Send + 'a>(
        &'a self,
        call: &'static str,
        f: BoxFuture<'a, std::result::Result<T, ProviderError>>,
    ) -> BoxFuture<'a, std::result::Result<T, ProviderError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.limit, f).await {
                Ok(r) => r,
                Err(_) => {
                    metrics::counter!("payment_provider_timeouts_total", "provider" => self.inner.name(), "call" => call)
                        .increment(1);
                    tracing::warn!(provider = self.inner.name(), call, limit = ?self.limit, "payment provider call timed out");
                    Err(ProviderError::Timeout)
                }
            }
        })
    }
}

impl PaymentProvider for Deadline {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn authorize(&self, req: ChargeRequest) -> BoxFuture<'_, ProviderResult> {
        self.bound("authorize", self.inner.authorize(req))
    }
    fn capture<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult> {
        self.bound("capture", self.inner.capture(idempotency_key))
    }
    fn void<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult> {
        self.bound("void", self.inner.void(idempotency_key))
    }
    fn refund<'a>(&'a self, req: &'a RefundRequest) -> BoxFuture<'a, RefundResult> {
        self.bound("refund", self.inner.refund(req))
    }
    fn status<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult> {
        self.bound("status", self.inner.status(idempotency_key))
    }
}

/// Where a payment attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Recorded; the provider is being asked.
    Pending,
    /// The provider's answer was lost; recovery will ask again.
    Unknown,
    Captured,
    Declined,
    Voided,
    /// The charge was given back before the order was placed: not a paid order.
    Refunded,
    /// Authorised, not captured (an order held for review).
    Authorized,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Pending => "pending",
            AttemptStatus::Unknown => "unknown",
            AttemptStatus::Captured => "captured",
            AttemptStatus::Declined => "declined",
            AttemptStatus::Voided => "voided",
            AttemptStatus::Refunded => "refunded",
            AttemptStatus::Authorized => "authorized",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Unknown, Self::Captured, Self::Declined, Self::Voided, Self::Refunded, Self::Authorized]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// A payment attempt as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: AttemptId,
    pub order_id: OrderId,
    pub provider: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub reference: Option<String>,
    pub decline_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

backroom_db::from_row!(Attempt {
    id,
    order_id,
    provider,
    amount,
    currency,
    status,
    reference,
    decline_reason,
    created_at,
    updated_at
});

const ATTEMPT_COLUMNS: &str =
    "id, order_id, provider, amount, currency, status, reference, decline_reason, created_at, updated_at";

/// Records a pending attempt in the caller's transaction.
pub async fn create_attempt(
    conn: &mut Conn<'_>,
    id: &AttemptId,
    order_id: &OrderId,
    provider: &str,
    amount: Money,
) -> Result<()> {
    let ts = now();
    backroom_db::sql::query(
        "INSERT INTO payment_attempts (id, order_id, provider, amount, currency, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6)",
    )
    .bind(id)
    .bind(order_id)
    .bind(provider)
    .bind(amount.amount())
    .bind(amount.currency().code())
    .bind(ts)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(storage)
}

/// Moves an attempt from one of `from` to `to`; `false` if it was in another state.
pub async fn transition(
    conn: &mut Conn<'_>,
    id: &AttemptId,
    from: &[AttemptStatus],
    to: AttemptStatus,
    reference: Option<&str>,
    decline_reason: Option<&str>,
) -> Result<bool> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let n = backroom_db::sql::query(
        "UPDATE payment_attempts SET status = $2, reference = COALESCE($3, reference), \
         decline_reason = COALESCE($4, decline_reason), updated_at = $5 \
         WHERE id = $1 AND status IN ($6, $7, $8)",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(reference)
    .bind(decline_reason)
    .bind(now())
    .bind(from.first().copied().unwrap_or(""))
    .bind(from.get(1).copied().unwrap_or(""))
    .bind(from.get(2).copied().unwrap_or(""))
    .execute(conn)
    .await
    .map_err(storage)?;
    Ok(n == 1)
}

/// The attempt of an order.
pub async fn attempt_for_order(conn: &mut Conn<'_>, order_id: &OrderId) -> Result<Option<Attempt>> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM payment_attempts WHERE order_id = $1");
    backroom_db::sql::query(sql).bind(order_id).fetch_optional(conn).await.map_err(storage)
}

/// The attempts of several orders, in one query.
pub async fn attempts_for_orders(conn: &mut Conn<'_>, order_ids: &[String]) -> Result<Vec<Attempt>> {
    if order_ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = backroom_db::sql::in_list(order_ids.len(), 1);
    backroom_db::sql::query(format!("SELECT {ATTEMPT_COLUMNS} FROM payment_attempts WHERE order_id IN {list}"))
        .bind_all(order_ids.iter())
        .fetch_all(conn)
        .await
        .map_err(storage)
}

/// The attempt of `provider` whose provider reference is `reference` (a Stripe PaymentIntent).
pub async fn attempt_by_reference(conn: &mut Conn<'_>, provider: &str, reference: &str) -> Result<Option<Attempt>> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM payment_attempts WHERE provider = $1 AND reference = $2");
    backroom_db::sql::query(sql).bind(provider).bind(reference).fetch_optional(conn).await.map_err(storage)
}

/// Attempts whose outcome is not known: `unknown` ones, and `pending` ones older than
/// `pending_before` (their request died or is hung). Oldest first.
pub async fn unsettled(db: &Db, pending_before: DateTime<Utc>, limit: i64) -> Result<Vec<Attempt>> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM payment_attempts \
         WHERE status = 'unknown' OR (status = 'pending' AND created_at < $1) ORDER BY created_at LIMIT $2"
    );
    let mut r = db.read().await?;
    backroom_db::sql::query(sql).bind(pending_before).bind(limit).fetch_all(&mut r.conn()).await.map_err(storage)
}

/// An attempt by its id.
pub async fn attempt(conn: &mut Conn<'_>, id: &str) -> Result<Option<Attempt>> {
    let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM payment_attempts WHERE id = $1");
    backroom_db::sql::query(sql).bind(id).fetch_optional(conn).await.map_err(storage)
}
