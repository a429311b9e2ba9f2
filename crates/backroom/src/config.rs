//! Settings: defaults in code, then an optional `backroom.toml`, then `BACKROOM_*`
//! environment variables, then flags. Checked at start; a bad value stops the process with
//! one line that names the setting, where it came from, and what is expected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Settings given as flags (each may be absent).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// Address to listen on [env: BACKROOM_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// Data directory [env: BACKROOM_DATA_DIR] [default: ./backroom-data]
    #[arg(long, global = true)]
    pub data_dir: Option<String>,
    /// Database URL: sqlite:… or postgres://… [env: BACKROOM_DATABASE_URL] [default: SQLite in the data directory]
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Settings file [env: BACKROOM_CONFIG] [default: ./backroom.toml when it exists]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Payment providers to enable, a comma list of: test, stripe [env: BACKROOM_PAYMENT_PROVIDERS] [default: none]
    #[arg(long, global = true)]
    pub payment_providers: Option<String>,
    /// A second address that serves /metrics, which the main address then does not [env: BACKROOM_METRICS_LISTEN] [default: none]
    #[arg(long, global = true)]
    pub metrics_listen: Option<String>,
    /// Browser origins allowed to call the API, a comma list of scheme://host[:port] [env: BACKROOM_CORS_ORIGINS] [default: none]
    #[arg(long, global = true)]
    pub cors_origins: Option<String>,
    /// Proxies whose X-Forwarded-For names the client, a comma list of IP addresses and CIDR ranges [env: BACKROOM_TRUSTED_PROXIES] [default: none]
    #[arg(long, global = true)]
    pub trusted_proxies: Option<String>,
    /// Per-client rate limits on /store routes: on or off (off for load tests and benchmarks) [env: BACKROOM_RATE_LIMITS] [default: on]
    #[arg(long, global = true)]
    pub rate_limits: Option<String>,
    /// Deadline of every payment provider call [env: BACKROOM_PROVIDER_TIMEOUT] [default: 10s]
    #[arg(long, global = true)]
    pub provider_timeout: Option<String>,
    /// Time a client has to send a request's headers; also the idle keep-alive limit [env: BACKROOM_HEADER_TIMEOUT] [default: 10s]
    #[arg(long, global = true)]
    pub header_timeout: Option<String>,
    /// Time a request has to be answered, body included, before 503 request_timeout [env: BACKROOM_REQUEST_TIMEOUT] [default: 30s]
    #[arg(long, global = true)]
    pub request_timeout: Option<String>,
    /// Most open client connections (also capped below the file-descriptor limit) [env: BACKROOM_MAX_CONNECTIONS] [default: 10000]
    #[arg(long, global = true)]
    pub max_connections: Option<String>,
    /// Most requests in flight before 503 overloaded [env: BACKROOM_MAX_IN_FLIGHT] [default: 256 per CPU core]
    #[arg(long, global = true)]
    pub max_in_flight: Option<String>,
    /// Most write jobs the group-commit writer puts in one transaction; 1 turns group commit off [env: BACKROOM_WRITER_MAX_BATCH] [default: 512]
    // Not global: `backroom bench` has a flag of this name for its server child.
    #[arg(long)]
    pub writer_max_batch: Option<String>,
    /// Most new write jobs waiting before 503 overloaded [env: BACKROOM_WRITER_QUEUE] [default: 4096]
    // Not global: `backroom bench` has a flag of this name for its server child.
    #[arg(long)]
    pub writer_queue: Option<String>,
    /// A write job's deadline from being queued [env: BACKROOM_WRITER_JOB_TIMEOUT] [default: 5s]
    #[arg(long, global = true)]
    pub writer_job_timeout: Option<String>,
    /// How often payment recovery looks for unsettled checkouts [env: BACKROOM_RECOVERY_INTERVAL] [default: 5s]
    #[arg(long, global = true)]
    pub recovery_interval: Option<String>,
    /// How old an unsettled payment attempt must be before recovery settles it [env: BACKROOM_RECOVERY_GRACE] [default: 30s]
    #[arg(long, global = true)]
    pub recovery_grace: Option<String>,
    /// How long a checkout's stock reservation is held [env: BACKROOM_RESERVATION_TTL] [default: 15m]
    #[arg(long, global = true)]
    pub reservation_ttl: Option<String>,
    /// How long a customer's sign-in token works [env: BACKROOM_CUSTOMER_SESSION_TTL] [default: 30d]
    #[arg(long, global = true)]
    pub customer_session_ttl: Option<String>,
    /// Whether webhook and carrier-quote URLs may be on loopback, private and link-local addresses: true or false [env: BACKROOM_WEBHOOKS_ALLOW_PRIVATE] [default: false]
    #[arg(long, global = true)]
    pub webhooks_allow_private: Option<String>,
    /// The storefront's base URL; the product feed links to <url>/products/<handle> [env: BACKROOM_STOREFRONT_URL] [default: http://localhost:3000]
    #[arg(long, global = true)]
    pub storefront_url: Option<String>,
}

