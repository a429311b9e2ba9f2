//! Integrations: outgoing webhooks, signed per the Standard Webhooks specification. Owns the
//! `webhook_endpoints` and `webhook_deliveries` tables. See docs/webhooks.md.
//!
//! - **Endpoints** ([`Webhooks::create`] and friends): a URL checked against the SSRF rule
//!   ([`url`]), the event types it wants (or `*`), and a `whsec_…` secret sealed at rest under
//!   the endpoint's own data key from the vault (deleting the endpoint destroys the key).
//! - **Fan-out** ([`Webhooks::consumer`]): an outbox [`Consumer`] run by the at-least-once
//!   delivery runner. For each event it writes one delivery row per enabled endpoint that
//!   wants it, unique by (endpoint, event): an event handed again adds nothing.
//! - **Dispatch** ([`Webhooks::run`]): claims due deliveries with a lease, sends each on its
//!   own task (at most [`Settings::per_endpoint`] at once per endpoint and
//!   [`Settings::concurrency`] in all, so a slow endpoint never holds up another, and nothing
//!   runs on a request's path), and records the answer: `2xx` within the timeout is
//!   delivered; anything else is tried again after the next of [`Settings::retry_delays`],
//!   then `failed`. A worker killed mid-send leaves its claim to run out; the delivery is then
//!   sent again (with the same `webhook-id`). An endpoint whose every attempt failed for
//!   [`Settings::disable_after`] is disabled, and `webhook_endpoint.disabled` is written.
//!
//! **Metrics.** `webhook_deliveries_total{result}` (`delivered`, `retry`, `failed`),
//! `webhook_endpoint_failures_total` (failed attempts), `webhook_endpoints_disabled_total`,
//! `webhook_delivery_lag_seconds` (from the event to its delivery).

pub mod catalog;
pub mod sign;
pub mod url;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backroom_db::outbox::{self, Batch, BoxFuture, Consumer, Envelope, Event, TOPICS};
use backroom_db::{Db, Dialect, from_row, sql, storage};
use backroom_kernel::error::Problems;
use backroom_kernel::{Error, Page, PageRequest, Result, id, now};
use backroom_vault::Vault;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// How webhooks are sent.
#[derive(Debug, Clone)]
pub struct Settings {
    /// URLs may be on loopback, private and link-local addresses
    /// (`BACKROOM_WEBHOOKS_ALLOW_PRIVATE`); metadata addresses stay refused.
    pub allow_private: bool,
    /// The waits between attempts (`BACKROOM_WEBHOOK_RETRY_DELAYS`): a delivery is tried once,
    /// then once after each of these, then marked `failed`.
    pub retry_delays: Vec<Duration>,
    /// An endpoint whose every attempt failed for this long is disabled
    /// (`BACKROOM_WEBHOOK_DISABLE_AFTER`).
    pub disable_after: Duration,
    /// How long an attempt may take, the answer's body included.
    pub timeout: Duration,
    /// Most attempts in flight to one endpoint, per worker.
    pub per_endpoint: usize,
    /// Most attempts in flight in all, per worker.
    pub concurrency: usize,
    /// How long a claimed delivery is held by its worker; a worker that died lets it go after.
    pub lease: Duration,
    /// How often the dispatcher looks for due deliveries when nothing woke it.
    pub poll: Duration,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_grace: Duration,
}

/// The retry schedule: about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (eight attempts over
/// about a day and a half).
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The largest answer body read (the rest is not read).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Most event types an endpoint lists.
pub const MAX_EVENT_TYPES: usize = 100;
/// The longest description.
pub const MAX_DESCRIPTION: usize = 500;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_private: false,
            retry_delays: RETRY_DELAYS.to_vec(),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            timeout: Duration::from_secs(10),
            per_endpoint: 4,
            concurrency: 64,
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(250),
            rotation_grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// `POST /admin/webhooks`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// An absolute `http` or `https` URL (at most 2,048 characters) whose host resolves to
    /// public addresses only.
    #[schema(example = "https://erp.example.com/backroom/hooks")]
    pub url: String,
    /// The event types sent (1–100, each known: see docs/webhooks.md), or `["*"]` for all.
    #[schema(example = json!(["order.placed", "order.canceled"]))]
    pub event_types: Vec<String>,
    /// At most 500 characters.
    #[serde(default)]
    pub description: Option<String>,
}

