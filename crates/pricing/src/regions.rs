//! Regions as staff create, change and delete them (`/admin/regions`): countries sold to with
//! one currency and one way of showing prices. A country belongs to at most one region.

use std::collections::BTreeSet;

use backroom_db::sql::{self, in_list, values_list};
use backroom_db::writer::Done;
use backroom_db::{Conn, Db, storage, unique_or};
use backroom_kernel::error::Problems;
use backroom_kernel::{Code, Currency, Error, Page, PageRequest, Result, id, now};
use serde::Deserialize;

use crate::check;
use crate::model::{self, Region};

/// The longest region name.
pub const NAME_MAX: usize = 200;
/// The most countries one region holds (every code of [`COUNTRIES`]).
pub const MAX_COUNTRIES: usize = 250;

/// The ISO 3166-1 alpha-2 codes a region may hold: the 249 officially assigned ones, and
/// `XK` (Kosovo, user-assigned but what carriers and payment providers use).
pub const COUNTRIES: [&str; 250] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB", "BD",
    "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA",
    "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE",
    "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA",
    "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK",
    "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT",
    "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS",
    "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS",
    "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST",
    "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW",
    "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "XK", "YE", "YT",
    "ZA", "ZM", "ZW",
];

/// `POST /admin/regions`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRegion {
    /// 1–200 characters.
    #[schema(example = "Portugal", min_length = 1, max_length = 200)]
    pub name: String,
    /// ISO 4217 code: every cart in the region is in this currency.
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// 1–250 ISO 3166-1 alpha-2 codes, upper case, each in no other region.
    #[schema(example = json!(["PT"]), min_items = 1, max_items = 250)]
    pub countries: Vec<String>,
    /// Whether prices in this region include tax; `false` when left out.
    #[serde(default)]
    pub tax_inclusive: bool,
}

/// `PATCH /admin/regions/{id}`: the fields to change; `countries` replaces the whole set.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionPatch {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// Only while the region has no shipping options and no open cart (both are in the old
    /// currency).
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    #[schema(min_items = 1, max_items = 250)]
    pub countries: Option<Vec<String>>,
    pub tax_inclusive: Option<bool>,
}

/// Checks a set of countries: 1–250 known codes, none twice. Reported at `countries[i]`.
fn countries(p: &mut Problems, input: &[String]) -> Vec<String> {
    if input.is_empty() || input.len() > MAX_COUNTRIES {
        p.add("countries", format!("must hold 1–{MAX_COUNTRIES} countries"));
    }
    let mut seen = BTreeSet::new();
    for (i, c) in input.iter().enumerate() {
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            p.add(format!("countries[{i}]"), "must be an upper-case ISO 3166-1 alpha-2 code such as PT");
        } else if COUNTRIES.binary_search(&c.as_str()).is_err() {
            p.add(format!("countries[{i}]"), format!("{c} is not an ISO 3166-1 alpha-2 country code"));
        } else if !seen.insert(c.clone()) {
            p.add(format!("countries[{i}]"), format!("{c} is listed twice"));
        }
    }
    seen.into_iter().collect()
}

fn currency(p: &mut Problems, code: &str) -> Option<Currency> {
    p.check("currency", Currency::parse(code))
}

/// Refuses countries that belong to a region other than `region_id`: `409 conflict` naming
/// the first of them. The primary key of `region_countries` still decides under a race.
async fn check_unclaimed(conn: &mut Conn<'_>, region_id: &str, countries: &[String]) -> Result<()> {
    let claimed: Vec<(String, String, String)> = sql::query(format!(
        "SELECT c.country, r.id, r.name FROM region_countries c JOIN regions r ON r.id = c.region_id \
         WHERE c.region_id <> $1 AND c.country IN {} ORDER BY c.country",
        in_list(countries.len(), 2)
    ))
    .bind(region_id)
    .bind_all(countries.iter())
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    match claimed.first() {
        None => Ok(()),
        Some((country, id, name)) => Err(Error::refused(
            Code::Conflict,
            format!("{country} belongs to region {id} ({name}) already: a country belongs to at most one region"),
        )),
    }
}

