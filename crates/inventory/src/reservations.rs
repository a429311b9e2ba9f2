//! Reservations: stock held for an order between checkout and payment (P1, P3).
//!
//! Every function here runs inside the caller's transaction (the checkout's), so the order,
//! its reservations and the payment attempt commit together or not at all. Each stock change
//! is one conditional `UPDATE` of one stock row.
//!
//! A line is served from as many locations as it needs, always in the same order, the
//! *location order*: the default location first, then the others by id (byte order). So a
//! line of 5 over 3 units at the default location and 3 at a warehouse reserves 3 at the
//! default location and 2 at the warehouse; each part is a row of `stock_reservations`
//! (one per order, variant and location). Stock rows are locked in one global order, variant
//! id then location order, by reservations and by their settlement alike, so two checkouts
//! never wait on each other's rows in opposite orders (no deadlocks on PostgreSQL).

use std::collections::BTreeMap;

use backroom_db::{Conn, Dialect, storage};
use backroom_kernel::id::OrderId;
use backroom_kernel::{Code, Error, Result, id, now};
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
    /// Units available at the moment of the attempt: the sum over locations of what each
    /// can still sell (never below zero), the figure the storefront shows.
    pub available: i64,
}

/// The one refusal of lines short of stock, `409 insufficient_stock` with `items`: a cart's
/// add-item and a checkout answer it alike.
pub fn insufficient_stock(items: &[Shortage]) -> Error {
    Error::refused_with(
        Code::InsufficientStock,
        "some lines are not in stock in the quantity asked (see `items`); nothing was reserved",
        serde_json::json!({ "items": items }),
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    location_id: String,
    available: i64,
}

backroom_db::from_row!(Candidate { location_id, available });

struct ReservationRow {
    variant_id: String,
    location_id: String,
    quantity: i64,
}

backroom_db::from_row!(ReservationRow { variant_id, location_id, quantity });

/// The sort key of the location order: the default location first, then by id.
fn location_rank(location_id: &str) -> (bool, &str) {
    (location_id != DEFAULT_LOCATION, location_id)
}

/// How many units to take from each location (given in location order) for `quantity`:
/// from each in turn as many as it has, until the line is served. Without backorders a line
/// that all locations together cannot serve gets `None`; with them the rest is taken from
/// the first location, which may go below zero. Parts are in location order and positive.
fn split(candidates: &[Candidate], quantity: i64, allow_backorder: bool) -> Option<Vec<(&str, i64)>> {
    let mut left = quantity;
    let mut parts: Vec<(&str, i64)> = Vec::new();
    for cand in candidates {
        if left == 0 {
            break;
        }
        let take = left.min(cand.available.max(0));
        if take > 0 {
            parts.push((&cand.location_id, take));
            left -= take;
        }
    }
    if left > 0 {
        let first = candidates.first()?;
        if !allow_backorder {
            return None;
        }
        match parts.first_mut() {
            Some(part) if part.0 == first.location_id => part.1 += left,
            _ => parts.insert(0, (&first.location_id, left)),
        }
    }
    Some(parts)
}

/// Locks a variant's stock rows in location order (PostgreSQL: `FOR UPDATE`; SQLite's
/// single writer already serialises) and answers what each location can sell.
async fn lock_levels(conn: &mut Conn<'_>, variant_id: &str) -> Result<Vec<Candidate>> {
    // Byte order on both sides (`COLLATE "C"` on PostgreSQL, whose default collation may not
    // be), the same order as `location_rank`.
    let sql = match conn.dialect() {
        Dialect::Postgres => {
            "SELECT location_id, on_hand - reserved - allocated AS available FROM stock_levels \
             WHERE variant_id = $1 ORDER BY CASE WHEN location_id = $2 THEN 0 ELSE 1 END, location_id COLLATE \"C\" \
             FOR UPDATE"
        }
        Dialect::Sqlite => {
            "SELECT location_id, on_hand - reserved - allocated AS available FROM stock_levels \
             WHERE variant_id = $1 ORDER BY CASE WHEN location_id = $2 THEN 0 ELSE 1 END, location_id"
        }
    };
    backroom_db::sql::query(sql).bind(variant_id).bind(DEFAULT_LOCATION).fetch_all(conn).await.map_err(storage)
}

/// Reserves every line for `order_id`, or reports the lines that lack stock (the caller
/// then rolls its transaction back, so no part of any line stays reserved). A line is split
/// over locations in location order (see the module's note), one `stock_reservations` row
/// per location it takes from. A variant without any stock row is not tracked and needs no
/// reservation; lines of the same variant count as one, and a line of no units reserves
/// nothing. Returns the variant ids whose stock changed.
pub async fn reserve(
    conn: &mut Conn<'_>,
    order_id: &OrderId,
    lines: &[ReserveLine],
    expires_at: DateTime<Utc>,
    actor: &str,
) -> Result<Result<Vec<String>, Vec<Shortage>>> {
    // Variant-id order: the first half of the global lock order.
    let mut wanted: BTreeMap<&str, (i64, bool)> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.quantity > 0) {
        let w = wanted.entry(&line.variant_id).or_insert((0, true));
        w.0 += line.quantity;
        w.1 &= line.allow_backorder;
    }
    let ts = now();
    let mut shortages = Vec::new();
    let mut changed = Vec::new();
    for (variant_id, (quantity, allow_backorder)) in wanted {
        let candidates = lock_levels(conn, variant_id).await?;
        if candidates.is_empty() {
            continue; // not tracked
        }
        let shortage = || Shortage {
            variant_id: variant_id.to_owned(),
            requested: quantity,
            available: candidates.iter().map(|c| c.available.max(0)).sum(),
        };
        let Some(parts) = split(&candidates, quantity, allow_backorder) else {
            shortages.push(shortage());
            continue;
        };
        if !shortages.is_empty() {
            continue; // the whole reservation fails: only the remaining shortages matter
        }
        for (location_id, part) in parts {
            // P1: the row lock above makes the split exact, and the condition still holds
            // the line to what the row can give (a row that cannot matches nothing).
            let level: Option<StockLevel> = backroom_db::sql::query(
                "UPDATE stock_levels SET reserved = reserved + $3, updated_at = $4 \
                 WHERE variant_id = $1 AND location_id = $2 AND ($5 OR on_hand - reserved - allocated >= $3) \
                 RETURNING variant_id, location_id, on_hand, reserved, allocated",
            )
            .bind(variant_id)
            .bind(location_id)
            .bind(part)
            .bind(ts)
            .bind(allow_backorder)
            .fetch_optional::<crate::LevelRow>(conn)
            .await
            .map(|r| r.map(StockLevel::from))
            .map_err(storage)?;
            let Some(level) = level else {
                shortages.push(shortage());
                break;
            };
            backroom_db::sql::query(
                "INSERT INTO stock_reservations (id, order_id, variant_id, location_id, quantity, status, expires_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'reserved', $6, $7, $7)",
            )
            .bind(id::new("res"))
            .bind(order_id)
            .bind(variant_id)
            .bind(location_id)
            .bind(part)
            .bind(expires_at)
            .bind(ts)
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(storage)?;
            record(conn, &level, 0, part, 0, &format!("reserved for {order_id}"), actor, ts).await?;
        }
        changed.push(variant_id.to_owned());
    }
    Ok(if shortages.is_empty() { Ok(changed) } else { Err(shortages) })
}

