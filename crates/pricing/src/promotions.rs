//! Discount codes as staff create, change and delete them (`/admin/promotions`), and the
//! shape the API shows a [`Promotion`] in. Applying a code to a cart and counting its uses
//! belong to the cart and checkout.

use backroom_db::sql;
use backroom_db::writer::Done;
use backroom_db::{Conn, Db, storage, unique_or};
use backroom_kernel::error::Problems;
use backroom_kernel::{Currency, Error, Money, Page, PageRequest, Result, id, now};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::check;
use crate::model::{PROMOTION_COLUMNS, Promotion, PromotionKind, promotions_where};
use crate::rate::{Rate, RateError};

/// The longest code.
pub const CODE_MAX: usize = 50;

/// What a promotion takes off, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromotionType {
    /// `value` percent off every line.
    Percentage,
    /// `value` (an amount) off the cart, for carts in its currency.
    Fixed,
    /// Shipping costs nothing; no `value`.
    FreeShipping,
}

impl PromotionType {
    fn of(kind: &PromotionKind) -> Self {
        match kind {
            PromotionKind::Percentage(_) => PromotionType::Percentage,
            PromotionKind::Fixed(_) => PromotionType::Fixed,
            PromotionKind::FreeShipping => PromotionType::FreeShipping,
        }
    }
}

/// A promotion's `value`: a JSON number of percent for `percentage`, an amount for `fixed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotionValue {
    Percent(Rate),
    Amount(Money),
}

impl Serialize for PromotionValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // The rate's shortest decimal read as a JSON number: `12.5`, never `12.500000001`.
            PromotionValue::Percent(r) => {
                let n: serde_json::Number = r.to_string().parse().map_err(serde::ser::Error::custom)?;
                n.serialize(s)
            }
            PromotionValue::Amount(m) => m.serialize(s),
        }
    }
}

impl utoipa::PartialSchema for PromotionValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Ref, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .description(Some("`percentage`: percent off, more than 0 and at most 100, at most 4 decimals"))
                    .exclusive_minimum(Some(0))
                    .maximum(Some(100))
                    .examples([serde_json::json!(10)]),
            )
            // `fixed`: the amount off, at least 1 minor unit.
            .item(Ref::from_schema_name("Money"))
            .description(Some(
                "What the promotion takes off: a number of percent for `percentage`, an amount (at least 1) \
                 for `fixed`; `null` for `free_shipping`",
            ))
            .into()
    }
}

impl utoipa::ToSchema for PromotionValue {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push((Money::name().into_owned(), Money::schema()));
        Money::schemas(schemas);
    }
}