async fn insert_countries(conn: &mut Conn<'_>, region_id: &str, countries: &[String]) -> Result<()> {
    let mut q = sql::query(format!(
        "INSERT INTO region_countries (country, region_id) VALUES {}",
        values_list(countries.len(), 2, 1)
    ));
    for c in countries {
        q = q.bind(c.as_str()).bind(region_id);
    }
    q.execute(conn).await.map_err(|e| {
        unique_or(e, |_| {
            "one of these countries belongs to another region: a country belongs to at most one region".into()
        })
    })?;
    Ok(())
}

async fn load(conn: &mut Conn<'_>, id: &str) -> Result<Region> {
    model::region(conn, id).await?.ok_or(Error::not_found("region"))
}

/// Creates a region with its countries: `422` for a bad field (all of them listed), `409
/// conflict` when a country is in another region.
#[tracing::instrument(skip_all)]
pub async fn create(db: &Db, input: &NewRegion) -> Result<Region> {
    let mut p = Problems::new();
    let name = p.check("name", check::name(&input.name, NAME_MAX));
    let currency = currency(&mut p, &input.currency);
    let countries = countries(&mut p, &input.countries);
    p.finish()?;
    let (Some(name), Some(currency)) = (name, currency) else {
        return Err(Error::internal("checked fields missing"));
    };
    let (region_id, tax_inclusive, ts) = (id::new("reg"), input.tax_inclusive, now());
    let region = db
        .write(move |mut conn| {
            Box::pin(async move {
                check_unclaimed(&mut conn, &region_id, &countries).await?;
                sql::query(
                    "INSERT INTO regions (id, name, currency, tax_inclusive, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .bind(region_id.as_str())
                .bind(name)
                .bind(currency.code())
                .bind(tax_inclusive)
                .bind(ts)
                .execute(&mut conn)
                .await
                .map_err(storage)?;
                insert_countries(&mut conn, &region_id, &countries).await?;
                Ok(Done::Commit(load(&mut conn, &region_id).await?))
            })
        })
        .await?;
    tracing::info!(region_id = %region.id, "region created");
    Ok(region)
}

/// Regions, newest first.
pub async fn list(db: &Db, page: &PageRequest) -> Result<Page<Region>> {
    let mut q = String::from("SELECT id FROM regions");
    let mut args = Vec::new();
    if let Some(after) = &page.after {
        q.push_str(" WHERE id < $1");
        args.push(after.0.clone());
    }
    q.push_str(&format!(" ORDER BY id DESC LIMIT {}", i64::from(page.limit) + 1));
    let mut r = db.read().await?;
    let ids: Vec<(String,)> = sql::query(q).bind_all(args).fetch_all(&mut r.conn()).await.map_err(storage)?;
    let ids: Vec<String> = ids.into_iter().map(|(id,)| id).collect();
    let mut regions = model::regions(&mut r.conn(), &ids).await?;
    regions.sort_by(|a, b| b.id.cmp(&a.id));
    Ok(page.finish(regions, |r| r.id.clone()))
}

/// One region, or `404`.
pub async fn get(db: &Db, id: &str) -> Result<Region> {
    let mut r = db.read().await?;
    load(&mut r.conn(), id).await
}

/// Why a region's currency cannot change now, if it cannot: its shipping options are priced
/// in the old currency, and its open carts hold lines priced in it (a cart's currency never
/// changes). Tax rates are percentages and orders keep their own currency, so neither is in
/// the way.
async fn currency_locked(conn: &mut Conn<'_>, region_id: &str) -> Result<Option<String>> {
    let options: i64 = sql::query("SELECT COUNT(*) FROM shipping_options WHERE region_id = $1")
        .bind(region_id)
        .fetch_scalar(conn)
        .await
        .map_err(storage)?;
    let carts: i64 = sql::query("SELECT COUNT(*) FROM carts WHERE region_id = $1 AND status <> 'completed'")
        .bind(region_id)
        .fetch_scalar(conn)
        .await
        .map_err(storage)?;
    Ok(match (options, carts) {
        (0, 0) => None,
        (o, 0) => Some(format!(
            "cannot change while the region has {o} shipping option(s) priced in its currency; delete them first, \
             or create another region"
        )),
        (_, c) => Some(format!(
            "cannot change while {c} open cart(s) in the region are priced in its currency; create another region \
             instead"
        )),
    })
}

/// Changes a region: `countries` replaces the whole set (`409 conflict` when one is in
/// another region); `currency` only while nothing is priced in the old one
/// ([`currency_locked`]).
#[tracing::instrument(skip(db, patch))]
pub async fn update(db: &Db, id: &str, patch: &RegionPatch) -> Result<Region> {
    let mut p = Problems::new();
    let name = patch.name.as_deref().and_then(|n| p.check("name", check::name(n, NAME_MAX)));
    let currency = patch.currency.as_deref().and_then(|c| currency(&mut p, c));
    let countries = patch.countries.as_deref().map(|c| countries(&mut p, c));
    p.finish()?;
    let (region_id, tax_inclusive, ts) = (id.to_owned(), patch.tax_inclusive, now());
    db.write(move |mut conn| {
        Box::pin(async move {
            let current = load(&mut conn, &region_id).await?;
            let currency = currency.filter(|c| *c != current.currency);
            if currency.is_some()
                && let Some(why) = currency_locked(&mut conn, &region_id).await?
            {
                return Err(Error::field("currency", why));
            }
            if let Some(countries) = &countries {
                check_unclaimed(&mut conn, &region_id, countries).await?;
            }
            sql::query(
                "UPDATE regions SET name = COALESCE($2, name), currency = COALESCE($3, currency), \
                 tax_inclusive = COALESCE($4, tax_inclusive), updated_at = $5 WHERE id = $1",
            )
            .bind(region_id.as_str())
            .bind(name)
            .bind(currency.map(Currency::code))
            .bind(tax_inclusive)
            .bind(ts)
            .execute(&mut conn)
            .await
            .map_err(storage)?;
            if let Some(countries) = &countries {
                sql::query("DELETE FROM region_countries WHERE region_id = $1")
                    .bind(region_id.as_str())
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                insert_countries(&mut conn, &region_id, countries).await?;
            }
            Ok(Done::Commit(load(&mut conn, &region_id).await?))
        })
    })
    .await
}

/// Deletes a region; its countries, tax rates and shipping options go with it (`ON DELETE
/// CASCADE`, on SQLite too: its connections enforce foreign keys). Orders placed in it keep
/// their amounts and the region's id.
#[tracing::instrument(skip(db))]
pub async fn delete(db: &Db, id: &str) -> Result<()> {
    let region_id = id.to_owned();
    db.write(move |mut conn| {
        Box::pin(async move {
            let n = sql::query("DELETE FROM regions WHERE id = $1")
                .bind(region_id.as_str())
                .execute(&mut conn)
                .await
                .map_err(storage)?;
            if n == 0 {
                return Err(Error::not_found("region"));
            }
            Ok(Done::Commit(()))
        })
    })
    .await?;
    tracing::info!(region_id = %id, "region deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_country_list_is_sorted_and_unique() {
        assert!(COUNTRIES.windows(2).all(|w| w[0] < w[1]));
        assert!(COUNTRIES.iter().all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())));
    }

    #[test]
    fn countries_are_checked_each_at_its_index() {
        let mut p = Problems::new();
        let set = countries(&mut p, &["PT".into(), "ES".into()]);
        assert!(p.is_empty());
        assert_eq!(set, ["ES", "PT"]);
        for (bad, why) in [
            (vec!["pt"], "upper-case"),
            (vec!["PRT"], "upper-case"),
            (vec!["ZZ"], "not an ISO"),
            (vec!["PT", "PT"], "twice"),
            (vec![], "1–250"),
        ] {
            let mut p = Problems::new();
            let input: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            countries(&mut p, &input);
            let e = format!("{:?}", p.finish());
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
