//! The transactional outbox (P5). A module that changes state others must learn about calls
//! [`enqueue`] with an [`Event`] inside its own transaction; consumers read the events back
//! typed through one interface, [`Consumer`], run by one of two runners:
//!
//! - [`Broadcast`] (see [`broadcast`]): every process reads every event, for state each
//!   process keeps for itself (its search index, its HTTP cache).
//! - [`Delivery`] (see [`delivery`]): each event is handed to one worker of all processes,
//!   at least once, for effects that must happen once (webhooks, connectors). The worker
//!   [`claim`]s due events, hands them to consumers, and marks them [`delivered`] or
//!   [`failed`] (with backoff, then dead-lettered).
//!
//! Claims are leases (`claimed_until`): on PostgreSQL several workers claim with
//! `FOR UPDATE SKIP LOCKED` and never take the same event; on SQLite the single writer
//! serialises claims. An event whose worker died is claimed again when its lease runs out,
//! so delivery is at least once; consumers de-duplicate by `event_id`.

pub mod broadcast;
pub mod delivery;
mod event;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use backroom_kernel::{Error, Result, id, now};
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use broadcast::Broadcast;
pub use delivery::Delivery;
pub use event::{
    Action, CategoryChanged, CustomerCreated, CustomerErased, DecodeError, Event, OrderChange, OrderOutcome,
    OrderState, PriceListChanged, ProductChanged, PromotionExhausted, StockChanged, TOPICS, WebhookEndpointDisabled,
    version_of,
};

use crate::{Conn, Db, Dialect, on_conn, storage};

/// After this many failed deliveries an event is dead-lettered.
pub const MAX_ATTEMPTS: i64 = 10;

/// A boxed future that is `Send`, as trait objects return it.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An event read back from the outbox, with the id and time it was written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The event's `evt_…` id: the key a consumer de-duplicates by.
    pub event_id: String,
    pub created_at: DateTime<Utc>,
    pub event: Event,
}

/// Events handed to a [`Consumer`] in one call, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub events: &'a [Envelope],
    /// From the [`Broadcast`] runner: the reader's position after these events. A consumer
    /// that keeps durable state (the search index) saves it with that state and answers it
    /// from [`Consumer::resume`]. `None` from the [`Delivery`] runner.
    pub position: Option<&'a str>,
}

/// Something that acts on outbox events: the search index and the HTTP cache (through a
/// [`Broadcast`] runner), webhooks and connectors (through a [`Delivery`] runner).
///
/// Either runner may hand an event again (after a failure, a crash, or an expired lease):
/// handling must be idempotent, or de-duplicate by [`Envelope::event_id`].
pub trait Consumer: Send + Sync {
    /// A short, stable name for logs.
    fn name(&self) -> &'static str;

    /// Whether this consumer acts on `event`; the others never reach [`Consumer::handle`].
    fn wants(&self, event: &Event) -> bool;

    /// Acts on a batch of wanted events. An error hands the same events again later: from
    /// the same position (broadcast) or after a backoff (delivery).
    fn handle<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<()>>;

    /// Broadcast only: called when the runner starts, with the outbox's head, before any
    /// event; answers the position to read from. The default reads from the head on (a
    /// consumer whose state starts empty at each start, such as a cache).
    fn resume<'a>(&'a self, head: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move { Ok(head.to_owned()) })
    }
}

/// An event's row, as the delivery worker claims it (its payload still encoded).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct StoredEvent {
    pub id: i64,
    pub event_id: String,
    pub topic: String,
    /// The event's JSON document.
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub attempts: i64,
}

impl StoredEvent {
    /// The typed event.
    pub fn decode(&self) -> std::result::Result<Envelope, DecodeError> {
        Ok(Envelope {
            event_id: self.event_id.clone(),
            created_at: self.created_at,
            event: Event::decode(&self.topic, &self.payload)?,
        })
    }
}

