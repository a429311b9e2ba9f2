//! `POST /webhooks/stripe`: the events Stripe sends about payments (docs/payments.md).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use backroom_checkout::WebhookEffect;
use backroom_kernel::Code;
use backroom_payments::ChargeStatus;
use backroom_payments::stripe::{self, ChargeRefunds, WebhookEvent};
use serde::Serialize;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::routes::Routes;

/// Stripe's webhooks (public: the signature is the credential).
pub fn routes(r: &mut Routes) {
    use utoipa_axum::routes;
    r.public(routes!(stripe_webhook));
}

/// What Backroom did with an event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookReceipt {
    /// Always `true`: the event was received (Stripe stops sending it).
    pub received: bool,
    /// `applied` (an order was settled, or found settled already), `refunds` (refunds
    /// recorded), `duplicate` (this event id was handled before: nothing done), `unmatched`
    /// (not a payment of this store) or `ignored` (an event type Backroom does not act on).
    #[schema(example = "applied")]
    pub result: &'static str,
}

/// Receive a Stripe event
///
/// Stripe calls this with its events. The body must carry a valid `Stripe-Signature` (HMAC-SHA256
/// of `t.body` with the endpoint's signing secret, `BACKROOM_STRIPE_WEBHOOK_SECRET`; a timestamp
/// within 5 minutes); otherwise `400 invalid_signature` and nothing is done. An event id seen
/// before is answered `200` and changes nothing. `payment_intent.succeeded` places the order
/// waiting for that payment (found by the intent's `metadata.attempt_id`),
/// `payment_intent.payment_failed` releases its stock and reopens the cart, `charge.refunded`
/// records refunds made in Stripe; other types are answered `200` and ignored.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "stripe",
    params(("Stripe-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256>` (several `v1` allowed)")),
    request_body(content = Object, description = "A Stripe event: `{\"id\": \"evt_…\", \"type\": \"payment_intent.succeeded\", \"data\": {\"object\": {…}}}`", content_type = "application/json"),
    responses(
        (status = 200, description = "Received (applied, a duplicate, or ignored)", body = WebhookReceipt),
        (status = 400, description = "`invalid_signature`: the signature is missing, malformed, stale or wrong (or no webhook secret is set); `malformed_json`: signed, but not a Stripe event", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over 1 MiB", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`overloaded` or `unavailable`: not recorded; Stripe sends it again later", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn stripe_webhook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookReceipt>> {
    let result = handle(&s, &headers, &body).await;
    let label = match &result {
        Ok(r) => r.result,
        Err(ApiError::Domain(e)) if e.code() == Code::InvalidSignature => "invalid_signature",
        Err(ApiError::MalformedJson(_)) => "malformed",
        Err(_) => "error",
    };
    metrics::counter!("stripe_webhooks_total", "result" => label).increment(1);
    result.map(Json)
}

async fn handle(s: &AppState, headers: &HeaderMap, body: &[u8]) -> ApiResult<WebhookReceipt> {
    let refuse = |detail: String| ApiError::Domain(backroom_kernel::Error::refused(Code::InvalidSignature, detail));
    let Some(secret) = &s.stripe_webhook_secret else {
        tracing::warn!("a Stripe webhook arrived but BACKROOM_STRIPE_WEBHOOK_SECRET is not set; refused");
        return Err(refuse("this store has no Stripe webhook secret (BACKROOM_STRIPE_WEBHOOK_SECRET)".into()));
    };
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    stripe::verify_signature(
        header,
        body,
        secret.expose(),
        backroom_kernel::now().timestamp(),
        stripe::WEBHOOK_TOLERANCE,
    )
    .map_err(|e| refuse(e.to_string()))?;
    let event: WebhookEvent = serde_json::from_slice(body).map_err(|e| {
        ApiError::MalformedJson(format!("not a Stripe event: {}", e.to_string().chars().take(200).collect::<String>()))
    })?;
    let effect = match event.kind.as_str() {
        "payment_intent.succeeded" | "payment_intent.payment_failed" => {
            match stripe::intent_outcome(&event.data.object) {
                Some((attempt, status)) => {
                    let status = match (event.kind.as_str(), status) {
                        // A failure event whose intent reads otherwise still means this try failed.
                        ("payment_intent.payment_failed", s @ ChargeStatus::Declined { .. }) => s,
                        ("payment_intent.payment_failed", _) => {
                            ChargeStatus::Declined { reason: "card_declined".into() }
                        }
                        (_, s) => s,
                    };
                    s.checkout.stripe_payment_event(&event.id, &event.kind, &attempt, status).await?
                }
                // An intent not made by Backroom (no attempt in its metadata).
                None => WebhookEffect::Unmatched,
            }
        }
        "charge.refunded" => match ChargeRefunds::parse(&event.data.object) {
            Some(refunds) => s.checkout.stripe_refund_event(&event.id, &event.kind, refunds).await?,
            None => WebhookEffect::Unmatched,
        },
        other => {
            tracing::debug!(event = event.id, kind = other, "Stripe event type not acted on");
            return Ok(WebhookReceipt { received: true, result: "ignored" });
        }
    };
    tracing::info!(event = event.id, kind = event.kind, result = effect.name(), "Stripe webhook");
    Ok(WebhookReceipt { received: true, result: effect.name() })
}
