//! Reservations: stock held for an order between checkout and payment (P1, P3).
//!
//! Every function here runs inside the caller's transaction (the checkout's), so the order,
//! its reservations and the payment attempt commit together or not at all. Each stock change
//! is one conditional `UPDATE` of one stock row; lines are handled in variant-id order so two
//! checkouts never lock rows in opposite orders (no deadlocks on PostgreSQL).

use backroom_db::{Conn, on_conn, storage};
use backroom_kernel::{Result, id, now};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_LOCATION, StockLevel, record};

/// One line to reserve.
#[derive(Debug, Clone)]
pub struct ReserveLine {
    pub variant_id: String,
    pub quantity: i64,
    pub allow_backorder: bool,
}

/// A line that could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shortage {
    pub variant_id: String,
    pub requested: i64,
    /// Units available at the moment of the attempt (summed over locations).
    pub available: i64,
}

#[derive(sqlx::FromRow)]
struct Candidate {
    location_id: String,
    available: i64,
}

#[derive(sqlx::FromRow)]
struct ReservationRow {
    variant_id: String,
    location_id: String,
    quantity: i64,
}

/// Reserves every line for `order_id`, or reports the lines that lack stock (the caller
/// then rolls its transaction back, so nothing stays reserved). A variant without any stock
/// row is not tracked and needs no reservation. Returns the variant ids whose stock changed.
pub async fn reserve(
    conn: &mut Conn<'_>,
    order_id: &str,
    lines: &[ReserveLine],
    expires_at: DateTime<Utc>,
    actor: &str,
) -> Result<Result<Vec<String>, Vec<Shortage>>> {
    let mut sorted: Vec<&ReserveLine> = lines.iter().collect();
    sorted.sort_by(|a, b| a.variant_id.cmp(&b.variant_id));
    let ts = now();
    let mut shortages = Vec::new();
    let mut changed = Vec::new();
    for line in sorted {
        // Where the units could come from: the default location first, then the fullest.
        // Only a hint: the UPDATE below re-checks under the row lock.
        let candidates: Vec<Candidate> = on_conn!(conn, c => sqlx::query_as(
            "SELECT location_id, on_hand - reserved - allocated AS available FROM stock_levels \
             WHERE variant_id = $1 ORDER BY CASE WHEN location_id = $2 THEN 0 ELSE 1 END, available DESC",
        )
        .bind(&line.variant_id)
        .bind(DEFAULT_LOCATION)
        .fetch_all(&mut *c)
        .await
        .map_err(storage))?;
        if candidates.is_empty() {
            continue; // not tracked
        }
        let mut done = false;
        for cand in candidates.iter().filter(|c| line.allow_backorder || c.available >= line.quantity) {
            let level: Option<StockLevel> = on_conn!(conn, c => sqlx::query_as::<_, crate::LevelRow>(
                "UPDATE stock_levels SET reserved = reserved + $3, updated_at = $4 \
                 WHERE variant_id = $1 AND location_id = $2 AND ($5 OR on_hand - reserved - allocated >= $3) \
                 RETURNING variant_id, location_id, on_hand, reserved, allocated",
            )
            .bind(&line.variant_id)
            .bind(&cand.location_id)
            .bind(line.quantity)
            .bind(ts)
            .bind(line.allow_backorder)
            .fetch_optional(&mut *c)
            .await
            .map(|r| r.map(StockLevel::from))
            .map_err(storage))?;
            if let Some(level) = level {
                on_conn!(conn, c => sqlx::query(
                    "INSERT INTO stock_reservations (id, order_id, variant_id, location_id, quantity, status, expires_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 'reserved', $6, $7, $7)",
                )
                .bind(id::new("res"))
                .bind(order_id)
                .bind(&line.variant_id)
                .bind(&cand.location_id)
                .bind(line.quantity)
                .bind(expires_at)
                .bind(ts)
                .execute(&mut *c)
                .await
                .map(|_| ())
                .map_err(storage))?;
                record(conn, &level, 0, line.quantity, 0, &format!("reserved for {order_id}"), actor, ts).await?;
                changed.push(line.variant_id.clone());
                done = true;
                break;
            }
        }
        if !done {
            shortages.push(Shortage {
                variant_id: line.variant_id.clone(),
                requested: line.quantity,
                available: candidates.iter().map(|c| c.available.max(0)).sum(),
            });
        }
    }
    Ok(if shortages.is_empty() { Ok(changed) } else { Err(shortages) })
}

/// Marks an order's open reservations `status` and answers them in variant-id order (the
/// order stock rows are locked in, as in [`reserve`]).
async fn close_reservations(
    conn: &mut Conn<'_>,
    order_id: &str,
    status: &str,
    ts: DateTime<Utc>,
) -> Result<Vec<ReservationRow>> {
    let mut rows: Vec<ReservationRow> = on_conn!(conn, c => sqlx::query_as(
        "UPDATE stock_reservations SET status = $2, updated_at = $3 WHERE order_id = $1 AND status = 'reserved' \
         RETURNING variant_id, location_id, quantity",
    )
    .bind(order_id)
    .bind(status)
    .bind(ts)
    .fetch_all(&mut *c)
    .await
    .map_err(storage))?;
    rows.sort_by(|a, b| (&a.variant_id, &a.location_id).cmp(&(&b.variant_id, &b.location_id)));
    Ok(rows)
}

/// Turns an order's reservations into allocations (payment captured). Returns the variant
/// ids whose stock changed.
pub async fn allocate(conn: &mut Conn<'_>, order_id: &str, actor: &str) -> Result<Vec<String>> {
    settle(conn, order_id, true, actor).await
}

/// Gives an order's reserved units back (payment declined or voided).
pub async fn release(conn: &mut Conn<'_>, order_id: &str, actor: &str) -> Result<Vec<String>> {
    settle(conn, order_id, false, actor).await
}

async fn settle(conn: &mut Conn<'_>, order_id: &str, allocate: bool, actor: &str) -> Result<Vec<String>> {
    let ts = now();
    let mut changed = Vec::new();
    let status = if allocate { "allocated" } else { "released" };
    for r in close_reservations(conn, order_id, status, ts).await? {
        let sql = if allocate {
            "UPDATE stock_levels SET reserved = reserved - $3, allocated = allocated + $3, updated_at = $4 \
             WHERE variant_id = $1 AND location_id = $2 RETURNING variant_id, location_id, on_hand, reserved, allocated"
        } else {
            "UPDATE stock_levels SET reserved = reserved - $3, updated_at = $4 \
             WHERE variant_id = $1 AND location_id = $2 RETURNING variant_id, location_id, on_hand, reserved, allocated"
        };
        let level: Option<StockLevel> = on_conn!(conn, c => sqlx::query_as::<_, crate::LevelRow>(sql)
            .bind(&r.variant_id)
            .bind(&r.location_id)
            .bind(r.quantity)
            .bind(ts)
            .fetch_optional(&mut *c)
            .await
            .map(|r| r.map(StockLevel::from))
            .map_err(storage))?;
        // The stock row is gone only if the variant was deleted meanwhile; nothing to move then.
        if let Some(level) = level {
            let (reason, alloc) = if allocate { ("allocated to", r.quantity) } else { ("released from", 0) };
            record(conn, &level, 0, -r.quantity, alloc, &format!("{reason} {order_id}"), actor, ts).await?;
            changed.push(r.variant_id);
        }
    }
    Ok(changed)
}
