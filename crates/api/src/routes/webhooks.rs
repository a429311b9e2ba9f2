//! `/admin/webhooks*`: outgoing webhook endpoints and their deliveries (see docs/webhooks.md).
//! The module is `backroom_integrations`; these handlers only translate.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use backroom_integrations::catalog::EventType;
use backroom_integrations::{Delivery, Endpoint, EndpointPatch, EndpointWithSecret, NewEndpoint};
use backroom_kernel::{Page, PageRequest};

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Staff};
use crate::routes::Routes;
use crate::routes::admin::PageQuery;
use crate::views::Touched;

/// Webhook endpoints for staff whose role may see everything.
pub fn routes(r: &mut Routes) {
    use crate::access::Content::Scanned;
    use backroom_auth::Permission::{WebhooksRead, WebhooksWrite};
    use utoipa_axum::routes;
    r.admin(WebhooksRead, Scanned, routes!(list_webhooks));
    r.admin(WebhooksWrite, Scanned, routes!(create_webhook));
    r.admin(WebhooksRead, Scanned, routes!(get_webhook));
    r.admin(WebhooksWrite, Scanned, routes!(update_webhook));
    r.admin(WebhooksWrite, Scanned, routes!(delete_webhook));
    r.admin(WebhooksWrite, Scanned, routes!(rotate_webhook_secret)).action("webhook.rotate_secret");
    r.admin(WebhooksRead, Scanned, routes!(list_webhook_deliveries));
    r.admin(WebhooksWrite, Scanned, routes!(retry_webhook_delivery)).action("webhook_delivery.retry");
    // Guarded like the endpoints it serves: whoever may see the webhooks may see what they
    // carry. The catalog holds no store data, only the event contract.
    r.admin(WebhooksRead, Scanned, routes!(list_event_types));
}

/// List the event types
///
/// Every event type a webhook endpoint may subscribe to, with the version this build sends
/// and a JSON Schema (draft 2020-12) of the `data` of its deliveries: every delivery's `data`
/// validates against it. Generated from the typed events; see docs/events.md.
#[utoipa::path(get, path = "/admin/event-types", tag = "webhooks",
    responses((status = 200, description = "Every event type", body = Vec<EventType>)),
    security(("api_key" = [])))]
pub async fn list_event_types(_staff: Staff) -> Json<Vec<EventType>> {
    Json(backroom_integrations::catalog::event_types())
}

