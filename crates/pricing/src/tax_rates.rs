//! Tax rates as staff create, change and delete them (`/admin/tax-rates`): one rate per tax
//! class in each region.

use backroom_db::sql;
use backroom_db::writer::Done;
use backroom_db::{Conn, Db, storage, unique_or};
use backroom_kernel::error::Problems;
use backroom_kernel::{Error, Page, PageRequest, Result, id, now};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::check;
use crate::model::{STANDARD, TaxRate};
use crate::rate::{Rate, RateError};

/// The longest tax rate name.
pub const NAME_MAX: usize = 100;

/// `POST /admin/tax-rates`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTaxRate {
    #[schema(example = "reg_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub region_id: String,
    /// 1–100 characters, shown on receipts.
    #[schema(example = "IVA", min_length = 1, max_length = 100)]
    pub name: String,
    /// Percent, 0–100, as a decimal string with at most 4 decimals (`"23"`, `"5.5"`). A
    /// JSON number is refused: decimals in JSON numbers are not exact.
    #[schema(value_type = Rate)]
    pub rate: Value,
    /// `standard` when left out: the class every variant has unless set otherwise.
    #[schema(example = "standard", pattern = "^[a-z0-9_-]{1,50}$")]
    pub tax_class: Option<String>,
}

/// `PATCH /admin/tax-rates/{id}`: the fields to change (a rate stays in its region).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaxRatePatch {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "check::present")]
    #[schema(value_type = Option<Rate>)]
    pub rate: Option<Value>,
    #[schema(pattern = "^[a-z0-9_-]{1,50}$")]
    pub tax_class: Option<String>,
}

/// Checks a rate as the request gives it: a decimal string, never a JSON number.
fn rate(v: &Value) -> Result<Rate, String> {
    match v {
        Value::String(s) => Rate::parse(s, 100).map_err(|e| match e {
            RateError::OutOfRange { max } => format!("must be between 0 and {max} percent"),
            other => other.to_string(),
        }),
        Value::Number(n) => {
            Err(format!("must be a string of percent such as \"{n}\": rates are decimal strings, never JSON numbers"))
        }
        _ => Err("must be a decimal string of percent such as \"23\" or \"5.5\"".into()),
    }
}

struct TaxRateRow {
    id: String,
    region_id: String,
    name: String,
    rate_e4: i64,
    tax_class: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}
backroom_db::from_row!(TaxRateRow { id, region_id, name, rate_e4, tax_class, created_at, updated_at });

const COLUMNS: &str = "id, region_id, name, rate_e4, tax_class, created_at, updated_at";

