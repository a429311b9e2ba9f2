//! The storage limit, for `backroom bench`: how many checkout-like transactions a database
//! commits a second when nothing else is in the way, so that the benchmarks can state our
//! figures as ratios of it. A checkout-like transaction takes one unit of a hot stock row
//! with a conditional `UPDATE`, inserts an order, its line and an outbox event, and commits.
//!
//! It runs on scratch tables (`bench_raw_*`) that it creates and drops again, and only ever
//! in a database the bench made for itself (a temporary SQLite file, or the run's own
//! PostgreSQL database, see [`crate::scratch`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backroom_db::writer::Done;
use backroom_db::{Conn, Db, storage};
use backroom_kernel::Error;

const SCHEMA: &[&str] = &[
    "DROP TABLE IF EXISTS bench_raw_lines",
    "DROP TABLE IF EXISTS bench_raw_orders",
    "DROP TABLE IF EXISTS bench_raw_events",
    "DROP TABLE IF EXISTS bench_raw_stock",
    "CREATE TABLE bench_raw_stock (id TEXT PRIMARY KEY, on_hand BIGINT NOT NULL, reserved BIGINT NOT NULL)",
    "CREATE TABLE bench_raw_orders (id TEXT PRIMARY KEY, email TEXT NOT NULL, total BIGINT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE bench_raw_lines (order_id TEXT NOT NULL, variant_id TEXT NOT NULL, quantity BIGINT NOT NULL, unit_price BIGINT NOT NULL)",
    "CREATE TABLE bench_raw_events (id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload TEXT NOT NULL)",
    "INSERT INTO bench_raw_stock (id, on_hand, reserved) VALUES ('hot', 1000000000, 0)",
];

async fn exec_all(db: &Db, statements: &[&str]) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    for sql in statements {
        backroom_db::sql::query(*sql).execute(&mut tx.conn()).await.map(|_| ()).map_err(storage)?;
    }
    tx.commit().await
}

/// One checkout-like transaction's statements on `conn`.
async fn checkout_like(conn: &mut Conn<'_>, n: u64) -> Result<(), Error> {
    let id = format!("o{n}-{}", backroom_kernel::id::new("x"));
    let q = backroom_db::sql::query;
    let taken = q("UPDATE bench_raw_stock SET reserved = reserved + 1 WHERE id = 'hot' AND on_hand - reserved >= 1")
        .execute(conn)
        .await
        .map_err(storage)?;
    if taken != 1 {
        return Err(Error::internal("the scratch stock ran out"));
    }
    q("INSERT INTO bench_raw_orders (id, email, total, created_at) VALUES ($1, 'buyer@example.com', 9900, $2)")
        .bind(&id)
        .bind(backroom_kernel::now().to_rfc3339())
        .execute(conn)
        .await
        .map_err(storage)?;
    q("INSERT INTO bench_raw_lines (order_id, variant_id, quantity, unit_price) VALUES ($1, 'hot', 1, 9900)")
        .bind(&id)
        .execute(conn)
        .await
        .map_err(storage)?;
    q("INSERT INTO bench_raw_events (id, topic, payload) VALUES ($1, 'order.placed', '{}')")
        .bind(&id)
        .execute(conn)
        .await
        .map_err(storage)?;
    Ok(())
}

/// Transactions a second, one commit each, `clients` at a time (each on its own connection;
/// on SQLite they queue for the one writer connection).
pub async fn one_per_commit(db: &Db, clients: usize, seconds: f64) -> Result<f64, Error> {
    rate(db, clients, seconds, |db, n| async move {
        let mut tx = db.begin().await?;
        checkout_like(&mut tx.conn(), n).await?;
        tx.commit().await
    })
    .await
}

/// Transactions a second through the group-commit writer, `clients` submitting at once.
pub async fn batched(db: &Db, clients: usize, seconds: f64) -> Result<f64, Error> {
    rate(db, clients, seconds, |db, n| async move {
        db.write(move |mut conn| {
            Box::pin(async move {
                checkout_like(&mut conn, n).await?;
                Ok(Done::Commit(()))
            })
        })
        .await
    })
    .await
}

/// Runs `one(db, n)` from `clients` tasks for `seconds` on fresh scratch tables; answers how
/// many completed a second.
async fn rate<F, Fut>(db: &Db, clients: usize, seconds: f64, one: F) -> Result<f64, Error>
where
    F: Fn(Db, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), Error>> + Send,
{
    exec_all(db, SCHEMA).await?;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (db, done, one) = (db.clone(), done.clone(), one.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    one(db.clone(), done.fetch_add(1, Ordering::Relaxed)).await?;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(Error::internal)??;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    exec_all(db, &SCHEMA[..4]).await?;
    Ok(rate)
}
