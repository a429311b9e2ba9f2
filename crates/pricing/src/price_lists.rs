//! Price lists: prices of some variants for the customers of some groups, for a while.
//!
//! A list names customer groups, an optional schedule (`starts_at <= now < ends_at`, either
//! end open) and prices per variant and currency. A signed-in customer in any of its groups
//! sees, while the list is active, the lowest of the variant's base price and every active
//! list price of theirs: the same rule the cart ([`crate::model::member_prices`]) and the
//! storefront ([`PriceBook`]) apply.
//!
//! **Writes** ([`PriceLists`]) check the request's shape first (name, schedule, prices), then,
//! in the write itself, that each group and variant exists, and enqueue `price_list.changed`
//! in the same transaction.
//!
//! **Reads of the storefront** go through [`LivePrices`]: a [`PriceBook`] (every list, its
//! groups, schedule and prices, in memory) reloaded when marked stale (by `price_list.changed`
//! from the outbox, [`Follow`], and at once by writes through this process), and the groups of
//! each signed-in customer, kept for [`GROUPS_TTL`] at most and dropped when this process
//! changes a group's members.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use backroom_db::outbox::{self, Action, Batch, BoxFuture, Consumer, Event, PriceListChanged};
use backroom_db::sql::{self, in_list, values_list};
use backroom_db::writer::Done;
use backroom_db::{Conn, Db, storage};
use backroom_kernel::error::Problems;
use backroom_kernel::{Currency, Error, Money, Page, PageRequest, Result, id, now};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// The longest name.
pub const NAME_MAX: usize = 200;
/// The most prices one list holds.
pub const MAX_PRICES: usize = 10_000;
/// The most groups one list names.
pub const MAX_GROUPS: usize = 100;
/// How long a signed-in customer's groups are kept before they are read again (a change of
/// members made through another process shows within this).
pub const GROUPS_TTL: Duration = Duration::from_secs(5);
/// Customers whose groups are kept at most; past it the cache starts over.
const MAX_CACHED_CUSTOMERS: usize = 100_000;
/// Rows per statement when many are inserted or looked up.
const CHUNK: usize = 500;

fn nullable<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Option<DateTime<Utc>>>, D::Error> {
    Option::<DateTime<Utc>>::deserialize(d).map(Some)
}

/// `POST /admin/price-lists`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPriceList {
    /// 1–200 characters.
    #[schema(example = "Wholesale", min_length = 1, max_length = 200)]
    pub name: String,
    /// The groups whose signed-in customers get the list's prices (0–100 existing ids).
    #[schema(example = json!(["cgrp_01jd8x6v3y0m4c4b9ks2t5f7qe"]))]
    pub customer_group_ids: Vec<String>,
    /// From when the list applies (inclusive); open when absent.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// Until when the list applies (exclusive, after `starts_at`); open when absent.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// 0–10,000 prices, at most one per variant and currency.
    #[serde(default)]
    pub prices: Vec<ListPriceInput>,
}

/// `PATCH /admin/price-lists/{id}`: the fields to change. `prices` replaces every price of the
/// list; `"starts_at": null` or `"ends_at": null` opens that end of the schedule.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceListPatch {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// Replaces the list's groups.
    pub customer_group_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>, nullable)]
    pub starts_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>, nullable)]
    pub ends_at: Option<Option<DateTime<Utc>>>,
    /// Replaces the list's prices.
    pub prices: Option<Vec<ListPriceInput>>,
}

/// One price of a request: a variant's price in a currency, in minor units.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListPriceInput {
    #[schema(example = "var_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub variant_id: String,
    /// 0–10^12 minor units.
    #[schema(example = 3900, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub amount: i64,
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

/// One price of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ListPrice {
    #[schema(example = "var_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub variant_id: String,
    #[schema(example = 3900)]
    pub amount: i64,
    pub currency: Currency,
}

