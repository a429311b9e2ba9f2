//! `/store/carts*` and checkout; `/admin/orders*`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use backroom_auth::Permission;
use backroom_cart::{AddItem, ApplyCode, Cart, CartPatch, NewCart, SetQuantity};
use backroom_checkout::idempotency;
use backroom_checkout::{Answer, CheckoutRequest, Outcome};
use backroom_inventory::reservations::insufficient_stock;
use backroom_kernel::{Code, Error, FieldError, Page, PageRequest};
use backroom_orders::{Order, OrderFilter, OrderStatus};
use serde::Deserialize;

use crate::AppState;
use crate::client::ClientAddr;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Shopper, Staff};
use crate::routes::Routes;
use crate::views::Touched;

/// Carts and checkout (public: a cart's id is its secret), and the admin order views.
pub fn routes(r: &mut Routes) {
    carts(r);
    orders(r);
}

/// Carts and checkout.
fn carts(r: &mut Routes) {
    use utoipa_axum::routes;
    r.public(routes!(create_cart));
    r.public(routes!(get_cart));
    r.public(routes!(add_item));
    r.public(routes!(set_quantity));
    r.public(routes!(remove_item));
    r.public(routes!(update_cart));
    r.public(routes!(apply_promotion));
    r.public(routes!(remove_promotion));
    r.public(routes!(shipping_options));
    r.public(routes!(choose_shipping));
    r.public(routes!(checkout));
}

/// Orders, and the outbox of the events they raise.
fn orders(r: &mut Routes) {
    use crate::access::Content::Scanned;
    use backroom_auth::Permission::{OpsRead, OrdersRead};
    use utoipa_axum::routes;
    r.admin(OrdersRead, Scanned, routes!(list_orders));
    r.admin(OrdersRead, Scanned, routes!(get_order));
    r.admin(OpsRead, Scanned, routes!(outbox));
}

/// Create a cart
///
/// Opens an empty cart in one currency. Created with a customer's token, the cart is that
/// customer's: only their token reaches it (`customer_id` on the cart). Otherwise the cart's
/// id is its only credential: keep it on the client (anyone who has it can read and change
/// the cart).
#[utoipa::path(post, path = "/store/carts", tag = "carts",
    request_body(content = NewCart, description = "The cart's currency", example = json!(crate::openapi::examples::new_cart())),
    responses(
        (status = 401, description = "`unauthenticated`: an `Authorization` header that is not a live customer token (send none to shop anonymously)", body = Problem, content_type = "application/problem+json"), (status = 201, description = "Created: the empty cart", body = Cart, links(
            ("get_cart" = (operation_id = "get_cart", parameters(("id" = "$response.body#/id")))),
            ("add_item" = (operation_id = "add_item", parameters(("id" = "$response.body#/id")))),
            ("checkout" = (operation_id = "checkout", parameters(("id" = "$response.body#/id"))))), example = json!(crate::openapi::examples::empty_cart())), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn create_cart(
    State(s): State<AppState>,
    shopper: Shopper,
    ApiJson(body): ApiJson<NewCart>,
) -> ApiResult<(StatusCode, Json<Cart>)> {
    Ok((StatusCode::CREATED, Json(s.carts.create(&body, shopper.id()).await?)))
}

/// Get a cart
///
/// The cart with its lines and totals.
#[utoipa::path(get, path = "/store/carts/{id}", tag = "carts", params(("id" = String, Path)),
    responses(
        (status = 401, description = "`unauthenticated`: an `Authorization` header that is not a live customer token (send none to shop anonymously)", body = Problem, content_type = "application/problem+json"), (status = 200, description = "The cart", body = Cart, example = json!(crate::openapi::examples::cart())), (status = 404, description = "`not_found`: no such cart", body = Problem, content_type = "application/problem+json", example = json!(crate::openapi::examples::cart_not_found()))))]
pub async fn get_cart(State(s): State<AppState>, Path(id): Path<String>, shopper: Shopper) -> ApiResult<Json<Cart>> {
    Ok(Json(s.carts.get(&id, shopper.id()).await?))
}

