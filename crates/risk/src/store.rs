//! The risk signals (owns `risk_signals`): one `attempt` row per scored checkout, one
//! `decline` row per declined payment, each with keyed hashes of the e-mail, the client
//! address and the payment token, the amount and the time. Rows older than [`RETENTION`] are
//! pruned; the rules look back [`WINDOW`].

use backroom_db::{Conn, Db, storage};
use backroom_kernel::{Money, Result, id, now};
use chrono::{DateTime, TimeDelta, Utc};

use crate::Recent;

/// How far back the rules look.
pub const WINDOW: TimeDelta = TimeDelta::hours(1);

/// How long signals are kept: the window, and a margin.
pub const RETENTION: TimeDelta = TimeDelta::hours(2);

/// One checkout's signal, every identifying part a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// The order the checkout created (set once it has one).
    pub order_id: Option<String>,
    /// The keyed hash of the trimmed, lower-cased e-mail (the orders' `email_index`).
    pub email_index: String,
    /// The keyed hash of the client address; `None` when the address is not known.
    pub client_index: Option<String>,
    /// The keyed hash of the payment token.
    pub token_index: String,
    pub amount: Money,
}

/// What the signals since `since` say about this e-mail, client address and token.
pub async fn recent(conn: &mut Conn<'_>, signal: &Signal, since: DateTime<Utc>) -> Result<Recent> {
    let (email_declines, client_declines, email_attempts, client_attempts, cards, this_card): (
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = backroom_db::sql::query(
        "SELECT \
           COUNT(CASE WHEN kind = 'decline' AND email_index = $1 THEN 1 END), \
           COUNT(CASE WHEN kind = 'decline' AND client_index = $2 THEN 1 END), \
           COUNT(CASE WHEN kind = 'attempt' AND email_index = $1 THEN 1 END), \
           COUNT(CASE WHEN kind = 'attempt' AND client_index = $2 THEN 1 END), \
           COUNT(DISTINCT CASE WHEN kind = 'attempt' AND email_index = $1 THEN token_index END), \
           COUNT(CASE WHEN kind = 'attempt' AND email_index = $1 AND token_index = $3 THEN 1 END) \
         FROM risk_signals WHERE created_at >= $4 AND (email_index = $1 OR client_index = $2)",
    )
    .bind(signal.email_index.as_str())
    .bind(signal.client_index.as_deref())
    .bind(signal.token_index.as_str())
    .bind(since)
    .fetch_one(conn)
    .await
    .map_err(storage)?;
    let n = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(Recent {
        email_declines: n(email_declines),
        client_declines: n(client_declines),
        email_attempts: n(email_attempts),
        client_attempts: n(client_attempts),
        email_cards: n(cards).saturating_add(u32::from(this_card == 0)),
    })
}

/// Records a checkout attempt in the caller's write job.
pub async fn record_attempt(conn: &mut Conn<'_>, signal: &Signal) -> Result<()> {
    insert(conn, "attempt", signal).await
}

async fn insert(conn: &mut Conn<'_>, kind: &str, s: &Signal) -> Result<()> {
    backroom_db::sql::query(
        "INSERT INTO risk_signals (id, kind, order_id, email_index, client_index, token_index, currency, amount, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id::new("rsig"))
    .bind(kind)
    .bind(s.order_id.as_deref())
    .bind(s.email_index.as_str())
    .bind(s.client_index.as_deref())
    .bind(s.token_index.as_str())
    .bind(s.amount.currency().code())
    .bind(s.amount.amount())
    .bind(now())
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(storage)
}

/// Records that the payment of `order_id` was declined, in the caller's write job (the one
/// that settles the decline): a `decline` row with the hashes of the order's attempt. An order
/// whose checkout was not scored (scoring off) has no attempt row, and gets none.
pub async fn record_decline(conn: &mut Conn<'_>, order_id: &str) -> Result<()> {
    backroom_db::sql::query(
        "INSERT INTO risk_signals (id, kind, order_id, email_index, client_index, token_index, currency, amount, \
         created_at) SELECT $1, 'decline', order_id, email_index, client_index, token_index, currency, amount, $2 \
         FROM risk_signals WHERE order_id = $3 AND kind = 'attempt'",
    )
    .bind(id::new("rsig"))
    .bind(now())
    .bind(order_id)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(storage)
}

/// Removes signals older than [`RETENTION`]; answers how many.
pub async fn prune(db: &Db) -> Result<u64> {
    let mut tx = db.begin().await?;
    let n = backroom_db::sql::query("DELETE FROM risk_signals WHERE created_at < $1")
        .bind(now() - RETENTION)
        .execute(&mut tx.conn())
        .await
        .map_err(storage)?;
    tx.commit().await?;
    Ok(n)
}
