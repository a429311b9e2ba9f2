//! Stock sync in from an ERP or warehouse system: `POST /admin/stock/batch` sets the counted
//! `on_hand` of up to [`MAX_ROWS`] SKU and location pairs in one transaction (owns
//! `stock_batch_keys`).
//!
//! Good rows are applied, bad rows are reported by index with a stable code and never stop the
//! others. The request's `Idempotency-Key` is claimed in the same transaction as the rows, so a
//! batch sent again (a retry after a lost answer) changes nothing and answers the first answer;
//! the same key with another body is refused. Levels are read once per batch (locked on
//! PostgreSQL; SQLite's single writer already serialises) and written with multi-row
//! statements: a 10,000-row batch is a few dozen statements, not tens of thousands.

use std::collections::{HashMap, HashSet};

use backroom_db::outbox::{Event, StockChanged};
use backroom_db::{Conn, Dialect, storage};
use backroom_kernel::{Code, Error, Result, id, now};
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_LOCATION, Inventory, LevelRow, MAX_ON_HAND};

/// The most rows one batch may carry.
pub const MAX_ROWS: usize = 10_000;

/// How long a key's answer is kept for replays.
pub const RETENTION: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Rows per multi-row statement (well under both databases' limits on bound values).
const CHUNK: usize = 500;

/// `POST /admin/stock/batch`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockBatch {
    /// 1–10,000 rows.
    pub items: Vec<StockBatchRow>,
}

/// One counted level.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockBatchRow {
    #[schema(example = "TEE-BLACK-M")]
    pub sku: String,
    /// The default location when left out.
    pub location_id: Option<String>,
    /// The counted quantity on hand: 0–1,000,000,000.
    #[schema(minimum = 0, maximum = 1000000000)]
    pub on_hand: i64,
}

/// What a batch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockBatchResult {
    /// Rows applied (a row whose count was already that is applied too).
    pub updated: usize,
    /// The rows not applied, in row order.
    pub errors: Vec<StockBatchError>,
}

/// A row that was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockBatchError {
    /// The row's position in `items`, from 0.
    pub index: usize,
    pub sku: String,
    /// `not_found` (no variant has this SKU), `validation_failed` (a bad count or location, or
    /// the row repeats an earlier one) or `stock_below_committed`.
    pub code: String,
    pub message: String,
}

/// The variant a SKU names, as the catalog knows it.
#[derive(Debug, Clone)]
pub struct SkuTarget {
    pub variant_id: String,
    pub allow_backorder: bool,
}

/// How a batch request ended.
#[derive(Debug)]
pub enum BatchAnswer {
    /// Applied now; `variants` are the variants whose stock changed.
    Applied { result: StockBatchResult, variants: Vec<String> },
    /// The key has this answer already.
    Replayed(StockBatchResult),
    /// The key was used with another body.
    Reused,
}

/// A row that passed the checks that need no database.
struct Candidate<'a> {
    index: usize,
    sku: &'a str,
    target: &'a SkuTarget,
    location: &'a str,
    on_hand: i64,
}

impl StockBatchError {
    fn new(index: usize, sku: &str, code: Code, message: impl Into<String>) -> Self {
        Self { index, sku: sku.to_owned(), code: code.as_str().to_owned(), message: message.into() }
    }
}