/// Add to a cart
///
/// Adds `quantity` units of a variant at its current price in the cart's currency; for a variant
/// already in the cart, the line's quantity grows. Refused when fewer units are available than
/// the line would then hold; nothing is reserved until checkout.
#[utoipa::path(post, path = "/store/carts/{id}/items", tag = "carts", params(("id" = String, Path)),
    request_body(content = AddItem, description = "The variant and how many", example = json!(crate::openapi::examples::add_item())),
    responses(
        (status = 401, description = "`unauthenticated`: an `Authorization` header that is not a live customer token (send none to shop anonymously)", body = Problem, content_type = "application/problem+json"), (status = 200, description = "The cart with the line", body = Cart, links(
            ("set_quantity" = (operation_id = "set_quantity", parameters(("id" = "$response.body#/id"), ("item_id" = "$response.body#/items/0/id")))),
            ("remove_item" = (operation_id = "remove_item", parameters(("id" = "$response.body#/id"), ("item_id" = "$response.body#/items/0/id"))))), example = json!(crate::openapi::examples::cart())), (status = 404, description = "`not_found`: no such cart or variant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`insufficient_stock`: fewer units are available (see `items`); `cart_completed` or `cart_checking_out`: the cart cannot change now", body = Problem, content_type = "application/problem+json", example = json!(crate::openapi::examples::insufficient_stock())),
        (status = 422, description = "`validation_failed`; `no_price` (no price in the cart's currency); `cart_too_many_lines` (the cart holds 100 lines already and this variant is not one of them; nothing is written); `card_data_refused`", body = Problem, content_type = "application/problem+json")))]
pub async fn add_item(
    State(s): State<AppState>,
    Path(id): Path<String>,
    shopper: Shopper,
    ApiJson(body): ApiJson<AddItem>,
) -> ApiResult<Json<Cart>> {
    Ok(Json(s.carts.add_item(&id, shopper.id(), &body).await?))
}

/// Change a line's quantity
///
/// Sets the line's quantity, checked against the units available like an added line.
#[utoipa::path(patch, path = "/store/carts/{id}/items/{item_id}", tag = "carts",
    params(("id" = String, Path), ("item_id" = String, Path)), request_body = SetQuantity,
    responses(
        (status = 401, description = "`unauthenticated`: an `Authorization` header that is not a live customer token (send none to shop anonymously)", body = Problem, content_type = "application/problem+json"), (status = 200, description = "The cart as it is now", body = Cart), (status = 404, description = "`not_found`: no such cart or line", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`insufficient_stock`: fewer units are available (see `items`); `cart_completed` or `cart_checking_out`: the cart cannot change now", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn set_quantity(
    State(s): State<AppState>,
    Path((id, item_id)): Path<(String, String)>,
    shopper: Shopper,
    ApiJson(body): ApiJson<SetQuantity>,
) -> ApiResult<Json<Cart>> {
    Ok(Json(s.carts.set_quantity(&id, shopper.id(), &item_id, body.quantity).await?))
}

/// Remove a line
///
/// Removes the line from the cart.
#[utoipa::path(delete, path = "/store/carts/{id}/items/{item_id}", tag = "carts",
    params(("id" = String, Path), ("item_id" = String, Path)),
    responses(
        (status = 401, description = "`unauthenticated`: an `Authorization` header that is not a live customer token (send none to shop anonymously)", body = Problem, content_type = "application/problem+json"), (status = 200, description = "The cart as it is now", body = Cart), (status = 404, description = "`not_found`: no such cart or line", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`cart_completed` or `cart_checking_out`: the cart cannot change now", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_item(
    State(s): State<AppState>,
    Path((id, item_id)): Path<(String, String)>,
    shopper: Shopper,
) -> ApiResult<Json<Cart>> {
    Ok(Json(s.carts.remove_item(&id, shopper.id(), &item_id).await?))
}

/// Change a cart's e-mail, address or region
///
/// Any of `email`, `shipping_address` and `region_id`. The address's country picks the
/// cart's region, which sets its currency rules, taxes and shipping options; changing region
/// drops the chosen shipping method. The e-mail and address are stored encrypted.
#[utoipa::path(patch, path = "/store/carts/{id}", tag = "carts", params(("id" = String, Path)),
    request_body(content = CartPatch, description = "What to change", example = json!({"email": "ana@example.com", "shipping_address": {"name": "Ana Silva", "line1": "Rua Augusta 1", "city": "Lisboa", "postal_code": "1100-048", "country": "PT"}})),
    responses(
        (status = 200, description = "The cart, priced in its region", body = Cart),
        (status = 401, description = "`unauthenticated`: an `Authorization` header that is not a live customer token (send none to shop anonymously)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such cart", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`cart_completed` or `cart_checking_out`: the cart cannot change now", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (see `errors`; a region id that is not the address's region); `country_not_served`: the country is in no region; `region_currency_mismatch`: the region sells in another currency than the cart", body = Problem, content_type = "application/problem+json")))]
