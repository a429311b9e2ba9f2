//! The built-in `test` provider. It keeps its own ledger of charges in its own table, as an
//! outside provider would, so recovery can ask it about an answer that was lost and tests can
//! count captures per key. Tokens (docs/api.md):
//!
//! | token | behaviour |
//! |---|---|
//! | `tok_visa` | approved and captured (only authorised when the request says `capture: false`) |
//! | `tok_declined` | declined (`card_declined`) |
//! | `tok_insufficient_funds` | declined (`insufficient_funds`) |
//! | `tok_timeout` | the charge is captured, but the answer is lost |
//! | `tok_slow` | the charge is captured, but the answer takes a minute (past any sane `BACKROOM_PROVIDER_TIMEOUT`) |
//! | `tok_refund_timeout` | approved and captured; every refund of it is made, but its answer is lost |
//! | anything else | declined (`invalid_token`) |
//!
//! A charge asked with `capture: false` is only `authorized`: `capture` captures it, `void`
//! cancels it. Refunds have a ledger of their own (`test_provider_refunds`), one row per
//! refund key: asking again with a key answers the first refund; a charge is never refunded
//! beyond what it captured (`Failed`); once refunded in full, the charge says `refunded`.
//! [`TestProvider::dashboard_refund`] is a refund made in the provider's own dashboard.

use backroom_db::writer::Done;
use backroom_db::{Db, on_conn, storage};
use backroom_kernel::{id, now};

use crate::{
    BoxFuture, ChargeRequest, ChargeStatus, PaymentProvider, ProviderError, ProviderResult, RefundRequest,
    RefundResult, RefundStatus,
};

/// What the refund job of the ledger decided.
enum Refunded {
    Done(RefundStatus),
    /// Made, but the answer is lost (`tok_refund_timeout`).
    Lost,
}

pub struct TestProvider {
    db: Db,
}