impl Inventory {
    /// Applies a batch under `key` (its body's hash is `hash`); `targets` maps each SKU the
    /// catalog knows to its variant. One transaction: the key, every good row, one ledger line
    /// per changed row, and the `stock.changed` events.
    #[tracing::instrument(skip_all, fields(rows = batch.items.len()))]
    pub async fn apply_batch(
        &self,
        key: &str,
        hash: &str,
        batch: &StockBatch,
        targets: &HashMap<String, SkuTarget>,
        actor: &str,
    ) -> Result<BatchAnswer> {
        if batch.items.is_empty() || batch.items.len() > MAX_ROWS {
            return Err(Error::field("items", format!("send 1–{MAX_ROWS} rows")));
        }
        let ts = now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let claimed = backroom_db::sql::query(
            "INSERT INTO stock_batch_keys (key, request_hash, answer, created_at) VALUES ($1, $2, NULL, $3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(hash)
        .bind(ts)
        .execute(&mut conn)
        .await
        .map_err(storage)?;
        if claimed == 0 {
            let (stored, answer): (String, Option<String>) =
                backroom_db::sql::query("SELECT request_hash, answer FROM stock_batch_keys WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(storage)?;
            if stored != hash {
                return Ok(BatchAnswer::Reused);
            }
            // The answer is written in the transaction that claimed the key, so a claimed key
            // always has one once it is visible.
            let answer = answer.ok_or_else(|| Error::internal("a stock batch key without its answer"))?;
            return Ok(BatchAnswer::Replayed(serde_json::from_str(&answer).map_err(Error::internal)?));
        }

        let locations: HashSet<String> = backroom_db::sql::query("SELECT id FROM stock_locations")
            .fetch_all::<(String,)>(&mut conn)
            .await
            .map_err(storage)?
            .into_iter()
            .map(|(id,)| id)
            .collect();
        let mut errors = Vec::new();
        let candidates = candidates(batch, targets, &locations, &mut errors);
        let current = levels(&mut conn, &candidates).await?;

        let mut writes: Vec<(&Candidate<'_>, i64)> = Vec::new();
        let mut updated = 0;
        for c in &candidates {
            let (before, committed) = current
                .get(&(c.target.variant_id.clone(), c.location.to_owned()))
                .map(|l| (Some(l.on_hand), l.reserved + l.allocated))
                .unwrap_or((None, 0));
            if !c.target.allow_backorder && c.on_hand < committed {
                errors.push(StockBatchError::new(
                    c.index,
                    c.sku,
                    Code::StockBelowCommitted,
                    format!("{committed} units are reserved or allocated for orders; on_hand cannot go below that"),
                ));
                continue;
            }
            updated += 1;
            if before != Some(c.on_hand) {
                writes.push((c, c.on_hand - before.unwrap_or(0)));
            }
        }
        errors.sort_by_key(|e| e.index);

        for chunk in writes.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO stock_levels (variant_id, location_id, on_hand, reserved, allocated, updated_at) VALUES {} \
                 ON CONFLICT (variant_id, location_id) DO UPDATE SET on_hand = excluded.on_hand, updated_at = excluded.updated_at",
                backroom_db::sql::values_list(chunk.len(), 6, 1)
            );
            let mut q = backroom_db::sql::query(sql);
            for (c, _) in chunk {
                q = q
                    .bind(c.target.variant_id.as_str())
                    .bind(c.location)
                    .bind(c.on_hand)
                    .bind(0i64)
                    .bind(0i64)
                    .bind(ts);
            }
            q.execute(&mut conn).await.map_err(deleted_meanwhile)?;
            let sql = format!(
                "INSERT INTO stock_adjustments (id, variant_id, location_id, on_hand_delta, on_hand_after, \
                 reserved_delta, allocated_delta, reason, actor, created_at) VALUES {}",
                backroom_db::sql::values_list(chunk.len(), 10, 1)
            );
            let mut q = backroom_db::sql::query(sql);
            for (c, delta) in chunk {
                q = q
                    .bind(id::new("adj"))
                    .bind(c.target.variant_id.as_str())
                    .bind(c.location)
                    .bind(*delta)
                    .bind(c.on_hand)
                    .bind(0i64)
                    .bind(0i64)
                    .bind("stock_batch")
                    .bind(actor)
                    .bind(ts);
            }
            q.execute(&mut conn).await.map_err(storage)?;
        }
        let mut variants: Vec<String> = writes.iter().map(|(c, _)| c.target.variant_id.clone()).collect();
        variants.sort();
        variants.dedup();
        for chunk in variants.chunks(1000) {
            let event = Event::StockChanged(StockChanged { variant_ids: chunk.to_vec(), order_id: None });
            backroom_db::outbox::enqueue(&mut conn, &event).await?;
        }

        let result = StockBatchResult { updated, errors };
        backroom_db::sql::query("UPDATE stock_batch_keys SET answer = $2 WHERE key = $1")
            .bind(key)
            .bind(serde_json::to_string(&result).map_err(Error::internal)?)
            .execute(&mut conn)
            .await
            .map_err(storage)?;
        backroom_db::sql::query("DELETE FROM stock_batch_keys WHERE created_at < $1")
            .bind(ts - RETENTION)
            .execute(&mut conn)
            .await
            .map_err(storage)?;
        tx.commit().await?;
        Ok(BatchAnswer::Applied { result, variants })
    }
}

/// The rows that pass the checks needing no database; the others become `errors`.
fn candidates<'a>(
    batch: &'a StockBatch,
    targets: &'a HashMap<String, SkuTarget>,
    locations: &HashSet<String>,
    errors: &mut Vec<StockBatchError>,
) -> Vec<Candidate<'a>> {
    let mut first_row: HashMap<(&str, &str), usize> = HashMap::new();
    let mut out = Vec::with_capacity(batch.items.len());
    for (index, row) in batch.items.iter().enumerate() {
        let location = row.location_id.as_deref().unwrap_or(DEFAULT_LOCATION);
        let Some(target) = targets.get(&row.sku) else {
            errors.push(StockBatchError::new(index, &row.sku, Code::NotFound, "no variant has this SKU"));
            continue;
        };
        let invalid = if !(0..=MAX_ON_HAND).contains(&row.on_hand) {
            Some(format!("on_hand must be 0–{MAX_ON_HAND}"))
        } else if !locations.contains(location) {
            Some(format!("no stock location has id `{location}`"))
        } else {
            first_row
                .insert((target.variant_id.as_str(), location), index)
                .map(|first| format!("row {first} already sets this SKU at this location"))
        };
        if let Some(message) = invalid {
            errors.push(StockBatchError::new(index, &row.sku, Code::ValidationFailed, message));
            continue;
        }
        out.push(Candidate { index, sku: &row.sku, target, location, on_hand: row.on_hand });
    }
    out
}