/// Writes an event in the caller's transaction. Returns its `evt_…` id.
pub async fn enqueue(conn: &mut Conn<'_>, event: &Event) -> Result<String> {
    let event_id = id::new("evt");
    let ts = now();
    let topic = event.topic();
    let body = event.encode();
    crate::sql::query(
        "INSERT INTO outbox (event_id, topic, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(&event_id)
    .bind(topic)
    .bind(&body)
    .bind(ts)
    .execute(conn)
    .await
    .map_err(storage)?;
    Ok(event_id)
}

/// Claims up to `limit` due events for `lease`; nobody else gets them until it runs out.
pub async fn claim(db: &Db, limit: i64, lease: Duration) -> Result<Vec<StoredEvent>> {
    let ts = now();
    let until = ts + chrono::Duration::from_std(lease).map_err(Error::internal)?;
    let mut tx = db.begin().await?;
    let mut conn = tx.conn();
    let lock = match conn.dialect() {
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    let sql = format!(
        "UPDATE outbox SET claimed_until = $2, attempts = attempts + 1 WHERE id IN (\
         SELECT id FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $1 \
         AND (claimed_until IS NULL OR claimed_until < $1) ORDER BY id LIMIT $3{lock}) \
         RETURNING id, event_id, topic, payload, created_at, attempts"
    );
    let mut events: Vec<StoredEvent> = on_conn!(&mut conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ts)
        .bind(until)
        .bind(limit)
        .fetch_all(&mut *c)
        .await
        .map_err(storage))?;
    tx.commit().await?;
    events.sort_by_key(|e| e.id);
    Ok(events)
}

/// Marks an event delivered.
pub async fn delivered(db: &Db, id: i64) -> Result<()> {
    delivered_all(db, &[id]).await
}

/// Marks events delivered, all in one statement and one commit (a delivery pass records its
/// whole claim at once rather than a transaction, and on SQLite an fsync, per event).
pub async fn delivered_all(db: &Db, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    crate::sql::query(format!(
        "UPDATE outbox SET delivered_at = $1, claimed_until = NULL WHERE id IN {}",
        crate::sql::in_list(ids.len(), 2)
    ))
    .bind(now())
    .bind_all(ids.iter().copied())
    .execute(&mut tx.conn())
    .await
    .map_err(storage)?;
    tx.commit().await
}

/// Records a failed delivery: retried after an exponential backoff (1 s, 2 s, 4 s, … capped
/// at 10 min), dead-lettered after [`MAX_ATTEMPTS`].
pub async fn failed(db: &Db, event: &StoredEvent, error: &str) -> Result<()> {
    let ts = now();
    let backoff = chrono::Duration::seconds(1_i64 << event.attempts.clamp(0, 10)).min(chrono::Duration::minutes(10));
    let dead = event.attempts >= MAX_ATTEMPTS;
    let mut tx = db.begin().await?;
    on_conn!(&mut tx.conn(), c => sqlx::query(
        "UPDATE outbox SET claimed_until = NULL, next_attempt_at = $2, last_error = $3, \
         dead_at = CASE WHEN $4 THEN $5 ELSE NULL END WHERE id = $1",
    )
    .bind(event.id)
    .bind(ts + backoff)
    .bind(error.chars().take(1000).collect::<String>())
    .bind(dead)
    .bind(ts)
    .execute(&mut *c)
    .await
    .map(|_| ())
    .map_err(storage))?;
    tx.commit().await
}

/// How long delivered events stay readable (broadcast readers, such as each process's
/// search index, catch up from them after a restart).
pub const RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Deletes delivered events older than [`RETENTION`]; dead ones stay for a person to see.
pub async fn prune(db: &Db) -> Result<u64> {
    let mut tx = db.begin().await?;
    let n = on_conn!(&mut tx.conn(), c => sqlx::query("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < $1")
        .bind(now() - RETENTION)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        .map_err(storage))?;
    tx.commit().await?;
    Ok(n)
}

/// Counts for monitoring: events waiting, dead, and the age of the oldest waiting one.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub pending: i64,
    pub dead: i64,
    pub oldest_pending_seconds: f64,
}

pub async fn stats(db: &Db) -> Result<Stats> {
    let mut r = db.read().await?;
    let (pending, dead, oldest): (i64, i64, Option<DateTime<Utc>>) = on_conn!(&mut r.conn(), c => sqlx::query_as(
        "SELECT \
           (SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL), \
           (SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL), \
           (SELECT MIN(created_at) FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL)",
    )
    .fetch_one(&mut *c)
    .await
    .map_err(storage))?;
    let oldest_pending_seconds = oldest.map_or(0.0, |o| (now() - o).num_milliseconds().max(0) as f64 / 1000.0);
    Ok(Stats { pending, dead, oldest_pending_seconds })
}

/// The dead-letter list: events given up on, newest first, with their last error.
pub async fn dead(db: &Db, limit: i64) -> Result<Vec<DeadEvent>> {
    let mut r = db.read().await?;
    on_conn!(&mut r.conn(), c => sqlx::query_as(
        "SELECT event_id, topic, payload, created_at, attempts, last_error FROM outbox \
         WHERE dead_at IS NOT NULL ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *c)
    .await
    .map_err(storage))
}

/// An event on the dead-letter list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct DeadEvent {
    pub event_id: String,
    pub topic: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// Events of a topic, oldest first (for tests and the admin view).
pub async fn list(db: &Db, topic: &str) -> Result<Vec<StoredEvent>> {
    let mut r = db.read().await?;
    on_conn!(&mut r.conn(), c => sqlx::query_as(
        "SELECT id, event_id, topic, payload, created_at, attempts FROM outbox WHERE topic = $1 ORDER BY id",
    )
    .bind(topic)
    .fetch_all(&mut *c)
    .await
    .map_err(storage))
}
