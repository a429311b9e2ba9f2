//! Shipping options as staff set them: create, list, read, change, delete, and the rules their
//! fields follow. Reads for carts are in [`crate::model`]; quotes in [`crate::carrier`].
//!
//! - `name`: 1–200 characters, readable ([`backroom_kernel::check_display`]);
//! - `region_id`: a region that exists; it cannot change afterwards;
//! - `price` and `free_over`: in the region's currency;
//! - `carrier.quote_url`: an absolute `http`/`https` URL of at most 2048 characters, not on a
//!   loopback, private or link-local address unless `BACKROOM_WEBHOOKS_ALLOW_PRIVATE`
//!   ([`crate::carrier::check_url`]); `carrier.timeout_ms`: 50–10,000 (default 800).

use backroom_db::sql;
use backroom_db::writer::Done;
use backroom_db::{Conn, Db, storage};
use backroom_kernel::error::Problems;
use backroom_kernel::{Currency, Error, Money, Page, PageRequest, Result, check_display, id, now};
use serde::{Deserialize, Deserializer};

use crate::carrier::{TIMEOUT_MS, check_url};
use crate::model::{CarrierSettings, OPTION_COLUMNS, ShippingOption, shipping_option, shipping_options_where};

/// The longest name of a shipping option, in characters.
pub const NAME_MAX: usize = 200;

/// `POST /admin/shipping-options`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShippingOption {
    #[schema(min_length = 1, max_length = 200, example = "Standard")]
    pub name: String,
    #[schema(example = "reg_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub region_id: String,
    /// The flat price, and the fallback of a carrier quote; in the region's currency.
    pub price: Money,
    /// Shipping is free once the cart's subtotal after discounts reaches this; in the
    /// region's currency.
    pub free_over: Option<Money>,
    /// A carrier that quotes the price per destination; without one the price is flat.
    pub carrier: Option<CarrierSettings>,
}

/// `PATCH /admin/shipping-options/{id}`: the fields to change; `null` removes `free_over` or
/// `carrier`. The region cannot change.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingOptionPatch {
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    pub price: Option<Money>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Money>, nullable)]
    pub free_over: Option<Option<Money>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<CarrierSettings>, nullable)]
    pub carrier: Option<Option<CarrierSettings>>,
}

/// Reads a field that may be absent (leave as is) or a value (set), but not `null`.
fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Reads a field that may be absent (leave as is), `null` (remove) or a value (set).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Checks a name, recording its problem; the trimmed name.
fn check_name(p: &mut Problems, name: &str) -> String {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX {
        p.add("name", format!("must be 1–{NAME_MAX} characters"));
    } else {
        p.check("name", check_display(name));
    }
    name.to_owned()
}

/// Checks that an amount is in the region's currency.
fn check_currency(p: &mut Problems, field: &str, money: Option<Money>, currency: Currency) {
    if let Some(m) = money
        && m.currency() != currency
    {
        p.add(field, format!("must be in the region's currency, {}", currency.code()));
    }
}

/// Checks carrier settings, recording their problems; the settings as they will be stored.
fn check_carrier(p: &mut Problems, carrier: &CarrierSettings, allow_private: bool) -> CarrierSettings {
    let quote_url = match check_url(&carrier.quote_url, allow_private) {
        Ok(url) => url,
        Err(message) => {
            p.add("carrier.quote_url", message);
            carrier.quote_url.clone()
        }
    };
    if !TIMEOUT_MS.contains(&carrier.timeout_ms) {
        p.add("carrier.timeout_ms", format!("must be from {} to {}", TIMEOUT_MS.start(), TIMEOUT_MS.end()));
    }
    CarrierSettings { quote_url, timeout_ms: carrier.timeout_ms }
}

fn timeout_column(carrier: &Option<CarrierSettings>) -> Option<i64> {
    carrier.as_ref().map(|c| i64::try_from(c.timeout_ms).unwrap_or(i64::MAX))
}