/// Marks an order's open reservations `status` and answers them in the global lock order,
/// variant id then location order, as [`reserve`] locks stock rows.
async fn close_reservations(
    conn: &mut Conn<'_>,
    order_id: &OrderId,
    status: &str,
    ts: DateTime<Utc>,
) -> Result<Vec<ReservationRow>> {
    let mut rows: Vec<ReservationRow> = backroom_db::sql::query(
        "UPDATE stock_reservations SET status = $2, updated_at = $3 WHERE order_id = $1 AND status = 'reserved' \
         RETURNING variant_id, location_id, quantity",
    )
    .bind(order_id)
    .bind(status)
    .bind(ts)
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    rows.sort_by(|a, b| {
        (&a.variant_id, location_rank(&a.location_id)).cmp(&(&b.variant_id, location_rank(&b.location_id)))
    });
    Ok(rows)
}

/// Turns an order's reservations into allocations (payment captured), every part at its
/// own location. Returns the variant ids whose stock changed, each once.
pub async fn allocate(conn: &mut Conn<'_>, order_id: &OrderId, actor: &str) -> Result<Vec<String>> {
    settle(conn, order_id, true, actor).await
}

/// Gives an order's reserved units back (payment declined or voided), every part to its
/// own location. Returns the variant ids whose stock changed, each once.
pub async fn release(conn: &mut Conn<'_>, order_id: &OrderId, actor: &str) -> Result<Vec<String>> {
    settle(conn, order_id, false, actor).await
}

