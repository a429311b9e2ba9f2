//! The pricing module's resources as the API shows them, and the reads the cart and checkout
//! make of them. Writes (create, change, delete) live beside each resource's validation.

use std::collections::HashMap;

use backroom_db::{Conn, storage};
use backroom_kernel::{Currency, Error, Money, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rate::Rate;

/// The tax class every variant has unless set otherwise, and the one shipping is taxed at.
pub const STANDARD: &str = "standard";

/// Countries sold to with one currency and one way of showing prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Region {
    #[schema(example = "reg_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    #[schema(example = "Portugal")]
    pub name: String,
    pub currency: Currency,
    /// ISO 3166-1 alpha-2 codes; a country belongs to at most one region.
    #[schema(example = json!(["PT"]))]
    pub countries: Vec<String>,
    /// Prices in this region include tax (the tax is computed out of them).
    pub tax_inclusive: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A tax rate of one tax class in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TaxRate {
    #[schema(example = "txr_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    pub region_id: String,
    #[schema(example = "IVA")]
    pub name: String,
    /// Percent, a decimal string with up to 4 decimals.
    pub rate: Rate,
    #[schema(example = "standard")]
    pub tax_class: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a promotion takes off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotionKind {
    /// A percentage of every line.
    Percentage(Rate),
    /// An amount off the cart, spread over its lines; only for carts in its currency.
    Fixed(Money),
    /// Shipping costs nothing.
    FreeShipping,
}

impl PromotionKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            PromotionKind::Percentage(_) => "percentage",
            PromotionKind::Fixed(_) => "fixed",
            PromotionKind::FreeShipping => "free_shipping",
        }
    }
}

/// A discount code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub id: String,
    /// Stored and matched in upper case.
    pub code: String,
    pub kind: PromotionKind,
    /// Orders that may use it in all; `None` for no limit.
    pub usage_limit: Option<i64>,
    /// Orders one customer (or one guest e-mail) may place with it.
    pub per_customer_limit: Option<i64>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// The cart's subtotal (before discounts) must reach this, in its currency.
    pub min_subtotal: Option<Money>,
    /// Orders that hold a use now (failed and cancelled orders gave theirs back).
    pub used: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Promotion {
    /// Within its validity window at `at`.
    pub fn is_live(&self, at: DateTime<Utc>) -> bool {
        self.starts_at.is_none_or(|s| s <= at) && self.ends_at.is_none_or(|e| at < e)
    }

    /// Every use taken.
    pub fn is_exhausted(&self) -> bool {
        self.usage_limit.is_some_and(|l| self.used >= l)
    }
}

/// A carrier that quotes a shipping option's price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CarrierSettings {
    /// `POST`ed `{"currency", "country", "postal_code", "items": [{"sku", "quantity", "weight_g"}]}`,
    /// answered by `{"amount"}`.
    #[schema(example = "https://rates.carrier.example/quote")]
    pub quote_url: String,
    /// How long a quote may take before the fallback answers (default 800).
    #[serde(default = "default_timeout_ms")]
    #[schema(example = 800)]
    pub timeout_ms: u64,
}

pub fn default_timeout_ms() -> u64 {
    800
}

/// A way to ship to a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ShippingOption {
    #[schema(example = "so_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    #[schema(example = "Standard")]
    pub name: String,
    pub region_id: String,
    /// The flat price, and the fallback of a carrier quote.
    pub price: Money,
    /// Shipping is free once the cart's subtotal after discounts reaches this.
    pub free_over: Option<Money>,
    pub carrier: Option<CarrierSettings>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn currency(code: &str) -> Result<Currency> {
    Currency::parse(code).map_err(Error::internal)
}

fn money(amount: i64, c: Currency) -> Result<Money> {
    Money::new(amount, c).map_err(Error::internal)
}

struct RegionRow {
    id: String,
    name: String,
    currency: String,
    tax_inclusive: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}
