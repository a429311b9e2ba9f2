//! The `stripe` provider: Stripe's REST API over HTTPS (form-encoded requests, JSON answers,
//! `Authorization: Bearer <secret key>`), without an SDK. docs/payments.md tells the whole
//! flow; in short:
//!
//! - `authorize` creates and confirms a PaymentIntent for the amount (minor units, lowercase
//!   currency) with the storefront's PaymentMethod (`pm_…`), the attempt id as Stripe's
//!   `Idempotency-Key` and `metadata[attempt_id]`, `metadata[order_id]`;
//!   `capture_method=manual` when only an authorisation is asked.
//! - Intent states map to [`ChargeStatus`]: `succeeded` → `Captured`, `requires_capture` →
//!   `Authorized`, `requires_action` → `RequiresAction` (3-D Secure, with the intent's
//!   `client_secret`), `canceled` → `Voided`, `requires_payment_method` after a failed attempt
//!   → `Declined`. A `402` (card error) is `Declined` with Stripe's `decline_code` or `code`.
//! - Timeouts, connection errors, `429` and `5xx` are [`ProviderError`]s (the outcome is
//!   unknown). Only calls that are safe to repeat are retried, with a short backoff: `GET`s,
//!   and `POST`s that carry an `Idempotency-Key` (Stripe answers a repeated key with the first
//!   answer).
//! - Finding the intent of an attempt (`status`, `capture`, `void`, `refund`) lists recent
//!   PaymentIntents (`GET /v1/payment_intents`, newest first) and matches
//!   `metadata.attempt_id`. Stripe's Search API would be shorter but its index lags behind
//!   by up to a minute (a lost answer is asked about within seconds), and the fake server the
//!   tests use (localstripe) has no search; listing is consistent on both. Intents this
//!   process created are remembered, so the common case is one `GET` by id.
//!
//! The webhook side lives here too: [`verify_signature`] checks `Stripe-Signature`, and
//! [`WebhookEvent`] parses the events Backroom acts on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::{
    BoxFuture, ChargeRequest, ChargeStatus, PaymentProvider, ProviderError, ProviderResult, RefundRequest,
    RefundResult, RefundStatus,
};

/// Stripe's API, unless `BACKROOM_STRIPE_API_BASE` says otherwise.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// How far a webhook's signed timestamp may be from now (Stripe's own default).
pub const WEBHOOK_TOLERANCE: Duration = Duration::from_secs(300);

/// How many pages of 100 recent intents a lookup by attempt reads at most.
const MAX_LIST_PAGES: usize = 20;

/// How many intent ids this process remembers (attempt id → intent id) before starting over.
const MAX_REMEMBERED: usize = 10_000;

/// A secret setting: never printed, also not by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Stripe's settings (`BACKROOM_STRIPE_SECRET_KEY`, `BACKROOM_STRIPE_WEBHOOK_SECRET`,
/// `BACKROOM_STRIPE_API_BASE`).
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// The account's secret API key (`sk_live_…`, `sk_test_…`).
    pub secret_key: Secret,
    /// The webhook endpoint's signing secret (`whsec_…`); without it every webhook is refused.
    pub webhook_secret: Option<Secret>,
    /// Where Stripe's API is: [`DEFAULT_API_BASE`], or a fake in tests.
    pub api_base: String,
}

impl StripeConfig {
    /// Checks the settings; the message names the setting at fault.
    pub fn check(&self) -> Result<(), String> {
        let key = self.secret_key.expose();
        if key.trim().is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("invalid BACKROOM_STRIPE_SECRET_KEY: must be a Stripe secret key (sk_…) without spaces".into());
        }
        if !(self.api_base.starts_with("https://") || self.api_base.starts_with("http://")) {
            return Err(format!(
                "invalid BACKROOM_STRIPE_API_BASE `{}`: expected an http(s) URL such as {DEFAULT_API_BASE}",
                self.api_base
            ));
        }
        Ok(())
    }
}

/// The `stripe` payment provider.
pub struct StripeProvider {
    client: reqwest::Client,
    base: String,
    key: Secret,
    /// Intents this process created or found, by attempt id.
    known: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for StripeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeProvider").field("base", &self.base).field("key", &self.key).finish()
    }
}

/// A PaymentIntent, as far as Backroom reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Intent {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    #[serde(default)]
    pub last_payment_error: Option<ApiError>,
    #[serde(default)]
    pub created: i64,
}