impl From<TaxRateRow> for TaxRate {
    fn from(r: TaxRateRow) -> Self {
        TaxRate {
            id: r.id,
            region_id: r.region_id,
            name: r.name,
            rate: Rate::from_e4(r.rate_e4),
            tax_class: r.tax_class,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

async fn load(conn: &mut Conn<'_>, id: &str) -> Result<TaxRate> {
    sql::query(format!("SELECT {COLUMNS} FROM tax_rates WHERE id = $1"))
        .bind(id)
        .fetch_optional::<TaxRateRow>(conn)
        .await
        .map_err(storage)?
        .map(TaxRate::from)
        .ok_or(Error::not_found("tax rate"))
}

fn class_taken(class: &str) -> String {
    format!("the region has a rate for tax class `{class}` already; change that one instead")
}

/// Creates a tax rate: `422` for a bad field or a region that does not exist (on
/// `region_id`), `409 conflict` when the region has a rate for the class already.
#[tracing::instrument(skip_all, fields(region_id = %input.region_id))]
pub async fn create(db: &Db, input: &NewTaxRate) -> Result<TaxRate> {
    let mut p = Problems::new();
    let name = p.check("name", check::name(&input.name, NAME_MAX));
    let rate = p.check("rate", rate(&input.rate));
    let class = p.check("tax_class", check::tax_class(input.tax_class.as_deref().unwrap_or(STANDARD)));
    p.finish()?;
    let (Some(name), Some(rate), Some(class)) = (name, rate, class) else {
        return Err(Error::internal("checked fields missing"));
    };
    let (rate_id, region_id, ts) = (id::new("txr"), input.region_id.clone(), now());
    db.write(move |mut conn| {
        Box::pin(async move {
            let region: Option<(String,)> = sql::query("SELECT id FROM regions WHERE id = $1")
                .bind(region_id.as_str())
                .fetch_optional(&mut conn)
                .await
                .map_err(storage)?;
            if region.is_none() {
                return Err(Error::field("region_id", "no region has this id"));
            }
            sql::query(
                "INSERT INTO tax_rates (id, region_id, name, rate, rate_e4, tax_class, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(rate_id.as_str())
            .bind(region_id.as_str())
            .bind(name)
            .bind(rate.to_string())
            .bind(rate.e4())
            .bind(class.as_str())
            .bind(ts)
            .execute(&mut conn)
            .await
            .map_err(|e| unique_or(e, |_| class_taken(&class)))?;
            Ok(Done::Commit(load(&mut conn, &rate_id).await?))
        })
    })
    .await
}

/// Tax rates, newest first; only a region's with `region_id`.
pub async fn list(db: &Db, region_id: Option<&str>, page: &PageRequest) -> Result<Page<TaxRate>> {
    let mut q = format!("SELECT {COLUMNS} FROM tax_rates WHERE 1 = 1");
    let mut args = Vec::new();
    if let Some(region) = region_id {
        args.push(region.to_owned());
        q.push_str(&format!(" AND region_id = ${}", args.len()));
    }
    if let Some(after) = &page.after {
        args.push(after.0.clone());
        q.push_str(&format!(" AND id < ${}", args.len()));
    }
    q.push_str(&format!(" ORDER BY id DESC LIMIT {}", i64::from(page.limit) + 1));
    let mut r = db.read().await?;
    let rows: Vec<TaxRateRow> = sql::query(q).bind_all(args).fetch_all(&mut r.conn()).await.map_err(storage)?;
    Ok(page.finish(rows.into_iter().map(TaxRate::from).collect(), |t| t.id.clone()))
}

/// One tax rate, or `404`.
pub async fn get(db: &Db, id: &str) -> Result<TaxRate> {
    let mut r = db.read().await?;
    load(&mut r.conn(), id).await
}

/// Changes a tax rate's name, rate or class (`409 conflict` when the region has a rate for
/// the new class already).
#[tracing::instrument(skip(db, patch))]
pub async fn update(db: &Db, id: &str, patch: &TaxRatePatch) -> Result<TaxRate> {
    let mut p = Problems::new();
    let name = patch.name.as_deref().and_then(|n| p.check("name", check::name(n, NAME_MAX)));
    let rate = patch.rate.as_ref().and_then(|r| p.check("rate", rate(r)));
    let class = patch.tax_class.as_deref().and_then(|c| p.check("tax_class", check::tax_class(c)));
    p.finish()?;
    let (rate_id, ts) = (id.to_owned(), now());
    db.write(move |mut conn| {
        Box::pin(async move {
            let n = sql::query(
                "UPDATE tax_rates SET name = COALESCE($2, name), rate = COALESCE($3, rate), \
                 rate_e4 = COALESCE($4, rate_e4), tax_class = COALESCE($5, tax_class), updated_at = $6 WHERE id = $1",
            )
            .bind(rate_id.as_str())
            .bind(name)
            .bind(rate.map(|r| r.to_string()))
            .bind(rate.map(Rate::e4))
            .bind(class.as_deref())
            .bind(ts)
            .execute(&mut conn)
            .await
            .map_err(|e| unique_or(e, |_| class_taken(class.as_deref().unwrap_or_default())))?;
            if n == 0 {
                return Err(Error::not_found("tax rate"));
            }
            Ok(Done::Commit(load(&mut conn, &rate_id).await?))
        })
    })
    .await
}

/// Deletes a tax rate: its class is taxed at zero in the region from then on.
#[tracing::instrument(skip(db))]
pub async fn delete(db: &Db, id: &str) -> Result<()> {
    let rate_id = id.to_owned();
    db.write(move |mut conn| {
        Box::pin(async move {
            let n = sql::query("DELETE FROM tax_rates WHERE id = $1")
                .bind(rate_id.as_str())
                .execute(&mut conn)
                .await
                .map_err(storage)?;
            if n == 0 {
                return Err(Error::not_found("tax rate"));
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
    fn rates_are_strings_of_percent() {
        assert_eq!(rate(&json!("23")).unwrap().e4(), 230_000);
        assert_eq!(rate(&json!("5.50")).unwrap().to_string(), "5.5");
        assert_eq!(rate(&json!("0")).unwrap(), Rate::ZERO);
        assert!(rate(&json!(23)).unwrap_err().contains("\"23\""));
        assert!(rate(&json!("100.5")).unwrap_err().contains("between 0 and 100"));
        assert!(rate(&json!("1.23456")).unwrap_err().contains("4 decimals"));
        for bad in [json!(null), json!("-1"), json!("abc"), json!(["23"])] {
            assert!(rate(&bad).is_err(), "{bad}");
        }
    }
}