async fn settle(conn: &mut Conn<'_>, order_id: &OrderId, allocate: bool, actor: &str) -> Result<Vec<String>> {
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
        let level: Option<StockLevel> = backroom_db::sql::query(sql)
            .bind(&r.variant_id)
            .bind(&r.location_id)
            .bind(r.quantity)
            .bind(ts)
            .fetch_optional::<crate::LevelRow>(conn)
            .await
            .map(|r| r.map(StockLevel::from))
            .map_err(storage)?;
        // The stock row is gone only if the variant was deleted meanwhile; nothing to move then.
        if let Some(level) = level {
            let (reason, alloc) = if allocate { ("allocated to", r.quantity) } else { ("released from", 0) };
            record(conn, &level, 0, -r.quantity, alloc, &format!("{reason} {order_id}"), actor, ts).await?;
            // Rows come grouped by variant: one entry per variant, however many parts.
            if changed.last() != Some(&r.variant_id) {
                changed.push(r.variant_id);
            }
        }
    }
    Ok(changed)
}

struct AllocationRow {
    id: String,
    location_id: String,
    units_left: i64,
}

backroom_db::from_row!(AllocationRow { id, location_id, units_left });

/// Units of an order's allocation leave stock (a fulfilment): `quantity` units of
/// `variant_id`, from `location` only when one is named, otherwise from the order's
/// allocations in location order. Each part lowers `on_hand` and `allocated` at its location
/// (one conditional `UPDATE`) and writes a ledger line with `reason`. Answers the parts
/// taken, `(location_id, units)`; an empty list when the variant's stock is not tracked (the
/// order holds no allocation of it); `None` when the allocation (at that location) has fewer
/// units left than asked, and then nothing was changed by this call.
pub async fn fulfil(
    conn: &mut Conn<'_>,
    order_id: &str,
    variant_id: &str,
    quantity: i64,
    location: Option<&str>,
    reason: &str,
    actor: &str,
) -> Result<Option<Vec<(String, i64)>>> {
    let mut rows: Vec<AllocationRow> = backroom_db::sql::query(
        "SELECT id, location_id, quantity - fulfilled AS units_left FROM stock_reservations \
         WHERE order_id = $1 AND variant_id = $2 AND status = 'allocated'",
    )
    .bind(order_id)
    .bind(variant_id)
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    if rows.is_empty() {
        return Ok(Some(Vec::new()));
    }
    rows.sort_by(|a, b| location_rank(&a.location_id).cmp(&location_rank(&b.location_id)));
    let mut plan = Vec::new();
    let mut left = quantity;
    for r in rows.iter().filter(|r| location.is_none_or(|l| l == r.location_id)) {
        if left == 0 {
            break;
        }
        let take = left.min(r.units_left.max(0));
        if take > 0 {
            plan.push((r, take));
            left -= take;
        }
    }
    if left > 0 {
        return Ok(None);
    }
    let ts = now();
    let mut parts = Vec::new();
    for (r, take) in plan {
        let n = backroom_db::sql::query(
            "UPDATE stock_reservations SET fulfilled = fulfilled + $2, updated_at = $3 \
             WHERE id = $1 AND fulfilled + $2 <= quantity",
        )
        .bind(&r.id)
        .bind(take)
        .bind(ts)
        .execute(conn)
        .await
        .map_err(storage)?;
        if n != 1 {
            return Err(Error::internal("an allocation changed under its order's fulfilment"));
        }
        let level: Option<StockLevel> = backroom_db::sql::query(
            "UPDATE stock_levels SET on_hand = on_hand - $3, allocated = allocated - $3, updated_at = $4 \
             WHERE variant_id = $1 AND location_id = $2 RETURNING variant_id, location_id, on_hand, reserved, allocated",
        )
        .bind(variant_id)
        .bind(&r.location_id)
        .bind(take)
        .bind(ts)
        .fetch_optional::<crate::LevelRow>(conn)
        .await
        .map(|r| r.map(StockLevel::from))
        .map_err(storage)?;
        if let Some(level) = level {
            record(conn, &level, -take, 0, -take, reason, actor, ts).await?;
        }
        parts.push((r.location_id.clone(), take));
    }
    Ok(Some(parts))
}