/// Stripe's error object (`{"error": {…}}`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApiError {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl ApiError {
    /// Why a card was refused: the decline code, else the error code.
    fn reason(&self) -> String {
        self.decline_code.clone().or_else(|| self.code.clone()).unwrap_or_else(|| "card_declined".into())
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ApiError,
}

#[derive(Deserialize)]
struct IntentList {
    data: Vec<Intent>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct Refund {
    id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    failure_reason: Option<String>,
}

/// What a call came to.
enum Reply<T> {
    Ok(T),
    /// A 4xx answer other than 429: Stripe refused the request, nothing happened.
    Refused(u16, ApiError),
}

impl From<&Intent> for ChargeStatus {
    fn from(i: &Intent) -> ChargeStatus {
        let reference = i.id.clone();
        match i.status.as_str() {
            "succeeded" => ChargeStatus::Captured { reference },
            "requires_capture" => ChargeStatus::Authorized { reference },
            "requires_action" => {
                ChargeStatus::RequiresAction { reference, client_secret: i.client_secret.clone().unwrap_or_default() }
            }
            "canceled" => ChargeStatus::Voided,
            "requires_payment_method" => ChargeStatus::Declined {
                reason: i.last_payment_error.as_ref().map(ApiError::reason).unwrap_or_else(|| "card_declined".into()),
            },
            // `requires_confirmation`: never confirmed, so never charged. (`processing` is
            // answered as unknown by the callers before it gets here.)
            _ => ChargeStatus::NotFound,
        }
    }
}

impl StripeProvider {
    pub fn new(config: StripeConfig) -> Result<Self, String> {
        config.check()?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("backroom/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot set up the Stripe HTTP client: {e}"))?;
        Ok(StripeProvider {
            client,
            base: config.api_base.trim_end_matches('/').to_owned(),
            key: config.secret_key,
            known: Mutex::new(HashMap::new()),
        })
    }