/// `PATCH /admin/webhooks/{id}`: the fields to change.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable)]
    pub description: Option<Option<String>>,
    /// `true` enables a disabled endpoint again (its failures forgotten); `false` stops its
    /// deliveries (they wait, and go out when it is enabled again).
    pub enabled: Option<bool>,
}

fn nullable<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A webhook endpoint as staff see it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    #[schema(example = "wh_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    /// Disabled endpoints get nothing; their deliveries wait.
    pub enabled: bool,
    /// Why it was disabled, when it is.
    pub disabled_reason: Option<String>,
    /// Since when every attempt failed; `null` after a success.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An endpoint with its secret: the answer of creation and of a secret rotation, the only
/// places the secret is shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_` and the base64 of 32 random bytes: the key of the HMAC-SHA256 signatures.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// A `2xx` answer came back in time.
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl DeliveryStatus {
    fn parse(s: &str) -> DeliveryStatus {
        match s {
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => DeliveryStatus::Pending,
        }
    }
}

/// One event for one endpoint, with its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    #[schema(example = "whd_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    pub endpoint_id: String,
    /// The event's id: the `webhook-id` header of every attempt.
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made (or in flight).
    pub attempts: i64,
    /// The HTTP status of the last answer, if one came.
    pub last_status_code: Option<i64>,
    /// What went wrong with the last attempt.
    pub last_error: Option<String>,
    /// When it is tried next, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

struct EndpointRow {
    id: String,
    url: String,
    event_types: String,
    description: Option<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    failing_since: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}
from_row!(EndpointRow {
    id,
    url,
    event_types,
    description,
    enabled,
    disabled_reason,
    failing_since,
    created_at,
    updated_at
});

const ENDPOINT_COLUMNS: &str =
    "id, url, event_types, description, enabled, disabled_reason, failing_since, created_at, updated_at";

