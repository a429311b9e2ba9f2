//! The built-in `test` provider. It keeps its own ledger of charges in its own table, as an
//! outside provider would, so recovery can ask it about an answer that was lost and tests can
//! count captures per key. Tokens (docs/api.md):
//!
//! | token | behaviour |
//! |---|---|
//! | `tok_visa` | approved and captured |
//! | `tok_declined` | declined (`card_declined`) |
//! | `tok_insufficient_funds` | declined (`insufficient_funds`) |
//! | `tok_timeout` | the charge is captured, but the answer is lost |
//! | `tok_slow` | the charge is captured, but the answer takes a minute (past any sane `BACKROOM_PROVIDER_TIMEOUT`) |
//! | anything else | declined (`invalid_token`) |
//!
//! `refund` gives a captured charge back (as a refund in a provider's own dashboard would);
//! the ledger then says `refunded`.

use backroom_db::writer::Done;
use backroom_db::{Db, on_conn, storage};
use backroom_kernel::{id, now};

use crate::{
    BoxFuture, ChargeRequest, ChargeStatus, PaymentProvider, ProviderError, ProviderResult, RefundRequest,
    RefundResult, RefundStatus,
};

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
            let (status, reason) = match req.token.as_str() {
                "tok_visa" | "tok_timeout" | "tok_slow" => ("captured", None),
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
        Box::pin(self.lookup(idempotency_key))
    }

    fn void<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult> {
        Box::pin(async move {
            // A tombstone: a charge that arrives later under this key finds it and is refused.
            self.record(idempotency_key, None, "voided", None).await?;
            self.lookup(idempotency_key).await
        })
    }

    fn refund<'a>(&'a self, req: &'a RefundRequest) -> BoxFuture<'a, RefundResult> {
        Box::pin(async move {
            let idempotency_key = req.charge_key.as_str();
            let key = idempotency_key.to_owned();
            self.db
                .write_followup(move |mut conn| {
                    Box::pin(async move {
                        backroom_db::sql::query(
                            "UPDATE test_provider_charges SET status = 'refunded' \
                             WHERE idempotency_key = $1 AND status = 'captured'",
                        )
                        .bind(key)
                        .execute(&mut conn)
                        .await
                        .map(|_| Done::Commit(()))
                        .map_err(storage)
                    })
                })
                .await
                .map_err(unavailable)?;
            Ok(match self.lookup(idempotency_key).await? {
                ChargeStatus::Refunded { reference } => RefundStatus::Succeeded { reference },
                other => RefundStatus::Failed { reason: format!("nothing captured to refund ({other:?})") },
            })
        })
    }

    fn status<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult> {
        Box::pin(self.lookup(idempotency_key))
    }
}