/// The current levels of the candidates' variants (every location), locked on PostgreSQL
/// until the batch commits.
async fn levels(conn: &mut Conn<'_>, candidates: &[Candidate<'_>]) -> Result<HashMap<(String, String), LevelRow>> {
    let mut ids: Vec<&str> = candidates.iter().map(|c| c.target.variant_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let lock = match conn.dialect() {
        Dialect::Postgres => " ORDER BY variant_id, location_id FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let mut rows: Vec<LevelRow> = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT variant_id, location_id, on_hand, reserved, allocated FROM stock_levels WHERE variant_id IN {}{lock}",
            backroom_db::sql::in_list(chunk.len(), 1)
        );
        rows.extend(
            backroom_db::sql::query(sql)
                .bind_all(chunk.iter().copied())
                .fetch_all::<LevelRow>(conn)
                .await
                .map_err(storage)?,
        );
    }
    let out = rows.into_iter().map(|r| ((r.variant_id.clone(), r.location_id.clone()), r)).collect();
    Ok(out)
}

/// A variant deleted between the SKU lookup and the write fails its foreign key: the whole
/// batch is rolled back (the key too), so sending it again is safe.
fn deleted_meanwhile(e: sqlx::Error) -> Error {
    if e.as_database_error().is_some_and(|d| d.is_foreign_key_violation()) {
        Error::refused(Code::Conflict, "a variant of this batch was deleted while it ran; send the batch again")
    } else {
        storage(e)
    }
}