/// Creates a shipping option. `allow_private`: `BACKROOM_WEBHOOKS_ALLOW_PRIVATE`.
#[tracing::instrument(skip_all)]
pub async fn create(db: &Db, input: &NewShippingOption, allow_private: bool) -> Result<ShippingOption> {
    let mut p = Problems::new();
    let name = check_name(&mut p, &input.name);
    let carrier = input.carrier.as_ref().map(|c| check_carrier(&mut p, c, allow_private));
    let region = {
        let mut r = db.read().await?;
        crate::model::region(&mut r.conn(), &input.region_id).await?
    };
    match &region {
        None => p.add("region_id", "no region has this id"),
        Some(region) => {
            check_currency(&mut p, "price", Some(input.price), region.currency);
            check_currency(&mut p, "free_over", input.free_over, region.currency);
        }
    }
    p.finish()?;
    let ts = now();
    let option = ShippingOption {
        id: id::new("so"),
        name,
        region_id: input.region_id.clone(),
        price: input.price,
        free_over: input.free_over,
        carrier,
        created_at: ts,
        updated_at: ts,
    };
    let job = option.clone();
    db.write(move |mut conn| {
        Box::pin(async move {
            sql::query(
                "INSERT INTO shipping_options (id, name, region_id, currency, price, free_over, carrier_quote_url, \
                 carrier_timeout_ms, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&job.id)
            .bind(&job.name)
            .bind(&job.region_id)
            .bind(job.price.currency().code())
            .bind(job.price.amount())
            .bind(job.free_over.map(Money::amount))
            .bind(job.carrier.as_ref().map(|c| c.quote_url.as_str()))
            .bind(timeout_column(&job.carrier))
            .bind(job.created_at)
            .bind(job.updated_at)
            .execute(&mut conn)
            .await
            .map_err(|e| {
                // The region was deleted since it was read.
                if e.as_database_error().is_some_and(|d| d.is_foreign_key_violation()) {
                    Error::field("region_id", "no region has this id")
                } else {
                    storage(e)
                }
            })?;
            Ok(Done::Commit(()))
        })
    })
    .await?;
    tracing::info!(shipping_option_id = %option.id, region_id = %option.region_id, "shipping option created");
    Ok(option)
}

/// Shipping options, newest first; only `region_id`'s when given.
pub async fn list(db: &Db, region_id: Option<&str>, page: &PageRequest) -> Result<Page<ShippingOption>> {
    let mut q = format!("SELECT {OPTION_COLUMNS} FROM shipping_options");
    let mut args: Vec<String> = Vec::new();
    let mut clauses = Vec::new();
    if let Some(region) = region_id {
        args.push(region.to_owned());
        clauses.push(format!("region_id = ${}", args.len()));
    }
    if let Some(after) = &page.after {
        args.push(after.0.clone());
        clauses.push(format!("id < ${}", args.len()));
    }
    if !clauses.is_empty() {
        q.push_str(" WHERE ");
        q.push_str(&clauses.join(" AND "));
    }
    q.push_str(&format!(" ORDER BY id DESC LIMIT {}", i64::from(page.limit) + 1));
    let mut r = db.read().await?;
    let rows = shipping_options_where(&mut r.conn(), sql::query(q).bind_all(args)).await?;
    Ok(page.finish(rows, |o| o.id.clone()))
}

/// One shipping option; `404` when there is none.
pub async fn get(db: &Db, id: &str) -> Result<ShippingOption> {
    let mut r = db.read().await?;
    shipping_option(&mut r.conn(), id).await?.ok_or(Error::not_found("shipping option"))
}

/// Changes the fields `patch` sets; the others stay as they are (also when another change
/// lands at the same time: only the fields sent are written).
#[tracing::instrument(skip_all, fields(shipping_option_id = %id))]
pub async fn update(db: &Db, id: &str, patch: &ShippingOptionPatch, allow_private: bool) -> Result<ShippingOption> {
    // The currency is the region's, which an option never changes: checked against this read.
    let current = get(db, id).await?;
    let currency = current.price.currency();
    let mut p = Problems::new();
    let name = patch.name.as_deref().map(|n| check_name(&mut p, n));
    check_currency(&mut p, "price", patch.price, currency);
    if let Some(free_over) = patch.free_over {
        check_currency(&mut p, "free_over", free_over, currency);
    }
    let carrier = patch.carrier.as_ref().map(|c| c.as_ref().map(|c| check_carrier(&mut p, c, allow_private)));
    p.finish()?;

    let mut sets: Vec<(&str, Value)> = Vec::new();
    if let Some(name) = name {
        sets.push(("name", Value::Text(Some(name))));
    }
    if let Some(price) = patch.price {
        sets.push(("price", Value::Int(Some(price.amount()))));
    }
    if let Some(free_over) = patch.free_over {
        sets.push(("free_over", Value::Int(free_over.map(Money::amount))));
    }
    if let Some(carrier) = &carrier {
        sets.push(("carrier_quote_url", Value::Text(carrier.as_ref().map(|c| c.quote_url.clone()))));
        sets.push(("carrier_timeout_ms", Value::Int(timeout_column(carrier))));
    }
    sets.push(("updated_at", Value::Time(now())));
    let columns: Vec<String> = sets.iter().enumerate().map(|(i, (c, _))| format!("{c} = ${}", i + 2)).collect();
    let mut statement =
        sql::query(format!("UPDATE shipping_options SET {} WHERE id = $1", columns.join(", "))).bind(id.to_owned());
    for (_, value) in sets {
        statement = match value {
            Value::Text(v) => statement.bind(v),
            Value::Int(v) => statement.bind(v),
            Value::Time(v) => statement.bind(v),
        };
    }
    let id = id.to_owned();
    db.write(move |mut conn| {
        Box::pin(async move {
            let n = statement.execute(&mut conn).await.map_err(storage)?;
            if n == 0 {
                return Err(Error::not_found("shipping option"));
            }
            let option = read(&mut conn, &id).await?;
            Ok(Done::Commit(option))
        })
    })
    .await
}

/// A value of an `UPDATE`'s `SET`.
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Time(chrono::DateTime<chrono::Utc>),
}

async fn read(conn: &mut Conn<'_>, id: &str) -> Result<ShippingOption> {
    shipping_option(conn, id).await?.ok_or(Error::not_found("shipping option"))
}

/// Deletes a shipping option; `404` when there is none.
#[tracing::instrument(skip_all, fields(shipping_option_id = %id))]
pub async fn delete(db: &Db, id: &str) -> Result<()> {
    let id = id.to_owned();
    db.write(move |mut conn| {
        Box::pin(async move {
            let n = sql::query("DELETE FROM shipping_options WHERE id = $1")
                .bind(&id)
                .execute(&mut conn)
                .await
                .map_err(storage)?;
            if n == 0 {
                return Err(Error::not_found("shipping option"));
            }
            Ok(Done::Commit(()))
        })
    })
    .await
}
