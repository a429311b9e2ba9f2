//! Reading the outbox as a broadcast reader: every process reads every event (unlike the
//! delivery worker, which hands each event to one worker), from a position it keeps.
//!
//! The position must never skip an event that commits late. On SQLite the single writer
//! commits events in id order, so the last id read is a safe position. On PostgreSQL ids come
//! from a sequence and can commit out of order, so the position is a transaction horizon
//! instead: each event records the id of the transaction that wrote it (`txid`), and a read
//! takes only events of transactions older than every transaction still running
//! (`pg_snapshot_xmin`), all of which have ended; the next read starts at that horizon.
//! A long-running transaction holds the horizon back (events wait for it), never skips one.
//!
//! Positions are strings (`sqlite:<id>`, `pg:<txid>`) so that a consumer can store one with
//! its own state (the search index keeps it in its commit).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backroom_kernel::{Error, Result};
use chrono::{DateTime, Utc};

use super::{Batch, Consumer, Envelope, Event};
use crate::{Db, Dialect, on_conn, storage};

/// The head of the outbox now: a position from which nothing committed later is missed.
pub async fn head(db: &Db) -> Result<String> {
    let mut r = db.read().await?;
    match db.dialect() {
        Dialect::Sqlite => {
            let id: i64 = on_conn!(&mut r.conn(), c => sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM outbox")
                .fetch_one(&mut *c)
                .await
                .map_err(storage))?;
            Ok(format!("sqlite:{id}"))
        }
        Dialect::Postgres => {
            let xmin: i64 = on_conn!(&mut r.conn(), c => sqlx::query_scalar(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            )
            .fetch_one(&mut *c)
            .await
            .map_err(storage))?;
            Ok(format!("pg:{xmin}"))
        }
    }
}

/// The prefix of `db`'s positions (`sqlite:` or `pg:`): a position saved on another
/// database kind is no position here.
pub fn prefix(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "sqlite:",
        Dialect::Postgres => "pg:",
    }
}

/// The earlier of two positions on the same database (where a reader must start so that
/// neither misses an event).
pub fn earlier<'a>(a: &'a str, b: &'a str) -> Result<&'a str> {
    Ok(if parse(b)? < parse(a)? { b } else { a })
}

fn parse(position: &str) -> Result<i64> {
    position
        .split_once(':')
        .and_then(|(_, n)| n.parse().ok())
        .ok_or_else(|| Error::internal(format!("bad outbox position {position}")))
}

type Row = (String, String, String, DateTime<Utc>);

/// Events after `position`, and the position after them. An event this build cannot read
/// (an unknown topic, a newer version) is skipped with a warning and passed over.
pub async fn read(db: &Db, position: &str) -> Result<(Vec<Envelope>, String)> {
    let from = parse(position)?;
    let mut r = db.read().await?;
    let (rows, next) = match db.dialect() {
        Dialect::Sqlite => {
            let rows: Vec<(i64, String, String, String, DateTime<Utc>)> = on_conn!(&mut r.conn(), c => sqlx::query_as(
                "SELECT id, event_id, topic, payload, created_at FROM outbox WHERE id > $1 ORDER BY id LIMIT 10000",
            )
            .bind(from)
            .fetch_all(&mut *c)
            .await
            .map_err(storage))?;
            let next = rows.last().map_or(from, |r| r.0);
            (rows.into_iter().map(|(_, e, t, p, at)| (e, t, p, at)).collect::<Vec<Row>>(), format!("sqlite:{next}"))
        }
        Dialect::Postgres => {
            let horizon: i64 = on_conn!(&mut r.conn(), c => sqlx::query_scalar(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            )
            .fetch_one(&mut *c)
            .await
            .map_err(storage))?;
            let rows: Vec<Row> = on_conn!(&mut r.conn(), c => sqlx::query_as(
                "SELECT event_id, topic, payload, created_at FROM outbox WHERE txid >= $1 AND txid < $2 ORDER BY id",
            )
            .bind(from)
            .bind(horizon)
            .fetch_all(&mut *c)
            .await
            .map_err(storage))?;
            (rows, format!("pg:{horizon}"))
        }
    };
    let events = rows
        .into_iter()
        .filter_map(|(event_id, topic, payload, created_at)| match Event::decode(&topic, &payload) {
            Ok(event) => Some(Envelope { event_id, created_at, event }),
            Err(e) => {
                tracing::warn!(event = event_id, error = %e, "outbox reader skips an event it cannot read");
                None
            }
        })
        .collect();
    Ok((events, next))
}

/// Runs [`Consumer`]s as broadcast readers in this process: reads the events after its
/// position and hands each consumer, in the order they were added, the events it wants.
///
/// The consumers share one position. When one fails, the position stays and the whole batch
/// is read again on the next step, for every consumer (they are idempotent): a consumer
/// added after another (the cache after the search index) never sees an event before the
/// earlier one has handled it.
pub struct Broadcast {
    db: Db,
    consumers: Vec<Arc<dyn Consumer>>,
}

impl Broadcast {
    pub fn new(db: Db) -> Self {
        Broadcast { db, consumers: Vec::new() }
    }

    /// Adds a consumer; it runs after those added before.
    pub fn with(mut self, consumer: Arc<dyn Consumer>) -> Self {
        self.consumers.push(consumer);
        self
    }

    /// Starts the consumers in order ([`Consumer::resume`]); answers the earliest position
    /// any of them asks to read from.
    pub async fn start(&self) -> Result<String> {
        let head = head(&self.db).await?;
        let mut from = head.clone();
        for c in &self.consumers {
            let p = c
                .resume(&head)
                .await
                .inspect_err(|e| tracing::warn!(consumer = c.name(), error = %e, "outbox consumer could not start"))?;
            if !p.starts_with(prefix(self.db.dialect())) {
                return Err(Error::internal(format!("{} resumes from {p}, not a position on this database", c.name())));
            }
            from = earlier(&from, &p)?.to_owned();
        }
        Ok(from)
    }

    /// Hands the events after `position` to the consumers; answers the position after them,
    /// or the error of the first consumer that failed (then nothing moves).
    pub async fn step(&self, position: &str) -> Result<String> {
        let (events, next) = read(&self.db, position)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "outbox broadcast read failed; will retry"))?;
        if events.is_empty() {
            return Ok(next);
        }
        tracing::debug!(events = events.len(), from = position, to = %next, "broadcast reader follows the outbox");
        for c in &self.consumers {
            let wanted: Vec<Envelope> = events.iter().filter(|e| c.wants(&e.event)).cloned().collect();
            if wanted.is_empty() {
                continue;
            }
            c.handle(Batch { events: &wanted, position: Some(&next) }).await.inspect_err(
                |e| tracing::warn!(consumer = c.name(), error = %e, from = position, "outbox consumer failed; will retry"),
            )?;
        }
        Ok(next)
    }

    /// Starts the consumers (retrying every 2 s until they do), then follows the outbox every
    /// `interval` until `stop`.
    pub async fn run(self, interval: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut position = loop {
            match self.start().await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::error!(error = %e, "outbox broadcast reader could not start; retrying");
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        };
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(interval) => {}
            }
            // A failed step has logged why; the next one reads the same events again.
            if let Ok(p) = self.step(&position).await {
                position = p;
            }
        }
    }
}