pub async fn update_cart(
    State(s): State<AppState>,
    Path(id): Path<String>,
    shopper: Shopper,
    ApiJson(body): ApiJson<CartPatch>,
) -> ApiResult<Json<Cart>> {
    Ok(Json(s.carts.update(&id, shopper.id(), &body).await?))
}

/// Apply a promotion code
///
/// Sets the cart's promotion code (one per cart: a new one replaces the old) and answers the
/// cart with its discount. The use is counted when an order is placed with it.
#[utoipa::path(post, path = "/store/carts/{id}/promotions", tag = "carts", params(("id" = String, Path)),
    request_body(content = ApplyCode, description = "The code", example = json!({"code": "SUMMER10"})),
    responses(
        (status = 200, description = "The cart with the discount", body = Cart),
        (status = 401, description = "`unauthenticated`: an `Authorization` header that is not a live customer token (send none to shop anonymously)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such cart", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`promotion_exhausted`: the code's uses (or this shopper's) are taken; `cart_completed` or `cart_checking_out`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`promotion_invalid`: unknown, not valid now, or not applicable to this cart (currency, minimum subtotal)", body = Problem, content_type = "application/problem+json")))]
pub async fn apply_promotion(
    State(s): State<AppState>,
    Path(id): Path<String>,
    shopper: Shopper,
    ApiJson(body): ApiJson<ApplyCode>,
) -> ApiResult<Json<Cart>> {
    Ok(Json(s.carts.apply_promotion(&id, shopper.id(), &body.code).await?))
}

/// Remove a promotion code
///
/// Takes the code off the cart.
#[utoipa::path(delete, path = "/store/carts/{id}/promotions/{code}", tag = "carts",
    params(("id" = String, Path), ("code" = String, Path)),
    responses(
        (status = 200, description = "The cart without the code", body = Cart),
        (status = 401, description = "`unauthenticated`: an `Authorization` header that is not a live customer token (send none to shop anonymously)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such cart, or the cart does not have this code", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`cart_completed` or `cart_checking_out`: the cart cannot change now", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_promotion(
    State(s): State<AppState>,
    Path((id, code)): Path<(String, String)>,
    shopper: Shopper,
) -> ApiResult<Json<Cart>> {
    Ok(Json(s.carts.remove_promotion(&id, shopper.id(), &code).await?))
}

/// A shipping option as a cart is offered it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct OfferedOption {
    #[schema(example = "so_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    #[schema(example = "Standard")]
    pub name: String,
    /// What choosing it now costs this cart (zero once its `free_over` is reached).
    pub price: backroom_kernel::Money,
    /// The carrier did not answer in time: the last good quote for this destination, or the
    /// option's flat price.
    pub estimated: bool,
}

/// `POST /store/carts/{id}/shipping-method`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChooseShipping {
    #[schema(example = "so_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub option_id: String,
}

/// The price of `option` for `cart` now, before `free_over`, and whether it is estimated.
async fn quote(s: &AppState, cart: &Cart, option: &backroom_pricing::ShippingOption) -> (backroom_kernel::Money, bool) {
    s.quote_shipping(cart, option).await
}