/// List webhook endpoints
///
/// Endpoints, newest first, a page at a time (never their secrets).
#[utoipa::path(get, path = "/admin/webhooks", tag = "webhooks", params(PageQuery),
    responses((status = 200, description = "A page of endpoints", body = Page<Endpoint>),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn list_webhooks(
    State(s): State<AppState>,
    _staff: Staff,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Endpoint>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    Ok(Json(s.webhooks.list(&page).await?))
}

/// Create a webhook endpoint
///
/// Every event of the listed types (or all, `["*"]`) is sent to `url`, signed per the Standard
/// Webhooks specification with the `secret` of the answer, which is shown only here and on
/// rotation. The URL's host must resolve, and only to public addresses: a loopback, private,
/// link-local, unspecified, shared or multicast address is `422 webhook_url_forbidden` unless
/// `BACKROOM_WEBHOOKS_ALLOW_PRIVATE=true`; cloud metadata addresses are refused always. A host
/// that does not resolve, or an unknown event type, is `422 validation_failed` naming the
/// field (`event_types[1]`).
#[utoipa::path(post, path = "/admin/webhooks", tag = "webhooks",
    request_body(content = NewEndpoint, description = "The new endpoint", example = json!({"url": "https://erp.example.com/backroom/hooks", "event_types": ["order.placed", "order.canceled"], "description": "ERP"})),
    responses((status = 201, description = "Created: the endpoint with its secret", body = EndpointWithSecret, links(
            ("update_webhook" = (operation_id = "update_webhook", parameters(("id" = "$response.body#/id")))),
            ("delete_webhook" = (operation_id = "delete_webhook", parameters(("id" = "$response.body#/id")))))),
        (status = 422, description = "`validation_failed` or `webhook_url_forbidden`", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_webhook(
    State(s): State<AppState>,
    _staff: Staff,
    ApiJson(body): ApiJson<NewEndpoint>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<EndpointWithSecret>)> {
    let created = s.webhooks.create(&body).await?;
    Ok((StatusCode::CREATED, Extension(Touched::nothing()), Json(created)))
}

/// Get a webhook endpoint
#[utoipa::path(get, path = "/admin/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, description = "The endpoint", body = Endpoint),
        (status = 404, description = "`not_found`: no such endpoint", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_webhook(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Endpoint>> {
    Ok(Json(s.webhooks.get(&id).await?))
}

/// Change a webhook endpoint
///
/// Changes the URL (checked as at creation), the event types, the description (`null`
/// removes it), or `enabled`: `true` enables an endpoint disabled after failing (its
/// failures forgotten), `false` stops its deliveries, which wait until it is enabled again.
#[utoipa::path(patch, path = "/admin/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    request_body(content = EndpointPatch, description = "The fields to change", example = json!({"event_types": ["*"], "enabled": true})),
    responses((status = 200, description = "The endpoint as it is now", body = Endpoint),
        (status = 404, description = "`not_found`: no such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` or `webhook_url_forbidden`", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn update_webhook(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EndpointPatch>,
) -> ApiResult<(Extension<Touched>, Json<Endpoint>)> {
    Ok((Extension(Touched::nothing()), Json(s.webhooks.update(&id, &body).await?)))
}

/// Delete a webhook endpoint
///
/// Deletes the endpoint with its delivery history; its secret is destroyed.
#[utoipa::path(delete, path = "/admin/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such endpoint", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn delete_webhook(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<Touched>)> {
    s.webhooks.delete(&id).await?;
    Ok((StatusCode::NO_CONTENT, Extension(Touched::nothing())))
}

/// Rotate a webhook endpoint's secret
///
/// Answers a new secret. For 24 hours the previous one still signs too: each delivery then
/// carries two signatures in `webhook-signature`, so a receiver can switch without losing any.
#[utoipa::path(post, path = "/admin/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, description = "The endpoint with its new secret", body = EndpointWithSecret),
        (status = 404, description = "`not_found`: no such endpoint", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn rotate_webhook_secret(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(Extension<Touched>, Json<EndpointWithSecret>)> {
    Ok((Extension(Touched::nothing()), Json(s.webhooks.rotate_secret(&id).await?)))
}

/// List a webhook endpoint's deliveries
///
/// The endpoint's deliveries, newest first, a page at a time: status (`pending`, `delivered`,
/// `failed`), attempts, the last answer's status or error, and when it is tried next.
#[utoipa::path(get, path = "/admin/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path), PageQuery),
    responses((status = 200, description = "A page of deliveries", body = Page<Delivery>),
        (status = 404, description = "`not_found`: no such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn list_webhook_deliveries(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Delivery>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    Ok(Json(s.webhooks.deliveries(&id, &page).await?))
}

/// Retry a webhook delivery
///
/// Sends the delivery again now, whatever its status, with the same `webhook-id` (a failed
/// one gets one more attempt). A disabled endpoint's delivery waits until it is enabled.
#[utoipa::path(post, path = "/admin/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, description = "Scheduled: the delivery", body = Delivery),
        (status = 404, description = "`not_found`: no such endpoint or delivery", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn retry_webhook_delivery(
    State(s): State<AppState>,
    _staff: Staff,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<Delivery>)> {
    Ok((StatusCode::ACCEPTED, Extension(Touched::nothing()), Json(s.webhooks.retry(&id, &delivery_id).await?)))
}