impl TestProvider {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Captures recorded under a key (tests use it to prove "at most one").
    pub async fn captures(&self, idempotency_key: &str) -> backroom_kernel::Result<i64> {
        let mut r = self.db.read().await?;
        on_conn!(&mut r.conn(), c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM test_provider_charges WHERE idempotency_key = $1 AND status = 'captured'",
        )
        .bind(idempotency_key)
        .fetch_one(&mut *c)
        .await
        .map_err(storage))
    }

    /// Refunds made under a refund key (tests use it to prove "at most one").
    pub async fn refunds(&self, refund_key: &str) -> backroom_kernel::Result<i64> {
        let mut r = self.db.read().await?;
        backroom_db::sql::query("SELECT COUNT(*) FROM test_provider_refunds WHERE idempotency_key = $1")
            .bind(refund_key)
            .fetch_scalar(&mut r.conn())
            .await
            .map_err(storage)
    }

    /// The sum refunded of the charge under `charge_key`, and how many refunds made it.
    pub async fn refunded(&self, charge_key: &str) -> backroom_kernel::Result<(i64, i64)> {
        let mut r = self.db.read().await?;
        backroom_db::sql::query(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT), COUNT(*) FROM test_provider_refunds WHERE charge_key = $1",
        )
        .bind(charge_key)
        .fetch_one(&mut r.conn())
        .await
        .map_err(storage)
    }

    /// A refund made in the provider's own dashboard, not through Backroom: `amount` of the
    /// charge (all that is left when `None`). Answers as `refund` does.
    pub async fn dashboard_refund(&self, charge_key: &str, amount: Option<i64>) -> RefundResult {
        let key = id::new("dre");
        match self.refund_in_ledger(key, charge_key.to_owned(), amount).await? {
            Refunded::Done(s) => Ok(s),
            Refunded::Lost => Err(ProviderError::Timeout),
        }
    }

    /// One write job: the refund under `key` if there is one, or a new one of `amount` (the
    /// rest of the charge when `None`) if the charge has that much left.
    async fn refund_in_ledger(
        &self,
        key: String,
        charge_key: String,
        amount: Option<i64>,
    ) -> Result<Refunded, ProviderError> {
        self.db
            .write_followup(move |mut conn| {
                Box::pin(async move {
                    let existing: Option<(String, String)> = backroom_db::sql::query(
                        "SELECT r.reference, c.token FROM test_provider_refunds r \
                         JOIN test_provider_charges c ON c.idempotency_key = r.charge_key WHERE r.idempotency_key = $1",
                    )
                    .bind(&key)
                    .fetch_optional(&mut conn)
                    .await
                    .map_err(storage)?;
                    if let Some((reference, _)) = existing {
                        return Ok(Done::Commit(Refunded::Done(RefundStatus::Succeeded { reference })));
                    }
                    let charge: Option<(String, i64, String)> = backroom_db::sql::query(
                        "SELECT status, amount, token FROM test_provider_charges WHERE idempotency_key = $1",
                    )
                    .bind(&charge_key)
                    .fetch_optional(&mut conn)
                    .await
                    .map_err(storage)?;
                    let Some((status, charged, token)) = charge else {
                        return Ok(Done::Commit(Refunded::Done(RefundStatus::Failed { reason: "no_such_charge".into() })));
                    };
                    if status != "captured" {
                        return Ok(Done::Commit(Refunded::Done(RefundStatus::Failed {
                            reason: format!("charge_{status}"),
                        })));
                    }
                    let refunded: i64 = backroom_db::sql::query(
                        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM test_provider_refunds WHERE charge_key = $1",
                    )
                    .bind(&charge_key)
                    .fetch_scalar(&mut conn)
                    .await
                    .map_err(storage)?;
                    let amount = amount.unwrap_or(charged - refunded);
                    if amount <= 0 || refunded + amount > charged {
                        return Ok(Done::Commit(Refunded::Done(RefundStatus::Failed {
                            reason: "amount_exceeds_captured".into(),
                        })));
                    }
                    let reference = id::new("re");
                    backroom_db::sql::query(
                        "INSERT INTO test_provider_refunds (idempotency_key, charge_key, amount, reference, created_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&key)
                    .bind(&charge_key)
                    .bind(amount)
                    .bind(&reference)
                    .bind(now())
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    if refunded + amount == charged {
                        backroom_db::sql::query(
                            "UPDATE test_provider_charges SET status = 'refunded' WHERE idempotency_key = $1",
                        )
                        .bind(&charge_key)
                        .execute(&mut conn)
                        .await
                        .map_err(storage)?;
                    }
                    Ok(Done::Commit(if token == "tok_refund_timeout" {
                        Refunded::Lost
                    } else {
                        Refunded::Done(RefundStatus::Succeeded { reference })
                    }))
                })
            })
            .await
            .map_err(unavailable)
    }

    async fn lookup(&self, key: &str) -> ProviderResult {
        let mut r = self.db.read_fast().await.map_err(unavailable)?;
        let row: Option<(String, Option<String>, String)> = backroom_db::sql::query(
            "SELECT status, reason, reference FROM test_provider_charges WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_optional(&mut r.conn())
        .await
        .map_err(unavailable)?;
        Ok(match row {
            None => ChargeStatus::NotFound,
            Some((status, reason, reference)) => match status.as_str() {
                "captured" => ChargeStatus::Captured { reference },
                "authorized" => ChargeStatus::Authorized { reference },
                "refunded" => ChargeStatus::Refunded { reference },
                "voided" => ChargeStatus::Voided,
                _ => ChargeStatus::Declined { reason: reason.unwrap_or_else(|| "card_declined".into()) },
            },
        })
    }

    /// Records a charge under `key` unless one is there already (then that one stands).
    /// `(token, amount, currency)` is what was asked; a void's tombstone asks nothing.
    async fn record(
        &self,
        key: &str,
        asked: Option<(&str, i64, &str)>,
        status: &str,
        reason: Option<&str>,
    ) -> Result<(), ProviderError> {
        let (token, amount, currency) = asked.unwrap_or(("", 0, "XXX"));
        let row = (key.to_owned(), token.to_owned(), amount, currency.to_owned(), status.to_owned());
        let reason = reason.map(str::to_owned);
        // Through the group-commit writer: a flash sale's charges share commits. A follow-up
        // (never shed): the checkout that calls it has its reservation committed already.
        self.db
            .write_followup(move |mut conn| {
                Box::pin(async move {
                    let (key, token, amount, currency, status) = row;
                    backroom_db::sql::query(
                        "INSERT INTO test_provider_charges (idempotency_key, token, amount, currency, status, reason, reference, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (idempotency_key) DO NOTHING",
                    )
                    .bind(key)
                    .bind(token)
                    .bind(amount)
                    .bind(currency)
                    .bind(status)
                    .bind(reason)
                    .bind(id::new("ch"))
                    .bind(now())
                    .execute(&mut conn)
                    .await
                    .map(|_| Done::Commit(()))
                    .map_err(storage)
                })
            })
            .await
            .map_err(unavailable)
    }
}

impl TestProvider {
    /// Moves an `authorized` charge to `to` (`captured` or `voided`); any other charge stays.
    async fn settle_authorization(&self, key: &str, to: &'static str) -> Result<(), ProviderError> {
        let key = key.to_owned();
        self.db
            .write_followup(move |mut conn| {
                Box::pin(async move {
                    backroom_db::sql::query(
                        "UPDATE test_provider_charges SET status = $2 WHERE idempotency_key = $1 AND status = 'authorized'",
                    )
                    .bind(key)
                    .bind(to)
                    .execute(&mut conn)
                    .await
                    .map(|_| Done::Commit(()))
                    .map_err(storage)
                })
            })
            .await
            .map_err(unavailable)
    }
}

/// The provider could not be reached (here: its ledger).
fn unavailable(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable(e.to_string())
}

impl PaymentProvider for TestProvider {
    fn name(&self) -> &'static str {
        "test"
    }

    fn authorize(&self, req: ChargeRequest) -> BoxFuture<'_, ProviderResult> {
        Box::pin(async move {
            let approved = if req.capture { "captured" } else { "authorized" };
            let (status, reason) = match req.token.as_str() {
                "tok_visa" | "tok_timeout" | "tok_slow" | "tok_refund_timeout" => (approved, None),
                "tok_declined" => ("declined", Some("card_declined")),
                "tok_insufficient_funds" => ("declined", Some("insufficient_funds")),
                _ => ("declined", Some("invalid_token")),
            };
            let asked = (req.token.as_str(), req.amount.amount(), req.amount.currency().code());
            self.record(&req.idempotency_key, Some(asked), status, reason).await?;
            if req.token == "tok_timeout" {
                return Err(ProviderError::Timeout);
            }
            if req.token == "tok_slow" {
                // A provider that hangs: only the caller's deadline ends the wait.
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            }
            // The ledger's row decides: a repeated key answers what happened the first time.
            self.lookup(&req.idempotency_key).await
        })
    }

    fn capture<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult> {
        Box::pin(async move {
            self.settle_authorization(idempotency_key, "captured").await?;
            self.lookup(idempotency_key).await
        })
    }

    fn void<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult> {
        Box::pin(async move {
            // A tombstone: a charge that arrives later under this key finds it and is refused.
            self.record(idempotency_key, None, "voided", None).await?;
            // An authorisation is cancelled; a captured charge stays captured (refund it).
            self.settle_authorization(idempotency_key, "voided").await?;
            self.lookup(idempotency_key).await
        })
    }

    fn refund<'a>(&'a self, req: &'a RefundRequest) -> BoxFuture<'a, RefundResult> {
        Box::pin(async move {
            let asked = self
                .refund_in_ledger(req.idempotency_key.clone(), req.charge_key.clone(), Some(req.amount.amount()))
                .await?;
            match asked {
                Refunded::Done(s) => Ok(s),
                Refunded::Lost => Err(ProviderError::Timeout),
            }
        })
    }

    fn status<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult> {
        Box::pin(self.lookup(idempotency_key))
    }
}
