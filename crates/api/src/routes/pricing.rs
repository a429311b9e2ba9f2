//! `/admin/regions*`, `/admin/tax-rates*` and `/admin/promotions*`: where the store sells, in
//! which currency and with which taxes, and its discount codes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use backroom_kernel::{Page, PageRequest};
use backroom_pricing::promotions::{NewPromotion, PromotionPatch};
use backroom_pricing::regions::{NewRegion, RegionPatch};
use backroom_pricing::tax_rates::{NewTaxRate, TaxRatePatch};
use backroom_pricing::{Promotion, Region, TaxRate, promotions, regions, tax_rates};
use serde::Deserialize;

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Staff};
use crate::routes::Routes;
use crate::routes::admin::PageQuery;
use crate::views::Touched;

/// Regions, tax rates and promotions for staff.
pub fn routes(r: &mut Routes) {
    use crate::access::Content::Scanned;
    use backroom_auth::Permission::{
        PromotionsRead, PromotionsWrite, RegionsRead, RegionsWrite, TaxesRead, TaxesWrite,
    };
    use utoipa_axum::routes;
    r.admin(RegionsRead, Scanned, routes!(list_regions));
    r.admin(RegionsWrite, Scanned, routes!(create_region));
    r.admin(RegionsRead, Scanned, routes!(get_region));
    r.admin(RegionsWrite, Scanned, routes!(update_region));
    r.admin(RegionsWrite, Scanned, routes!(delete_region));
    r.admin(TaxesRead, Scanned, routes!(list_tax_rates));
    r.admin(TaxesWrite, Scanned, routes!(create_tax_rate));
    r.admin(TaxesRead, Scanned, routes!(get_tax_rate));
    r.admin(TaxesWrite, Scanned, routes!(update_tax_rate));
    r.admin(TaxesWrite, Scanned, routes!(delete_tax_rate));
    r.admin(PromotionsRead, Scanned, routes!(list_promotions));
    r.admin(PromotionsWrite, Scanned, routes!(create_promotion));
    r.admin(PromotionsRead, Scanned, routes!(get_promotion));
    r.admin(PromotionsWrite, Scanned, routes!(update_promotion));
    r.admin(PromotionsWrite, Scanned, routes!(delete_promotion));
}

// ---- regions ----------------------------------------------------------------------------------

/// List regions
///
/// Regions, newest first, a page at a time, each with its countries.
#[utoipa::path(get, path = "/admin/regions", tag = "pricing", params(PageQuery),
    responses((status = 200, description = "A page of regions", body = Page<Region>)),
    security(("api_key" = [])))]
pub async fn list_regions(
    State(s): State<AppState>,
    _staff: Staff,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Region>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    Ok(Json(regions::list(&s.db, &page).await?))
}

/// Create a region
///
/// Creates a region: countries (ISO 3166-1 alpha-2, upper case) sold to in one currency,
/// with prices shown with tax included (`tax_inclusive`) or added on top. A cart's shipping
/// country picks its region. A country belongs to at most one region: claiming one that
/// another region holds is `409 conflict`, naming the country. Add the region's tax rates
/// next (`POST /admin/tax-rates`).
#[utoipa::path(post, path = "/admin/regions", tag = "pricing",
    request_body(content = NewRegion, description = "The region", example = json!({"name": "Portugal", "currency": "EUR", "countries": ["PT"], "tax_inclusive": true})),
    responses((status = 201, description = "Created: the region", body = Region, links(
            ("get_region" = (operation_id = "get_region", parameters(("id" = "$response.body#/id")))),
            ("update_region" = (operation_id = "update_region", parameters(("id" = "$response.body#/id")))),
            ("delete_region" = (operation_id = "delete_region", parameters(("id" = "$response.body#/id")))))),
        (status = 409, description = "`conflict`: a country is in another region", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_region(
    State(s): State<AppState>,
    _staff: Staff,
    ApiJson(body): ApiJson<NewRegion>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<Region>)> {
    Ok((StatusCode::CREATED, Extension(Touched::nothing()), Json(regions::create(&s.db, &body).await?)))
}

/// Get a region
///
/// One region with its countries.
#[utoipa::path(get, path = "/admin/regions/{id}", tag = "pricing", params(("id" = String, Path)),
    responses((status = 200, description = "The region", body = Region),
        (status = 404, description = "`not_found`: no such region", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_region(State(s): State<AppState>, _staff: Staff, Path(id): Path<String>) -> ApiResult<Json<Region>> {
    Ok(Json(regions::get(&s.db, &id).await?))
}

/// Change a region
///
/// Changes a region's `name`, `countries` (the whole set is replaced; one held by another
/// region is `409 conflict`) or `tax_inclusive`. Its `currency` changes only while the
/// region has no shipping options and no open cart, which are priced in the old currency;
/// otherwise `422` on `currency` says which is in the way.
#[utoipa::path(patch, path = "/admin/regions/{id}", tag = "pricing", params(("id" = String, Path)),
    request_body(content = RegionPatch, description = "The fields to change", example = json!({"countries": ["PT", "ES"]})),
    responses((status = 200, description = "The region", body = Region),
        (status = 404, description = "`not_found`: no such region", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: a country is in another region", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn update_region(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RegionPatch>,
) -> ApiResult<(Extension<Touched>, Json<Region>)> {
    Ok((Extension(Touched::nothing()), Json(regions::update(&s.db, &id, &body).await?)))
}

/// Delete a region
///
/// Deletes a region with its countries, tax rates and shipping options. Orders placed in it
/// keep their amounts.
#[utoipa::path(delete, path = "/admin/regions/{id}", tag = "pricing", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such region", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete_region(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<Touched>)> {
    regions::delete(&s.db, &id).await?;
    Ok((StatusCode::NO_CONTENT, Extension(Touched::nothing())))
}

// ---- tax rates --------------------------------------------------------------------------------

/// Filters of `GET /admin/tax-rates`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaxRatesQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this region's rates.
    pub region_id: Option<String>,
}

/// List tax rates
///
/// Tax rates, newest first, a page at a time; `region_id` lists one region's.
#[utoipa::path(get, path = "/admin/tax-rates", tag = "pricing", params(TaxRatesQuery),
    responses((status = 200, description = "A page of tax rates", body = Page<TaxRate>)),
    security(("api_key" = [])))]
pub async fn list_tax_rates(
    State(s): State<AppState>,
    _staff: Staff,
    ApiQuery(q): ApiQuery<TaxRatesQuery>,
) -> ApiResult<Json<Page<TaxRate>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    Ok(Json(tax_rates::list(&s.db, q.region_id.as_deref(), &page).await?))
}