/// Gives back the allocated units of an order that did not leave stock (the order was
/// canceled or rejected), every part to its own location, with a ledger line each. Returns
/// the variant ids whose stock changed, each once.
pub async fn release_allocation(conn: &mut Conn<'_>, order_id: &str, reason: &str, actor: &str) -> Result<Vec<String>> {
    let ts = now();
    let mut rows: Vec<(String, String, i64)> = backroom_db::sql::query(
        "UPDATE stock_reservations SET status = 'released', updated_at = $2 WHERE order_id = $1 AND status = 'allocated' \
         RETURNING variant_id, location_id, quantity - fulfilled",
    )
    .bind(order_id)
    .bind(ts)
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    rows.sort_by(|a, b| (&a.0, location_rank(&a.1)).cmp(&(&b.0, location_rank(&b.1))));
    let mut changed: Vec<String> = Vec::new();
    for (variant_id, location_id, units) in rows.into_iter().filter(|r| r.2 > 0) {
        let level: Option<StockLevel> = backroom_db::sql::query(
            "UPDATE stock_levels SET allocated = allocated - $3, updated_at = $4 \
             WHERE variant_id = $1 AND location_id = $2 RETURNING variant_id, location_id, on_hand, reserved, allocated",
        )
        .bind(&variant_id)
        .bind(&location_id)
        .bind(units)
        .bind(ts)
        .fetch_optional::<crate::LevelRow>(conn)
        .await
        .map(|r| r.map(StockLevel::from))
        .map_err(storage)?;
        if let Some(level) = level {
            record(conn, &level, 0, 0, -units, reason, actor, ts).await?;
            if changed.last() != Some(&variant_id) {
                changed.push(variant_id);
            }
        }
    }
    Ok(changed)
}

/// Puts `quantity` units of `variant_id` that an order's fulfilment took back on hand (a
/// return), at the first location (in location order) that fulfilment took units from, with
/// a ledger line. `false` when the order took no tracked stock of the variant (nothing to put
/// back).
pub async fn restock(
    conn: &mut Conn<'_>,
    order_id: &str,
    variant_id: &str,
    quantity: i64,
    reason: &str,
    actor: &str,
) -> Result<bool> {
    let mut locations: Vec<(String,)> = backroom_db::sql::query(
        "SELECT location_id FROM stock_reservations WHERE order_id = $1 AND variant_id = $2 AND fulfilled > 0",
    )
    .bind(order_id)
    .bind(variant_id)
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    locations.sort_by(|a, b| location_rank(&a.0).cmp(&location_rank(&b.0)));
    let Some((location_id,)) = locations.into_iter().next() else {
        return Ok(false);
    };
    let ts = now();
    let level: Option<StockLevel> = backroom_db::sql::query(
        "UPDATE stock_levels SET on_hand = on_hand + $3, updated_at = $4 \
         WHERE variant_id = $1 AND location_id = $2 RETURNING variant_id, location_id, on_hand, reserved, allocated",
    )
    .bind(variant_id)
    .bind(&location_id)
    .bind(quantity)
    .bind(ts)
    .fetch_optional::<crate::LevelRow>(conn)
    .await
    .map(|r| r.map(StockLevel::from))
    .map_err(storage)?;
    match level {
        Some(level) => {
            record(conn, &level, quantity, 0, 0, reason, actor, ts).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(levels: &[(&str, i64)]) -> Vec<Candidate> {
        levels.iter().map(|(l, a)| Candidate { location_id: (*l).to_owned(), available: *a }).collect()
    }

    #[test]
    fn a_line_takes_from_locations_in_order_until_served() {
        let c = at(&[("loc_default", 3), ("loc_a", 3)]);
        assert_eq!(split(&c, 2, false), Some(vec![("loc_default", 2)]));
        assert_eq!(split(&c, 5, false), Some(vec![("loc_default", 3), ("loc_a", 2)]));
        assert_eq!(split(&c, 6, false), Some(vec![("loc_default", 3), ("loc_a", 3)]));
        assert_eq!(split(&c, 7, false), None);
        // Empty or overdrawn locations give nothing and are skipped.
        let c = at(&[("loc_default", 0), ("loc_a", -2), ("loc_b", 4)]);
        assert_eq!(split(&c, 4, false), Some(vec![("loc_b", 4)]));
        assert_eq!(split(&c, 5, false), None);
    }

    #[test]
    fn a_backorder_line_takes_what_is_there_and_the_rest_from_the_first_location() {
        let c = at(&[("loc_default", 1), ("loc_a", 2)]);
        assert_eq!(split(&c, 5, true), Some(vec![("loc_default", 3), ("loc_a", 2)]));
        let c = at(&[("loc_default", -1), ("loc_a", 2)]);
        assert_eq!(split(&c, 5, true), Some(vec![("loc_default", 3), ("loc_a", 2)]));
        let c = at(&[("loc_a", 0)]);
        assert_eq!(split(&c, 2, true), Some(vec![("loc_a", 2)]));
        assert_eq!(split(&[], 2, true), None);
    }

    #[test]
    fn the_location_order_puts_the_default_first_then_ids_in_byte_order() {
        let mut ids = vec!["loc_b", DEFAULT_LOCATION, "loc_01j", "loc_A"];
        ids.sort_by(|a, b| location_rank(a).cmp(&location_rank(b)));
        assert_eq!(ids, [DEFAULT_LOCATION, "loc_01j", "loc_A", "loc_b"]);
    }
}
