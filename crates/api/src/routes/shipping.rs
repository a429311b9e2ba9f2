//! `/admin/shipping-options*`: the ways to ship to each region, with a flat price or a
//! carrier that quotes it per destination (see docs/pricing.md, "Shipping options and carrier
//! quotes"). The rules of each field are in [`backroom_pricing::shipping`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use backroom_kernel::{Page, PageRequest};
use backroom_pricing::ShippingOption;
use backroom_pricing::shipping::{self, NewShippingOption, ShippingOptionPatch};
use serde::Deserialize;

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Staff};
use crate::routes::Routes;
use crate::views::Touched;

/// Shipping options for staff.
pub fn routes(r: &mut Routes) {
    use crate::access::Content::Scanned;
    use backroom_auth::Permission::{ShippingRead, ShippingWrite};
    use utoipa_axum::routes;
    r.admin(ShippingRead, Scanned, routes!(list_shipping_options));
    r.admin(ShippingWrite, Scanned, routes!(create_shipping_option));
    r.admin(ShippingRead, Scanned, routes!(get_shipping_option));
    r.admin(ShippingWrite, Scanned, routes!(update_shipping_option));
    r.admin(ShippingWrite, Scanned, routes!(delete_shipping_option));
}

/// Filters of `GET /admin/shipping-options`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShippingOptionsQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this region's options.
    pub region_id: Option<String>,
}

/// An example body of `POST /admin/shipping-options`.
fn new_example() -> serde_json::Value {
    serde_json::json!({
        "name": "Express",
        "region_id": "reg_01jd8x6v3y0m4c4b9ks2t5f7qe",
        "price": {"amount": 990, "currency": "EUR"},
        "free_over": {"amount": 10000, "currency": "EUR"},
        "carrier": {"quote_url": "https://rates.carrier.example/quote", "timeout_ms": 800}
    })
}

/// List shipping options
///
/// Shipping options, newest first, a page at a time; only one region's with `region_id`.
#[utoipa::path(get, path = "/admin/shipping-options", tag = "shipping", params(ShippingOptionsQuery),
    responses((status = 200, description = "A page of shipping options", body = Page<ShippingOption>)),
    security(("api_key" = [])))]
pub async fn list_shipping_options(
    State(s): State<AppState>,
    _staff: Staff,
    ApiQuery(q): ApiQuery<ShippingOptionsQuery>,
) -> ApiResult<Json<Page<ShippingOption>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    Ok(Json(shipping::list(&s.db, q.region_id.as_deref(), &page).await?))
}

/// Create a shipping option
///
/// Creates a way to ship to a region: a name, a flat `price` and, optionally, `free_over` (the
/// cart's subtotal after discounts from which shipping is free), both in the region's
/// currency. With a `carrier`, the price is asked of the carrier for each cart's destination
/// (`POST quote_url` with `{"currency", "country", "postal_code", "items": [{"sku",
/// "quantity", "weight_g"}]}`, answered by `{"amount"}`); when the carrier is slow (past
/// `timeout_ms`, 50–10,000, default 800), failing, or its breaker is open, the last good quote
/// for that destination or else the flat `price` is shown, marked `estimated`. The quote URL
/// must be an absolute `http` or `https` URL, not on a loopback, private or link-local
/// address unless the server allows it (`BACKROOM_WEBHOOKS_ALLOW_PRIVATE`).
#[utoipa::path(post, path = "/admin/shipping-options", tag = "shipping",
    request_body(content = NewShippingOption, description = "The shipping option", example = json!(new_example())),
    responses((status = 201, description = "Created: the shipping option", body = ShippingOption, links(
            ("get_shipping_option" = (operation_id = "get_shipping_option", parameters(("id" = "$response.body#/id")))),
            ("update_shipping_option" = (operation_id = "update_shipping_option", parameters(("id" = "$response.body#/id")))),
            ("delete_shipping_option" = (operation_id = "delete_shipping_option", parameters(("id" = "$response.body#/id")))))),
        (status = 422, description = "`validation_failed`: see `errors` (a region that does not exist, an amount in another currency, a quote URL refused, …)", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_shipping_option(
    State(s): State<AppState>,
    _staff: Staff,
    ApiJson(body): ApiJson<NewShippingOption>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<ShippingOption>)> {
    let option = shipping::create(&s.db, &body, s.carriers.allow_private()).await?;
    Ok((StatusCode::CREATED, Extension(Touched::nothing()), Json(option)))
}

/// Get a shipping option
///
/// One shipping option, with its carrier settings.
#[utoipa::path(get, path = "/admin/shipping-options/{id}", tag = "shipping", params(("id" = String, Path)),
    responses((status = 200, description = "The shipping option", body = ShippingOption),
        (status = 404, description = "`not_found`: no such shipping option", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_shipping_option(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<ShippingOption>> {
    Ok(Json(shipping::get(&s.db, &id).await?))
}

/// Change a shipping option
///
/// Changes the fields sent and keeps the others; `null` removes `free_over` or `carrier` (the
/// price is then flat). The region cannot change. The same rules as at creation apply. Carts
/// that already chose the option keep the price they were quoted.
#[utoipa::path(patch, path = "/admin/shipping-options/{id}", tag = "shipping", params(("id" = String, Path)),
    request_body(content = ShippingOptionPatch, description = "The fields to change", example = json!({"price": {"amount": 590, "currency": "EUR"}, "carrier": null})),
    responses((status = 200, description = "The shipping option as it is now", body = ShippingOption),
        (status = 404, description = "`not_found`: no such shipping option", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: see `errors`", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn update_shipping_option(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ShippingOptionPatch>,
) -> ApiResult<(Extension<Touched>, Json<ShippingOption>)> {
    let option = shipping::update(&s.db, &id, &body, s.carriers.allow_private()).await?;
    Ok((Extension(Touched::nothing()), Json(option)))
}

/// Delete a shipping option
///
/// Deletes a shipping option: carts can no longer choose it. Orders keep the shipping method
/// they were placed with.
#[utoipa::path(delete, path = "/admin/shipping-options/{id}", tag = "shipping", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such shipping option", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete_shipping_option(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<Touched>)> {
    shipping::delete(&s.db, &id).await?;
    Ok((StatusCode::NO_CONTENT, Extension(Touched::nothing())))
}