backroom_db::from_row!(RegionRow { id, name, currency, tax_inclusive, created_at, updated_at });

const REGION_COLUMNS: &str = "id, name, currency, tax_inclusive, created_at, updated_at";

/// Regions with their countries, by id.
pub async fn regions(conn: &mut Conn<'_>, ids: &[String]) -> Result<Vec<Region>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<RegionRow> = backroom_db::sql::query(format!(
        "SELECT {REGION_COLUMNS} FROM regions WHERE id IN {} ORDER BY id",
        backroom_db::sql::in_list(ids.len(), 1)
    ))
    .bind_all(ids.iter().map(String::as_str))
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    let countries: Vec<(String, String)> = backroom_db::sql::query(format!(
        "SELECT region_id, country FROM region_countries WHERE region_id IN {} ORDER BY country",
        backroom_db::sql::in_list(ids.len(), 1)
    ))
    .bind_all(ids.iter().map(String::as_str))
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    rows.into_iter()
        .map(|r| {
            Ok(Region {
                countries: countries.iter().filter(|(rid, _)| *rid == r.id).map(|(_, c)| c.clone()).collect(),
                currency: currency(&r.currency)?,
                id: r.id,
                name: r.name,
                tax_inclusive: r.tax_inclusive,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
        })
        .collect()
}

/// One region.
pub async fn region(conn: &mut Conn<'_>, id: &str) -> Result<Option<Region>> {
    Ok(regions(conn, &[id.to_owned()]).await?.pop())
}

/// The region a country belongs to.
pub async fn region_of_country(conn: &mut Conn<'_>, country: &str) -> Result<Option<Region>> {
    let id: Option<(String,)> = backroom_db::sql::query("SELECT region_id FROM region_countries WHERE country = $1")
        .bind(country)
        .fetch_optional(conn)
        .await
        .map_err(storage)?;
    match id {
        Some((id,)) => region(conn, &id).await,
        None => Ok(None),
    }
}

/// Whether the store has any region (without regions, carts have no tax and no shipping).
pub async fn has_regions(conn: &mut Conn<'_>) -> Result<bool> {
    let n: i64 = backroom_db::sql::query("SELECT COUNT(*) FROM (SELECT 1 FROM regions LIMIT 1) r")
        .fetch_scalar(conn)
        .await
        .map_err(storage)?;
    Ok(n > 0)
}

/// A region's rate per tax class (a class without a rate is taxed at zero).
pub async fn tax_rates(conn: &mut Conn<'_>, region_id: &str) -> Result<HashMap<String, Rate>> {
    let rows: Vec<(String, i64)> =
        backroom_db::sql::query("SELECT tax_class, rate_e4 FROM tax_rates WHERE region_id = $1")
            .bind(region_id)
            .fetch_all(conn)
            .await
            .map_err(storage)?;
    Ok(rows.into_iter().map(|(class, e4)| (class, Rate::from_e4(e4))).collect())
}

struct PromotionRow {
    id: String,
    code: String,
    r#type: String,
    value_e4: Option<i64>,
    amount: Option<i64>,
    currency: Option<String>,
    usage_limit: Option<i64>,
    per_customer_limit: Option<i64>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    min_subtotal_amount: Option<i64>,
    min_subtotal_currency: Option<String>,
    used: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}
// By hand rather than with `from_row!`, which names each column after its field:
// `stringify!(r#type)` is `r#type`, not the column `type`.
impl backroom_db::sql::FromRow for PromotionRow {
    fn from_row(row: &backroom_db::sql::Row<'_>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.col("id")?,
            code: row.col("code")?,
            r#type: row.col("type")?,
            value_e4: row.col("value_e4")?,
            amount: row.col("amount")?,
            currency: row.col("currency")?,
            usage_limit: row.col("usage_limit")?,
            per_customer_limit: row.col("per_customer_limit")?,
            starts_at: row.col("starts_at")?,
            ends_at: row.col("ends_at")?,
            min_subtotal_amount: row.col("min_subtotal_amount")?,
            min_subtotal_currency: row.col("min_subtotal_currency")?,
            used: row.col("used")?,
            created_at: row.col("created_at")?,
            updated_at: row.col("updated_at")?,
        })
    }
}

