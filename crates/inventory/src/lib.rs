//! Inventory: stock locations, stock levels per variant and location (`on_hand`, `reserved`,
//! `allocated`), and the adjustments ledger that records every change with its reason and
//! actor. Owns `stock_locations`, `stock_levels`, `stock_adjustments`.
//!
//! P1 (no oversell) is kept by single conditional statements: a change that would leave
//! `reserved + allocated > on_hand` for a variant without backorders matches no row and is
//! refused; application code never reads a level and writes back a computed one.

pub mod batch;
pub mod reservations;

use std::collections::HashMap;

use backroom_db::outbox::{Event, StockChanged};
use backroom_db::{Conn, Db, Dialect, on_conn, storage};
use backroom_kernel::{Code, Error, Page, PageRequest, Result, id, now};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The location that exists from the start and is used when none is named.
pub const DEFAULT_LOCATION: &str = "loc_default";

/// The largest `on_hand` accepted: more is a typo, not a count.
pub const MAX_ON_HAND: i64 = 1_000_000_000;

/// Stock of one variant at one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StockLevel {
    pub variant_id: String,
    pub location_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub allocated: i64,
    /// `on_hand - reserved - allocated`.
    pub available: i64,
}

/// Stock of one variant summed over all locations, with the per-location levels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VariantStock {
    pub variant_id: String,
    /// Always `null` here: the figures are summed over `locations`.
    pub location_id: Option<String>,
    pub on_hand: i64,
    pub reserved: i64,
    pub allocated: i64,
    pub available: i64,
    pub locations: Vec<StockLevel>,
}

/// A place that holds stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StockLocation {
    pub id: String,
    pub name: String,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

/// One line of the adjustments ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Adjustment {
    pub id: String,
    pub variant_id: String,
    pub location_id: String,
    pub on_hand_delta: i64,
    pub on_hand_after: i64,
    pub reserved_delta: i64,
    pub allocated_delta: i64,
    pub reason: String,
    /// Who made the change: an API key id, `bootstrap`, or `system`.
    pub actor: String,
    pub created_at: DateTime<Utc>,
}

backroom_db::from_row!(Adjustment {
    id,
    variant_id,
    location_id,
    on_hand_delta,
    on_hand_after,
    reserved_delta,
    allocated_delta,
    reason,
    actor,
    created_at
});

/// `PUT /admin/variants/{id}/stock`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    /// The counted quantity on hand: 0–1,000,000,000.
    #[schema(minimum = 0, maximum = 1000000000)]
    pub on_hand: i64,
    /// The default location when left out.
    pub location_id: Option<String>,
    /// Why the stock changed (`recount`, `delivery`, `damaged`, …); `manual` when left out.
    pub reason: Option<String>,
}

/// `POST /admin/stock-locations`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLocation {
    /// 1–100 characters: no control characters or bidi overrides, and not only invisible ones.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

pub(crate) struct LevelRow {
    variant_id: String,
    location_id: String,
    on_hand: i64,
    reserved: i64,
    allocated: i64,
}

backroom_db::from_row!(LevelRow { variant_id, location_id, on_hand, reserved, allocated });

impl From<LevelRow> for StockLevel {
    fn from(r: LevelRow) -> Self {
        StockLevel {
            available: r.on_hand - r.reserved - r.allocated,
            variant_id: r.variant_id,
            location_id: r.location_id,
            on_hand: r.on_hand,
            reserved: r.reserved,
            allocated: r.allocated,
        }
    }
}

struct LocationRow {
    id: String,
    name: String,
    is_default: bool,
    created_at: DateTime<Utc>,
}

backroom_db::from_row!(LocationRow { id, name, is_default, created_at });

impl From<LocationRow> for StockLocation {
    fn from(r: LocationRow) -> Self {
        StockLocation { id: r.id, name: r.name, is_default: r.is_default, created_at: r.created_at }
    }
}

/// The inventory's service API.
#[derive(Debug, Clone)]
pub struct Inventory {
    db: Db,
}