/// A price list with its groups and prices (by variant, then currency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PriceList {
    #[schema(example = "plist_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    #[schema(example = "Wholesale")]
    pub name: String,
    pub customer_group_ids: Vec<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub prices: Vec<ListPrice>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A price list as lists show it: its number of prices instead of the prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PriceListSummary {
    #[schema(example = "plist_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    #[schema(example = "Wholesale")]
    pub name: String,
    pub customer_group_ids: Vec<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    #[schema(example = 120)]
    pub price_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A price of a request once its shape is checked.
#[derive(Debug, Clone)]
struct Checked {
    variant_id: String,
    currency: Currency,
    amount: i64,
}

/// Timestamps are kept to the microsecond (what PostgreSQL keeps).
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

fn check_name(p: &mut Problems, raw: &str) -> Option<String> {
    let t = raw.trim();
    if t.is_empty() || t.chars().count() > NAME_MAX {
        p.add("name", format!("must be 1–{NAME_MAX} characters"));
        return None;
    }
    p.check("name", backroom_kernel::check_display(t)).map(|_| t.to_owned())
}

fn check_groups(p: &mut Problems, ids: &[String]) -> Vec<String> {
    if ids.len() > MAX_GROUPS {
        p.add("customer_group_ids", format!("must hold at most {MAX_GROUPS} ids"));
    }
    let mut seen = HashSet::new();
    ids.iter().filter(|g| seen.insert(g.as_str())).cloned().collect()
}

fn check_schedule(p: &mut Problems, starts_at: Option<DateTime<Utc>>, ends_at: Option<DateTime<Utc>>) {
    if let (Some(s), Some(e)) = (starts_at, ends_at)
        && s >= e
    {
        p.add("ends_at", "must be after starts_at");
    }
}

fn check_prices(p: &mut Problems, prices: &[ListPriceInput]) -> Vec<Checked> {
    if prices.len() > MAX_PRICES {
        p.add("prices", format!("must hold at most {MAX_PRICES} prices"));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(prices.len());
    let mut first: HashMap<(&str, Currency), usize> = HashMap::with_capacity(prices.len());
    for (i, price) in prices.iter().enumerate() {
        let currency = p.check(format!("prices[{i}].currency"), Currency::parse(&price.currency));
        if !(0..=Money::MAX_AMOUNT).contains(&price.amount) {
            p.add(format!("prices[{i}].amount"), format!("must be from 0 to {} minor units", Money::MAX_AMOUNT));
        }
        if price.variant_id.is_empty() {
            p.add(format!("prices[{i}].variant_id"), "no variant has this id");
        }
        let Some(currency) = currency else { continue };
        match first.entry((price.variant_id.as_str(), currency)) {
            std::collections::hash_map::Entry::Occupied(j) => {
                p.add(format!("prices[{i}]"), format!("repeats the variant and currency of prices[{}]", j.get()));
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
        out.push(Checked { variant_id: price.variant_id.clone(), currency, amount: price.amount });
    }
    out
}

/// Which of `ids` are rows of `table` (its `id` column), asked `CHUNK` at a time.
async fn existing_ids(conn: &mut Conn<'_>, table: &'static str, ids: &[&str]) -> Result<HashSet<String>> {
    let mut found = HashSet::new();
    for chunk in ids.chunks(CHUNK) {
        let rows: Vec<(String,)> =
            sql::query(format!("SELECT id FROM {table} WHERE id IN {}", in_list(chunk.len(), 1)))
                .bind_all(chunk.iter().copied())
                .fetch_all(conn)
                .await
                .map_err(storage)?;
        found.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(found)
}

/// Refuses ids of groups that do not exist, each named (`customer_group_ids[2]`).
async fn check_groups_exist(conn: &mut Conn<'_>, p: &mut Problems, given: &[String]) -> Result<()> {
    let ids: Vec<&str> = given.iter().map(String::as_str).collect();
    let found = existing_ids(conn, "customer_groups", &ids).await?;
    for (i, g) in given.iter().enumerate() {
        if !found.contains(g) {
            p.add(format!("customer_group_ids[{i}]"), "no customer group has this id");
        }
    }
    Ok(())
}

/// Refuses prices of variants that do not exist, each named (`prices[3].variant_id`).
async fn check_variants_exist(conn: &mut Conn<'_>, p: &mut Problems, given: &[ListPriceInput]) -> Result<()> {
    let mut unique: Vec<&str> = given.iter().map(|g| g.variant_id.as_str()).collect();
    unique.sort_unstable();
    unique.dedup();
    let found = existing_ids(conn, "variants", &unique).await?;
    for (i, price) in given.iter().enumerate() {
        if !price.variant_id.is_empty() && !found.contains(&price.variant_id) {
            p.add(format!("prices[{i}].variant_id"), "no variant has this id");
        }
    }
    Ok(())
}

async fn insert_groups(conn: &mut Conn<'_>, list_id: &str, groups: &[String]) -> Result<()> {
    for chunk in groups.chunks(CHUNK) {
        let mut q = sql::query(format!(
            "INSERT INTO price_list_groups (price_list_id, group_id) VALUES {}",
            values_list(chunk.len(), 2, 1)
        ));
        for g in chunk {
            q = q.bind(list_id).bind(g.as_str());
        }
        q.execute(conn).await.map_err(storage)?;
    }
    Ok(())
}

async fn insert_prices(conn: &mut Conn<'_>, list_id: &str, prices: &[Checked]) -> Result<()> {
    for chunk in prices.chunks(CHUNK) {
        let mut q = sql::query(format!(
            "INSERT INTO price_list_prices (price_list_id, variant_id, currency, amount) VALUES {}",
            values_list(chunk.len(), 4, 1)
        ));
        for price in chunk {
            q = q.bind(list_id).bind(price.variant_id.as_str()).bind(price.currency.code()).bind(price.amount);
        }
        q.execute(conn).await.map_err(storage)?;
    }
    Ok(())
}

struct ListRow {
    id: String,
    name: String,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}
backroom_db::from_row!(ListRow { id, name, starts_at, ends_at, created_at, updated_at });

const LIST_COLUMNS: &str = "id, name, starts_at, ends_at, created_at, updated_at";

async fn list_row(conn: &mut Conn<'_>, id: &str) -> Result<ListRow> {
    sql::query(format!("SELECT {LIST_COLUMNS} FROM price_lists WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(storage)?
        .ok_or(Error::not_found("price list"))
}

/// The groups of lists, by list id, each sorted.
async fn groups_of(conn: &mut Conn<'_>, ids: &[String]) -> Result<HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(String, String)> = sql::query(format!(
        "SELECT price_list_id, group_id FROM price_list_groups WHERE price_list_id IN {} ORDER BY group_id",
        in_list(ids.len(), 1)
    ))
    .bind_all(ids.iter().map(String::as_str))
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    for (list, group) in rows {
        out.entry(list).or_default().push(group);
    }
    Ok(out)
}

/// One list with its groups and prices.
async fn load(conn: &mut Conn<'_>, id: &str) -> Result<PriceList> {
    let row = list_row(conn, id).await?;
    let mut groups = groups_of(conn, std::slice::from_ref(&row.id)).await?;
    let prices: Vec<(String, String, i64)> = sql::query(
        "SELECT variant_id, currency, amount FROM price_list_prices WHERE price_list_id = $1 \
         ORDER BY variant_id, currency",
    )
    .bind(id)
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    let prices = prices
        .into_iter()
        .map(|(variant_id, currency, amount)| {
            Ok(ListPrice { variant_id, amount, currency: Currency::parse(&currency).map_err(Error::internal)? })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PriceList {
        customer_group_ids: groups.remove(&row.id).unwrap_or_default(),
        id: row.id,
        name: row.name,
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        prices,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

async fn changed(conn: &mut Conn<'_>, id: &str, action: Action) -> Result<()> {
    let event = Event::PriceListChanged(PriceListChanged { price_list_id: id.to_owned(), action });
    outbox::enqueue(conn, &event).await.map(|_| ())
}

/// The price lists of the store: their writes and staff reads.
#[derive(Clone)]
pub struct PriceLists {
    db: Db,
}

impl PriceLists {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Creates a list (see the module documentation for what is checked).
    #[tracing::instrument(skip_all)]
    pub async fn create(&self, input: &NewPriceList) -> Result<PriceList> {
        let mut p = Problems::new();
        let name = check_name(&mut p, &input.name);
        let groups = check_groups(&mut p, &input.customer_group_ids);
        let (starts_at, ends_at) = (input.starts_at.map(micros), input.ends_at.map(micros));
        check_schedule(&mut p, starts_at, ends_at);
        let prices = check_prices(&mut p, &input.prices);
        p.finish()?;
        let name = name.ok_or_else(|| Error::internal("a checked name"))?;
        let (raw_groups, raw_prices) = (input.customer_group_ids.clone(), input.prices.clone());
        let (list_id, ts) = (id::new("plist"), now());
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    let mut p = Problems::new();
                    check_groups_exist(&mut conn, &mut p, &raw_groups).await?;
                    check_variants_exist(&mut conn, &mut p, &raw_prices).await?;
                    p.finish()?;
                    sql::query(
                        "INSERT INTO price_lists (id, name, starts_at, ends_at, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $5)",
                    )
                    .bind(list_id.as_str())
                    .bind(name.as_str())
                    .bind(starts_at)
                    .bind(ends_at)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    insert_groups(&mut conn, &list_id, &groups).await?;
                    insert_prices(&mut conn, &list_id, &prices).await?;
                    changed(&mut conn, &list_id, Action::Created).await?;
                    Ok(Done::Commit(load(&mut conn, &list_id).await?))
                })
            })
            .await
    }

    /// Changes a list; `prices` and `customer_group_ids`, when given, replace the old ones.
    #[tracing::instrument(skip_all, fields(price_list_id = %id))]
    pub async fn update(&self, id: &str, patch: &PriceListPatch) -> Result<PriceList> {
        let mut p = Problems::new();
        let name = patch.name.as_deref().map(|n| check_name(&mut p, n));
        let groups = patch.customer_group_ids.as_deref().map(|g| check_groups(&mut p, g));
        let prices = patch.prices.as_deref().map(|ps| check_prices(&mut p, ps));
        p.finish()?;
        let name = name.flatten();
        let (starts_at, ends_at) = (patch.starts_at.map(|s| s.map(micros)), patch.ends_at.map(|e| e.map(micros)));
        let (raw_groups, raw_prices) = (patch.customer_group_ids.clone(), patch.prices.clone());
        let (list_id, ts) = (id.to_owned(), now());
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    let row = list_row(&mut conn, &list_id).await?;
                    let mut p = Problems::new();
                    let starts_at = starts_at.unwrap_or(row.starts_at);
                    let ends_at = ends_at.unwrap_or(row.ends_at);
                    check_schedule(&mut p, starts_at, ends_at);
                    if let Some(g) = &raw_groups {
                        check_groups_exist(&mut conn, &mut p, g).await?;
                    }
                    if let Some(ps) = &raw_prices {
                        check_variants_exist(&mut conn, &mut p, ps).await?;
                    }
                    p.finish()?;
                    sql::query(
                        "UPDATE price_lists SET name = $2, starts_at = $3, ends_at = $4, updated_at = $5 WHERE id = $1",
                    )
                    .bind(list_id.as_str())
                    .bind(name.unwrap_or(row.name))
                    .bind(starts_at)
                    .bind(ends_at)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    if let Some(groups) = &groups {
                        sql::query("DELETE FROM price_list_groups WHERE price_list_id = $1")
                            .bind(list_id.as_str())
                            .execute(&mut conn)
                            .await
                            .map_err(storage)?;
                        insert_groups(&mut conn, &list_id, groups).await?;
                    }
                    if let Some(prices) = &prices {
                        sql::query("DELETE FROM price_list_prices WHERE price_list_id = $1")
                            .bind(list_id.as_str())
                            .execute(&mut conn)
                            .await
                            .map_err(storage)?;
                        insert_prices(&mut conn, &list_id, prices).await?;
                    }
                    changed(&mut conn, &list_id, Action::Updated).await?;
                    Ok(Done::Commit(load(&mut conn, &list_id).await?))
                })
            })
            .await
    }

    /// Deletes a list with its groups and prices.
    #[tracing::instrument(skip_all, fields(price_list_id = %id))]
    pub async fn delete(&self, id: &str) -> Result<()> {
        let list_id = id.to_owned();
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    // Children first: the writer's SQLite connection may not cascade.
                    list_row(&mut conn, &list_id).await?;
                    for table in ["price_list_prices", "price_list_groups"] {
                        sql::query(format!("DELETE FROM {table} WHERE price_list_id = $1"))
                            .bind(list_id.as_str())
                            .execute(&mut conn)
                            .await
                            .map_err(storage)?;
                    }
                    sql::query("DELETE FROM price_lists WHERE id = $1")
                        .bind(list_id.as_str())
                        .execute(&mut conn)
                        .await
                        .map_err(storage)?;
                    changed(&mut conn, &list_id, Action::Deleted).await?;
                    Ok(Done::Commit(()))
                })
            })
            .await
    }

    /// One list with its groups and prices.
    pub async fn get(&self, id: &str) -> Result<PriceList> {
        let mut r = self.db.read().await?;
        load(&mut r.conn(), id).await
    }

    /// Lists, newest first, without their prices.
    pub async fn list(&self, page: &PageRequest) -> Result<Page<PriceListSummary>> {
        let mut q = String::from(
            "SELECT l.id, l.name, l.starts_at, l.ends_at, l.created_at, l.updated_at, \
             (SELECT COUNT(*) FROM price_list_prices p WHERE p.price_list_id = l.id) AS price_count \
             FROM price_lists l",
        );
        let mut args = Vec::new();
        if let Some(after) = &page.after {
            q.push_str(" WHERE l.id < $1");
            args.push(after.0.clone());
        }
        q.push_str(&format!(" ORDER BY l.id DESC LIMIT {}", i64::from(page.limit) + 1));
        let mut r = self.db.read().await?;
        let mut conn = r.conn();
        let rows: Vec<SummaryRow> = sql::query(q).bind_all(args).fetch_all(&mut conn).await.map_err(storage)?;
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut groups = groups_of(&mut conn, &ids).await?;
        let items: Vec<PriceListSummary> = rows
            .into_iter()
            .map(|r| PriceListSummary {
                customer_group_ids: groups.remove(&r.id).unwrap_or_default(),
                id: r.id,
                name: r.name,
                starts_at: r.starts_at,
                ends_at: r.ends_at,
                price_count: r.price_count,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
            .collect();
        Ok(page.finish(items, |l| l.id.clone()))
    }
}

struct SummaryRow {
    id: String,
    name: String,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    price_count: i64,
}
backroom_db::from_row!(SummaryRow { id, name, starts_at, ends_at, created_at, updated_at, price_count });

// ---- the storefront's price book --------------------------------------------------------------

/// One list as the book holds it.
#[derive(Debug, Default)]
struct BookList {
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    /// Prices by variant id.
    prices: HashMap<String, Vec<(Currency, i64)>>,
}

impl BookList {
    fn is_active(&self, at: DateTime<Utc>) -> bool {
        self.starts_at.is_none_or(|s| s <= at) && self.ends_at.is_none_or(|e| at < e)
    }
}

/// Every price list of the store, in memory: what the storefront overlays on its shared
/// product views for a signed-in customer.
#[derive(Debug, Default)]
pub struct PriceBook {
    lists: Vec<BookList>,
    /// The lists of each group (indexes into `lists`).
    by_group: HashMap<String, Vec<usize>>,
}

impl PriceBook {
    /// Reads every list, its groups and its prices.
    pub async fn load(db: &Db) -> Result<PriceBook> {
        let mut r = db.read().await?;
        let mut conn = r.conn();
        type Schedule = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
        let lists: Vec<Schedule> =
            sql::query("SELECT id, starts_at, ends_at FROM price_lists").fetch_all(&mut conn).await.map_err(storage)?;
        let groups: Vec<(String, String)> = sql::query("SELECT price_list_id, group_id FROM price_list_groups")
            .fetch_all(&mut conn)
            .await
            .map_err(storage)?;
        let prices: Vec<(String, String, String, i64)> =
            sql::query("SELECT price_list_id, variant_id, currency, amount FROM price_list_prices")
                .fetch_all(&mut conn)
                .await
                .map_err(storage)?;
        let mut book = PriceBook::default();
        let mut index = HashMap::with_capacity(lists.len());
        for (id, starts_at, ends_at) in lists {
            index.insert(id, book.lists.len());
            book.lists.push(BookList { starts_at, ends_at, prices: HashMap::new() });
        }
        for (list, group) in groups {
            if let Some(&i) = index.get(&list) {
                book.by_group.entry(group).or_default().push(i);
            }
        }
        for (list, variant, currency, amount) in prices {
            let (Some(&i), Ok(currency)) = (index.get(&list), Currency::parse(&currency)) else { continue };
            book.lists[i].prices.entry(variant).or_default().push((currency, amount));
        }
        metrics::gauge!("price_book_lists").set(book.lists.len() as f64);
        Ok(book)
    }

    /// Whether the store has no price list at all.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// The prices of the lists of `groups` active at `at`; `None` when none is.
    pub fn for_groups(self: &Arc<Self>, groups: &[String], at: DateTime<Utc>) -> Option<MemberPrices> {
        let mut lists: Vec<usize> = groups
            .iter()
            .filter_map(|g| self.by_group.get(g))
            .flatten()
            .copied()
            .filter(|&i| self.lists[i].is_active(at))
            .collect();
        lists.sort_unstable();
        lists.dedup();
        (!lists.is_empty()).then(|| MemberPrices { book: self.clone(), lists })
    }
}

/// The active lists of one signed-in customer at one moment.
#[derive(Debug, Clone)]
pub struct MemberPrices {
    book: Arc<PriceBook>,
    lists: Vec<usize>,
}

impl MemberPrices {
    /// The lowest list price of `variant_id` in `currency`, if any list has one.
    pub fn lowest(&self, variant_id: &str, currency: Currency) -> Option<i64> {
        self.lists
            .iter()
            .filter_map(|&i| self.book.lists[i].prices.get(variant_id))
            .flatten()
            .filter(|(c, _)| *c == currency)
            .map(|(_, a)| *a)
            .min()
    }

    /// What a shopper pays for a variant whose base price is `base`, and the base price beside
    /// it when a list makes it lower: `min(base, lowest list price)`.
    pub fn price(&self, variant_id: &str, base: Money) -> (Money, Option<Money>) {
        crate::model::member_price(base, self.lowest(variant_id, base.currency()))
    }
}

/// A customer's groups as last read.
struct Groups {
    read_at: Instant,
    generation: u64,
    ids: Arc<[String]>,
}

/// The storefront's view of price lists in one process: the [`PriceBook`], reloaded when
/// stale, and the groups of signed-in customers (see the module documentation).
pub struct LivePrices {
    db: Db,
    /// Bumped by every mark: a book loaded under an older value is stale.
    wanted: AtomicU64,
    current: RwLock<Option<(u64, Arc<PriceBook>)>>,
    /// One reload at a time; the others wait for it.
    reload: tokio::sync::Mutex<()>,
    /// Bumped when members of a group change: groups read under an older value are not kept.
    group_generation: AtomicU64,
    groups: RwLock<HashMap<String, Groups>>,
}

impl LivePrices {
    /// Nothing loaded yet: the first read loads the book.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            wanted: AtomicU64::new(1),
            current: RwLock::new(None),
            reload: tokio::sync::Mutex::new(()),
            group_generation: AtomicU64::new(0),
            groups: RwLock::new(HashMap::new()),
        }
    }

    /// A list changed (through this process, or another one as the outbox tells): the next
    /// read loads the book again.
    pub fn mark_stale(&self) {
        self.wanted.fetch_add(1, Ordering::SeqCst);
    }

    /// Members of a group changed: every customer's groups are read again.
    pub fn groups_changed(&self) {
        self.group_generation.fetch_add(1, Ordering::SeqCst);
        self.groups.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    fn current(&self) -> Option<Arc<PriceBook>> {
        let wanted = self.wanted.load(Ordering::SeqCst);
        match &*self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some((loaded, book)) if *loaded == wanted => Some(book.clone()),
            _ => None,
        }
    }

    /// Whether the book is loaded, current and empty: no list can apply to anyone, so a
    /// request needs no customer lookup (a stale book may hold lists: `false`).
    pub fn surely_none(&self) -> bool {
        self.current().is_some_and(|b| b.is_empty())
    }

    /// The current book, loaded from the database when stale.
    pub async fn book(&self) -> Result<Arc<PriceBook>> {
        if let Some(book) = self.current() {
            return Ok(book);
        }
        let _one = self.reload.lock().await;
        if let Some(book) = self.current() {
            return Ok(book);
        }
        // Taken before the read: a mark made after it makes what is read stale.
        let wanted = self.wanted.load(Ordering::SeqCst);
        let book = Arc::new(PriceBook::load(&self.db).await?);
        metrics::counter!("price_book_loads_total").increment(1);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((wanted, book.clone()));
        Ok(book)
    }

    /// The groups a customer is in: kept for [`GROUPS_TTL`], read again after a change of
    /// members through this process.
    pub async fn groups_of(&self, customer_id: &str) -> Result<Arc<[String]>> {
        let generation = self.group_generation.load(Ordering::SeqCst);
        if let Some(g) = self.groups.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(customer_id)
            && g.generation == generation
            && g.read_at.elapsed() < GROUPS_TTL
        {
            return Ok(g.ids.clone());
        }
        let read_at = Instant::now();
        let mut r = self.db.read_fast().await?;
        let rows: Vec<(String,)> = sql::query("SELECT group_id FROM customer_group_members WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_all(&mut r.conn())
            .await
            .map_err(storage)?;
        drop(r);
        let ids: Arc<[String]> = rows.into_iter().map(|(g,)| g).collect();
        let mut cache = self.groups.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.group_generation.load(Ordering::SeqCst) == generation {
            if cache.len() >= MAX_CACHED_CUSTOMERS {
                cache.clear();
            }
            cache.insert(customer_id.to_owned(), Groups { read_at, generation, ids: ids.clone() });
        }
        Ok(ids)
    }
}