/// What `--help` says of the settings that are never flags.
pub const ENV_ONLY_HELP: &str = "Environment only:\n  \
    BACKROOM_ADMIN_TOKEN  A bootstrap key with the owner role (16-200 characters); a secret, so never a flag\n  \
    BACKROOM_MASTER_KEY   32 bytes in base64 that wrap the keys of personal data; without it, a key file is\n  \
                          created in the data directory on first start (back it up: docs/api.md#the-master-key)\n  \
    BACKROOM_LOG          Log filter, such as info or backroom=debug,sqlx=warn [default: info]\n  \
    BACKROOM_STRIPE_SECRET_KEY      Stripe's secret key (sk_live_… or sk_test_…); required when stripe is enabled\n  \
    BACKROOM_STRIPE_WEBHOOK_SECRET  The signing secret (whsec_…) of the Stripe webhook endpoint /webhooks/stripe\n  \
    BACKROOM_STRIPE_API_BASE        Where Stripe's API is [default: https://api.stripe.com] (docs/payments.md)\n  \
    BACKROOM_RISK         Risk scoring: on or off [default: on]; its thresholds (docs/risk.md#settings):\n  \
                          BACKROOM_RISK_MAX_DECLINES, BACKROOM_RISK_MAX_ATTEMPTS, BACKROOM_RISK_MAX_CARDS,\n  \
                          BACKROOM_RISK_REVIEW_ABOVE, BACKROOM_RISK_REVIEW_SCORE, BACKROOM_RISK_BLOCK_SCORE,\n  \
                          BACKROOM_RISK_COUNTRY_HEADER\n  \
    BACKROOM_WEBHOOK_RETRY_DELAYS   Waits between webhook attempts, such as 5s,5m,30m [default: 5s,5m,30m,2h,5h,10h,10h]\n  \
    BACKROOM_WEBHOOK_DISABLE_AFTER  A webhook endpoint failing this long is disabled [default: 5d]\n  \
    BACKROOM_WEBHOOK_LEASE          How long a worker holds a claimed webhook delivery [default: 60s]\n\n\
    Every flag above can also be set in backroom.toml (its long name with _ for -) or as BACKROOM_<NAME>;\n\
    flags win over the environment, which wins over the file. See docs/api.md#settings.";

/// The keys `backroom.toml` may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    recovery_interval: Option<String>,
    recovery_grace: Option<String>,
    reservation_ttl: Option<String>,
    writer_max_batch: Option<i64>,
    writer_queue: Option<i64>,
    writer_job_timeout: Option<String>,
    payment_providers: Option<String>,
    provider_timeout: Option<String>,
    header_timeout: Option<String>,
    request_timeout: Option<String>,
    cors_origins: Option<String>,
    trusted_proxies: Option<String>,
    rate_limits: Option<String>,
    metrics_listen: Option<String>,
    max_connections: Option<i64>,
    max_in_flight: Option<i64>,
    customer_session_ttl: Option<String>,
    webhooks_allow_private: Option<bool>,
    storefront_url: Option<String>,
}

/// Checked settings.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// `BACKROOM_ADMIN_TOKEN`: works as an owner API key. Never printed.
    pub admin_token: Option<String>,
    /// `BACKROOM_MASTER_KEY` (base64 of 32 bytes): wraps the data keys of personal data. When
    /// unset, a key file in the data directory is used (created on first start). Never printed.
    pub master_key: Option<String>,
    /// Recovery interval, grace period and reservation TTL.
    pub checkout: backroom_checkout::Settings,
    /// Most write jobs the group-commit writer puts in one transaction
    /// (`BACKROOM_WRITER_MAX_BATCH`, 1–10000; 1 turns group commit off).
    pub writer_max_batch: usize,
    /// Most new write jobs waiting for the writer before it sheds load with `503 overloaded`
    /// (`BACKROOM_WRITER_QUEUE`, 1–1000000).
    pub writer_queue: usize,
    /// A write job's deadline from being queued (`BACKROOM_WRITER_JOB_TIMEOUT`).
    pub writer_job_timeout: Duration,
    /// Enabled payment providers (`BACKROOM_PAYMENT_PROVIDERS`); none by default.
    pub payment_providers: Vec<String>,
    /// Deadline of every payment provider call (`BACKROOM_PROVIDER_TIMEOUT`).
    pub provider_timeout: Duration,
    /// Time a connection has to send a whole request head, and the longest an idle
    /// keep-alive connection stays open (`BACKROOM_HEADER_TIMEOUT`).
    pub header_timeout: Duration,
    /// Time a request has to be answered, body reading included; past it `503`
    /// (`BACKROOM_REQUEST_TIMEOUT`).
    pub request_timeout: Duration,
    /// Browser origins allowed to call the API (`BACKROOM_CORS_ORIGINS`), exact
    /// `scheme://host[:port]` strings.
    pub cors_origins: Vec<String>,
    /// Proxies whose `X-Forwarded-For` names the client (`BACKROOM_TRUSTED_PROXIES`); none by
    /// default, so every client is its socket's peer.
    pub trusted_proxies: backroom_api::client::TrustedProxies,
    /// Per-client rate limits on `/store` (`BACKROOM_RATE_LIMITS`, `on` or `off`); the
    /// limits themselves are not operator settings (tests shrink them).
    pub rate_limits: backroom_api::ratelimit::RateLimits,
    /// Where `/metrics` is served instead of the main address (`BACKROOM_METRICS_LISTEN`).
    pub metrics_listen: Option<SocketAddr>,
    /// Most open client connections (`BACKROOM_MAX_CONNECTIONS`); also capped below the
    /// process's file-descriptor limit at start.
    pub max_connections: usize,
    /// Most requests in flight at once (`BACKROOM_MAX_IN_FLIGHT`); past it `503 overloaded`.
    pub max_in_flight: usize,
    /// The customers module: how long a customer's session lasts
    /// (`BACKROOM_CUSTOMER_SESSION_TTL`), and its password-hashing pool.
    pub customers: backroom_customers::Settings,
    /// How often this process's search index reads new outbox events. Not an operator
    /// setting: tests shorten it.
    pub search_follow_interval: Duration,
    /// Webhook and carrier-quote URLs may be on loopback, private and link-local addresses
    /// (`BACKROOM_WEBHOOKS_ALLOW_PRIVATE`); `false` by default, which refuses them.
    pub webhooks_allow_private: bool,
    /// The storefront's base URL without a trailing `/` (`BACKROOM_STOREFRONT_URL`); the
    /// product feed links to `{storefront_url}/products/{handle}`.
    pub storefront_url: String,
    /// Risk scoring (`BACKROOM_RISK`, `BACKROOM_RISK_*`; environment only, docs/risk.md).
    pub risk: backroom_risk::Settings,
    /// The waits between webhook attempts (`BACKROOM_WEBHOOK_RETRY_DELAYS`; environment only,
    /// docs/webhooks.md).
    pub webhook_retry_delays: Vec<Duration>,
    /// A webhook endpoint whose every attempt failed this long is disabled
    /// (`BACKROOM_WEBHOOK_DISABLE_AFTER`; environment only).
    pub webhook_disable_after: Duration,
    /// How long a worker holds a claimed webhook delivery, and an outbox event it turns into
    /// deliveries (`BACKROOM_WEBHOOK_LEASE`; environment only): what a worker that died
    /// claimed is taken up again after it.
    pub webhook_lease: Duration,
    /// Stripe's secret API key (`BACKROOM_STRIPE_SECRET_KEY`); needed when `stripe` is
    /// enabled. Never printed.
    pub stripe_secret_key: Option<backroom_payments::stripe::Secret>,
    /// The signing secret of Stripe's webhook endpoint (`BACKROOM_STRIPE_WEBHOOK_SECRET`).
    /// Never printed.
    pub stripe_webhook_secret: Option<backroom_payments::stripe::Secret>,
    /// Where Stripe's API is (`BACKROOM_STRIPE_API_BASE`); tests point it at a local fake.
    pub stripe_api_base: String,
}