/// A discount code as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Promotion)]
struct PromotionBody {
    #[schema(example = "promo_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    id: String,
    /// Upper case; matched case-insensitively.
    #[schema(example = "SUMMER10")]
    code: String,
    r#type: PromotionType,
    value: Option<PromotionValue>,
    /// Orders that may use it in all; `null` for no limit.
    usage_limit: Option<i64>,
    /// Orders one customer (or one guest e-mail) may place with it; `null` for no limit.
    per_customer_limit: Option<i64>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    /// The cart's subtotal before discounts must reach this (only carts in its currency).
    min_subtotal: Option<Money>,
    /// Orders that hold a use now (failed and cancelled orders give theirs back).
    used: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&Promotion> for PromotionBody {
    fn from(p: &Promotion) -> Self {
        PromotionBody {
            id: p.id.clone(),
            code: p.code.clone(),
            r#type: PromotionType::of(&p.kind),
            value: match p.kind {
                PromotionKind::Percentage(r) => Some(PromotionValue::Percent(r)),
                PromotionKind::Fixed(m) => Some(PromotionValue::Amount(m)),
                PromotionKind::FreeShipping => None,
            },
            usage_limit: p.usage_limit,
            per_customer_limit: p.per_customer_limit,
            starts_at: p.starts_at,
            ends_at: p.ends_at,
            min_subtotal: p.min_subtotal,
            used: p.used,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

impl Serialize for Promotion {
    /// `{id, code, type, value, usage_limit, per_customer_limit, starts_at, ends_at,
    /// min_subtotal, used, created_at, updated_at}`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PromotionBody::from(self).serialize(s)
    }
}

impl utoipa::PartialSchema for Promotion {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <PromotionBody as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Promotion {
    fn name() -> std::borrow::Cow<'static, str> {
        "Promotion".into()
    }
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        <PromotionBody as utoipa::ToSchema>::schemas(schemas);
    }
}

/// `POST /admin/promotions`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPromotion {
    /// 1–50 of `A-Z a-z 0-9 _ -`; stored upper case, unique.
    #[schema(example = "SUMMER10", pattern = "^[A-Za-z0-9_-]{1,50}$")]
    pub code: String,
    pub r#type: PromotionType,
    /// `percentage`: a JSON number, more than 0 and at most 100, at most 4 decimals.
    /// `fixed`: an amount (`{"amount", "currency"}`, at least 1). `free_shipping`: none.
    #[serde(default)]
    #[schema(value_type = Option<PromotionValue>)]
    pub value: Option<Value>,
    /// At least 1; no limit when left out.
    #[schema(minimum = 1)]
    pub usage_limit: Option<i64>,
    /// At least 1; no limit when left out.
    #[schema(minimum = 1)]
    pub per_customer_limit: Option<i64>,
    pub starts_at: Option<DateTime<Utc>>,
    /// After `starts_at`.
    pub ends_at: Option<DateTime<Utc>>,
    /// For `fixed`, in the promotion's currency.
    pub min_subtotal: Option<Money>,
}

/// `PATCH /admin/promotions/{id}`: the fields to change; `null` removes a limit, an end of
/// the validity window or the minimum subtotal. `code` and `type` never change.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromotionPatch {
    /// Of the promotion's type, as on creation.
    #[serde(default, deserialize_with = "check::present")]
    #[schema(value_type = Option<PromotionValue>)]
    pub value: Option<Value>,
    /// Not below `used`.
    #[serde(default, deserialize_with = "check::present")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub usage_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "check::present")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub per_customer_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "check::present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub starts_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "check::present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub ends_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "check::present")]
    #[schema(value_type = Option<Money>)]
    pub min_subtotal: Option<Option<Money>>,
    /// Refused with a message that says why (instead of "unknown field").
    #[serde(default)]
    #[schema(ignore)]
    pub code: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[schema(ignore)]
    pub r#type: Option<serde::de::IgnoredAny>,
}

/// Checks a code: 1–50 of `A-Z a-z 0-9 _ -`; answers it upper case.
fn code(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > CODE_MAX {
        return Err(format!("must be 1–{CODE_MAX} characters"));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err("may contain only letters A–Z, digits, `_` and `-`".into());
    }
    Ok(s.to_ascii_uppercase())
}

/// A percentage as a JSON number, converted exactly: serde_json writes the number in its
/// shortest form (`12.5`), which [`Rate::parse`] reads digit by digit.
fn percent(v: &Value) -> Result<Rate, String> {
    let Value::Number(n) = v else {
        return Err("must be a JSON number of percent such as 10 or 12.5".into());
    };
    let s = n.to_string();
    if s.starts_with('-') || n.as_f64().is_some_and(|f| f <= 0.0) {
        return Err("must be more than 0".into());
    }
    // An exponent is only written for numbers far from 0–100: tiny ones have too many
    // decimals, huge ones are out of range.
    if s.contains(['e', 'E']) {
        return Err(if n.as_f64().is_some_and(|f| f < 1.0) {
            "must have at most 4 decimals".into()
        } else {
            "must be at most 100".into()
        });
    }
    Rate::parse(&s, 100).map_err(|e| match e {
        RateError::TooPrecise => "must have at most 4 decimals".into(),
        RateError::OutOfRange { .. } => "must be at most 100".into(),
        RateError::NotDecimal => "must be a JSON number of percent such as 10 or 12.5".into(),
    })
}

/// An amount off: `{"amount", "currency"}`, at least 1 minor unit. Reported at
/// `value.amount` or `value.currency` where it can be.
fn amount(p: &mut Problems, v: &Value) -> Option<Money> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        amount: Value,
        currency: Value,
    }
    let Ok(raw) = serde_json::from_value::<Raw>(v.clone()) else {
        p.add("value", "must be an amount such as {\"amount\": 500, \"currency\": \"EUR\"}");
        return None;
    };
    let currency = match raw.currency.as_str().map(Currency::parse) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            p.add("value.currency", e.to_string());
            None
        }
        None => {
            p.add("value.currency", "must be an ISO 4217 code such as EUR");
            None
        }
    };
    let amount = match raw.amount.as_i64() {
        Some(a) if (1..=Money::MAX_AMOUNT).contains(&a) => Some(a),
        _ => {
            p.add("value.amount", format!("must be an integer of minor units, 1–{}", Money::MAX_AMOUNT));
            None
        }
    };
    Money::new(amount?, currency?).ok()
}

