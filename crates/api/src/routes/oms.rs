//! `/admin/orders/{id}/…`: what happens to an order after the sale (docs/orders.md):
//! fulfilments, shipments, deliveries, cancels, the review of held orders, refunds, returns.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use backroom_checkout::idempotency;
use backroom_kernel::Error;
use backroom_orders::oms::{Fulfillment, NewFulfillment, NewRefund, NewReturn, NewShipment, Refund, Return, Shipment};
use backroom_orders::{Order, oms::Oms};

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, Staff};
use crate::routes::Routes;

/// The order actions after the sale, for the `orders` role and above.
pub fn routes(r: &mut Routes) {
    use crate::access::Content::Scanned;
    use backroom_auth::Permission::OrdersWrite;
    use utoipa_axum::routes;
    r.admin(OrdersWrite, Scanned, routes!(create_fulfillment));
    r.admin(OrdersWrite, Scanned, routes!(create_shipment));
    r.admin(OrdersWrite, Scanned, routes!(mark_delivered));
    r.admin(OrdersWrite, Scanned, routes!(cancel_order));
    r.admin(OrdersWrite, Scanned, routes!(approve_order));
    r.admin(OrdersWrite, Scanned, routes!(reject_order));
    r.admin(OrdersWrite, Scanned, routes!(create_refund));
    r.admin(OrdersWrite, Scanned, routes!(create_return));
}

fn oms(s: &AppState) -> Oms {
    Oms::new(s.db.clone(), s.checkout.providers().clone())
}

/// The order as staff see it after an action (personal fields `null` for roles that do not
/// read them).
async fn order_answer(s: &AppState, staff: &Staff, id: &str) -> ApiResult<Json<serde_json::Value>> {
    let order: Order = s.orders.get(id).await?;
    Ok(Json(crate::redact::order(staff, &order)?))
}