impl EndpointRow {
    fn view(self) -> Endpoint {
        Endpoint {
            event_types: serde_json::from_str(&self.event_types).unwrap_or_default(),
            id: self.id,
            url: self.url,
            description: self.description,
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            failing_since: self.failing_since,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

struct DeliveryRow {
    id: String,
    endpoint_id: String,
    event_id: String,
    event_type: String,
    status: String,
    attempts: i64,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}
from_row!(DeliveryRow {
    id,
    endpoint_id,
    event_id,
    event_type,
    status,
    attempts,
    last_status_code,
    last_error,
    next_attempt_at,
    delivered_at,
    created_at,
    updated_at
});

const DELIVERY_COLUMNS: &str = "id, endpoint_id, event_id, event_type, status, attempts, last_status_code, last_error, \
     next_attempt_at, delivered_at, created_at, updated_at";

impl DeliveryRow {
    fn view(self) -> Delivery {
        Delivery {
            status: DeliveryStatus::parse(&self.status),
            id: self.id,
            endpoint_id: self.endpoint_id,
            event_id: self.event_id,
            event_type: self.event_type,
            attempts: self.attempts,
            last_status_code: self.last_status_code,
            last_error: self.last_error,
            next_attempt_at: self.next_attempt_at,
            delivered_at: self.delivered_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A delivery as the dispatcher claimed it.
struct Claimed {
    id: String,
    endpoint_id: String,
    event_id: String,
    event_type: String,
    payload: String,
    event_created_at: DateTime<Utc>,
    attempts: i64,
}
from_row!(Claimed { id, endpoint_id, event_id, event_type, payload, event_created_at, attempts });

/// An endpoint's URL, key id, sealed secret, sealed previous secret and until when it signs.
type TargetRow = (String, String, String, Option<String>, Option<DateTime<Utc>>);

/// The webhooks service. Cheap to clone: clones share the HTTP client and the dispatcher's
/// bookkeeping.
#[derive(Clone)]
pub struct Webhooks(Arc<Inner>);

struct Inner {
    db: Db,
    vault: Vault,
    orders: backroom_orders::Orders,
    settings: Settings,
    /// `None` only when the TLS stack could not start: every attempt then fails.
    client: Option<reqwest::Client>,
    /// Wakes the dispatcher when deliveries were written or finished.
    wake: tokio::sync::Notify,
    /// Attempts in flight per endpoint, in this process.
    in_flight: Mutex<HashMap<String, usize>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("settings", &self.0.settings).finish_non_exhaustive()
    }
}

/// Whether `t` is an event type an endpoint may ask for.
pub fn is_event_type(t: &str) -> bool {
    TOPICS.iter().any(|(topic, _)| *topic == t)
}

fn check_event_types(types: &[String], p: &mut Problems) {
    if types.is_empty() || types.len() > MAX_EVENT_TYPES {
        p.add("event_types", "must list 1–100 event types, or be [\"*\"]");
        return;
    }
    if types.iter().any(|t| t == "*") && types.len() > 1 {
        p.add("event_types", "\"*\" stands alone");
        return;
    }
    let mut seen = HashSet::new();
    for (i, t) in types.iter().enumerate() {
        if t == "*" {
            continue;
        }
        if !is_event_type(t) {
            p.add(format!("event_types[{i}]"), "is not an event type (see GET /admin/event-types or docs/events.md)");
        } else if !seen.insert(t.as_str()) {
            p.add(format!("event_types[{i}]"), "appears twice");
        }
    }
}

fn check_description(d: &str, p: &mut Problems) {
    if d.chars().count() > MAX_DESCRIPTION || d.chars().any(|c| c.is_control() && c != '\n') {
        p.add("description", "must be at most 500 characters, without control characters");
    }
}

/// The URL check folded into the other problems of a request: a malformed URL is one more
/// field error; a forbidden address is answered on its own once the rest is valid.
async fn check_url_into(raw: &str, allow_private: bool, p: &mut Problems) -> Result<Option<String>> {
    match url::check(raw, allow_private).await {
        Ok(u) => Ok(Some(u.to_string())),
        Err(Error::Validation(errors)) => {
            for e in errors {
                p.add(e.field, e.message);
            }
            Ok(None)
        }
        Err(e) if p.is_empty() => Err(e),
        Err(_) => Ok(None),
    }
}

fn wants(event_types: &str, topic: &str) -> bool {
    serde_json::from_str::<Vec<String>>(event_types)
        .map(|types| types.iter().any(|t| t == "*" || t == topic))
        .unwrap_or(false)
}

fn duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Webhooks {
    /// The service over `db`, sealing secrets with `vault`, rendering orders with `orders`.
    pub fn new(db: Db, vault: Vault, orders: backroom_orders::Orders, settings: Settings) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect to addresses this process never checked.
            .no_proxy()
            .dns_resolver(Arc::new(url::CheckedResolver { allow_private: settings.allow_private }))
            .user_agent(concat!("backroom-webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build();
        let client = match client {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "the HTTP client for webhooks could not start: every delivery attempt fails");
                None
            }
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(settings.concurrency.max(1)));
        Webhooks(Arc::new(Inner {
            db,
            vault,
            orders,
            settings,
            client,
            wake: tokio::sync::Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
            slots,
        }))
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// Creates an endpoint; answers it with its secret (shown only here and on rotation).
    pub async fn create(&self, new: &NewEndpoint) -> Result<EndpointWithSecret> {
        let mut p = Problems::new();
        check_event_types(&new.event_types, &mut p);
        if let Some(d) = &new.description {
            check_description(d, &mut p);
        }
        let url = check_url_into(&new.url, self.0.settings.allow_private, &mut p).await?;
        p.finish()?;
        let url = url.ok_or_else(|| Error::internal("a checked URL"))?;
        let id = id::new("wh");
        let secret = sign::new_secret();
        let key = self.0.vault.new_key();
        let sealed = key.key.seal(&secret_context(&id), &secret);
        let ts = now();
        let types = serde_json::to_string(&new.event_types).map_err(Error::internal)?;
        let mut tx = self.0.db.begin().await?;
        key.insert(&mut tx.conn()).await?;
        sql::query(
            "INSERT INTO webhook_endpoints (id, url, event_types, description, enabled, key_id, secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, TRUE, $5, $6, $7, $7)",
        )
        .bind(&id)
        .bind(&url)
        .bind(&types)
        .bind(new.description.clone())
        .bind(&key.id)
        .bind(&sealed)
        .bind(ts)
        .execute(&mut tx.conn())
        .await
        .map_err(storage)?;
        tx.commit().await?;
        Ok(EndpointWithSecret { endpoint: self.get(&id).await?, secret })
    }

    /// Endpoints, newest first, a page at a time.
    pub async fn list(&self, page: &PageRequest) -> Result<Page<Endpoint>> {
        let mut q = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints");
        let mut args = Vec::new();
        if let Some(after) = &page.after {
            q.push_str(" WHERE id < $1");
            args.push(after.0.clone());
        }
        q.push_str(&format!(" ORDER BY id DESC LIMIT {}", i64::from(page.limit) + 1));
        let mut r = self.0.db.read().await?;
        let rows: Vec<EndpointRow> = sql::query(q).bind_all(args).fetch_all(&mut r.conn()).await.map_err(storage)?;
        Ok(page.finish(rows.into_iter().map(EndpointRow::view).collect(), |e| e.id.clone()))
    }

    /// One endpoint.
    pub async fn get(&self, id: &str) -> Result<Endpoint> {
        let mut r = self.0.db.read().await?;
        let row: Option<EndpointRow> =
            sql::query(format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut r.conn())
                .await
                .map_err(storage)?;
        row.map(EndpointRow::view).ok_or(Error::not_found("webhook endpoint"))
    }

    /// Changes an endpoint; the same rules as creation apply.
    pub async fn update(&self, id: &str, patch: &EndpointPatch) -> Result<Endpoint> {
        let current = self.get(id).await?;
        let mut p = Problems::new();
        if let Some(types) = &patch.event_types {
            check_event_types(types, &mut p);
        }
        if let Some(Some(d)) = &patch.description {
            check_description(d, &mut p);
        }
        let url = match &patch.url {
            Some(raw) => check_url_into(raw, self.0.settings.allow_private, &mut p).await?,
            None => None,
        };
        p.finish()?;
        let types = match &patch.event_types {
            Some(t) => serde_json::to_string(t).map_err(Error::internal)?,
            None => serde_json::to_string(&current.event_types).map_err(Error::internal)?,
        };
        let description = match &patch.description {
            Some(d) => d.clone(),
            None => current.description.clone(),
        };
        let (enabled, reason, failing_since) = match patch.enabled {
            Some(true) => (true, None, None),
            Some(false) if current.enabled => (false, Some("disabled by staff".to_owned()), current.failing_since),
            _ => (current.enabled, current.disabled_reason.clone(), current.failing_since),
        };
        let mut tx = self.0.db.begin().await?;
        let n = sql::query(
            "UPDATE webhook_endpoints SET url = $2, event_types = $3, description = $4, enabled = $5, \
             disabled_reason = $6, failing_since = $7, updated_at = $8 WHERE id = $1",
        )
        .bind(id)
        .bind(url.unwrap_or(current.url))
        .bind(types)
        .bind(description)
        .bind(enabled)
        .bind(reason)
        .bind(failing_since)
        .bind(now())
        .execute(&mut tx.conn())
        .await
        .map_err(storage)?;
        tx.commit().await?;
        if n == 0 {
            return Err(Error::not_found("webhook endpoint"));
        }
        self.0.wake.notify_one();
        self.get(id).await
    }

    /// Deletes an endpoint with its deliveries, and destroys its secret's key.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let mut tx = self.0.db.begin().await?;
        let key: Option<String> = sql::query("SELECT key_id FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut tx.conn())
            .await
            .map_err(storage)?
            .map(|(k,): (String,)| k);
        let Some(key) = key else { return Err(Error::not_found("webhook endpoint")) };
        sql::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut tx.conn())
            .await
            .map_err(storage)?;
        sql::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&mut tx.conn())
            .await
            .map_err(storage)?;
        Vault::destroy(&mut tx.conn(), &key).await?;
        tx.commit().await
    }

    /// A new secret for an endpoint; the previous one keeps signing (a second signature in
    /// `webhook-signature`) for [`Settings::rotation_grace`].
    pub async fn rotate_secret(&self, id: &str) -> Result<EndpointWithSecret> {
        let mut tx = self.0.db.begin().await?;
        let row: Option<(String, String)> = sql::query("SELECT key_id, secret FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut tx.conn())
            .await
            .map_err(storage)?;
        let Some((key_id, old)) = row else { return Err(Error::not_found("webhook endpoint")) };
        let key = self
            .0
            .vault
            .key(&mut tx.conn(), &key_id)
            .await?
            .ok_or_else(|| Error::internal("the key of a webhook secret is gone"))?;
        let secret = sign::new_secret();
        let ts = now();
        sql::query(
            "UPDATE webhook_endpoints SET secret = $2, previous_secret = $3, previous_until = $4, updated_at = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(key.seal(&secret_context(id), &secret))
        .bind(old)
        .bind(ts + duration(self.0.settings.rotation_grace))
        .bind(ts)
        .execute(&mut tx.conn())
        .await
        .map_err(storage)?;
        tx.commit().await?;
        Ok(EndpointWithSecret { endpoint: self.get(id).await?, secret })
    }

    /// An endpoint's deliveries, newest first, a page at a time.
    pub async fn deliveries(&self, endpoint_id: &str, page: &PageRequest) -> Result<Page<Delivery>> {
        self.get(endpoint_id).await?;
        let mut q = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1");
        let mut args = vec![endpoint_id.to_owned()];
        if let Some(after) = &page.after {
            q.push_str(" AND id < $2");
            args.push(after.0.clone());
        }
        q.push_str(&format!(" ORDER BY id DESC LIMIT {}", i64::from(page.limit) + 1));
        let mut r = self.0.db.read().await?;
        let rows: Vec<DeliveryRow> = sql::query(q).bind_all(args).fetch_all(&mut r.conn()).await.map_err(storage)?;
        Ok(page.finish(rows.into_iter().map(DeliveryRow::view).collect(), |d| d.id.clone()))
    }

    /// Sends a delivery again now, whatever its status (once more after its last attempt,
    /// when it had failed). A disabled endpoint's delivery waits until it is enabled.
    pub async fn retry(&self, endpoint_id: &str, delivery_id: &str) -> Result<Delivery> {
        let ts = now();
        let mut tx = self.0.db.begin().await?;
        let n = sql::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $3, claimed_until = NULL, updated_at = $3 \
             WHERE id = $1 AND endpoint_id = $2",
        )
        .bind(delivery_id)
        .bind(endpoint_id)
        .bind(ts)
        .execute(&mut tx.conn())
        .await
        .map_err(storage)?;
        tx.commit().await?;
        if n == 0 {
            return Err(Error::not_found("webhook delivery"));
        }
        self.0.wake.notify_one();
        let mut r = self.0.db.read().await?;
        let row: DeliveryRow = sql::query(format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"))
            .bind(delivery_id)
            .fetch_one(&mut r.conn())
            .await
            .map_err(storage)?;
        Ok(row.view())
    }

    /// The outbox consumer that writes deliveries (run it with the outbox's
    /// [`outbox::Delivery`] runner).
    pub fn consumer(&self) -> Arc<dyn Consumer> {
        Arc::new(FanOut(self.clone()))
    }

    /// Writes one delivery per enabled endpoint that wants the event (none twice).
    async fn fan_out(&self, e: &Envelope) -> Result<()> {
        let topic = e.event.topic();
        let endpoints: Vec<(String, String)> = {
            let mut r = self.0.db.read().await?;
            sql::query("SELECT id, event_types FROM webhook_endpoints WHERE enabled = TRUE ORDER BY id")
                .fetch_all(&mut r.conn())
                .await
                .map_err(storage)?
        };
        let targets: Vec<&String> = endpoints.iter().filter(|(_, t)| wants(t, topic)).map(|(id, _)| id).collect();
        if targets.is_empty() {
            return Ok(());
        }
        let payload = e.event.encode();
        let ts = now();
        let mut tx = self.0.db.begin().await?;
        for endpoint in targets {
            sql::query(
                "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, payload, event_created_at, status, \
                 attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, $7) \
                 ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            )
            .bind(id::new("whd"))
            .bind(endpoint.as_str())
            .bind(e.event_id.as_str())
            .bind(topic)
            .bind(&payload)
            .bind(e.created_at)
            .bind(ts)
            .execute(&mut tx.conn())
            .await
            .map_err(storage)?;
        }
        tx.commit().await?;
        self.0.wake.notify_one();
        Ok(())
    }

    /// Sends due deliveries until `stop`; see the module documentation.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if let Err(e) = self.dispatch().await {
                tracing::warn!(error = %e, "webhook dispatch failed");
            }
            tokio::select! {
                biased;
                _ = &mut stop => return,
                _ = self.0.wake.notified() => {}
                _ = tokio::time::sleep(self.0.settings.poll) => {}
            }
        }
    }

    /// Claims due deliveries and starts an attempt for each, within the limits; the claims
    /// over an endpoint's limit are given back at once.
    async fn dispatch(&self) -> Result<()> {
        let free = self.0.slots.available_permits();
        if free == 0 {
            return Ok(());
        }
        let busy: Vec<String> = {
            let in_flight = self.0.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            in_flight.iter().filter(|(_, n)| **n >= self.0.settings.per_endpoint).map(|(k, _)| k.clone()).collect()
        };
        let claimed = self.claim(free.min(100) as i64, &busy).await?;
        let mut give_back = Vec::new();
        for c in claimed {
            let admitted = {
                let mut in_flight = self.0.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                let n = in_flight.entry(c.endpoint_id.clone()).or_insert(0);
                match self.0.slots.clone().try_acquire_owned() {
                    Ok(permit) if *n < self.0.settings.per_endpoint => {
                        *n += 1;
                        Some(permit)
                    }
                    _ => None,
                }
            };
            let Some(permit) = admitted else {
                give_back.push(c.id);
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let endpoint = c.endpoint_id.clone();
                this.attempt(c).await;
                {
                    let mut in_flight = this.0.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(n) = in_flight.get_mut(&endpoint) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            in_flight.remove(&endpoint);
                        }
                    }
                }
                drop(permit);
                this.0.wake.notify_one();
            });
        }
        if !give_back.is_empty() {
            let mut tx = self.0.db.begin().await?;
            sql::query(format!(
                "UPDATE webhook_deliveries SET claimed_until = NULL, attempts = attempts - 1 WHERE id IN {}",
                sql::in_list(give_back.len(), 1)
            ))
            .bind_all(give_back.iter().map(String::as_str))
            .execute(&mut tx.conn())
            .await
            .map_err(storage)?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Claims up to `limit` due deliveries of enabled endpoints not in `busy` for a lease.
    async fn claim(&self, limit: i64, busy: &[String]) -> Result<Vec<Claimed>> {
        let ts = now();
        let until = ts + duration(self.0.settings.lease);
        let mut tx = self.0.db.begin().await?;
        let lock = match tx.dialect() {
            Dialect::Postgres => " FOR UPDATE OF d SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let skip = if busy.is_empty() {
            String::new()
        } else {
            format!(" AND d.endpoint_id NOT IN {}", sql::in_list(busy.len(), 4))
        };
        let q = format!(
            "UPDATE webhook_deliveries SET claimed_until = $2, attempts = attempts + 1, updated_at = $1 WHERE id IN (\
             SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND (d.claimed_until IS NULL OR d.claimed_until < $1) \
             AND e.enabled = TRUE{skip} ORDER BY d.next_attempt_at LIMIT $3{lock}) \
             RETURNING id, endpoint_id, event_id, event_type, payload, event_created_at, attempts"
        );
        let claimed: Vec<Claimed> = sql::query(q)
            .bind(ts)
            .bind(until)
            .bind(limit)
            .bind_all(busy.iter().map(String::as_str))
            .fetch_all(&mut tx.conn())
            .await
            .map_err(storage)?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// One attempt of a claimed delivery, and its record.
    async fn attempt(&self, c: Claimed) {
        let outcome = self.send(&c).await;
        if let Err(e) = self.record(&c, outcome).await {
            // The claim runs out and the delivery is tried again: at least once.
            tracing::warn!(delivery = c.id, error = %e, "could not record a webhook attempt");
        }
    }

    /// Sends one attempt: the HTTP status of a `2xx` answer, or the status (if any) and what
    /// went wrong.
    async fn send(&self, c: &Claimed) -> std::result::Result<u16, (Option<u16>, String)> {
        let target =
            self.target(&c.endpoint_id).await.map_err(|e| (None, format!("could not read the endpoint: {e}")))?;
        let Some((url, secrets)) = target else { return Err((None, "the endpoint is gone".into())) };
        let data = self
            .data(&c.event_type, &c.payload)
            .await
            .map_err(|e| (None, format!("could not render the event: {e}")))?;
        let body = serde_json::to_vec(&serde_json::json!({
            "type": c.event_type,
            "timestamp": c.event_created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "data": data,
        }))
        .map_err(|e| (None, e.to_string()))?;
        let url: reqwest::Url = url.parse().map_err(|_| (None, "the URL does not parse".to_owned()))?;
        if !url::literal_allowed(&url, self.0.settings.allow_private) {
            return Err((None, "the URL's address is forbidden".into()));
        }
        let Some(client) = &self.0.client else { return Err((None, "no HTTP client".into())) };
        let timestamp = Utc::now().timestamp();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let signature = sign::header(&secrets, &c.event_id, timestamp, &body);
        let timeout = self.0.settings.timeout;
        let request = client
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &c.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        match tokio::time::timeout(timeout, call(request)).await {
            Ok(r) => r,
            Err(_) => Err((None, format!("no answer within {} s", timeout.as_secs_f64()))),
        }
    }

    /// The endpoint's URL and its secrets (the previous one too while it still signs), or
    /// `None` when the endpoint is gone.
    async fn target(&self, endpoint_id: &str) -> Result<Option<(String, Vec<String>)>> {
        let mut r = self.0.db.read().await?;
        let mut conn = r.conn();
        let row: Option<TargetRow> = sql::query(
            "SELECT url, key_id, secret, previous_secret, previous_until FROM webhook_endpoints WHERE id = $1",
        )
        .bind(endpoint_id)
        .fetch_optional(&mut conn)
        .await
        .map_err(storage)?;
        let Some((url, key_id, secret, previous, until)) = row else { return Ok(None) };
        let key = self.0.vault.key(&mut conn, &key_id).await?.ok_or_else(|| Error::internal("the key is gone"))?;
        let context = secret_context(endpoint_id);
        let mut secrets = vec![key.open(&context, &secret)?];
        if let (Some(previous), Some(until)) = (previous, until)
            && until > now()
        {
            secrets.push(key.open(&context, &previous)?);
        }
        Ok(Some((url, secrets)))
    }

    /// The `data` of an event's body: the order as `GET /admin/orders/{id}` shows it for
    /// order events, the endpoint for `webhook_endpoint.disabled`, else the event's payload.
    /// Its schema per topic is [`catalog::data_schema`]; keep the two in step.
    pub async fn data(&self, topic: &str, payload: &str) -> Result<serde_json::Value> {
        let event = Event::decode(topic, payload).map_err(Error::internal)?;
        let order_id = match &event {
            Event::OrderPlaced(o) | Event::OrderPaymentFailed(o) => Some(o.order_id.as_str()),
            Event::OrderFulfilled(o)
            | Event::OrderShipped(o)
            | Event::OrderDelivered(o)
            | Event::OrderCanceled(o)
            | Event::OrderRefunded(o)
            | Event::ReturnReceived(o) => Some(o.order_id.as_str()),
            _ => None,
        };
        if let Some(order_id) = order_id {
            match self.0.orders.get(order_id).await {
                Ok(order) => return serde_json::to_value(order).map_err(Error::internal),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Event::WebhookEndpointDisabled(d) = &event {
            match self.get(&d.endpoint_id).await {
                Ok(endpoint) => return serde_json::to_value(endpoint).map_err(Error::internal),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut value: serde_json::Value = serde_json::from_str(payload).map_err(Error::internal)?;
        if let Some(o) = value.as_object_mut() {
            o.remove("v");
        }
        Ok(value)
    }

    /// Records an attempt's outcome: delivered, or failed and due again after the next delay
    /// (or `failed` after the last); a failure may disable the endpoint.
    async fn record(&self, c: &Claimed, outcome: std::result::Result<u16, (Option<u16>, String)>) -> Result<()> {
        let ts = now();
        let mut tx = self.0.db.begin().await?;
        match outcome {
            Ok(status) => {
                sql::query(
                    "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = $2, claimed_until = NULL, \
                     next_attempt_at = NULL, last_status_code = $3, last_error = NULL, updated_at = $2 WHERE id = $1",
                )
                .bind(c.id.as_str())
                .bind(ts)
                .bind(i64::from(status))
                .execute(&mut tx.conn())
                .await
                .map_err(storage)?;
                sql::query(
                    "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
                )
                .bind(c.endpoint_id.as_str())
                .execute(&mut tx.conn())
                .await
                .map_err(storage)?;
                tx.commit().await?;
                metrics::counter!("webhook_deliveries_total", "result" => "delivered").increment(1);
                metrics::histogram!("webhook_delivery_lag_seconds")
                    .record((ts - c.event_created_at).num_milliseconds().max(0) as f64 / 1000.0);
                Ok(())
            }
            Err((status, error)) => {
                let delays = &self.0.settings.retry_delays;
                let next = usize::try_from(c.attempts - 1).ok().and_then(|i| delays.get(i)).map(|d| ts + duration(*d));
                let status_text = if next.is_some() { "pending" } else { "failed" };
                sql::query(
                    "UPDATE webhook_deliveries SET status = $2, next_attempt_at = $3, claimed_until = NULL, \
                     last_status_code = $4, last_error = $5, updated_at = $6 WHERE id = $1",
                )
                .bind(c.id.as_str())
                .bind(status_text)
                .bind(next)
                .bind(status.map(i64::from))
                .bind(error.chars().take(1000).collect::<String>())
                .bind(ts)
                .execute(&mut tx.conn())
                .await
                .map_err(storage)?;
                sql::query("UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2) WHERE id = $1")
                    .bind(c.endpoint_id.as_str())
                    .bind(ts)
                    .execute(&mut tx.conn())
                    .await
                    .map_err(storage)?;
                let failing: Option<(Option<DateTime<Utc>>, bool)> =
                    sql::query("SELECT failing_since, enabled FROM webhook_endpoints WHERE id = $1")
                        .bind(c.endpoint_id.as_str())
                        .fetch_optional(&mut tx.conn())
                        .await
                        .map_err(storage)?;
                let mut disabled = false;
                if let Some((Some(since), true)) = failing
                    && ts - since >= duration(self.0.settings.disable_after)
                {
                    let reason = format!(
                        "every delivery attempt failed since {}",
                        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                    sql::query(
                        "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $2, updated_at = $3 WHERE id = $1",
                    )
                    .bind(c.endpoint_id.as_str())
                    .bind(&reason)
                    .bind(ts)
                    .execute(&mut tx.conn())
                    .await
                    .map_err(storage)?;
                    let event = Event::WebhookEndpointDisabled(outbox::WebhookEndpointDisabled {
                        endpoint_id: c.endpoint_id.clone(),
                        reason,
                        failing_since: since,
                        disabled_at: ts,
                    });
                    outbox::enqueue(&mut tx.conn(), &event).await?;
                    disabled = true;
                }
                tx.commit().await?;
                metrics::counter!("webhook_endpoint_failures_total").increment(1);
                let result = if next.is_some() { "retry" } else { "failed" };
                metrics::counter!("webhook_deliveries_total", "result" => result).increment(1);
                if disabled {
                    metrics::counter!("webhook_endpoints_disabled_total").increment(1);
                    tracing::warn!(endpoint = c.endpoint_id, "webhook endpoint disabled after failing for too long");
                }
                tracing::info!(delivery = c.id, endpoint = c.endpoint_id, attempts = c.attempts, error = %error, "webhook attempt failed");
                Ok(())
            }
        }
    }
}

/// The place a secret is sealed for (associated data: a sealed secret copied into another
/// row does not open).
fn secret_context(endpoint_id: &str) -> String {
    format!("{endpoint_id}/secret")
}

/// Sends the request and reads at most [`MAX_ANSWER_BYTES`] of the answer; a `2xx` status is
/// success. A redirect is an answer like any other non-`2xx` (never followed).
async fn call(request: reqwest::RequestBuilder) -> std::result::Result<u16, (Option<u16>, String)> {
    let mut res = request.send().await.map_err(|e| (None, describe(&e)))?;
    let status = res.status().as_u16();
    let mut read = 0usize;
    while read < MAX_ANSWER_BYTES {
        match res.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) => break,
            Err(e) => return Err((Some(status), describe(&e))),
        }
    }
    if res.status().is_success() { Ok(status) } else { Err((Some(status), format!("answered {status}"))) }
}

/// A sending error with its causes (the refused address among them).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time".into();
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The outbox consumer: see [`Webhooks::consumer`].
struct FanOut(Webhooks);

impl Consumer for FanOut {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn wants(&self, _event: &Event) -> bool {
        true
    }

    fn handle<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for e in batch.events {
                self.0.fan_out(e).await?;
            }
            Ok(())
        })
    }
}
