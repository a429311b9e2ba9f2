//! The HTTP layer: the `/store` and `/admin` routers, extractors that answer bad input with
//! problem+json, the OpenAPI document, and request metrics. Modules never see HTTP; this
//! crate turns their results and errors into responses.

pub mod access;
pub mod audit;
pub mod cache;
pub mod client;
pub mod edge;
pub mod error;
pub mod extract;
pub mod imports;
pub mod member_prices;
pub mod openapi;
pub mod pci;
pub mod ratelimit;
pub mod redact;
pub mod routes;
pub mod telemetry;
pub mod views;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use backroom_auth::Auth;
use backroom_cart::Carts;
use backroom_catalog::Catalog;
use backroom_checkout::Checkout;
use backroom_db::Db;
use backroom_inventory::Inventory;
use backroom_orders::Orders;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, PROBLEM_JSON};
use crate::routes::ops;

/// The largest request body accepted: 1 MiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// The storefront's base URL when `BACKROOM_STOREFRONT_URL` is not set.
pub const DEFAULT_STOREFRONT_URL: &str = "http://localhost:3000";

/// What every handler can reach: the [`Services`] behind one `Arc`. Axum clones the state for
/// every handler and every middleware that takes it, so a clone must be one counter increment
/// (cloning the services themselves, each with its own database handle, cost about a quarter
/// of the server's CPU under load: docs/benchmarks.md).
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The modules and settings the HTTP layer works with.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub catalog: Catalog,
    pub inventory: Inventory,
    pub auth: Auth,
    /// The audit log of staff writes; see [`audit`].
    pub audit: backroom_auth::audit::AuditLog,
    pub carts: Carts,
    pub checkout: Checkout,
    pub orders: Orders,
    /// The crypto of personal data (master key, data keys, e-mail index).
    pub vault: backroom_vault::Vault,
    /// Customers' accounts, sessions, address books and groups.
    pub customers: backroom_customers::Customers,
    /// Price lists: their writes and staff reads.
    pub price_lists: backroom_pricing::PriceLists,
    /// This process's price book and customers' groups, that the storefront shows members'
    /// prices from; see [`member_prices`].
    pub prices: std::sync::Arc<backroom_pricing::LivePrices>,
    /// This process's search index; `None` runs listings from the database only.
    pub search: Option<std::sync::Arc<backroom_search::SearchIndex>>,
    /// Cached public catalog answers; see [`cache`].
    pub cache: std::sync::Arc<cache::ResponseCache>,
    /// The storefront view of every published product, that search pages are made of; see
    /// [`views`].
    pub views: std::sync::Arc<views::ProductViews>,
    /// What this process's outbox follower of product changes has done (its loads); see
    /// [`backroom_search::follow`].
    pub follow: std::sync::Arc<backroom_search::follow::Stats>,
    pub metrics: PrometheusHandle,
    /// Browser origins allowed by CORS (`BACKROOM_CORS_ORIGINS`); none by default.
    pub cors_origins: std::sync::Arc<Vec<axum::http::HeaderValue>>,
    /// Proxies whose `X-Forwarded-For` names the client (`BACKROOM_TRUSTED_PROXIES`); none by
    /// default. See [`client`].
    pub trusted_proxies: std::sync::Arc<client::TrustedProxies>,
    /// The store's rate limits per client address (`BACKROOM_RATE_LIMITS`); see [`ratelimit`].
    pub rate_limits: std::sync::Arc<ratelimit::Limiters>,
    /// A request not answered within this is `503` (`BACKROOM_REQUEST_TIMEOUT`).
    pub request_timeout: Duration,
    /// Whether this router serves `/metrics` (not when it has a listener of its own).
    pub metrics_here: bool,
    /// Carrier quotes of shipping options, and whether their URLs may be private
    /// (`BACKROOM_WEBHOOKS_ALLOW_PRIVATE`).
    pub carriers: backroom_pricing::Carriers,
    /// The signing secret of Stripe's webhook endpoint (`BACKROOM_STRIPE_WEBHOOK_SECRET`);
    /// without it `POST /webhooks/stripe` refuses every event.
    pub stripe_webhook_secret: Option<backroom_payments::stripe::Secret>,
    /// Outgoing webhooks: endpoints, deliveries, and the dispatcher that the application runs.
    pub webhooks: backroom_integrations::Webhooks,
    /// The storefront's base URL, without a trailing `/` (`BACKROOM_STOREFRONT_URL`): the
    /// product feed links to `{storefront_url}/products/{handle}`.
    pub storefront_url: std::sync::Arc<str>,
}