/// The kind of a promotion of type `t` from its `value`.
fn kind(p: &mut Problems, t: PromotionType, value: Option<&Value>) -> Option<PromotionKind> {
    let value = value.filter(|v| !v.is_null());
    match (t, value) {
        (PromotionType::FreeShipping, None) => Some(PromotionKind::FreeShipping),
        (PromotionType::FreeShipping, Some(_)) => {
            p.add("value", "must be left out (or null) for a free_shipping promotion");
            None
        }
        (_, None) => {
            p.add("value", "is required for a percentage or fixed promotion");
            None
        }
        (PromotionType::Percentage, Some(v)) => p.check("value", percent(v)).map(PromotionKind::Percentage),
        (PromotionType::Fixed, Some(v)) => amount(p, v).map(PromotionKind::Fixed),
    }
}

fn limit(p: &mut Problems, field: &str, v: Option<i64>) {
    if v.is_some_and(|n| n < 1) {
        p.add(field, "must be at least 1 (leave it out for no limit)");
    }
}

/// The rules between fields: the window's order, the minimum subtotal's currency.
fn across(p: &mut Problems, kind: Option<&PromotionKind>, window: Window, min_subtotal: Option<Money>) {
    if let (Some(s), Some(e)) = window
        && s >= e
    {
        p.add("ends_at", "must be after starts_at");
    }
    if let (Some(PromotionKind::Fixed(off)), Some(min)) = (kind, min_subtotal)
        && off.currency() != min.currency()
    {
        p.add("min_subtotal.currency", format!("must be the promotion's currency, {}", off.currency()));
    }
}

type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The columns a promotion's kind is stored in: `(type, value_e4, amount, currency)`.
fn kind_columns(kind: &PromotionKind) -> (&'static str, Option<i64>, Option<i64>, Option<&'static str>) {
    match kind {
        PromotionKind::Percentage(r) => ("percentage", Some(r.e4()), None, None),
        PromotionKind::Fixed(m) => ("fixed", None, Some(m.amount()), Some(m.currency().code())),
        PromotionKind::FreeShipping => ("free_shipping", None, None, None),
    }
}

async fn load(conn: &mut Conn<'_>, id: &str) -> Result<Promotion> {
    let q = sql::query(format!("SELECT {PROMOTION_COLUMNS} FROM promotions WHERE id = $1")).bind(id);
    promotions_where(conn, q).await?.pop().ok_or(Error::not_found("promotion"))
}