    fn remember(&self, attempt: &str, intent: &str) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_REMEMBERED {
            known.clear();
        }
        known.insert(attempt.to_owned(), intent.to_owned());
    }

    fn remembered(&self, attempt: &str) -> Option<String> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).get(attempt).cloned()
    }

    /// One call, retried (at most 3 tries, 200 ms then 800 ms apart) when it is safe to repeat:
    /// a `GET`, or a `POST` with an idempotency key.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        call: &'static str,
        method: reqwest::Method,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: Option<&str>,
    ) -> Result<Reply<T>, ProviderError> {
        let repeatable = method == reqwest::Method::GET || idempotency_key.is_some();
        let tries = if repeatable { 3 } else { 1 };
        let mut last = ProviderError::Unavailable("not asked".into());
        for attempt in 0..tries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * 4u64.pow(attempt - 1))).await;
            }
            let mut req =
                self.client.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(self.key.expose());
            if let Some(k) = idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            if method == reqwest::Method::GET {
                req = req.query(form);
            } else {
                req = req.form(form);
            }
            let res = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = if e.is_timeout() {
                        ProviderError::Timeout
                    } else {
                        ProviderError::Unavailable(format!("Stripe could not be reached: {}", without_url(&e)))
                    };
                    metrics::counter!("stripe_api_errors_total", "call" => call, "kind" => "transport").increment(1);
                    continue;
                }
            };
            let status = res.status().as_u16();
            let bytes = match res.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = ProviderError::Unavailable(format!("Stripe's answer was cut: {}", without_url(&e)));
                    continue;
                }
            };
            if (200..300).contains(&status) {
                return serde_json::from_slice(&bytes).map(Reply::Ok).map_err(|e| {
                    ProviderError::Unavailable(format!("Stripe answered {call} with an unexpected body: {e}"))
                });
            }
            let error = serde_json::from_slice::<ErrorBody>(&bytes).map(|b| b.error).unwrap_or_default();
            if status == 429 || status >= 500 {
                metrics::counter!("stripe_api_errors_total", "call" => call, "kind" => "server").increment(1);
                last = ProviderError::Unavailable(format!(
                    "Stripe answered {call} with {status}: {}",
                    error.message.as_deref().unwrap_or("no message")
                ));
                continue;
            }
            if status == 401 || status == 403 {
                tracing::error!(call, status, "Stripe refused the API key (BACKROOM_STRIPE_SECRET_KEY)");
                return Err(ProviderError::Unavailable(format!("Stripe refused the API key ({status})")));
            }
            return Ok(Reply::Refused(status, error));
        }
        Err(last)
    }

    /// The intent of an attempt: remembered, else found among recent intents by its metadata.
    async fn find(&self, attempt: &str) -> Result<Option<Intent>, ProviderError> {
        if let Some(id) = self.remembered(attempt) {
            match self
                .call::<Intent>("retrieve", reqwest::Method::GET, &format!("/v1/payment_intents/{id}"), &[], None)
                .await?
            {
                Reply::Ok(i) => return Ok(Some(i)),
                Reply::Refused(..) => {}
            }
        }
        let mut after: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut q = vec![("limit", "100".to_owned())];
            if let Some(a) = &after {
                q.push(("starting_after", a.clone()));
            }
            let page =
                match self.call::<IntentList>("list", reqwest::Method::GET, "/v1/payment_intents", &q, None).await? {
                    Reply::Ok(p) => p,
                    Reply::Refused(status, e) => {
                        return Err(ProviderError::Unavailable(format!(
                            "Stripe refused to list payment intents ({status}): {}",
                            e.message.unwrap_or_default()
                        )));
                    }
                };
            if let Some(i) =
                page.data.iter().find(|i| i.metadata.get("attempt_id").map(String::as_str) == Some(attempt))
            {
                self.remember(attempt, &i.id);
                return Ok(Some(i.clone()));
            }
            match (page.has_more, page.data.last()) {
                (true, Some(last)) => after = Some(last.id.clone()),
                _ => break,
            }
        }
        Ok(None)
    }

    /// An intent's state as a charge status; `processing` is not an answer yet.
    fn answer(intent: &Intent) -> ProviderResult {
        if intent.status == "processing" {
            return Err(ProviderError::Unavailable("the payment is still processing at Stripe".into()));
        }
        Ok(ChargeStatus::from(intent))
    }

    async fn authorize_now(&self, req: ChargeRequest) -> ProviderResult {
        let mut form = vec![
            ("amount", req.amount.amount().to_string()),
            ("currency", req.amount.currency().code().to_lowercase()),
            ("payment_method", req.token.clone()),
            ("payment_method_types[0]", "card".to_owned()),
            ("confirm", "true".to_owned()),
            ("metadata[order_id]", req.order_id.clone()),
            ("metadata[attempt_id]", req.idempotency_key.clone()),
        ];
        if !req.capture {
            form.push(("capture_method", "manual".to_owned()));
        }
        let reply = self
            .call::<Intent>(
                "authorize",
                reqwest::Method::POST,
                "/v1/payment_intents",
                &form,
                Some(&req.idempotency_key),
            )
            .await?;
        match reply {
            Reply::Ok(intent) => {
                self.remember(&req.idempotency_key, &intent.id);
                Self::answer(&intent)
            }
            // A card error: no money moved.
            Reply::Refused(402, e) => Ok(ChargeStatus::Declined { reason: e.reason() }),
            // The request itself was refused (an unknown or unusable PaymentMethod, say):
            // nothing was charged.
            Reply::Refused(status, e) => {
                tracing::warn!(status, code = ?e.code, message = ?e.message, "Stripe refused the payment intent");
                Ok(ChargeStatus::Declined { reason: e.code.unwrap_or_else(|| "invalid_request".into()) })
            }
        }
    }

    async fn act(&self, attempt: &str, action: &'static str) -> ProviderResult {
        let Some(intent) = self.find(attempt).await? else {
            return Ok(match action {
                // Nothing to cancel: no intent was created under this attempt.
                "cancel" => ChargeStatus::Voided,
                _ => ChargeStatus::NotFound,
            });
        };
        let due = match action {
            "capture" => intent.status == "requires_capture",
            _ => matches!(
                intent.status.as_str(),
                "requires_capture" | "requires_action" | "requires_confirmation" | "requires_payment_method"
            ),
        };
        if !due {
            return Self::answer(&intent);
        }
        let key = format!("{action}-{attempt}");
        let path = format!("/v1/payment_intents/{}/{action}", intent.id);
        match self.call::<Intent>(action, reqwest::Method::POST, &path, &[], Some(&key)).await? {
            Reply::Ok(i) => Self::answer(&i),
            Reply::Refused(status, e) => {
                // It changed meanwhile (captured by another process, say): say what it is now.
                tracing::warn!(status, code = ?e.code, action, "Stripe refused the action; reading the intent again");
                match self.find(attempt).await? {
                    Some(i) => Self::answer(&i),
                    None => Ok(ChargeStatus::NotFound),
                }
            }
        }
    }

    async fn refund_now(&self, req: &RefundRequest) -> RefundResult {
        let Some(intent) = self.find(&req.charge_key).await? else {
            return Ok(RefundStatus::Failed { reason: "no Stripe payment under this attempt".into() });
        };
        // `metadata[refund_id]`: Stripe's `charge.refunded` then names Backroom's refund, so a
        // webhook that arrives before this call's answer is recorded does not count it twice.
        let form = [
            ("payment_intent", intent.id.clone()),
            ("amount", req.amount.amount().to_string()),
            ("metadata[refund_id]", req.idempotency_key.clone()),
        ];
        match self
            .call::<Refund>("refund", reqwest::Method::POST, "/v1/refunds", &form, Some(&req.idempotency_key))
            .await?
        {
            Reply::Ok(r) => Ok(match r.status.as_deref() {
                Some("succeeded") | None => RefundStatus::Succeeded { reference: r.id },
                Some("failed" | "canceled") => {
                    RefundStatus::Failed { reason: r.failure_reason.unwrap_or_else(|| "refund_failed".into()) }
                }
                Some(_) => RefundStatus::Pending { reference: r.id },
            }),
            Reply::Refused(_, e) => {
                Ok(RefundStatus::Failed { reason: e.code.or(e.message).unwrap_or_else(|| "refund_refused".into()) })
            }
        }
    }
}

