//! `Idempotency-Key` records for checkout, scoped per cart (owns `idempotency_keys`).
//!
//! The first request with a key inserts an `in_flight` row (`INSERT … ON CONFLICT DO NOTHING`
//! decides the race: exactly one request wins); its outcome is stored when it ends and replayed
//! to every later request with the same key and body. Records are kept at least 24 hours.

use backroom_db::{Conn, Db, on_conn, storage};
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

pub async fn begin(db: &Db, scope: &str, key: &str, hash: &str) -> Result<Begin> {
    let ts = now();
    let mut tx = db.begin().await?;
    let inserted = on_conn!(&mut tx.conn(), c => sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, state, created_at, updated_at) \
         VALUES ($1, $2, $3, 'in_flight', $4, $4) ON CONFLICT (scope, key) DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(hash)
    .bind(ts)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    .map_err(storage))?;
    if inserted == 1 {
        tx.commit().await?;
        return Ok(Begin::New);
    }
    let (stored_hash, state, outcome): (String, String, Option<String>) = on_conn!(&mut tx.conn(), c => sqlx::query_as(
        "SELECT request_hash, state, outcome FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_one(&mut *c)
    .await
    .map_err(storage))?;
    tx.commit().await?;
    if stored_hash != hash {
        return Ok(Begin::Reused);
    }
    match (state.as_str(), outcome) {
        ("done", Some(o)) => Ok(Begin::Replay(Box::new(serde_json::from_str(&o).map_err(Error::internal)?))),
        _ => Ok(Begin::InUse),
    }
}

/// Links the key to the order its request created (in the checkout's transaction), so that
/// recovery can finish the record if the request dies.
pub async fn link_order(conn: &mut Conn<'_>, scope: &str, key: &str, order_id: &str) -> Result<()> {
    on_conn!(conn, c => sqlx::query("UPDATE idempotency_keys SET order_id = $3 WHERE scope = $1 AND key = $2")
        .bind(scope)
        .bind(key)
        .bind(order_id)
        .execute(&mut *c)
        .await
        .map(|_| ())
        .map_err(storage))
}

/// Stores the answer of the request that owns the key, unless recovery has already stored
/// a later one (it settled the order while this request was still answering `202`).
pub async fn finish(db: &Db, scope: &str, key: &str, outcome: &Outcome) -> Result<()> {
    let body = serde_json::to_string(outcome).map_err(Error::internal)?;
    let mut tx = db.begin().await?;
    on_conn!(&mut tx.conn(), c => sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', outcome = $3, updated_at = $4 \
         WHERE scope = $1 AND key = $2 AND state = 'in_flight'",
    )
    .bind(scope)
    .bind(key)
    .bind(&body)
    .bind(now())
    .execute(&mut *c)
    .await
    .map(|_| ())
    .map_err(storage))?;
    tx.commit().await
}

/// Stores the final outcome for every key linked to an order (recovery settled it).
pub async fn finish_for_order(conn: &mut Conn<'_>, order_id: &str, outcome: &Outcome) -> Result<()> {
    let body = serde_json::to_string(outcome).map_err(Error::internal)?;
    on_conn!(conn, c => sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', outcome = $2, updated_at = $3 WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(&body)
    .bind(now())
    .execute(&mut *c)
    .await
    .map(|_| ())
    .map_err(storage))
}

/// Forgets an in-flight key whose request failed before it changed anything (an internal
/// error), so that the client's retry runs again.
pub async fn abandon(db: &Db, scope: &str, key: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    on_conn!(&mut tx.conn(), c => sqlx::query(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'in_flight' AND order_id IS NULL",
    )
    .bind(scope)
    .bind(key)
    .execute(&mut *c)
    .await
    .map(|_| ())
    .map_err(storage))?;
    tx.commit().await
}

/// Removes finished records older than [`RETENTION`], and in-flight ones without an order
/// older than `stale_before` (their request died before reserving anything).
pub async fn prune(db: &Db, stale_before: DateTime<Utc>) -> Result<u64> {
    let mut tx = db.begin().await?;
    let n = on_conn!(&mut tx.conn(), c => sqlx::query(
        "DELETE FROM idempotency_keys WHERE (state = 'done' AND created_at < $1) \
         OR (state = 'in_flight' AND order_id IS NULL AND created_at < $2)",
    )
    .bind(now() - RETENTION)
    .bind(stale_before)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    .map_err(storage))?;
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