/// The columns [`PromotionRow`] reads, in its order.
pub const PROMOTION_COLUMNS: &str = "id, code, type, value_e4, amount, currency, usage_limit, per_customer_limit, \
     starts_at, ends_at, min_subtotal_amount, min_subtotal_currency, used, created_at, updated_at";

impl PromotionRow {
    fn into_promotion(self) -> Result<Promotion> {
        let kind = match self.r#type.as_str() {
            "percentage" => PromotionKind::Percentage(Rate::from_e4(self.value_e4.unwrap_or(0))),
            "fixed" => PromotionKind::Fixed(money(
                self.amount.unwrap_or(0),
                currency(self.currency.as_deref().unwrap_or_default())?,
            )?),
            "free_shipping" => PromotionKind::FreeShipping,
            other => return Err(Error::internal(format!("promotion type {other}"))),
        };
        let min_subtotal = match (self.min_subtotal_amount, self.min_subtotal_currency) {
            (Some(a), Some(c)) => Some(money(a, currency(&c)?)?),
            _ => None,
        };
        Ok(Promotion {
            id: self.id,
            code: self.code,
            kind,
            usage_limit: self.usage_limit,
            per_customer_limit: self.per_customer_limit,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            min_subtotal,
            used: self.used,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Promotions read by a `SELECT {PROMOTION_COLUMNS} FROM promotions …` statement.
pub async fn promotions_where(conn: &mut Conn<'_>, query: backroom_db::sql::Query<'_>) -> Result<Vec<Promotion>> {
    let rows: Vec<PromotionRow> = query.fetch_all(conn).await.map_err(storage)?;
    rows.into_iter().map(PromotionRow::into_promotion).collect()
}

/// The promotion with this code (matched case-insensitively: codes are stored upper case).
pub async fn promotion_by_code(conn: &mut Conn<'_>, code: &str) -> Result<Option<Promotion>> {
    let q = backroom_db::sql::query(format!("SELECT {PROMOTION_COLUMNS} FROM promotions WHERE code = $1"))
        .bind(code.trim().to_uppercase());
    Ok(promotions_where(conn, q).await?.pop())
}

/// How many orders of this customer (or, for a guest, of this e-mail's keyed hash) hold a use
/// of the promotion.
pub async fn uses_by(
    conn: &mut Conn<'_>,
    promotion_id: &str,
    customer_id: Option<&str>,
    email_index: Option<&str>,
) -> Result<i64> {
    let q = match (customer_id, email_index) {
        (Some(c), _) => {
            backroom_db::sql::query("SELECT COUNT(*) FROM promotion_uses WHERE promotion_id = $1 AND customer_id = $2")
                .bind(promotion_id)
                .bind(c)
        }
        (None, Some(e)) => {
            backroom_db::sql::query("SELECT COUNT(*) FROM promotion_uses WHERE promotion_id = $1 AND email_index = $2")
                .bind(promotion_id)
                .bind(e)
        }
        (None, None) => return Ok(0),
    };
    q.fetch_scalar(conn).await.map_err(storage)
}

struct OptionRow {
    id: String,
    name: String,
    region_id: String,
    currency: String,
    price: i64,
    free_over: Option<i64>,
    carrier_quote_url: Option<String>,
    carrier_timeout_ms: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}
backroom_db::from_row!(OptionRow {
    id,
    name,
    region_id,
    currency,
    price,
    free_over,
    carrier_quote_url,
    carrier_timeout_ms,
    created_at,
    updated_at
});

/// The columns [`OptionRow`] reads.
pub const OPTION_COLUMNS: &str =
    "id, name, region_id, currency, price, free_over, carrier_quote_url, carrier_timeout_ms, created_at, updated_at";

impl OptionRow {
    fn into_option(self) -> Result<ShippingOption> {
        let c = currency(&self.currency)?;
        Ok(ShippingOption {
            id: self.id,
            name: self.name,
            region_id: self.region_id,
            price: money(self.price, c)?,
            free_over: self.free_over.map(|a| money(a, c)).transpose()?,
            carrier: self.carrier_quote_url.map(|quote_url| CarrierSettings {
                quote_url,
                timeout_ms: self.carrier_timeout_ms.and_then(|t| u64::try_from(t).ok()).unwrap_or(default_timeout_ms()),
            }),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Shipping options read by a `SELECT {OPTION_COLUMNS} FROM shipping_options …` statement.
pub async fn shipping_options_where(
    conn: &mut Conn<'_>,
    query: backroom_db::sql::Query<'_>,
) -> Result<Vec<ShippingOption>> {
    let rows: Vec<OptionRow> = query.fetch_all(conn).await.map_err(storage)?;
    rows.into_iter().map(OptionRow::into_option).collect()
}

/// A region's shipping options, oldest first.
pub async fn shipping_options(conn: &mut Conn<'_>, region_id: &str) -> Result<Vec<ShippingOption>> {
    let q = backroom_db::sql::query(format!(
        "SELECT {OPTION_COLUMNS} FROM shipping_options WHERE region_id = $1 ORDER BY created_at, id"
    ))
    .bind(region_id);
    shipping_options_where(conn, q).await
}

/// One shipping option.
pub async fn shipping_option(conn: &mut Conn<'_>, id: &str) -> Result<Option<ShippingOption>> {
    let q = backroom_db::sql::query(format!("SELECT {OPTION_COLUMNS} FROM shipping_options WHERE id = $1")).bind(id);
    Ok(shipping_options_where(conn, q).await?.pop())
}

/// What a member pays for a variant whose base price is `base`, given the lowest active list
/// price in its currency: `min(base, lowest)`, with the base beside it when the list price is
/// the lower. The one rule of product pages, listings, search, carts and checkout.
pub fn member_price(base: Money, lowest: Option<i64>) -> (Money, Option<Money>) {
    match lowest.filter(|&a| a < base.amount()).and_then(|a| Money::new(a, base.currency()).ok()) {
        Some(listed) => (listed, Some(base)),
        None => (base, None),
    }
}

/// The lowest price-list price per variant in `currency` for a customer at `at`: from the
/// active lists (`starts_at <= at < ends_at`, either end open) of every group the customer is
/// in. Variants without one are absent. The caller keeps the base price when it is lower.
pub async fn member_prices(
    conn: &mut Conn<'_>,
    customer_id: &str,
    currency: Currency,
    variant_ids: &[String],
    at: DateTime<Utc>,
) -> Result<HashMap<String, i64>> {
    if variant_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64)> = backroom_db::sql::query(format!(
        "SELECT p.variant_id, MIN(p.amount) FROM price_list_prices p \
         JOIN price_lists l ON l.id = p.price_list_id \
         JOIN price_list_groups g ON g.price_list_id = l.id \
         JOIN customer_group_members m ON m.group_id = g.group_id \
         WHERE m.customer_id = $1 AND p.currency = $2 \
           AND (l.starts_at IS NULL OR l.starts_at <= $3) AND (l.ends_at IS NULL OR l.ends_at > $3) \
           AND p.variant_id IN {} \
         GROUP BY p.variant_id",
        backroom_db::sql::in_list(variant_ids.len(), 4)
    ))
    .bind(customer_id)
    .bind(currency.code())
    .bind(at)
    .bind_all(variant_ids.iter().map(String::as_str))
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    Ok(rows.into_iter().collect())
}