/// Defaults of the HTTP edge.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_CONNECTIONS: usize = 10_000;
/// How often the search index follows the outbox.
pub const SEARCH_FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

impl Default for Settings {
    /// The settings with nothing configured (what `serve` runs with on a fresh machine,
    /// minus the environment): tests and benchmarks start from here.
    fn default() -> Self {
        let data_dir = PathBuf::from("./backroom-data");
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: backroom_db::sqlite_url_in(&data_dir),
            data_dir,
            admin_token: None,
            master_key: None,
            checkout: backroom_checkout::Settings::default(),
            writer_max_batch: backroom_db::writer::MAX_BATCH,
            writer_queue: backroom_db::writer::QUEUE,
            writer_job_timeout: backroom_db::writer::JOB_TIMEOUT,
            payment_providers: Vec::new(),
            provider_timeout: backroom_payments::DEFAULT_TIMEOUT,
            header_timeout: HEADER_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            cors_origins: Vec::new(),
            trusted_proxies: backroom_api::client::TrustedProxies::none(),
            rate_limits: backroom_api::ratelimit::RateLimits::default(),
            metrics_listen: None,
            max_connections: MAX_CONNECTIONS,
            max_in_flight: crate::server::default_max_in_flight(),
            customers: backroom_customers::Settings::default(),
            search_follow_interval: SEARCH_FOLLOW_INTERVAL,
            webhooks_allow_private: false,
            storefront_url: backroom_api::DEFAULT_STOREFRONT_URL.into(),
            risk: backroom_risk::Settings::default(),
            webhook_retry_delays: backroom_integrations::RETRY_DELAYS.to_vec(),
            webhook_disable_after: backroom_integrations::Settings::default().disable_after,
            webhook_lease: backroom_integrations::Settings::default().lease,
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_api_base: backroom_payments::stripe::DEFAULT_API_BASE.into(),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact(&self.database_url))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("master_key", &self.master_key.as_ref().map(|_| "<set>"))
            .field("checkout", &self.checkout)
            .field("payment_providers", &self.payment_providers)
            .field("provider_timeout", &self.provider_timeout)
            .field("header_timeout", &self.header_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("cors_origins", &self.cors_origins)
            .field("trusted_proxies", &self.trusted_proxies.nets())
            .field("rate_limits", &self.rate_limits)
            .field("metrics_listen", &self.metrics_listen)
            .field("max_connections", &self.max_connections)
            .field("max_in_flight", &self.max_in_flight)
            .field("customers", &self.customers)
            .field("webhooks_allow_private", &self.webhooks_allow_private)
            .field("risk", &self.risk)
            .field("webhook_retry_delays", &self.webhook_retry_delays)
            .field("webhook_disable_after", &self.webhook_disable_after)
            .field("webhook_lease", &self.webhook_lease)
            .field("stripe_secret_key", &self.stripe_secret_key.as_ref().map(|_| "<set>"))
            .field("stripe_webhook_secret", &self.stripe_webhook_secret.as_ref().map(|_| "<set>"))
            .field("stripe_api_base", &self.stripe_api_base)
            .finish()
    }
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Where a value came from, for error messages.
fn pick(
    flag: &Option<String>,
    env_name: &str,
    file: &Option<String>,
    default: Option<String>,
) -> Option<(String, String)> {
    if let Some(v) = flag {
        return Some((
            v.clone(),
            format!("--{}", env_name.trim_start_matches("BACKROOM_").to_lowercase().replace('_', "-")),
        ));
    }
    if let Ok(v) = std::env::var(env_name) {
        return Some((v, env_name.to_owned()));
    }
    if let Some(v) = file {
        return Some((v.clone(), format!("backroom.toml {}", env_name.trim_start_matches("BACKROOM_").to_lowercase())));
    }
    default.map(|d| (d, "default".to_owned()))
}

impl Settings {
    /// Resolves and checks every setting. The error is one line for the operator.
    pub fn resolve(flags: &Flags) -> Result<Settings, String> {
        let file = load_file(flags)?;
        let (listen_raw, src) =
            pick(&flags.listen, "BACKROOM_LISTEN", &file.listen, Some("127.0.0.1:8080".into())).expect("has a default");
        let listen: SocketAddr = listen_raw.trim().parse().map_err(|_| {
            format!("invalid listen address `{listen_raw}` (from {src}): expected host:port such as 127.0.0.1:8080")
        })?;
        let (data_dir, src) =
            pick(&flags.data_dir, "BACKROOM_DATA_DIR", &file.data_dir, Some("./backroom-data".into()))
                .expect("has a default");
        if data_dir.trim().is_empty() {
            return Err(format!("invalid data directory (from {src}): must not be empty"));
        }
        let data_dir = PathBuf::from(data_dir);
        let database_url = match pick(&flags.database_url, "BACKROOM_DATABASE_URL", &file.database_url, None) {
            Some((url, src)) => {
                backroom_db::check_url(&url)
                    .map_err(|e| format!("invalid database URL `{}` (from {src}): {e}", redact(&url)))?;
                url
            }
            None => backroom_db::sqlite_url_in(&data_dir),
        };
        let admin_token = std::env::var("BACKROOM_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
        if let Some(t) = &admin_token
            && (t.len() < 16 || t.len() > 200 || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err("invalid BACKROOM_ADMIN_TOKEN: must be 16–200 characters without spaces".into());
        }
        let master_key = std::env::var("BACKROOM_MASTER_KEY").ok().filter(|t| !t.trim().is_empty());
        if let Some(k) = &master_key
            && backroom_vault::MasterKey::from_base64(k).is_err()
        {
            return Err(
                "invalid BACKROOM_MASTER_KEY: must be 32 bytes in base64 (make one with `openssl rand -base64 32`)"
                    .into(),
            );
        }
        let defaults = backroom_checkout::Settings::default();
        let duration = |flag: &Option<String>, env: &str, file: &Option<String>, default: Duration, min: Duration| {
            let Some((raw, src)) = pick(flag, env, file, None) else { return Ok(default) };
            let d = humantime::parse_duration(raw.trim())
                .map_err(|e| format!("invalid duration `{raw}` (from {src}): {e}; write it like 5s or 500ms"))?;
            if d < min {
                return Err(format!(
                    "invalid duration `{raw}` (from {src}): must be at least {}",
                    humantime::format_duration(min)
                ));
            }
            Ok(d)
        };
        let checkout = backroom_checkout::Settings {
            recovery_interval: duration(
                &flags.recovery_interval,
                "BACKROOM_RECOVERY_INTERVAL",
                &file.recovery_interval,
                defaults.recovery_interval,
                Duration::from_millis(10),
            )?,
            recovery_grace: duration(
                &flags.recovery_grace,
                "BACKROOM_RECOVERY_GRACE",
                &file.recovery_grace,
                defaults.recovery_grace,
                Duration::ZERO,
            )?,
            reservation_ttl: duration(
                &flags.reservation_ttl,
                "BACKROOM_RESERVATION_TTL",
                &file.reservation_ttl,
                defaults.reservation_ttl,
                Duration::from_secs(1),
            )?,
        };
        let writer_max_batch = match pick(
            &flags.writer_max_batch,
            "BACKROOM_WRITER_MAX_BATCH",
            &file.writer_max_batch.map(|n| n.to_string()),
            None,
        ) {
            None => backroom_db::writer::MAX_BATCH,
            Some((raw, src)) => raw.trim().parse().ok().filter(|n| (1..=10_000).contains(n)).ok_or_else(|| {
                format!("invalid writer batch size `{raw}` (from {src}): must be a whole number from 1 to 10000")
            })?,
        };
        let number = |flag: &Option<String>,
                      env: &str,
                      file: Option<i64>,
                      default: usize,
                      max: usize|
         -> Result<usize, String> {
            match pick(flag, env, &file.map(|n| n.to_string()), None) {
                None => Ok(default),
                Some((raw, src)) => raw.trim().parse().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                    format!("invalid value `{raw}` (from {src}): must be a whole number from 1 to {max}")
                }),
            }
        };
        let writer_queue = number(
            &flags.writer_queue,
            "BACKROOM_WRITER_QUEUE",
            file.writer_queue,
            backroom_db::writer::QUEUE,
            1_000_000,
        )?;
        let max_connections = number(
            &flags.max_connections,
            "BACKROOM_MAX_CONNECTIONS",
            file.max_connections,
            MAX_CONNECTIONS,
            1_000_000,
        )?;
        let max_in_flight = number(
            &flags.max_in_flight,
            "BACKROOM_MAX_IN_FLIGHT",
            file.max_in_flight,
            crate::server::default_max_in_flight(),
            1_000_000,
        )?;
        let second = Duration::from_millis(100);
        let writer_job_timeout = duration(
            &flags.writer_job_timeout,
            "BACKROOM_WRITER_JOB_TIMEOUT",
            &file.writer_job_timeout,
            backroom_db::writer::JOB_TIMEOUT,
            Duration::from_millis(10),
        )?;
        let provider_timeout = duration(
            &flags.provider_timeout,
            "BACKROOM_PROVIDER_TIMEOUT",
            &file.provider_timeout,
            backroom_payments::DEFAULT_TIMEOUT,
            second,
        )?;
        let header_timeout =
            duration(&flags.header_timeout, "BACKROOM_HEADER_TIMEOUT", &file.header_timeout, HEADER_TIMEOUT, second)?;
        let request_timeout = duration(
            &flags.request_timeout,
            "BACKROOM_REQUEST_TIMEOUT",
            &file.request_timeout,
            REQUEST_TIMEOUT,
            second,
        )?;
        let customers = backroom_customers::Settings {
            session_ttl: duration(
                &flags.customer_session_ttl,
                "BACKROOM_CUSTOMER_SESSION_TTL",
                &file.customer_session_ttl,
                backroom_customers::SESSION_TTL,
                Duration::from_secs(1),
            )?,
            ..backroom_customers::Settings::default()
        };
        let payment_providers =
            match pick(&flags.payment_providers, "BACKROOM_PAYMENT_PROVIDERS", &file.payment_providers, None) {
                None => Vec::new(),
                Some((raw, src)) => {
                    parse_providers(&raw).map_err(|e| format!("invalid payment providers `{raw}` (from {src}): {e}"))?
                }
            };
        let cors_origins = match pick(&flags.cors_origins, "BACKROOM_CORS_ORIGINS", &file.cors_origins, None) {
            None => Vec::new(),
            Some((raw, src)) => {
                parse_origins(&raw).map_err(|e| format!("invalid CORS origins `{raw}` (from {src}): {e}"))?
            }
        };
        let trusted_proxies =
            match pick(&flags.trusted_proxies, "BACKROOM_TRUSTED_PROXIES", &file.trusted_proxies, None) {
                None => backroom_api::client::TrustedProxies::none(),
                Some((raw, src)) => backroom_api::client::TrustedProxies::parse(&raw)
                    .map_err(|e| format!("invalid trusted proxies `{raw}` (from {src}): {e}"))?,
            };
        let rate_limits = match pick(&flags.rate_limits, "BACKROOM_RATE_LIMITS", &file.rate_limits, None) {
            None => backroom_api::ratelimit::RateLimits::default(),
            Some((raw, src)) => match raw.trim() {
                "on" => backroom_api::ratelimit::RateLimits::default(),
                "off" => backroom_api::ratelimit::RateLimits::off(),
                _ => return Err(format!("invalid rate limits `{raw}` (from {src}): expected on or off")),
            },
        };
        let metrics_listen = match pick(&flags.metrics_listen, "BACKROOM_METRICS_LISTEN", &file.metrics_listen, None) {
            None => None,
            Some((raw, src)) => Some(raw.trim().parse::<SocketAddr>().map_err(|_| {
                format!(
                    "invalid metrics listen address `{raw}` (from {src}): expected host:port such as 127.0.0.1:9090"
                )
            })?),
        };
        let webhooks_allow_private = match pick(
            &flags.webhooks_allow_private,
            "BACKROOM_WEBHOOKS_ALLOW_PRIVATE",
            &file.webhooks_allow_private.map(|b| b.to_string()),
            None,
        ) {
            None => false,
            Some((raw, src)) => match raw.trim() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(format!("invalid webhooks-allow-private `{raw}` (from {src}): expected true or false"));
                }
            },
        };
        let (storefront_url, src) = pick(
            &flags.storefront_url,
            "BACKROOM_STOREFRONT_URL",
            &file.storefront_url,
            Some(backroom_api::DEFAULT_STOREFRONT_URL.into()),
        )
        .expect("has a default");
        let storefront_url = storefront_url.trim().trim_end_matches('/').to_owned();
        let scheme_ok = storefront_url.starts_with("http://") || storefront_url.starts_with("https://");
        if !scheme_ok || storefront_url.contains(char::is_whitespace) || storefront_url.len() > 500 {
            return Err(format!(
                "invalid storefront URL `{storefront_url}` (from {src}): expected http:// or https:// and a host, such as https://shop.example.com"
            ));
        }
        if metrics_listen == Some(listen) {
            return Err(format!("the metrics listen address {listen} must differ from the listen address"));
        }
        let risk = risk_settings(&|name| std::env::var(name).ok())?;
        let (webhook_retry_delays, webhook_disable_after, webhook_lease) =
            webhook_settings(&|name| std::env::var(name).ok())?;
        let env_secret = |name: &str| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty()).map(backroom_payments::stripe::Secret::new)
        };
        let stripe_secret_key = env_secret("BACKROOM_STRIPE_SECRET_KEY");
        let stripe_webhook_secret = env_secret("BACKROOM_STRIPE_WEBHOOK_SECRET");
        let stripe_api_base = std::env::var("BACKROOM_STRIPE_API_BASE")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| backroom_payments::stripe::DEFAULT_API_BASE.into());
        check_stripe(&payment_providers, &stripe_secret_key, &stripe_webhook_secret, &stripe_api_base)?;
        Ok(Settings {
            listen,
            data_dir,
            database_url,
            admin_token,
            master_key,
            checkout,
            writer_max_batch,
            writer_queue,
            writer_job_timeout,
            payment_providers,
            provider_timeout,
            header_timeout,
            request_timeout,
            cors_origins,
            trusted_proxies,
            rate_limits,
            metrics_listen,
            max_connections,
            max_in_flight,
            customers,
            search_follow_interval: SEARCH_FOLLOW_INTERVAL,
            webhooks_allow_private,
            storefront_url,
            risk,
            webhook_retry_delays,
            webhook_disable_after,
            webhook_lease,
            stripe_secret_key,
            stripe_webhook_secret,
            stripe_api_base,
        })
    }

    /// The settings of outgoing webhooks.
    pub fn webhook_settings(&self) -> backroom_integrations::Settings {
        backroom_integrations::Settings {
            allow_private: self.webhooks_allow_private,
            retry_delays: self.webhook_retry_delays.clone(),
            disable_after: self.webhook_disable_after,
            lease: self.webhook_lease,
            ..Default::default()
        }
    }

    /// Stripe's settings, when its secret key is set.
    pub fn stripe_config(&self) -> Option<backroom_payments::stripe::StripeConfig> {
        Some(backroom_payments::stripe::StripeConfig {
            secret_key: self.stripe_secret_key.clone()?,
            webhook_secret: self.stripe_webhook_secret.clone(),
            api_base: self.stripe_api_base.clone(),
        })
    }

    /// Creates the data directory when the database lives in it.
    pub fn ensure_data_dir(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", self.data_dir.display()))
    }
}

