//! `/admin/price-lists*`: price lists for customer groups (see docs/pricing.md, "Price lists").
//!
//! Every write enqueues `price_list.changed` in its transaction and marks this process's price
//! book stale at once ([`backroom_pricing::LivePrices::mark_stale`]), so the next storefront
//! read of a member shows the change; other processes follow the outbox.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use backroom_kernel::{Page, PageRequest};
use backroom_pricing::price_lists::{NewPriceList, PriceList, PriceListPatch, PriceListSummary};

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Staff};
use crate::routes::Routes;
use crate::routes::admin::PageQuery;
use crate::views::Touched;

/// Price lists for staff.
pub fn routes(r: &mut Routes) {
    use crate::access::Content::Scanned;
    use backroom_auth::Permission::{PricesRead, PricesWrite};
    use utoipa_axum::routes;
    r.admin(PricesRead, Scanned, routes!(list_price_lists));
    r.admin(PricesWrite, Scanned, routes!(create_price_list));
    r.admin(PricesRead, Scanned, routes!(get_price_list));
    r.admin(PricesWrite, Scanned, routes!(update_price_list));
    r.admin(PricesWrite, Scanned, routes!(delete_price_list));
}

/// List price lists
///
/// Price lists, newest first, a page at a time, each with its groups, schedule and number of
/// prices (`GET /admin/price-lists/{id}` shows the prices).
#[utoipa::path(get, path = "/admin/price-lists", tag = "pricing", params(PageQuery),
    responses((status = 200, description = "A page of price lists", body = Page<PriceListSummary>),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn list_price_lists(
    State(s): State<AppState>,
    _staff: Staff,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<PriceListSummary>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    Ok(Json(s.price_lists.list(&page).await?))
}

/// Create a price list
///
/// Prices of some variants for the signed-in customers of some groups, optionally between
/// `starts_at` (inclusive) and `ends_at` (exclusive). While the list is active, a customer in
/// any of its groups sees and pays the lowest of the variant's base price and the prices of
/// every active list of theirs, with the base price as `original_price`, on product pages,
/// listings, search results, carts and orders. At most 10,000 prices, one per variant and
/// currency. Unknown group or variant ids are `422`, each named (`customer_group_ids[1]`,
/// `prices[3].variant_id`), and nothing is written.
#[utoipa::path(post, path = "/admin/price-lists", tag = "pricing",
    request_body(content = NewPriceList, description = "The new price list", example = json!({"name": "Wholesale", "customer_group_ids": ["cgrp_01jd8x6v3y0m4c4b9ks2t5f7qe"], "starts_at": "2025-01-01T00:00:00Z", "prices": [{"variant_id": "var_01jd8x6v3y0m4c4b9ks2t5f7qe", "amount": 3900, "currency": "EUR"}]})),
    responses((status = 201, description = "Created: the price list", body = PriceList, links(
            ("update_price_list" = (operation_id = "update_price_list", parameters(("id" = "$response.body#/id")))),
            ("delete_price_list" = (operation_id = "delete_price_list", parameters(("id" = "$response.body#/id")))))),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_price_list(
    State(s): State<AppState>,
    _staff: Staff,
    ApiJson(body): ApiJson<NewPriceList>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<PriceList>)> {
    let list = s.price_lists.create(&body).await?;
    s.prices.mark_stale();
    Ok((StatusCode::CREATED, Extension(Touched::nothing()), Json(list)))
}

/// Get a price list
///
/// One price list with its groups, schedule and every price (by variant, then currency).
#[utoipa::path(get, path = "/admin/price-lists/{id}", tag = "pricing", params(("id" = String, Path)),
    responses((status = 200, description = "The price list", body = PriceList),
        (status = 404, description = "`not_found`: no such price list", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_price_list(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<PriceList>> {
    Ok(Json(s.price_lists.get(&id).await?))
}

/// Change a price list
///
/// Changes the name, the groups, the schedule (`null` opens an end) or the prices of a list.
/// `customer_group_ids` and `prices`, when given, replace the list's groups and prices. The
/// same rules as creation apply; `starts_at` must stay before `ends_at`.
#[utoipa::path(patch, path = "/admin/price-lists/{id}", tag = "pricing", params(("id" = String, Path)),
    request_body(content = PriceListPatch, description = "The fields to change", example = json!({"prices": [{"variant_id": "var_01jd8x6v3y0m4c4b9ks2t5f7qe", "amount": 3500, "currency": "EUR"}]})),
    responses((status = 200, description = "The price list as it is now", body = PriceList),
        (status = 404, description = "`not_found`: no such price list", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn update_price_list(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PriceListPatch>,
) -> ApiResult<(Extension<Touched>, Json<PriceList>)> {
    let list = s.price_lists.update(&id, &body).await?;
    s.prices.mark_stale();
    Ok((Extension(Touched::nothing()), Json(list)))
}

/// Delete a price list
///
/// Deletes a price list with its groups and prices; its customers no longer see its prices.
#[utoipa::path(delete, path = "/admin/price-lists/{id}", tag = "pricing", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such price list", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete_price_list(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<Touched>)> {
    s.price_lists.delete(&id).await?;
    s.prices.mark_stale();
    Ok((StatusCode::NO_CONTENT, Extension(Touched::nothing())))
}