/// Marks this process's [`LivePrices`] stale on `price_list.changed`: a broadcast outbox
/// [`Consumer`], so that changes made through other processes show here too.
pub struct Follow(pub Arc<LivePrices>);

impl Consumer for Follow {
    fn name(&self) -> &'static str {
        "price-book"
    }

    fn wants(&self, event: &Event) -> bool {
        matches!(event, Event::PriceListChanged(_))
    }

    fn handle<'a>(&'a self, _: Batch<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.0.mark_stale();
            Ok(())
        })
    }

    /// The book may have been loaded before the follower started: it is read again.
    fn resume<'a>(&'a self, head: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            self.0.mark_stale();
            Ok(head.to_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    fn book() -> Arc<PriceBook> {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let list = |starts_at, ends_at, prices: &[(&str, i64)]| BookList {
            starts_at,
            ends_at,
            prices: prices.iter().map(|(v, a)| ((*v).to_owned(), vec![(eur(), *a)])).collect(),
        };
        Arc::new(PriceBook {
            lists: vec![
                list(None, None, &[("var_a", 3000), ("var_b", 6000)]),
                list(None, None, &[("var_a", 2500)]),
                list(Some(t("2030-01-01T00:00:00Z")), None, &[("var_a", 100)]),
                list(None, Some(t("2020-01-01T00:00:00Z")), &[("var_a", 100)]),
            ],
            by_group: [("g1".to_owned(), vec![0, 2, 3]), ("g2".to_owned(), vec![1])].into_iter().collect(),
        })
    }

    #[test]
    fn the_lowest_active_price_of_the_customers_groups_wins_and_never_raises_the_base() {
        let now: DateTime<Utc> = "2025-06-01T12:00:00Z".parse().unwrap();
        let b = book();
        let base = Money::new(4900, eur()).unwrap();
        let one = b.for_groups(&["g1".into()], now).unwrap();
        assert_eq!(one.price("var_a", base), (Money::new(3000, eur()).unwrap(), Some(base)));
        // A list price above the base leaves the base.
        assert_eq!(one.price("var_b", base), (base, None));
        let both = b.for_groups(&["g1".into(), "g2".into()], now).unwrap();
        assert_eq!(both.price("var_a", base).0.amount(), 2500);
        // Other currencies and variants are untouched.
        let usd = Money::new(4900, Currency::parse("USD").unwrap()).unwrap();
        assert_eq!(both.price("var_a", usd), (usd, None));
        assert_eq!(both.price("var_c", base), (base, None));
        assert!(b.for_groups(&["g3".into()], now).is_none());
        // Not yet started, already ended: only at their moments.
        let later: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(b.for_groups(&["g1".into()], later).unwrap().price("var_a", base).0.amount(), 100);
        let early: DateTime<Utc> = "2019-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(b.for_groups(&["g1".into()], early).unwrap().price("var_a", base).0.amount(), 100);
    }

    #[test]
    fn shapes_are_checked_with_each_field_named() {
        let mut p = Problems::new();
        let price = |v: &str, amount: i64, c: &str| ListPriceInput { variant_id: v.into(), amount, currency: c.into() };
        check_prices(
            &mut p,
            &[
                price("var_a", 1, "EUR"),
                price("var_a", -1, "EUR"),
                price("var_b", 1, "EURO"),
                price("var_c", Money::MAX_AMOUNT + 1, "USD"),
            ],
        );
        let Err(Error::Validation(errors)) = p.finish() else { panic!("refused") };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["prices[1].amount", "prices[1]", "prices[2].currency", "prices[3].amount"]);
        let mut p = Problems::new();
        check_schedule(&mut p, Some(now()), Some(now() - TimeDelta::seconds(1)));
        assert!(check_name(&mut p, "  ").is_none());
        let Err(Error::Validation(errors)) = p.finish() else { panic!("refused") };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["ends_at", "name"]);
    }
}