/// The webhook settings from the environment (`env` reads a variable): the retry delays, a
/// comma-separated list of durations (`5s,5m,30m`; `none` for no retry), and how long an
/// endpoint may fail before it is disabled, and how long a claimed delivery is held.
pub fn webhook_settings(env: &dyn Fn(&str) -> Option<String>) -> Result<(Vec<Duration>, Duration, Duration), String> {
    let delays = match env("BACKROOM_WEBHOOK_RETRY_DELAYS").filter(|v| !v.trim().is_empty()) {
        None => backroom_integrations::RETRY_DELAYS.to_vec(),
        Some(raw) if raw.trim() == "none" => Vec::new(),
        Some(raw) => {
            let delays = raw
                .split(',')
                .map(|d| humantime::parse_duration(d.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    format!("invalid webhook retry delays `{raw}` (from BACKROOM_WEBHOOK_RETRY_DELAYS): {e}; expected a list such as 5s,5m,30m")
                })?;
            if delays.len() > 20 || delays.iter().any(|d| *d > Duration::from_secs(7 * 24 * 3600)) {
                return Err(format!(
                    "invalid webhook retry delays `{raw}` (from BACKROOM_WEBHOOK_RETRY_DELAYS): at most 20, each at most 7d"
                ));
            }
            delays
        }
    };
    let disable_after = match env("BACKROOM_WEBHOOK_DISABLE_AFTER").filter(|v| !v.trim().is_empty()) {
        None => backroom_integrations::Settings::default().disable_after,
        Some(raw) => humantime::parse_duration(raw.trim()).map_err(|e| {
            format!("invalid webhook disable-after `{raw}` (from BACKROOM_WEBHOOK_DISABLE_AFTER): {e}; expected a duration such as 5d")
        })?,
    };
    let lease = match env("BACKROOM_WEBHOOK_LEASE").filter(|v| !v.trim().is_empty()) {
        None => backroom_integrations::Settings::default().lease,
        Some(raw) => humantime::parse_duration(raw.trim())
            .ok()
            .filter(|d| *d >= Duration::from_secs(1))
            .ok_or_else(|| format!("invalid webhook lease `{raw}` (from BACKROOM_WEBHOOK_LEASE): expected a duration of at least 1s, such as 60s"))?,
    };
    Ok((delays, disable_after, lease))
}