/// Fulfil units of an order
///
/// The units leave stock: `on_hand` and `allocated` go down where the order's units were
/// allocated (or at `location_id` only), each with a stock ledger line that names the order and
/// the fulfilment. A line's units can be fulfilled over several fulfilments, never more than it
/// has. Only a `placed` order is fulfilled. Sends `order.fulfilled`.
#[utoipa::path(post, path = "/admin/orders/{id}/fulfillments", tag = "orders", params(("id" = String, Path)),
    request_body(content = NewFulfillment, description = "The lines and how many of their units", example = json!({"items": [{"item_id": "item_01jd8x6v3y0m4c4b9ks2t5f7qe", "quantity": 1}]})),
    responses(
        (status = 201, description = "Created: the fulfilment", body = Fulfillment),
        (status = 404, description = "`not_found`: no such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`order_state_conflict`: the order is not placed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: an item_id that is not a line of the order, a quantity below 1 or above what is left to fulfil, a location that does not hold the units (see `errors`)", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_fulfillment(
    State(s): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewFulfillment>,
) -> ApiResult<(StatusCode, Json<Fulfillment>)> {
    Ok((StatusCode::CREATED, Json(oms(&s).fulfil(&id, &body, staff.actor.id()).await?)))
}

/// Ship a fulfilment
///
/// Adds a shipment (carrier and tracking) to a fulfilment. The first makes the fulfilment
/// `shipped` and its units count as shipped. Sends `order.shipped`.
#[utoipa::path(post, path = "/admin/orders/{id}/fulfillments/{fulfillment_id}/shipments", tag = "orders",
    params(("id" = String, Path), ("fulfillment_id" = String, Path)),
    request_body(content = NewShipment, description = "The carrier and tracking", example = json!({"carrier": "DHL", "tracking_number": "JD014600006281230434", "tracking_url": "https://www.dhl.com/track?id=JD014600006281230434"})),
    responses(
        (status = 201, description = "Created: the shipment", body = Shipment),
        (status = 404, description = "`not_found`: no such order, or no such fulfilment of it", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`order_state_conflict`: the order is not placed, or the fulfilment was delivered", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (see `errors`)", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_shipment(
    State(s): State<AppState>,
    _staff: Staff,
    Path((id, fulfillment_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<NewShipment>,
) -> ApiResult<(StatusCode, Json<Shipment>)> {
    Ok((StatusCode::CREATED, Json(oms(&s).ship(&id, &fulfillment_id, &body).await?)))
}

/// Mark a fulfilment delivered
///
/// A shipped fulfilment arrived; its units count as delivered. When every unit of the order
/// was delivered, the order is `completed`. Sends `order.delivered`.
#[utoipa::path(post, path = "/admin/orders/{id}/fulfillments/{fulfillment_id}/delivered", tag = "orders",
    params(("id" = String, Path), ("fulfillment_id" = String, Path)),
    responses(
        (status = 200, description = "The fulfilment, `delivered`", body = Fulfillment),
        (status = 404, description = "`not_found`: no such order, or no such fulfilment of it", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`order_state_conflict`: the order is not placed, the fulfilment has no shipment, or it was delivered already", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn mark_delivered(
    State(s): State<AppState>,
    _staff: Staff,
    Path((id, fulfillment_id)): Path<(String, String)>,
) -> ApiResult<Json<Fulfillment>> {
    Ok(Json(oms(&s).deliver(&id, &fulfillment_id).await?))
}

/// Cancel an order
///
/// A `placed` order with nothing fulfilled is `canceled`: its allocated stock is released and
/// what was captured and not yet refunded is refunded through its provider (a refund on the
/// order, `order.refunded` once it succeeds); an order refunded in full already is canceled
/// with nothing more to pay back. A held order (`on_hold`) is rejected: its authorisation is
/// voided. Canceling twice is `409`, like canceling an order with a fulfilment. Sends
/// `order.canceled`.
#[utoipa::path(post, path = "/admin/orders/{id}/cancel", tag = "orders", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The order, `canceled`", body = Order),
        (status = 404, description = "`not_found`: no such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`order_not_cancelable`: the order has a fulfilment, is canceled or completed already, or its payment is still pending", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the payment provider could not be asked (held orders); nothing changed", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn cancel_order(
    State(s): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    oms(&s).cancel(&id, staff.actor.id()).await?;
    order_answer(&s, &staff, &id).await
}

/// Approve a held order
///
/// Captures the held order's authorised payment at its provider; the order is `placed`, its
/// payment `captured`, and `order.placed` is sent.
#[utoipa::path(post, path = "/admin/orders/{id}/approve", tag = "orders", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The order, `placed`", body = Order),
        (status = 404, description = "`not_found`: no such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`order_state_conflict`: the order is not on_hold, or the provider did not capture", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the payment provider could not be asked; nothing changed", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn approve_order(
    State(s): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    oms(&s).approve(&id).await?;
    order_answer(&s, &staff, &id).await
}

/// Reject a held order
///
/// Voids the held order's authorisation at its provider and releases its stock; the order is
/// `canceled`, its payment `voided`. Sends `order.canceled`.
#[utoipa::path(post, path = "/admin/orders/{id}/reject", tag = "orders", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The order, `canceled`", body = Order),
        (status = 404, description = "`not_found`: no such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`order_state_conflict`: the order is not on_hold, or the provider did not void", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the payment provider could not be asked; nothing changed", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn reject_order(
    State(s): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    oms(&s).reject(&id, staff.actor.id()).await?;
    order_answer(&s, &staff, &id).await
}

/// Refund an order
///
/// Gives back `amount` of the order's captured payment through its provider, with the
/// refund's id as the provider's idempotency key. Refunds never add up to more than was
/// captured, however many are sent at once: the one that would pass it is `422
/// refund_exceeds_captured` (with `refundable`, what is left). The refund is `succeeded` or
/// `failed` when the provider answered, `pending` when its answer was lost (recovery asks
/// again with the same key). Needs an `Idempotency-Key`: the same key and body answer the
/// first refund again (`Idempotency-Replayed: true`), never refunding twice. Sends
/// `order.refunded` once it succeeds.
#[utoipa::path(post, path = "/admin/orders/{id}/refunds", tag = "orders",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters, unique per refund",
            max_length = 255, pattern = "^[!-~]([ -~]*[!-~])?$")),
    request_body(content = NewRefund, description = "How much and why", example = json!({"amount": {"amount": 1000, "currency": "EUR"}, "reason": "goodwill"})),
    responses(
        (status = 201, description = "Created: the refund", body = Refund),
        (status = 400, description = "`idempotency_key_required`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`order_state_conflict`: the order's payment was not captured (or it is canceled)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`refund_exceeds_captured` (see refundable); `validation_failed`: an amount of zero or in another currency than the order's (see `errors`); `idempotency_key_reused`", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_refund(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewRefund>,
) -> ApiResult<Response> {
    let key = super::idempotency_key(&headers)?;
    let canonical = serde_json::to_string(&body).map_err(Error::internal)?;
    let hash = idempotency::request_hash(&canonical);
    let answer = oms(&s).refund(&id, &key, &hash, &body).await?;
    let mut res = (StatusCode::CREATED, Json(answer.refund)).into_response();
    if answer.replayed {
        res.headers_mut().insert("idempotency-replayed", HeaderValue::from_static("true"));
    }
    Ok(res)
}

/// Receive a return
///
/// Units of shipped (or delivered) fulfilments come back: counted as returned on their lines;
/// with `restock`, back on hand where they were fulfilled from (a stock ledger line each);
/// with `refund`, their share of what was paid is refunded through the provider: per line,
/// its total after its discount with its tax (added where prices exclude tax), for the units
/// returned (rounded half to even, so a line returned in parts refunds exactly what it cost),
/// never more than is left to refund. Shipping is not refunded. Sends `return.received`.
#[utoipa::path(post, path = "/admin/orders/{id}/returns", tag = "orders", params(("id" = String, Path)),
    request_body(content = NewReturn, description = "The lines and units that came back", example = json!({"items": [{"item_id": "item_01jd8x6v3y0m4c4b9ks2t5f7qe", "quantity": 1}], "restock": true, "refund": true})),
    responses(
        (status = 201, description = "Created: the return, with its refund", body = Return),
        (status = 404, description = "`not_found`: no such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`order_state_conflict`: the order is not placed or completed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: an item_id that is not a line of the order, a quantity below 1 or above the shipped units not yet returned (see `errors`)", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_return(
    State(s): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewReturn>,
) -> ApiResult<(StatusCode, Json<Return>)> {
    Ok((StatusCode::CREATED, Json(oms(&s).create_return(&id, &body, staff.actor.id()).await?)))
}