impl AppState {
    /// The state over `db`; `admin_token` is `BACKROOM_ADMIN_TOKEN`, when set; `checkout`
    /// carries the enabled payment providers and the vault. No CORS origin, the default
    /// request deadline and customer settings, `/metrics` served here.
    pub fn new(
        db: Db,
        admin_token: Option<&str>,
        checkout: Checkout,
        search: Option<std::sync::Arc<backroom_search::SearchIndex>>,
    ) -> Self {
        let vault = checkout.vault().clone();
        let webhooks = backroom_integrations::Webhooks::new(
            db.clone(),
            vault.clone(),
            Orders::new(db.clone(), vault.clone()),
            backroom_integrations::Settings::default(),
        );
        AppState(std::sync::Arc::new(Services {
            catalog: Catalog::new(db.clone()),
            inventory: Inventory::new(db.clone()),
            auth: Auth::new(db.clone(), admin_token),
            audit: backroom_auth::audit::AuditLog::new(db.clone()),
            carts: Carts::new(db.clone(), vault.clone()),
            checkout,
            orders: Orders::new(db.clone(), vault.clone()),
            customers: backroom_customers::Customers::new(
                db.clone(),
                vault.clone(),
                backroom_customers::Settings::default(),
            ),
            price_lists: backroom_pricing::PriceLists::new(db.clone()),
            prices: std::sync::Arc::new(backroom_pricing::LivePrices::new(db.clone())),
            vault,
            search,
            cache: Default::default(),
            views: Default::default(),
            follow: Default::default(),
            metrics: metrics_handle(),
            cors_origins: Default::default(),
            trusted_proxies: Default::default(),
            rate_limits: std::sync::Arc::new(ratelimit::Limiters::new(ratelimit::RateLimits::default())),
            request_timeout: Duration::from_secs(30),
            metrics_here: true,
            carriers: backroom_pricing::Carriers::default(),
            stripe_webhook_secret: None,
            webhooks,
            storefront_url: DEFAULT_STOREFRONT_URL.into(),
            db,
        }))
    }

    /// Changes the services while this is the only handle (at start-up), or a copy of them.
    fn with(mut self, change: impl FnOnce(&mut Services)) -> Self {
        change(std::sync::Arc::make_mut(&mut self.0));
        self
    }

    /// Allows these exact browser origins (CORS).
    pub fn with_cors_origins(self, origins: Vec<axum::http::HeaderValue>) -> Self {
        self.with(|s| s.cors_origins = std::sync::Arc::new(origins))
    }

    /// Believes `X-Forwarded-For` from these proxies (see [`client`]).
    pub fn with_trusted_proxies(self, proxies: client::TrustedProxies) -> Self {
        self.with(|s| s.trusted_proxies = std::sync::Arc::new(proxies))
    }

    /// Limits store requests per client address (see [`ratelimit`]).
    pub fn with_rate_limits(self, limits: ratelimit::RateLimits) -> Self {
        self.with(|s| s.rate_limits = std::sync::Arc::new(ratelimit::Limiters::new(limits)))
    }

    /// Answers `503` to a request not done within `timeout`.
    pub fn with_request_timeout(self, timeout: Duration) -> Self {
        self.with(|s| s.request_timeout = timeout)
    }