/// Create a tax rate
///
/// Sets the rate of one tax class in a region: `rate` is percent as a decimal string (`"23"`,
/// `"5.5"`, at most 4 decimals, 0–100), never a JSON number. A variant is taxed at its
/// region's rate for its `tax_class` (`standard` unless set); a class without a rate is taxed
/// at zero. A region has one rate per class: a second is `409 conflict`.
#[utoipa::path(post, path = "/admin/tax-rates", tag = "pricing",
    request_body(content = NewTaxRate, description = "The rate", example = json!({"region_id": "reg_01jd8x6v3y0m4c4b9ks2t5f7qe", "name": "IVA", "rate": "23", "tax_class": "standard"})),
    responses((status = 201, description = "Created: the tax rate", body = TaxRate, links(
            ("get_tax_rate" = (operation_id = "get_tax_rate", parameters(("id" = "$response.body#/id")))),
            ("update_tax_rate" = (operation_id = "update_tax_rate", parameters(("id" = "$response.body#/id")))),
            ("delete_tax_rate" = (operation_id = "delete_tax_rate", parameters(("id" = "$response.body#/id")))))),
        (status = 409, description = "`conflict`: the region has a rate for this tax class", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: a bad field, or no region has the given region id", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_tax_rate(
    State(s): State<AppState>,
    _staff: Staff,
    ApiJson(body): ApiJson<NewTaxRate>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<TaxRate>)> {
    Ok((StatusCode::CREATED, Extension(Touched::nothing()), Json(tax_rates::create(&s.db, &body).await?)))
}

/// Get a tax rate
///
/// One tax rate.
#[utoipa::path(get, path = "/admin/tax-rates/{id}", tag = "pricing", params(("id" = String, Path)),
    responses((status = 200, description = "The tax rate", body = TaxRate),
        (status = 404, description = "`not_found`: no such tax rate", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_tax_rate(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<TaxRate>> {
    Ok(Json(tax_rates::get(&s.db, &id).await?))
}

/// Change a tax rate
///
/// Changes a tax rate's `name`, `rate` or `tax_class` (one the region has a rate for already
/// is `409 conflict`). A rate stays in its region. Orders keep the tax they were placed
/// with.
#[utoipa::path(patch, path = "/admin/tax-rates/{id}", tag = "pricing", params(("id" = String, Path)),
    request_body(content = TaxRatePatch, description = "The fields to change", example = json!({"rate": "22"})),
    responses((status = 200, description = "The tax rate", body = TaxRate),
        (status = 404, description = "`not_found`: no such tax rate", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: the region has a rate for this tax class", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn update_tax_rate(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TaxRatePatch>,
) -> ApiResult<(Extension<Touched>, Json<TaxRate>)> {
    Ok((Extension(Touched::nothing()), Json(tax_rates::update(&s.db, &id, &body).await?)))
}

/// Delete a tax rate
///
/// Deletes a tax rate: its class is taxed at zero in the region from then on.
#[utoipa::path(delete, path = "/admin/tax-rates/{id}", tag = "pricing", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such tax rate", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete_tax_rate(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<Touched>)> {
    tax_rates::delete(&s.db, &id).await?;
    Ok((StatusCode::NO_CONTENT, Extension(Touched::nothing())))
}

// ---- promotions -------------------------------------------------------------------------------

/// Filters of `GET /admin/promotions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PromotionsQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only the promotion with this code (any case).
    #[param(max_length = 50)]
    pub code: Option<String>,
}

/// List promotions
///
/// Promotions, newest first, a page at a time; `code` finds one by its code (any case). Each
/// shows `used`: the orders that hold a use of it.
#[utoipa::path(get, path = "/admin/promotions", tag = "pricing", params(PromotionsQuery),
    responses((status = 200, description = "A page of promotions", body = Page<Promotion>)),
    security(("api_key" = [])))]
pub async fn list_promotions(
    State(s): State<AppState>,
    _staff: Staff,
    ApiQuery(q): ApiQuery<PromotionsQuery>,
) -> ApiResult<Json<Page<Promotion>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    Ok(Json(promotions::list(&s.db, q.code.as_deref(), &page).await?))
}