/// Creates a promotion: `422` for a bad field (all of them listed), `409 conflict` when the
/// code is taken.
#[tracing::instrument(skip_all)]
pub async fn create(db: &Db, input: &NewPromotion) -> Result<Promotion> {
    let mut p = Problems::new();
    let code = p.check("code", code(&input.code));
    let kind = kind(&mut p, input.r#type, input.value.as_ref());
    limit(&mut p, "usage_limit", input.usage_limit);
    limit(&mut p, "per_customer_limit", input.per_customer_limit);
    across(&mut p, kind.as_ref(), (input.starts_at, input.ends_at), input.min_subtotal);
    p.finish()?;
    let (Some(code), Some(kind)) = (code, kind) else {
        return Err(Error::internal("checked fields missing"));
    };
    let input = input.clone();
    let (promotion_id, ts) = (id::new("promo"), now());
    db.write(move |mut conn| {
        Box::pin(async move {
            let (t, value_e4, amount, currency) = kind_columns(&kind);
            sql::query(
                "INSERT INTO promotions (id, code, type, value_e4, amount, currency, usage_limit, \
                 per_customer_limit, starts_at, ends_at, min_subtotal_amount, min_subtotal_currency, used, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $13)",
            )
            .bind(promotion_id.as_str())
            .bind(code.as_str())
            .bind(t)
            .bind(value_e4)
            .bind(amount)
            .bind(currency)
            .bind(input.usage_limit)
            .bind(input.per_customer_limit)
            .bind(input.starts_at)
            .bind(input.ends_at)
            .bind(input.min_subtotal.map(Money::amount))
            .bind(input.min_subtotal.map(|m| m.currency().code()))
            .bind(ts)
            .execute(&mut conn)
            .await
            .map_err(|e| unique_or(e, |_| format!("a promotion with code {code} exists")))?;
            Ok(Done::Commit(load(&mut conn, &promotion_id).await?))
        })
    })
    .await
}

/// Promotions, newest first; only the one with `code` (any case) when given.
pub async fn list(db: &Db, code: Option<&str>, page: &PageRequest) -> Result<Page<Promotion>> {
    let mut q = format!("SELECT {PROMOTION_COLUMNS} FROM promotions WHERE 1 = 1");
    let mut args = Vec::new();
    if let Some(c) = code {
        args.push(c.trim().to_ascii_uppercase());
        q.push_str(&format!(" AND code = ${}", args.len()));
    }
    if let Some(after) = &page.after {
        args.push(after.0.clone());
        q.push_str(&format!(" AND id < ${}", args.len()));
    }
    q.push_str(&format!(" ORDER BY id DESC LIMIT {}", i64::from(page.limit) + 1));
    let mut r = db.read().await?;
    let rows = promotions_where(&mut r.conn(), sql::query(q).bind_all(args)).await?;
    Ok(page.finish(rows, |p| p.id.clone()))
}

/// One promotion, or `404`.
pub async fn get(db: &Db, id: &str) -> Result<Promotion> {
    let mut r = db.read().await?;
    load(&mut r.conn(), id).await
}

/// Changes a promotion (all but its code and type). `usage_limit` below the uses taken is
/// `422`: checked in the same statement that writes it, so a checkout taking a use at the
/// same time cannot slip under it.
#[tracing::instrument(skip(db, patch))]
pub async fn update(db: &Db, id: &str, patch: &PromotionPatch) -> Result<Promotion> {
    let mut p = Problems::new();
    if patch.code.is_some() {
        p.add("code", "cannot be changed: create another promotion with the new code");
    }
    if patch.r#type.is_some() {
        p.add("type", "cannot be changed: create another promotion of the new type");
    }
    p.finish()?;
    let current = get(db, id).await?;
    let t = PromotionType::of(&current.kind);
    let mut p = Problems::new();
    let kind = match &patch.value {
        Some(v) => kind(&mut p, t, Some(v)),
        None => Some(current.kind),
    };
    let usage_limit = patch.usage_limit.unwrap_or(current.usage_limit);
    let per_customer_limit = patch.per_customer_limit.unwrap_or(current.per_customer_limit);
    limit(&mut p, "usage_limit", usage_limit);
    limit(&mut p, "per_customer_limit", per_customer_limit);
    let window = (patch.starts_at.unwrap_or(current.starts_at), patch.ends_at.unwrap_or(current.ends_at));
    let min_subtotal = patch.min_subtotal.unwrap_or(current.min_subtotal);
    across(&mut p, kind.as_ref(), window, min_subtotal);
    p.finish()?;
    let Some(kind) = kind else { return Err(Error::internal("checked fields missing")) };
    let (promotion_id, ts) = (id.to_owned(), now());
    db.write(move |mut conn| {
        Box::pin(async move {
            let (_, value_e4, amount, currency) = kind_columns(&kind);
            let n = sql::query(
                "UPDATE promotions SET value_e4 = $2, amount = $3, currency = $4, usage_limit = $5, \
                 per_customer_limit = $6, starts_at = $7, ends_at = $8, min_subtotal_amount = $9, \
                 min_subtotal_currency = $10, updated_at = $11 \
                 WHERE id = $1 AND ($5 IS NULL OR used <= $5)",
            )
            .bind(promotion_id.as_str())
            .bind(value_e4)
            .bind(amount)
            .bind(currency)
            .bind(usage_limit)
            .bind(per_customer_limit)
            .bind(window.0)
            .bind(window.1)
            .bind(min_subtotal.map(Money::amount))
            .bind(min_subtotal.map(|m| m.currency().code()))
            .bind(ts)
            .execute(&mut conn)
            .await
            .map_err(storage)?;
            if n == 0 {
                // Gone, or `used` is above the new limit.
                let held = load(&mut conn, &promotion_id).await?.used;
                return Err(Error::field(
                    "usage_limit",
                    format!("must not be below the {held} use(s) orders hold already"),
                ));
            }
            Ok(Done::Commit(load(&mut conn, &promotion_id).await?))
        })
    })
    .await
}