    /// Runs the customers module with `settings` (session lifetime, password pool).
    pub fn with_customer_settings(self, settings: backroom_customers::Settings) -> Self {
        self.with(|s| {
            s.customers = backroom_customers::Customers::new(s.db.clone(), s.vault.clone(), settings);
        })
    }

    /// Asks carriers for shipping quotes with `carriers` (private addresses refused by default).
    pub fn with_carriers(self, carriers: backroom_pricing::Carriers) -> Self {
        self.with(|s| s.carriers = carriers)
    }

    /// Whether `/metrics` is served by this router (`false` when it has a listener of its own).
    pub fn with_metrics_here(self, here: bool) -> Self {
        self.with(|s| s.metrics_here = here)
    }

    /// Sends outgoing webhooks with `settings` (addresses allowed, retry delays, …).
    pub fn with_webhook_settings(self, settings: backroom_integrations::Settings) -> Self {
        self.with(|s| {
            s.webhooks = backroom_integrations::Webhooks::new(
                s.db.clone(),
                s.vault.clone(),
                Orders::new(s.db.clone(), s.vault.clone()),
                settings,
            );
        })
    }

    /// Links the product feed to this storefront (a base URL, without a trailing `/`).
    pub fn with_storefront_url(self, url: &str) -> Self {
        self.with(|s| s.storefront_url = url.trim_end_matches('/').into())
    }

    /// Checks Stripe's webhooks with this signing secret (`whsec_…`).
    pub fn with_stripe_webhook_secret(self, secret: Option<backroom_payments::stripe::Secret>) -> Self {
        self.with(|s| s.stripe_webhook_secret = secret)
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".into()),
                    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("db_writer_batch_size".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("db_writer_batch_seconds".into()),
                    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("webhook_delivery_lag_seconds".into()),
                    &[0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 1800.0, 7200.0, 36000.0, 86400.0],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("db_writer_commit_seconds".into()),
                    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0],
                )
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (several apps in one test process):
            // then this handle still renders our own recorder's view, which is what we serve.
            if metrics::set_global_recorder(recorder).is_ok() {
                telemetry::describe();
            }
            handle
        })
        .clone()
}

/// The whole HTTP application: every route of [`routes::all`] (and no other), behind the
/// guard, the limits and the rest of the layers.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let routes = routes::all().into_parts();
    routes
        .router
        .fallback(|| async { ApiError::RouteNotFound })
        // Inside the guard, which hands it the caller and the route's action.
        .layer(middleware::from_fn_with_state(state.clone(), audit::layer))
        .layer(middleware::from_fn_with_state(access::Guard::new(state.clone(), routes.access), access::guard))
        .layer(middleware::from_fn(nul_in_path))
        .layer(middleware::from_fn_with_state(state.clone(), cache::layer))
        .layer(middleware::from_fn_with_state(state.request_timeout, deadline))
        .layer(middleware::from_fn(track))
        .layer(middleware::from_fn(problems_only))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a handler panicked");
            ApiError::Domain(backroom_kernel::Error::internal("panic")).into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        // Before anything costs work, but inside the request id: a 429 carries it too.
        .layer(middleware::from_fn_with_state(state.rate_limits.clone(), ratelimit::layer))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        // Outside everything that logs or echoes a header: see `pci` and `edge`.
        .layer(middleware::from_fn(pci::refuse_card_headers))
        .layer(middleware::from_fn(edge::limits))
        .layer(middleware::from_fn_with_state(edge::Cors::new(state.cors_origins.clone()), edge::cors))
        .layer(middleware::from_fn(edge::secure_headers))
        // Outermost: every layer inside may ask who the client is.
        .layer(middleware::from_fn_with_state(state.trusted_proxies.clone(), client::layer))
        .with_state(state)
}