/// The price a cart pays for an option quoted at `price`: zero once its `free_over` is reached
/// by the subtotal after discounts.
fn offered(
    cart: &Cart,
    option: &backroom_pricing::ShippingOption,
    price: backroom_kernel::Money,
) -> backroom_kernel::Money {
    let goods = cart.subtotal.amount() - cart.discount_total.amount();
    match option.free_over {
        Some(f) if f.currency() == cart.currency && goods >= f.amount() => backroom_kernel::Money::zero(cart.currency),
        _ => price,
    }
}

/// List a cart's shipping options
///
/// The options of the cart's region with what each costs this cart now. A carrier's quote
/// that does not come in time is replaced by the last good quote for the destination, or the
/// flat price, marked `estimated`. A cart without a region (no address yet, or a store
/// without regions) has none.
#[utoipa::path(get, path = "/store/carts/{id}/shipping-options", tag = "carts", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The options", body = Vec<OfferedOption>),
        (status = 401, description = "`unauthenticated`: an `Authorization` header that is not a live customer token (send none to shop anonymously)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such cart", body = Problem, content_type = "application/problem+json")))]
pub async fn shipping_options(
    State(s): State<AppState>,
    Path(id): Path<String>,
    shopper: Shopper,
) -> ApiResult<Json<Vec<OfferedOption>>> {
    let cart = s.carts.get(&id, shopper.id()).await?;
    let options = s.carts.shipping_options(&cart).await?;
    let quotes = futures_util::future::join_all(options.iter().map(|o| quote(&s, &cart, o))).await;
    Ok(Json(
        options
            .into_iter()
            .zip(quotes)
            .map(|(o, (price, estimated))| OfferedOption {
                price: offered(&cart, &o, price),
                id: o.id,
                name: o.name,
                estimated,
            })
            .collect(),
    ))
}

/// Choose a shipping method
///
/// Sets the cart's shipping method at the price quoted now: that price is the one charged.
#[utoipa::path(post, path = "/store/carts/{id}/shipping-method", tag = "carts", params(("id" = String, Path)),
    request_body(content = ChooseShipping, description = "One of the cart's shipping options", example = json!({"option_id": "so_01jd8x6v3y0m4c4b9ks2t5f7qe"})),
    responses(
        (status = 200, description = "The cart with its shipping", body = Cart),
        (status = 401, description = "`unauthenticated`: an `Authorization` header that is not a live customer token (send none to shop anonymously)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such cart", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`cart_completed` or `cart_checking_out`: the cart cannot change now", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: not one of the cart's region's options", body = Problem, content_type = "application/problem+json")))]
pub async fn choose_shipping(
    State(s): State<AppState>,
    Path(id): Path<String>,
    shopper: Shopper,
    ApiJson(body): ApiJson<ChooseShipping>,
) -> ApiResult<Json<Cart>> {
    let cart = s.carts.get(&id, shopper.id()).await?;
    let option = s
        .carts
        .shipping_options(&cart)
        .await?
        .into_iter()
        .find(|o| o.id == body.option_id)
        .ok_or_else(|| Error::field("option_id", "is not a shipping option of the cart's region"))?;
    let (price, estimated) = quote(&s, &cart, &option).await;
    Ok(Json(s.carts.choose_shipping(&id, shopper.id(), &option.id, price, estimated).await?))
}

/// The HTTP answer of a checkout outcome. Deterministic, so a replay is byte-identical.
/// The stock a checkout's outcome changed: the allocated lines of an order (a declined
/// payment released what it allocated; the other outcomes allocated nothing).
fn touched(outcome: &Outcome) -> Touched {
    match outcome {
        Outcome::Placed { order } | Outcome::PaymentPending { order } | Outcome::OnHold { order } => {
            Touched::variants(order.items.iter().map(|l| l.variant_id.clone()).collect())
        }
        _ => Touched::nothing(),
    }
}