impl Inventory {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Sets the counted `on_hand` of a variant at a location and records the change in the
    /// ledger. The caller has checked that the variant exists and says whether it allows
    /// backorders; without them, `on_hand` below what is already reserved or allocated is
    /// refused (`409 stock_below_committed`), since those units are promised to buyers.
    #[tracing::instrument(skip(self))]
    pub async fn set_on_hand(
        &self,
        variant_id: &str,
        input: &SetStock,
        allow_backorder: bool,
        actor: &str,
    ) -> Result<StockLevel> {
        let mut p = backroom_kernel::error::Problems::new();
        if input.on_hand < 0 {
            p.add("on_hand", "must not be negative");
        } else if input.on_hand > MAX_ON_HAND {
            p.add("on_hand", format!("must be at most {MAX_ON_HAND}"));
        }
        let reason = input.reason.as_deref().unwrap_or("manual").trim();
        if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
            p.add("reason", "must be 1–200 characters without control characters");
        }
        p.finish()?;
        let location = input.location_id.as_deref().unwrap_or(DEFAULT_LOCATION);
        let ts = now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        if !location_exists(&mut conn, location).await? {
            return Err(Error::field("location_id", format!("no stock location has id `{location}`")));
        }
        // Make sure the row exists, then lock it and read the previous count for the ledger's
        // delta. On PostgreSQL the lock makes the delta exact under concurrent changes (a
        // concurrent first insert waits on the unique key, then does nothing); SQLite's single
        // writer already serialises.
        backroom_db::sql::query(
            "INSERT INTO stock_levels (variant_id, location_id, on_hand, reserved, allocated, updated_at) \
             VALUES ($1, $2, 0, 0, 0, $3) ON CONFLICT (variant_id, location_id) DO NOTHING",
        )
        .bind(variant_id)
        .bind(location)
        .bind(ts)
        .execute(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| {
            if e.as_database_error().is_some_and(|d| d.is_foreign_key_violation()) {
                Error::not_found("variant")
            } else {
                storage(e)
            }
        })?;
        let sql = match conn.dialect() {
            Dialect::Postgres => {
                "SELECT on_hand FROM stock_levels WHERE variant_id = $1 AND location_id = $2 FOR UPDATE"
            }
            Dialect::Sqlite => "SELECT on_hand FROM stock_levels WHERE variant_id = $1 AND location_id = $2",
        };
        let before: i64 = on_conn!(&mut conn, c => {
            sqlx::query_scalar(sql)
                .bind(variant_id)
                .bind(location)
                .fetch_one(&mut *c)
                .await
                .map_err(storage)?
        });
        // P1: one conditional UPDATE; without backorders it matches nothing when the new
        // count is below what is reserved or allocated.
        let row: Option<LevelRow> = backroom_db::sql::query(
            "UPDATE stock_levels SET on_hand = $3, updated_at = $4 \
             WHERE variant_id = $1 AND location_id = $2 AND ($5 OR $3 >= reserved + allocated) \
             RETURNING variant_id, location_id, on_hand, reserved, allocated",
        )
        .bind(variant_id)
        .bind(location)
        .bind(input.on_hand)
        .bind(ts)
        .bind(allow_backorder)
        .fetch_optional(&mut conn)
        .await
        .map_err(storage)?;
        let Some(row) = row else {
            return Err(Error::refused(
                Code::StockBelowCommitted,
                "on_hand cannot go below the units already reserved or allocated for orders",
            ));
        };
        let level = StockLevel::from(row);
        let delta = level.on_hand - before;
        record(&mut conn, &level, delta, 0, 0, reason, actor, ts).await?;
        let event = Event::StockChanged(StockChanged { variant_ids: vec![variant_id.to_owned()], order_id: None });
        backroom_db::outbox::enqueue(&mut conn, &event).await?;
        tx.commit().await?;
        Ok(level)
    }

    /// Sets the initial `on_hand` of many variants at the default location in one
    /// transaction (imports, benchmarks), one ledger line each. Variants that already have
    /// stock there are left alone (use [`Inventory::set_on_hand`]); answers how many were set.
    #[tracing::instrument(skip_all, fields(levels = levels.len()))]
    pub async fn import_levels(&self, levels: &[(String, i64)], reason: &str, actor: &str) -> Result<usize> {
        if let Some((v, _)) = levels.iter().find(|(_, n)| !(0..=MAX_ON_HAND).contains(n)) {
            return Err(Error::field("on_hand", format!("out of range for {v}")));
        }
        let ts = now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let mut set = 0;
        for (variant_id, on_hand) in levels {
            let row: Option<LevelRow> = backroom_db::sql::query(
                "INSERT INTO stock_levels (variant_id, location_id, on_hand, reserved, allocated, updated_at) \
                 VALUES ($1, $2, $3, 0, 0, $4) ON CONFLICT (variant_id, location_id) DO NOTHING \
                 RETURNING variant_id, location_id, on_hand, reserved, allocated",
            )
            .bind(variant_id)
            .bind(DEFAULT_LOCATION)
            .bind(on_hand)
            .bind(ts)
            .fetch_optional(&mut conn)
            .await
            .map_err(storage)?;
            if let Some(row) = row {
                let level = StockLevel::from(row);
                record(&mut conn, &level, level.on_hand, 0, 0, reason, actor, ts).await?;
                set += 1;
            }
        }
        let ids: Vec<String> = levels.iter().map(|(v, _)| v.clone()).collect();
        for chunk in ids.chunks(1000) {
            let event = Event::StockChanged(StockChanged { variant_ids: chunk.to_vec(), order_id: None });
            backroom_db::outbox::enqueue(&mut conn, &event).await?;
        }
        tx.commit().await?;
        Ok(set)
    }

    /// A variant's stock, per location and summed. A variant without any stock row has
    /// zeros and no locations.
    pub async fn variant_stock(&self, variant_id: &str) -> Result<VariantStock> {
        let mut r = self.db.read().await?;
        let rows: Vec<LevelRow> = backroom_db::sql::query(
            "SELECT variant_id, location_id, on_hand, reserved, allocated FROM stock_levels \
             WHERE variant_id = $1 ORDER BY location_id",
        )
        .bind(variant_id)
        .fetch_all(&mut r.conn())
        .await
        .map_err(storage)?;
        let locations: Vec<StockLevel> = rows.into_iter().map(StockLevel::from).collect();
        Ok(VariantStock {
            variant_id: variant_id.to_owned(),
            location_id: None,
            on_hand: locations.iter().map(|l| l.on_hand).sum(),
            reserved: locations.iter().map(|l| l.reserved).sum(),
            allocated: locations.iter().map(|l| l.allocated).sum(),
            available: locations.iter().map(|l| l.available).sum(),
            locations,
        })
    }

    /// Units available to sell per variant: the sum over locations of what each can still
    /// sell (`on_hand - reserved - allocated`, a location below zero counting as zero), which
    /// is exactly what a checkout can reserve (see [`reservations`]). Only for the variants
    /// that have stock rows; a variant without any is not tracked and is missing from the
    /// map. One query for any number of variants. The storefront, carts and checkout all
    /// count stock with this.
    pub async fn availability(&self, variant_ids: &[String]) -> Result<HashMap<String, i64>> {
        if variant_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT variant_id, CAST(SUM(CASE WHEN on_hand - reserved - allocated > 0 \
             THEN on_hand - reserved - allocated ELSE 0 END) AS BIGINT) FROM stock_levels WHERE variant_id IN {} \
             GROUP BY variant_id",
            backroom_db::sql::in_list(variant_ids.len(), 1)
        );
        let mut r = self.db.read_fast().await?;
        let rows: Vec<(String, i64)> = backroom_db::sql::query(sql)
            .bind_all(variant_ids.iter())
            .fetch_all(&mut r.conn())
            .await
            .map_err(storage)?;
        Ok(rows.into_iter().collect())
    }

    /// The ledger of a variant, newest first.
    pub async fn adjustments(&self, variant_id: &str, page: &PageRequest) -> Result<Page<Adjustment>> {
        let mut r = self.db.read().await?;
        let after = page.after.as_ref().map(|c| c.0.clone()).unwrap_or_else(|| "~".into());
        let rows: Vec<Adjustment> = backroom_db::sql::query(
            "SELECT id, variant_id, location_id, on_hand_delta, on_hand_after, reserved_delta, allocated_delta, \
             reason, actor, created_at FROM stock_adjustments WHERE variant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(variant_id)
        .bind(after)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&mut r.conn())
        .await
        .map_err(storage)?;
        Ok(page.finish(rows, |a| a.id.clone()))
    }

    pub async fn locations(&self) -> Result<Vec<StockLocation>> {
        let mut r = self.db.read().await?;
        let rows: Vec<LocationRow> = backroom_db::sql::query(
            "SELECT id, name, is_default, created_at FROM stock_locations ORDER BY is_default DESC, name",
        )
        .fetch_all(&mut r.conn())
        .await
        .map_err(storage)?;
        Ok(rows.into_iter().map(StockLocation::from).collect())
    }

    #[tracing::instrument(skip(self))]
    pub async fn create_location(&self, input: &NewLocation) -> Result<StockLocation> {
        let name = input.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::field("name", "must be 1–100 characters"));
        }
        backroom_kernel::check_display(name).map_err(|e| Error::field("name", e.to_string()))?;
        let loc = StockLocation { id: id::new("loc"), name: name.to_owned(), is_default: false, created_at: now() };
        let mut tx = self.db.begin().await?;
        let n = backroom_db::sql::query(
            "INSERT INTO stock_locations (id, name, is_default, created_at) VALUES ($1, $2, FALSE, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&loc.id)
        .bind(&loc.name)
        .bind(loc.created_at)
        .execute(&mut tx.conn())
        .await
        .map_err(storage)?;
        if n == 0 {
            return Err(Error::refused(Code::Conflict, format!("a stock location named `{name}` already exists")));
        }
        tx.commit().await?;
        Ok(loc)
    }
}

async fn location_exists(conn: &mut Conn<'_>, id: &str) -> Result<bool> {
    let found: Option<String> = on_conn!(conn, c => sqlx::query_scalar("SELECT id FROM stock_locations WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(storage))?;
    Ok(found.is_some())
}

/// Writes one ledger line.
#[expect(clippy::too_many_arguments, reason = "one column each")]
async fn record(
    conn: &mut Conn<'_>,
    level: &StockLevel,
    on_hand_delta: i64,
    reserved_delta: i64,
    allocated_delta: i64,
    reason: &str,
    actor: &str,
    ts: DateTime<Utc>,
) -> Result<()> {
    backroom_db::sql::query(
        "INSERT INTO stock_adjustments (id, variant_id, location_id, on_hand_delta, on_hand_after, \
         reserved_delta, allocated_delta, reason, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id::new("adj"))
    .bind(&level.variant_id)
    .bind(&level.location_id)
    .bind(on_hand_delta)
    .bind(level.on_hand)
    .bind(reserved_delta)
    .bind(allocated_delta)
    .bind(reason)
    .bind(actor)
    .bind(ts)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(storage)
}