/// Deletes a promotion with its record of uses. Orders that used it keep what it took off
/// (their `promotions` say so).
#[tracing::instrument(skip(db))]
pub async fn delete(db: &Db, id: &str) -> Result<()> {
    let promotion_id = id.to_owned();
    db.write(move |mut conn| {
        Box::pin(async move {
            let n = sql::query("DELETE FROM promotions WHERE id = $1")
                .bind(promotion_id.as_str())
                .execute(&mut conn)
                .await
                .map_err(storage)?;
            if n == 0 {
                return Err(Error::not_found("promotion"));
            }
            Ok(Done::Commit(()))
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_are_stored_upper_case() {
        assert_eq!(code("summer-10_x").unwrap(), "SUMMER-10_X");
        for bad in ["", "has space", "ÉTÉ", "a.b", &"A".repeat(51)] {
            assert!(code(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percentages_are_json_numbers_read_exactly() {
        for (v, e4) in [(json!(10), 100_000), (json!(12.5), 125_000), (json!(0.0001), 1), (json!(100), 1_000_000)] {
            assert_eq!(percent(&v).unwrap().e4(), e4, "{v}");
        }
        assert_eq!(percent(&json!(33.3333)).unwrap().to_string(), "33.3333");
        for (bad, why) in [
            (json!(0), "more than 0"),
            (json!(-5), "more than 0"),
            (json!(100.5), "at most 100"),
            (json!(1e20), "at most 100"),
            (json!(12.34567), "4 decimals"),
            (json!(0.000001), "4 decimals"),
            (json!("10"), "JSON number"),
            (json!(null), "JSON number"),
        ] {
            assert!(percent(&bad).unwrap_err().contains(why), "{bad}: {:?}", percent(&bad));
        }
    }

    #[test]
    fn a_value_matches_its_type() {
        let mut p = Problems::new();
        assert!(matches!(
            kind(&mut p, PromotionType::Fixed, Some(&json!({"amount": 500, "currency": "EUR"}))),
            Some(PromotionKind::Fixed(m)) if m.amount() == 500
        ));
        assert_eq!(kind(&mut p, PromotionType::FreeShipping, Some(&json!(null))), Some(PromotionKind::FreeShipping));
        assert!(p.is_empty());
        for (t, v, field) in [
            (PromotionType::Fixed, json!({"amount": 0, "currency": "EUR"}), "value.amount"),
            (PromotionType::Fixed, json!({"amount": 5, "currency": "EURO"}), "value.currency"),
            (PromotionType::Fixed, json!(5), "value"),
            (PromotionType::FreeShipping, json!(5), "value"),
            (PromotionType::Percentage, json!(null), "value"),
        ] {
            let mut p = Problems::new();
            assert_eq!(kind(&mut p, t, Some(&v)), None);
            let e = format!("{:?}", p.finish());
            assert!(e.contains(&format!("field: \"{field}\"")), "{v}: {e}");
        }
    }

    #[test]
    fn the_answer_shows_value_by_type() {
        let eur = Currency::parse("EUR").unwrap();
        let at = now();
        let mut promo = Promotion {
            id: "promo_1".into(),
            code: "SUMMER10".into(),
            kind: PromotionKind::Percentage("12.5".parse().unwrap()),
            usage_limit: Some(100),
            per_customer_limit: None,
            starts_at: None,
            ends_at: None,
            min_subtotal: Some(Money::new(5000, eur).unwrap()),
            used: 3,
            created_at: at,
            updated_at: at,
        };
        let v = serde_json::to_value(&promo).unwrap();
        assert_eq!(v["type"], "percentage");
        assert_eq!(v["value"], json!(12.5));
        assert_eq!(v["min_subtotal"], json!({"amount": 5000, "currency": "EUR"}));
        assert_eq!(v["used"], 3);
        promo.kind = PromotionKind::Fixed(Money::new(500, eur).unwrap());
        assert_eq!(serde_json::to_value(&promo).unwrap()["value"], json!({"amount": 500, "currency": "EUR"}));
        promo.kind = PromotionKind::FreeShipping;
        let v = serde_json::to_value(&promo).unwrap();
        assert_eq!((v["type"].as_str(), &v["value"]), (Some("free_shipping"), &json!(null)));
    }
}