fn respond(outcome: &Outcome) -> Response {
    match outcome {
        Outcome::Placed { order } => (StatusCode::CREATED, Json(order)).into_response(),
        Outcome::OnHold { order } => (StatusCode::CREATED, Json(order)).into_response(),
        Outcome::CheckoutBlocked => ApiError::custom(
            Code::CheckoutBlocked,
            "this checkout was refused by the store's risk checks; nothing was reserved or charged",
            serde_json::Value::Null,
        )
        .into_response(),
        Outcome::PaymentPending { order } => (StatusCode::ACCEPTED, Json(order)).into_response(),
        Outcome::PaymentDeclined { order_id, reason } => ApiError::custom(
            Code::PaymentDeclined,
            "the payment was declined; the cart is open for another try",
            serde_json::json!({"reason": reason, "order_id": order_id}),
        )
        .into_response(),
        Outcome::InsufficientStock { items } => ApiError::from(insufficient_stock(items)).into_response(),
        Outcome::PriceChanged { items, cart } => ApiError::custom(
            Code::PriceChanged,
            if items.is_empty() {
                "the shipping address moved the cart to another region, which changes its totals; nothing was charged: check the cart and try again"
            } else {
                "prices changed since these lines were added; the cart now has the new prices and nothing was charged"
            },
            match cart {
                Some(cart) => serde_json::json!({"items": items, "cart": cart}),
                None => serde_json::json!({"items": items}),
            },
        )
        .into_response(),
        Outcome::PromotionExhausted { code } => ApiError::custom(
            Code::PromotionExhausted,
            format!("the code {code} has no use left; nothing was reserved or charged"),
            serde_json::json!({"promotion_code": code}),
        )
        .into_response(),
        Outcome::PromotionInvalid { detail } => {
            ApiError::custom(Code::PromotionInvalid, detail.clone(), serde_json::Value::Null).into_response()
        }
        Outcome::ShippingMethodRequired => ApiError::custom(
            Code::ShippingMethodRequired,
            "choose a shipping method first (GET /store/carts/{id}/shipping-options)",
            serde_json::Value::Null,
        )
        .into_response(),
        Outcome::CartCompleted => {
            ApiError::custom(Code::CartCompleted, "this cart has been checked out", serde_json::Value::Null)
                .into_response()
        }
        Outcome::CartCheckingOut => {
            ApiError::custom(Code::CartCheckingOut, "another checkout of this cart is running", serde_json::Value::Null)
                .into_response()
        }
        Outcome::CartNotFound => ApiError::Domain(Error::not_found("cart")).into_response(),
        Outcome::Invalid { errors } => ApiError::Domain(Error::Validation(errors.clone())).into_response(),
    }
}

/// Check out a cart
///
/// Turns the cart into an order: checks every line's price, reserves the stock, charges the
/// payment through the named provider and answers the order. With the test provider
/// (`BACKROOM_PAYMENT_PROVIDERS=test`), the token `tok_visa` pays and `tok_declined` is declined.
///
/// Send an `Idempotency-Key`: a retry with the same key and body answers the first answer again
/// (with `Idempotency-Replayed: true`) and never charges twice. When the charge's answer is lost,
/// the order is `202 pending_payment` and recovery settles it. A declined payment leaves the cart
/// open for another try; a shortage or a changed price reserves and charges nothing.
///
/// Every checkout is scored for risk before anything is reserved (the order's `risk`): a
/// blocked one is `403 checkout_blocked`; one held for review is only authorised and its order
/// is `on_hold` until staff approve or reject it.
#[utoipa::path(post, path = "/store/carts/{id}/checkout", tag = "carts", params(("id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; the same key replays the first answer",
            max_length = 255, pattern = "^[!-~]([ -~]*[!-~])?$")),
    request_body(content = CheckoutRequest, description = "Who buys, where it goes, and the payment token", example = json!(crate::openapi::examples::checkout())),
    responses(
        (status = 401, description = "`unauthenticated`: an `Authorization` header that is not a live customer token (send none to shop anonymously)", body = Problem, content_type = "application/problem+json"), 
        (status = 201, description = "Paid: the order, `placed`; or, held for review by risk scoring, `on_hold` with its payment `authorized` (not captured) and its stock allocated", body = Order, links(
            ("get_order" = (operation_id = "get_order", parameters(("id" = "$response.body#/id"))))), example = json!(crate::openapi::examples::order())),
        (status = 202, description = "The payment's answer was lost: the order, `pending_payment`; recovery settles it", body = Order, links(
            ("get_order" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))))),
        (status = 400, description = "`idempotency_key_required`: no valid `Idempotency-Key`; `malformed_json`: the body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`payment_declined`: the provider declined (see `reason`); the cart is open for another try", body = Problem, content_type = "application/problem+json", example = json!(crate::openapi::examples::payment_declined())),
        (status = 403, description = "`checkout_blocked`: risk scoring refused the checkout (docs/risk.md); nothing was reserved or charged, the cart stays open", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such cart", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`insufficient_stock` (see `items`): nothing was reserved; `price_changed` (see `items`): the cart has the new prices, nothing was charged; `cart_completed`, `cart_checking_out`, `idempotency_key_in_use`", body = Problem, content_type = "application/problem+json", example = json!(crate::openapi::examples::insufficient_stock())),
        (status = 422, description = "`validation_failed` (see `errors`), `idempotency_key_reused`, `payment_provider_unavailable`, `cart_total_too_large`, `card_data_refused`", body = Problem, content_type = "application/problem+json", example = json!(crate::openapi::examples::validation_failed()))))]