/// The risk settings from the environment (`env` reads a variable; every one is optional),
/// each checked: docs/risk.md lists them.
pub fn risk_settings(env: &dyn Fn(&str) -> Option<String>) -> Result<backroom_risk::Settings, String> {
    let mut s = backroom_risk::Settings::default();
    if let Some(raw) = env("BACKROOM_RISK") {
        s.enabled = match raw.trim() {
            "on" => true,
            "off" => false,
            _ => return Err(format!("invalid risk scoring `{raw}` (from BACKROOM_RISK): expected on or off")),
        };
    }
    let count =
        |name: &str, default: u32| -> Result<u32, String> {
            match env(name) {
                None => Ok(default),
                Some(raw) => raw.trim().parse().ok().filter(|n| (1..=100_000).contains(n)).ok_or_else(|| {
                    format!("invalid value `{raw}` (from {name}): must be a whole number from 1 to 100000")
                }),
            }
        };
    s.max_declines = count("BACKROOM_RISK_MAX_DECLINES", s.max_declines)?;
    s.max_attempts = count("BACKROOM_RISK_MAX_ATTEMPTS", s.max_attempts)?;
    s.max_cards = count("BACKROOM_RISK_MAX_CARDS", s.max_cards)?;
    let score =
        |name: &str, default: u8| -> Result<u8, String> {
            match env(name) {
                None => Ok(default),
                Some(raw) => raw.trim().parse().ok().filter(|n| (1..=100).contains(n)).ok_or_else(|| {
                    format!("invalid score `{raw}` (from {name}): must be a whole number from 1 to 100")
                }),
            }
        };
    s.review_score = score("BACKROOM_RISK_REVIEW_SCORE", s.review_score)?;
    s.block_score = score("BACKROOM_RISK_BLOCK_SCORE", s.block_score)?;
    if let Some(raw) = env("BACKROOM_RISK_REVIEW_ABOVE") {
        s.review_above = backroom_risk::parse_review_above(&raw)
            .map_err(|e| format!("invalid review limits `{raw}` (from BACKROOM_RISK_REVIEW_ABOVE): {e}"))?;
    }
    if let Some(raw) = env("BACKROOM_RISK_COUNTRY_HEADER").filter(|r| !r.trim().is_empty()) {
        s.country_header = Some(
            backroom_risk::parse_header_name(&raw)
                .map_err(|e| format!("invalid header (from BACKROOM_RISK_COUNTRY_HEADER): {e}"))?,
        );
    }
    s.check().map_err(|e| format!("invalid risk settings: {e}"))?;
    Ok(s)
}