/// A reqwest error without the URL it carries (it is our own API base, but keeps logs short).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = String::new();
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = src {
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&err.to_string());
        src = err.source();
    }
    s
}

impl PaymentProvider for StripeProvider {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn authorize(&self, req: ChargeRequest) -> BoxFuture<'_, ProviderResult> {
        Box::pin(self.authorize_now(req))
    }

    fn capture<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult> {
        Box::pin(self.act(idempotency_key, "capture"))
    }

    fn void<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult> {
        Box::pin(self.act(idempotency_key, "cancel"))
    }

    fn refund<'a>(&'a self, req: &'a RefundRequest) -> BoxFuture<'a, RefundResult> {
        Box::pin(self.refund_now(req))
    }

    fn status<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, ProviderResult> {
        Box::pin(async move {
            match self.find(idempotency_key).await? {
                Some(i) => Self::answer(&i),
                None => Ok(ChargeStatus::NotFound),
            }
        })
    }
}

// ---- webhooks -------------------------------------------------------------------------------

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Stripe-Signature` header, or one without `t=` and `v1=`.
    Malformed,
    /// The timestamp is more than the tolerance away from now.
    Expired,
    /// No `v1` signature matches.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignatureError::Malformed => "the Stripe-Signature header is missing or malformed (expected t=…,v1=…)",
            SignatureError::Expired => "the signature's timestamp is outside the 5-minute tolerance",
            SignatureError::Mismatch => "no v1 signature matches the payload",
        })
    }
}

/// Checks a `Stripe-Signature` header (`t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]`) over
/// `payload` with the endpoint's signing `secret`: some `v1` must be the HMAC-SHA256 of
/// `"{t}.{payload}"` (compared in constant time), and `t` must be within `tolerance` of `now`
/// (unix seconds). Other schemes (`v0`, …) are ignored, as Stripe asks.
pub fn verify_signature(
    header: &str,
    payload: &[u8],
    secret: &str,
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    use hmac::{Mac, digest::KeyInit};
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else { continue };
        match k {
            "t" => timestamp = Some(v.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => {
                if let Ok(bytes) = hex::decode(v) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let Some(t) = timestamp else { return Err(SignatureError::Malformed) };
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(t) > tolerance.as_secs() {
        return Err(SignatureError::Expired);
    }
    for sig in &signatures {
        let mut mac =
            <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::Mismatch)?;
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        if mac.verify_slice(sig).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// A `Stripe-Signature` header for `payload` at `timestamp`: what Stripe sends (tests use it).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    use hmac::{Mac, digest::KeyInit};
    let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook event as Stripe sends it, as far as Backroom reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// What `charge.refunded` says: the refunds of one charge, made in Stripe (its dashboard, say)
/// or by Backroom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRefunds {
    /// The charge's PaymentIntent (`pi_…`), when it has one.
    pub payment_intent: Option<String>,
    /// The attempt id from the intent's metadata, when Stripe copied it onto the charge.
    pub attempt_id: Option<String>,
    pub charge_id: String,
    /// Minor units refunded in all.
    pub amount_refunded: i64,
    pub currency: String,
    /// Each refund: its id (`re_…`) and amount.
    pub refunds: Vec<(String, i64)>,
    /// Refunds that Backroom asked for itself: the refund's id (`re_…`) → Backroom's refund id
    /// (`ref_…`, from the refund's `metadata.refund_id`).
    pub requested: HashMap<String, String>,
}

impl ChargeRefunds {
    /// Reads a `charge.refunded` event's object (a Charge); `None` when it is not one.
    pub fn parse(charge: &serde_json::Value) -> Option<ChargeRefunds> {
        #[derive(Deserialize)]
        struct RefundItem {
            id: String,
            #[serde(default)]
            amount: i64,
            #[serde(default)]
            metadata: HashMap<String, String>,
        }
        #[derive(Deserialize)]
        struct RefundList {
            #[serde(default)]
            data: Vec<RefundItem>,
        }
        #[derive(Deserialize)]
        struct Charge {
            id: String,
            #[serde(default)]
            payment_intent: Option<String>,
            #[serde(default)]
            amount_refunded: i64,
            #[serde(default)]
            currency: String,
            #[serde(default)]
            metadata: HashMap<String, String>,
            #[serde(default)]
            refunds: Option<RefundList>,
        }
        let c: Charge = serde_json::from_value(charge.clone()).ok()?;
        let items = c.refunds.map(|r| r.data).unwrap_or_default();
        Some(ChargeRefunds {
            payment_intent: c.payment_intent,
            attempt_id: c.metadata.get("attempt_id").cloned(),
            charge_id: c.id,
            amount_refunded: c.amount_refunded,
            currency: c.currency.to_uppercase(),
            requested: items
                .iter()
                .filter_map(|i| Some((i.id.clone(), i.metadata.get("refund_id")?.clone())))
                .collect(),
            refunds: items.into_iter().map(|i| (i.id, i.amount)).collect(),
        })
    }
}

/// A PaymentIntent event's object: the intent, its attempt (from its metadata) and what it
/// means for the charge.
pub fn intent_outcome(object: &serde_json::Value) -> Option<(String, ChargeStatus)> {
    let intent: Intent = serde_json::from_value(object.clone()).ok()?;
    let attempt = intent.metadata.get("attempt_id")?.clone();
    Some((attempt, ChargeStatus::from(&intent)))
}

// ---- storage of seen events -----------------------------------------------------------------

/// Records a webhook event id in the caller's transaction; `false` when it was seen before
/// (then the caller does nothing). Insert-if-absent, so two deliveries of one event at once
/// cannot both pass: the second waits for the first's row and finds it.
pub async fn record_event(conn: &mut backroom_db::Conn<'_>, id: &str, kind: &str) -> backroom_kernel::Result<bool> {
    let n = backroom_db::sql::query(
        "INSERT INTO stripe_events (id, type, received_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .bind(backroom_kernel::now())
    .execute(conn)
    .await
    .map_err(backroom_db::storage)?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    const NOW: i64 = 1_800_000_000;
    const TOL: Duration = WEBHOOK_TOLERANCE;

    #[test]
    fn a_valid_signature_passes() {
        let h = sign(BODY, SECRET, NOW);
        assert_eq!(verify_signature(&h, BODY, SECRET, NOW, TOL), Ok(()));
        // Within the tolerance on either side.
        assert_eq!(verify_signature(&h, BODY, SECRET, NOW + 299, TOL), Ok(()));
        assert_eq!(verify_signature(&h, BODY, SECRET, NOW - 299, TOL), Ok(()));
    }

    #[test]
    fn a_tampered_body_fails() {
        let h = sign(BODY, SECRET, NOW);
        let tampered = br#"{"id":"evt_2","type":"payment_intent.succeeded"}"#;
        assert_eq!(verify_signature(&h, tampered, SECRET, NOW, TOL), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_wrong_secret_fails() {
        let h = sign(BODY, "whsec_other", NOW);
        assert_eq!(verify_signature(&h, BODY, SECRET, NOW, TOL), Err(SignatureError::Mismatch));
    }

    #[test]
    fn an_expired_timestamp_fails() {
        let h = sign(BODY, SECRET, NOW - 301);
        assert_eq!(verify_signature(&h, BODY, SECRET, NOW, TOL), Err(SignatureError::Expired));
        let h = sign(BODY, SECRET, NOW + 301);
        assert_eq!(verify_signature(&h, BODY, SECRET, NOW, TOL), Err(SignatureError::Expired));
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let good = sign(BODY, SECRET, NOW);
        let good_v1 = good.split_once("v1=").unwrap().1;
        let other = sign(BODY, "whsec_rolled", NOW);
        let other_v1 = other.split_once("v1=").unwrap().1;
        let h = format!("t={NOW},v1={other_v1},v0=deadbeef,v1={good_v1}");
        assert_eq!(verify_signature(&h, BODY, SECRET, NOW, TOL), Ok(()));
        let h = format!("t={NOW},v1={other_v1},v1=zz-not-hex");
        assert_eq!(verify_signature(&h, BODY, SECRET, NOW, TOL), Err(SignatureError::Mismatch));
    }

    #[test]
    fn malformed_headers_fail() {
        for h in ["", "t=", "v1=abcd", "t=abc,v1=abcd", &format!("t={NOW}"), &format!("t={NOW},v0=abcd"), "garbage"] {
            assert_eq!(verify_signature(h, BODY, SECRET, NOW, TOL), Err(SignatureError::Malformed), "{h:?}");
        }
    }

    #[test]
    fn intent_states_map_to_charge_statuses() {
        let intent = |status: &str| Intent {
            id: "pi_1".into(),
            status: status.into(),
            client_secret: Some("pi_1_secret_x".into()),
            metadata: HashMap::new(),
            last_payment_error: Some(ApiError {
                decline_code: Some("insufficient_funds".into()),
                ..Default::default()
            }),
            created: 0,
        };
        let r = || "pi_1".to_owned();
        assert_eq!(ChargeStatus::from(&intent("succeeded")), ChargeStatus::Captured { reference: r() });
        assert_eq!(ChargeStatus::from(&intent("requires_capture")), ChargeStatus::Authorized { reference: r() });
        assert_eq!(
            ChargeStatus::from(&intent("requires_action")),
            ChargeStatus::RequiresAction { reference: r(), client_secret: "pi_1_secret_x".into() }
        );
        assert_eq!(ChargeStatus::from(&intent("canceled")), ChargeStatus::Voided);
        assert_eq!(
            ChargeStatus::from(&intent("requires_payment_method")),
            ChargeStatus::Declined { reason: "insufficient_funds".into() }
        );
        assert_eq!(ChargeStatus::from(&intent("requires_confirmation")), ChargeStatus::NotFound);
        assert!(StripeProvider::answer(&intent("processing")).is_err());
    }

    #[test]
    fn the_secret_key_is_never_printed() {
        let config = StripeConfig {
            secret_key: Secret::new("sk_test_supersecret"),
            webhook_secret: Some(Secret::new("whsec_alsosecret")),
            api_base: DEFAULT_API_BASE.into(),
        };
        let printed = format!("{config:?} {:?}", StripeProvider::new(config.clone()).unwrap());
        assert!(!printed.contains("supersecret") && !printed.contains("alsosecret"), "{printed}");
    }

    #[test]
    fn charge_refunded_is_parsed() {
        let charge = serde_json::json!({
            "id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount_refunded": 1500,
            "currency": "eur", "metadata": {},
            "refunds": {"object": "list", "data": [{"id": "re_1", "amount": 1000},
                {"id": "re_2", "amount": 500, "metadata": {"refund_id": "ref_2"}}]}
        });
        let r = ChargeRefunds::parse(&charge).unwrap();
        assert_eq!(r.payment_intent.as_deref(), Some("pi_1"));
        assert_eq!(r.amount_refunded, 1500);
        assert_eq!(r.currency, "EUR");
        assert_eq!(r.refunds, vec![("re_1".to_owned(), 1000), ("re_2".to_owned(), 500)]);
        assert_eq!(r.requested, HashMap::from([("re_2".to_owned(), "ref_2".to_owned())]));
        assert!(ChargeRefunds::parse(&serde_json::json!("nope")).is_none());
    }
}