/// Create a promotion
///
/// Creates a discount code shoppers apply to their cart. `type` says what it takes off:
/// `percentage` (`value` a JSON number of percent, more than 0 and at most 100, at most 4
/// decimals), `fixed` (`value` an amount, off carts in its currency) or `free_shipping` (no
/// `value`). Optional: `usage_limit` (orders in all), `per_customer_limit` (orders per
/// customer or guest e-mail), the validity window `starts_at`–`ends_at`, and `min_subtotal`
/// (the cart's subtotal before discounts must reach it). The code is stored upper case and
/// matched in any case; one in use is `409 conflict`.
#[utoipa::path(post, path = "/admin/promotions", tag = "pricing",
    request_body(content = NewPromotion, description = "The promotion", example = json!({"code": "SUMMER10", "type": "percentage", "value": 10, "usage_limit": 500, "per_customer_limit": 1, "starts_at": "2026-06-01T00:00:00Z", "ends_at": "2026-09-01T00:00:00Z", "min_subtotal": {"amount": 3000, "currency": "EUR"}})),
    responses((status = 201, description = "Created: the promotion", body = Promotion, links(
            ("get_promotion" = (operation_id = "get_promotion", parameters(("id" = "$response.body#/id")))),
            ("update_promotion" = (operation_id = "update_promotion", parameters(("id" = "$response.body#/id")))),
            ("delete_promotion" = (operation_id = "delete_promotion", parameters(("id" = "$response.body#/id")))))),
        (status = 409, description = "`conflict`: a promotion has this code", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_promotion(
    State(s): State<AppState>,
    _staff: Staff,
    ApiJson(body): ApiJson<NewPromotion>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<Promotion>)> {
    Ok((StatusCode::CREATED, Extension(Touched::nothing()), Json(promotions::create(&s.db, &body).await?)))
}

/// Get a promotion
///
/// One promotion, with `used`: the orders that hold a use of it.
#[utoipa::path(get, path = "/admin/promotions/{id}", tag = "pricing", params(("id" = String, Path)),
    responses((status = 200, description = "The promotion", body = Promotion),
        (status = 404, description = "`not_found`: no such promotion", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_promotion(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Promotion>> {
    Ok(Json(promotions::get(&s.db, &id).await?))
}

/// Change a promotion
///
/// Changes a promotion's `value` (of its type), limits, validity window or `min_subtotal`;
/// `null` removes a limit, an end of the window or the minimum. Its `code` and `type` never
/// change. `usage_limit` below `used` is `422`.
#[utoipa::path(patch, path = "/admin/promotions/{id}", tag = "pricing", params(("id" = String, Path)),
    request_body(content = PromotionPatch, description = "The fields to change", example = json!({"usage_limit": 1000, "ends_at": null})),
    responses((status = 200, description = "The promotion", body = Promotion),
        (status = 404, description = "`not_found`: no such promotion", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn update_promotion(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PromotionPatch>,
) -> ApiResult<(Extension<Touched>, Json<Promotion>)> {
    Ok((Extension(Touched::nothing()), Json(promotions::update(&s.db, &id, &body).await?)))
}

/// Delete a promotion
///
/// Deletes a promotion and its record of uses. Orders that used it keep what it took off.
#[utoipa::path(delete, path = "/admin/promotions/{id}", tag = "pricing", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such promotion", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete_promotion(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<Touched>)> {
    promotions::delete(&s.db, &id).await?;
    Ok((StatusCode::NO_CONTENT, Extension(Touched::nothing())))
}
