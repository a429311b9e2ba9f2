//! `Idempotency-Key` records for checkout, scoped per cart (owns `idempotency_keys`).
//!
//! A checkout claims its key in the same write job that reserves its stock and creates its
//! order (an `in_flight` row linked to the order), or, when it ends without an order (sold
//! out, price changed, …), claims it `done` with its outcome at once. `INSERT … ON CONFLICT
//! DO NOTHING` decides the race: exactly one request wins; every later request with the same
//! key and body gets the stored outcome. Records are kept at least 24 hours.

use backroom_db::{Conn, Db, storage};
use backroom_kernel::{Error, Result, now};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::Outcome;

/// How long records are kept before [`prune`] removes them.
pub const RETENTION: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// What a new request with a key finds.
#[derive(Debug)]
pub enum Begin {
    /// This request owns the key now.
    New,
    /// The key has an answer: replay it.
    Replay(Box<Outcome>),
    /// The first request with this key is still running.
    InUse,
    /// The key was used with a different body.
    Reused,
}

/// Whether `key` is 1–255 printable ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// SHA-256 of the request's canonical JSON.
pub fn request_hash(canonical_json: &str) -> String {
    hex::encode(Sha256::digest(canonical_json.as_bytes()))
}

/// Claims `key` inside a write job: in flight for the checkout that created `order_id`, or
/// done at once with `outcome`. `INSERT … ON CONFLICT DO NOTHING` decides a race: exactly one
/// request claims a key. Any other answer means the key was there already; the caller then
/// rolls its job back.
pub async fn claim(
    conn: &mut Conn<'_>,
    scope: &str,
    key: &str,
    hash: &str,
    order_id: Option<&str>,
    outcome: Option<&Outcome>,
) -> Result<Begin> {
    let ts = now();
    let body = outcome.map(|o| serde_json::to_string(&o.without_personal())).transpose().map_err(Error::internal)?;
    let state = if body.is_some() { "done" } else { "in_flight" };
    let inserted = backroom_db::sql::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, state, order_id, outcome, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (scope, key) DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(hash)
    .bind(state)
    .bind(order_id)
    .bind(body)
    .bind(ts)
    .execute(conn)
    .await
    .map_err(storage)?;
    if inserted == 1 {
        return Ok(Begin::New);
    }
    let (stored_hash, state, outcome): (String, String, Option<String>) = backroom_db::sql::query(
        "SELECT request_hash, state, outcome FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_one(conn)
    .await
    .map_err(storage)?;
    if stored_hash != hash {
        return Ok(Begin::Reused);
    }
    match (state.as_str(), outcome) {
        ("done", Some(o)) => Ok(Begin::Replay(Box::new(decode_outcome(&o)?))),
        _ => Ok(Begin::InUse),
    }
}

/// Stores the answer of the request that owns the key, unless recovery has already stored
/// a later one (it settled the order while this request was still answering `202`).
pub async fn finish(conn: &mut Conn<'_>, scope: &str, key: &str, outcome: &Outcome) -> Result<()> {
    let body = serde_json::to_string(&outcome.without_personal()).map_err(Error::internal)?;
    backroom_db::sql::query(
        "UPDATE idempotency_keys SET state = 'done', outcome = $3, updated_at = $4 \
         WHERE scope = $1 AND key = $2 AND state = 'in_flight'",
    )
    .bind(scope)
    .bind(key)
    .bind(&body)
    .bind(now())
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(storage)
}

/// Stores the final outcome for every key linked to an order (recovery settled it).
pub async fn finish_for_order(conn: &mut Conn<'_>, order_id: &str, outcome: &Outcome) -> Result<()> {
    let body = serde_json::to_string(&outcome.without_personal()).map_err(Error::internal)?;
    backroom_db::sql::query(
        "UPDATE idempotency_keys SET state = 'done', outcome = $2, updated_at = $3 WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(&body)
    .bind(now())
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(storage)
}

/// Reads a stored outcome. An order stored before discounts existed has no `discount_total`:
/// it was zero, in the order's currency.
fn decode_outcome(stored: &str) -> Result<Outcome> {
    serde_json::from_str(stored).or_else(|first| {
        let mut v: serde_json::Value = serde_json::from_str(stored).map_err(Error::internal)?;
        let order = v.get_mut("order").and_then(|o| o.as_object_mut()).ok_or_else(|| Error::internal(first))?;
        let currency = order.get("currency").cloned().unwrap_or_default();
        order.entry("discount_total").or_insert(serde_json::json!({"amount": 0, "currency": currency}));
        serde_json::from_value(v).map_err(Error::internal)
    })
}

/// Removes finished records older than [`RETENTION`], and in-flight ones without an order
/// older than `stale_before` (left by versions that claimed a key before reserving; a key is
/// now claimed in the same job as its order, or done at once).
pub async fn prune(db: &Db, stale_before: DateTime<Utc>) -> Result<u64> {
    let mut tx = db.begin().await?;
    let n = backroom_db::sql::query(
        "DELETE FROM idempotency_keys WHERE (state = 'done' AND created_at < $1) \
         OR (state = 'in_flight' AND order_id IS NULL AND created_at < $2)",
    )
    .bind(now() - RETENTION)
    .bind(stale_before)
    .execute(&mut tx.conn())
    .await
    .map_err(storage)?;
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_up_to_255() {
        assert!(valid_key("a"));
        assert!(valid_key(&"k".repeat(255)));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(256)));
        assert!(!valid_key("tab\there"));
        assert!(!valid_key("ünïcode"));
    }
}