pub async fn checkout(
    State(s): State<AppState>,
    Path(cart_id): Path<String>,
    shopper: Shopper,
    client: ClientAddr,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CheckoutRequest>,
) -> ApiResult<Response> {
    let key = super::idempotency_key(&headers)?;
    // Another customer's cart is not there for this caller: refused before anything is stored
    // under the key (the keys live in the cart's scope).
    s.carts.check_reachable(&cart_id, shopper.id()).await?;
    s.checkout.validate(&req)?;
    let canonical = serde_json::to_string(&req).map_err(Error::internal)?;
    let hash = idempotency::request_hash(&canonical);
    // Risk scoring's view of the client: its address as the rate limits see it, and its
    // country only from the header the operator named as trusted.
    let client = backroom_checkout::Client {
        address: Some(client.0).filter(|a| !a.is_unspecified()),
        country: s
            .checkout
            .risk_settings()
            .country_header
            .as_deref()
            .and_then(|name| headers.get(name))
            .and_then(|v| v.to_str().ok())
            .and_then(backroom_risk::client_country),
    };
    match s.checkout.run_from(&cart_id, &key, &hash, &req, &client).await {
        Ok(Answer::Reused) => Err(ApiError::custom(
            Code::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request body",
            serde_json::Value::Null,
        )),
        Ok(Answer::InUse) => Err(ApiError::custom(
            Code::IdempotencyKeyInUse,
            "the first request with this Idempotency-Key is still running",
            serde_json::Value::Null,
        )),
        Ok(Answer::Replay(outcome)) => {
            metrics::counter!("checkout_outcomes_total", "result" => "replayed").increment(1);
            let mut res = respond(&outcome);
            res.headers_mut().insert("idempotency-replayed", HeaderValue::from_static("true"));
            // The first answer told what it changed.
            res.extensions_mut().insert(Touched::nothing());
            Ok(res)
        }
        Ok(Answer::New(outcome)) => {
            metrics::counter!("checkout_outcomes_total", "result" => outcome.name()).increment(1);
            if let Outcome::InsufficientStock { items } = &outcome {
                metrics::counter!("stock_conflicts_total").increment(items.len() as u64);
            }
            let mut res = respond(&outcome);
            res.extensions_mut().insert(touched(&outcome));
            Ok(res)
        }
        Err(e) => {
            // Nothing was reserved or charged unless the key was claimed with an order; then
            // recovery finishes the order and the key's record.
            metrics::counter!("checkout_outcomes_total", "result" => "error").increment(1);
            Err(e.into())
        }
    }
}