/// The router of the metrics listener (`BACKROOM_METRICS_LISTEN`): `/metrics` alone.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(|State(s): State<AppState>| async move { ops::metrics_text(&s) }))
        .fallback(|| async { ApiError::RouteNotFound })
        .layer(middleware::from_fn(edge::secure_headers))
        .with_state(state)
}

/// The request deadline (`BACKROOM_REQUEST_TIMEOUT`): a request not answered in time, body
/// reading included, is dropped and answered `503 request_timeout`. Writes already queued run
/// to their end in the writer (a checkout cut here is settled by recovery).
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            metrics::counter!("http_request_timeouts_total").increment(1);
            tracing::warn!(?limit, "request ran past its deadline");
            ApiError::custom(
                backroom_kernel::Code::RequestTimeout,
                "the request was not answered in time (BACKROOM_REQUEST_TIMEOUT); retry",
                serde_json::Value::Null,
            )
            .into_response()
        }
    }
}

/// No id or handle holds U+0000 (which PostgreSQL cannot even compare), so a path with `%00`
/// names nothing: `404 not_found` before any handler runs, on both databases alike.
async fn nul_in_path(req: Request, next: Next) -> Response {
    if req.uri().path().contains("%00") {
        return ApiError::Domain(backroom_kernel::Error::not_found("resource")).into_response();
    }
    next.run(req).await
}

/// Records request count and latency per matched route.
async fn track(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    let elapsed = start.elapsed();
    let status = res.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    if elapsed > Duration::from_secs(1) {
        tracing::warn!(ms = elapsed.as_millis() as u64, "slow request");
    }
    res
}

/// The safety net: any error response not already problem+json (axum's own rejections,
/// 405 from the router) is rewritten as one, keeping its status and headers (`Allow`).
async fn problems_only(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_problem =
        res.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return res;
    }
    let err = match status {
        StatusCode::NOT_FOUND => ApiError::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ApiError::HeaderFieldsTooLarge,
        StatusCode::URI_TOO_LONG => ApiError::UriTooLong,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        StatusCode::BAD_REQUEST => ApiError::MalformedJson("the request could not be read".into()),
        s if s.is_client_error() => {
            ApiError::Domain(backroom_kernel::Error::field("request", s.canonical_reason().unwrap_or("bad request")))
        }
        StatusCode::SERVICE_UNAVAILABLE => ApiError::Domain(backroom_kernel::Error::Unavailable(
            format!("status {status} without a problem body").into(),
        )),
        _ => ApiError::Domain(backroom_kernel::Error::internal(format!("status {status} without a problem body"))),
    };
    let (mut parts, _) = res.into_parts();
    let new = err.into_response();
    let (new_parts, body) = new.into_parts();
    parts.status = new_parts.status;
    parts.headers.insert(header::CONTENT_TYPE, new_parts.headers[header::CONTENT_TYPE].clone());
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

impl AppState {
    /// What a shipping option costs a cart now, before its `free_over`, and whether the price
    /// is an estimate (a carrier that did not answer in time).
    pub async fn quote_shipping(
        &self,
        cart: &backroom_cart::Cart,
        option: &backroom_pricing::ShippingOption,
    ) -> (backroom_kernel::Money, bool) {
        use backroom_pricing::carrier::{Destination, QuoteItem};
        // A carrier quotes a destination: without an address there is none to ask about.
        let Some(address) = cart.shipping_address.as_ref().filter(|_| option.carrier.is_some()) else {
            return (option.price, option.carrier.is_some());
        };
        let dest = Destination {
            currency: cart.currency,
            country: address.country.clone(),
            postal_code: address.postal_code.clone(),
            items: cart
                .items
                .iter()
                .map(|i| QuoteItem { sku: i.sku.clone(), quantity: i.quantity, weight_g: i.weight_g })
                .collect(),
        };
        let quote = self.carriers.quote(option, &dest).await;
        (quote.price, quote.estimated)
    }
}