/// `stripe` enabled needs its secret key; a set API base must be an http(s) URL.
fn check_stripe(
    providers: &[String],
    key: &Option<backroom_payments::stripe::Secret>,
    webhook_secret: &Option<backroom_payments::stripe::Secret>,
    api_base: &str,
) -> Result<(), String> {
    match key {
        None if providers.iter().any(|p| p == "stripe") => Err(
            "BACKROOM_PAYMENT_PROVIDERS enables stripe, but BACKROOM_STRIPE_SECRET_KEY is not set: give it the secret \
             API key of your Stripe account (sk_live_… or sk_test_…)"
                .into(),
        ),
        None => Ok(()),
        Some(key) => backroom_payments::stripe::StripeConfig {
            secret_key: key.clone(),
            webhook_secret: webhook_secret.clone(),
            api_base: api_base.to_owned(),
        }
        .check(),
    }
}

/// A comma list of known provider names, each once; empty items (and an empty list) are
/// refused so that a typo does not silently enable nothing.
fn parse_providers(raw: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for name in raw.split(',').map(str::trim) {
        if !backroom_payments::KNOWN_PROVIDERS.contains(&name) {
            return Err(format!(
                "`{name}` is not a payment provider of this build (known: {})",
                backroom_payments::KNOWN_PROVIDERS.join(", ")
            ));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// A comma list of exact browser origins: `scheme://host[:port]`, no path, no wildcard.
fn parse_origins(raw: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return Err(format!("`{origin}` is not an origin such as https://shop.example"));
        };
        let host_ok = !rest.is_empty()
            && rest.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !matches!(scheme, "http" | "https") || !host_ok {
            return Err(format!("`{origin}` is not an origin such as https://shop.example (no path, no wildcard)"));
        }
        out.push(origin.to_owned());
    }
    Ok(out)
}

fn load_file(flags: &Flags) -> Result<FileSettings, String> {
    let (path, explicit) = match (&flags.config, std::env::var("BACKROOM_CONFIG").ok()) {
        (Some(p), _) => (p.clone(), true),
        (None, Some(p)) => (PathBuf::from(p), true),
        (None, None) => (PathBuf::from("backroom.toml"), false),
    };
    if !explicit && !Path::new(&path).exists() {
        return Ok(FileSettings::default());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_file(&text).map_err(|e| format!("invalid {}: {e}", path.display()))
}

/// Reads `backroom.toml`'s text; an error names the line, and the key whose value is wrong.
fn parse_file(text: &str) -> Result<FileSettings, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => format!("line {}: {}", line_of(text, span.start), e.message().trim_end()),
        None => e.message().trim_end().to_owned(),
    })?;
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        // toml's own message adds "in `key`" on a line of its own: the path says it already.
        let inner = e.into_inner().to_string().lines().next().unwrap_or_default().to_owned();
        if key == "." || key.is_empty() { inner } else { format!("key `{key}`: {inner}") }
    })
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_lists_are_checked() {
        assert_eq!(parse_providers("test").unwrap(), ["test"]);
        assert_eq!(parse_providers(" test , test").unwrap(), ["test"]);
        for bad in ["", "tset", "test,", "test,paypal"] {
            assert!(parse_providers(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn stripe_needs_its_secret_key() {
        use backroom_payments::stripe::Secret;
        let stripe = vec!["stripe".to_owned()];
        let key = Some(Secret::new("sk_test_123"));
        let err = check_stripe(&stripe, &None, &None, "https://api.stripe.com").unwrap_err();
        assert!(err.contains("BACKROOM_STRIPE_SECRET_KEY"), "{err}");
        assert!(check_stripe(&stripe, &key, &None, "https://api.stripe.com").is_ok());
        assert!(check_stripe(&["test".to_owned()], &None, &None, "https://api.stripe.com").is_ok());
        let err = check_stripe(&stripe, &key, &None, "ftp://nope").unwrap_err();
        assert!(err.contains("BACKROOM_STRIPE_API_BASE"), "{err}");
        assert_eq!(parse_providers("test,stripe").unwrap(), ["test", "stripe"]);
        // Neither secret shows in the settings' Debug output.
        let settings = Settings {
            stripe_secret_key: Some(Secret::new("sk_live_topsecret")),
            stripe_webhook_secret: Some(Secret::new("whsec_topsecret")),
            ..Settings::default()
        };
        assert!(!format!("{settings:?}").contains("topsecret"));
    }

    #[test]
    fn origins_are_exact() {
        assert_eq!(
            parse_origins("https://shop.example, http://localhost:3000").unwrap(),
            ["https://shop.example", "http://localhost:3000"]
        );
        for bad in ["shop.example", "https://shop.example/", "https://*.example", "ftp://x", "https://"] {
            assert!(parse_origins(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_bad_file_value_names_its_key() {
        let e = parse_file("listen = \"127.0.0.1:9000\"\nwriter_queue = \"lots\"\n").unwrap_err();
        assert!(e.contains("key `writer_queue`"), "{e}");
        let e = parse_file("writer_qeue = 5\n").unwrap_err();
        assert!(e.contains("writer_qeue") && e.contains("writer_queue"), "{e}");
        let e = parse_file("listen = \"127.0.0.1:9000\"\nwriter_queue = = 5\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert_eq!(parse_file("writer_queue = 5\n").unwrap().writer_queue, Some(5));
    }

    #[test]
    fn private_webhook_addresses_are_refused_unless_set_to_true() {
        assert!(!Settings::default().webhooks_allow_private);
        let with = |v: &str| Settings::resolve(&Flags { webhooks_allow_private: Some(v.into()), ..Flags::default() });
        assert!(with("true").unwrap().webhooks_allow_private);
        assert!(!with(" false ").unwrap().webhooks_allow_private);
        let e = with("yes").unwrap_err();
        assert!(e.contains("--webhooks-allow-private") && e.contains("true or false"), "{e}");
        assert_eq!(parse_file("webhooks_allow_private = true\n").unwrap().webhooks_allow_private, Some(true));
    }

    #[test]
    fn webhook_settings_are_checked() {
        let with = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
            webhook_settings(&move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        assert_eq!(with(&[]).unwrap().0, backroom_integrations::RETRY_DELAYS.to_vec());
        assert_eq!(with(&[]).unwrap().2, Duration::from_secs(60));
        let (delays, after, lease) = with(&[
            ("BACKROOM_WEBHOOK_RETRY_DELAYS", "100ms, 1s"),
            ("BACKROOM_WEBHOOK_DISABLE_AFTER", "1h"),
            ("BACKROOM_WEBHOOK_LEASE", "3s"),
        ])
        .unwrap();
        assert_eq!(delays, vec![Duration::from_millis(100), Duration::from_secs(1)]);
        assert_eq!(after, Duration::from_secs(3600));
        assert_eq!(lease, Duration::from_secs(3));
        assert!(with(&[("BACKROOM_WEBHOOK_LEASE", "10ms")]).is_err());
        assert!(with(&[("BACKROOM_WEBHOOK_LEASE", "a while")]).is_err());
        assert!(with(&[("BACKROOM_WEBHOOK_RETRY_DELAYS", "none")]).unwrap().0.is_empty());
        assert!(with(&[("BACKROOM_WEBHOOK_RETRY_DELAYS", "5s,soon")]).is_err());
        assert!(with(&[("BACKROOM_WEBHOOK_DISABLE_AFTER", "never")]).is_err());
    }

    #[test]
    fn risk_settings_are_checked() {
        let with = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
            risk_settings(&move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        assert_eq!(with(&[]).unwrap(), backroom_risk::Settings::default());
        let s = with(&[
            ("BACKROOM_RISK", "off"),
            ("BACKROOM_RISK_MAX_DECLINES", "3"),
            ("BACKROOM_RISK_REVIEW_ABOVE", "EUR:100000,USD:100000"),
            ("BACKROOM_RISK_COUNTRY_HEADER", "CF-IPCountry"),
            ("BACKROOM_RISK_REVIEW_SCORE", "40"),
        ])
        .unwrap();
        assert!(!s.enabled);
        assert_eq!((s.max_declines, s.review_score, s.review_above.len()), (3, 40, 2));
        assert_eq!(s.country_header.as_deref(), Some("cf-ipcountry"));
        for (name, bad, says) in [
            ("BACKROOM_RISK", "maybe", "expected on or off"),
            ("BACKROOM_RISK_MAX_DECLINES", "0", "from 1 to 100000"),
            ("BACKROOM_RISK_MAX_CARDS", "many", "from 1 to 100000"),
            ("BACKROOM_RISK_REVIEW_ABOVE", "EUR100000", "CURRENCY:AMOUNT"),
            ("BACKROOM_RISK_REVIEW_ABOVE", "ZZZ:5", "not a currency"),
            ("BACKROOM_RISK_BLOCK_SCORE", "101", "from 1 to 100"),
            ("BACKROOM_RISK_REVIEW_SCORE", "95", "must not be above"),
            ("BACKROOM_RISK_COUNTRY_HEADER", "CF IPCountry", "header name"),
        ] {
            let e = with(&[(name, bad)]).unwrap_err();
            assert!(e.contains(name) && e.contains(says), "{name}={bad}: {e}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://bob:secret@db:5432/shop"), "postgres://bob:***@db:5432/shop");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