/// Filters of `GET /admin/orders`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrdersQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub status: Option<OrderStatus>,
    /// Orders placed with this e-mail address (the whole address, any letter case). Only for
    /// roles that read personal data (`403 forbidden` otherwise).
    #[param(example = "ana@example.com", max_length = 254)]
    pub email: Option<String>,
    /// The order with this number, with or without its `#`: `1001`, or `#1001` written `%231001`.
    #[param(example = "1001", pattern = "^#?[0-9]{1,18}$")]
    pub number: Option<String>,
    /// Only orders changed at or after this instant (RFC 3339, such as
    /// `2026-12-01T08:00:00Z`), listed oldest change first by `updated_at` then `id`: the
    /// listing for systems that poll (docs/integrations.md).
    #[param(example = "2026-12-01T08:00:00Z")]
    pub updated_since: Option<String>,
}

/// List orders
///
/// Orders newest first, a page at a time (pass `next_cursor` as `cursor`), optionally only those
/// of one `status`, placed with one `email`, or the order with a `number`.
///
/// With `updated_since`, only orders whose `updated_at` is at or after that instant, ordered by
/// `updated_at` then `id` (oldest change first): a system that polls keeps the last
/// `updated_at` it saw, asks again from a few seconds before it, and skips what it already has
/// by `id` and `updated_at`. An order that changes while it pages moves past the cursor and is
/// listed again with its new `updated_at`; none is skipped.
#[utoipa::path(get, path = "/admin/orders", tag = "orders", params(OrdersQuery),
    responses((status = 200, description = "A page of orders", body = Page<Order>, example = json!(crate::openapi::examples::order_page())),
        (status = 422, description = "`validation_failed`: a bad limit, cursor, email, number or updated_since", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn list_orders(
    State(s): State<AppState>,
    staff: Staff,
    ApiQuery(q): ApiQuery<OrdersQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    // Finding a shopper's orders by e-mail is reading personal data.
    if q.email.is_some() && !staff.may(Permission::PersonalDataRead) {
        return Err(ApiError::Forbidden);
    }
    let mut filter = OrderFilter::parse(q.status, q.email.as_deref(), q.number.as_deref())?;
    if let Some(since) = q.updated_since.as_deref() {
        let since = chrono::DateTime::parse_from_rfc3339(since.trim()).map_err(|_| {
            Error::validation(vec![FieldError::new(
                "updated_since",
                "must be an RFC 3339 date and time with its offset, such as 2026-12-01T08:00:00Z",
            )])
        })?;
        filter = filter.updated_since(since.with_timezone(&chrono::Utc));
    }
    let orders: Page<Order> = s.orders.list(&filter, &page).await?;
    Ok(Json(crate::redact::order_page(&staff, &orders)?))
}

/// Get an order
///
/// The order with its lines, totals, shipping address, payment, and its `history` of state
/// changes.
#[utoipa::path(get, path = "/admin/orders/{id}", tag = "orders", params(("id" = String, Path)),
    responses((status = 200, description = "The order", body = Order, example = json!(crate::openapi::examples::admin_order())), (status = 404, description = "`not_found`: no such order", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_order(
    State(s): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let order: Order = s.orders.get(&id).await?;
    Ok(Json(crate::redact::order(&staff, &order)?))
}

/// The outbox: how many events wait, how old the oldest is, and the dead-letter list.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OutboxView {
    #[serde(flatten)]
    pub stats: backroom_db::outbox::Stats,
    pub dead_events: Vec<backroom_db::outbox::DeadEvent>,
}

/// Outbox state
///
/// How many events wait to be handled and how old the oldest is, and the dead letters: events
/// that failed every attempt.
#[utoipa::path(get, path = "/admin/outbox", tag = "orders",
    responses((status = 200, description = "The outbox", body = OutboxView)),
    security(("api_key" = [])))]
pub async fn outbox(State(s): State<AppState>, _staff: Staff) -> ApiResult<Json<OutboxView>> {
    let db = s.checkout.db();
    Ok(Json(OutboxView {
        stats: backroom_db::outbox::stats(db).await?,
        dead_events: backroom_db::outbox::dead(db, 100).await?,
    }))
}
