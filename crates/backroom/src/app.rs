//! The one place a Backroom process is put together.
//!
//! [`Application::build`] turns checked [`Settings`] into a running store's parts: the
//! database (created on PostgreSQL when allowed, migrated), the search index, the enabled
//! payment providers, the modules, the HTTP router. [`Application::run`] then serves them on
//! [`Listeners`] with the background work every process does (payment recovery, outbox
//! delivery, webhook dispatch, the search follower, the metrics listener) until its shutdown future resolves.
//!
//! `backroom serve`, the API tests and the benchmarks' `serve` children all start the store
//! this way, so a new module is wired here once and everyone runs it.

use std::net::SocketAddr;

use backroom_api::AppState;
use backroom_db::Db;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::server::Limits;

/// A store ready to serve: built from settings, not yet listening.
pub struct Application {
    settings: Settings,
    db: Db,
    state: AppState,
    router: axum::Router,
}

/// The sockets a store serves on, bound before anything else starts (so a port in use is
/// reported before a data directory is created or a database migrated).
pub struct Listeners {
    main: TcpListener,
    metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `settings.listen` and, when set, `settings.metrics_listen`.
    pub async fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
        let main = bind(settings.listen, "").await?;
        let metrics = match settings.metrics_listen {
            Some(at) => Some(bind(at, " for metrics").await?),
            None => None,
        };
        Ok(Listeners { main, metrics })
    }

    /// The address the API answers on (the real port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.main.local_addr().expect("a bound socket has an address")
    }

    /// The address of the metrics listener, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|l| l.local_addr().expect("a bound socket has an address"))
    }
}

async fn bind(at: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(at).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another process uses that port: stop it, or choose another with --listen / BACKROOM_LISTEN)"
            }
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges: choose a port above 1024)",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {at}{what}: {e}{hint}")
    })
}

impl Application {
    /// Builds the store `settings` describe: opens the database (creating a PostgreSQL
    /// database that does not exist yet when the user may), applies migrations, opens this
    /// process's search index, enables the payment providers, wires the modules and routes.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.ensure_data_dir().map_err(anyhow::Error::msg)?;
        let db = crate::open_db_with(crate::connect_options(&settings)).await?;
        let search = crate::open_search(&settings.data_dir)?;
        let stripe = settings.stripe_config();
        let providers = backroom_payments::Providers::enabled_with_stripe(
            &db,
            &settings.payment_providers,
            settings.provider_timeout,
            stripe.as_ref(),
        )
        .map_err(anyhow::Error::msg)?;
        let vault = open_vault(&settings, &db).await?;
        let checkout = backroom_checkout::Checkout::new(db.clone(), providers, settings.checkout, vault)
            .with_risk(settings.risk.clone());
        let cors = settings
            .cors_origins
            .iter()
            .map(|o| axum::http::HeaderValue::from_str(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("invalid CORS origin: {e}"))?;
        let state = AppState::new(db.clone(), settings.admin_token.as_deref(), checkout, Some(search))
            .with_customer_settings(settings.customers)
            .with_cors_origins(cors)
            .with_trusted_proxies(settings.trusted_proxies.clone())
            .with_rate_limits(settings.rate_limits)
            .with_request_timeout(settings.request_timeout)
            .with_metrics_here(settings.metrics_listen.is_none())
            .with_stripe_webhook_secret(settings.stripe_webhook_secret.clone())
            .with_storefront_url(&settings.storefront_url)
            .with_carriers(backroom_pricing::Carriers::new(backroom_pricing::CarrierConfig {
                allow_private: settings.webhooks_allow_private,
                ..Default::default()
            }))
            .with_webhook_settings(settings.webhook_settings());
        let sealed = state.orders.seal_legacy().await?;
        if sealed > 0 {
            tracing::info!(orders = sealed, "sealed the personal data of orders stored in clear by an older release");
        }
        let router = backroom_api::router(state.clone());
        Ok(Application { settings, db, state, router })
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The open, migrated database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The modules and settings the HTTP layer works with.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves the API on `listeners` until `shutdown` resolves, with the background work of a
    /// store process; then drains open requests, stops the loops and closes the database.
    pub async fn run(self, listeners: Listeners, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Application { settings, db, state, router } = self;
        // Jobs left running by a server that stopped will never finish (not at build: a CLI
        // import builds the application too, beside a running server).
        match backroom_api::imports::fail_interrupted(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "marked failed the import jobs a stopped server left running"),
            Err(e) => tracing::error!(error = ?e, "could not mark interrupted import jobs failed"),
        }
        warn_about_providers(&settings.payment_providers);
        if settings.payment_providers.iter().any(|p| p == "stripe") && settings.stripe_webhook_secret.is_none() {
            tracing::warn!(
                "stripe is enabled without BACKROOM_STRIPE_WEBHOOK_SECRET: POST /webhooks/stripe refuses every event, so 3-D Secure payments are settled only by recovery"
            );
        }
        let (max_connections, fd_limit) = crate::server::connection_cap(settings.max_connections);
        if max_connections < settings.max_connections {
            tracing::warn!(max_connections, fd_limit, "connections capped below the file-descriptor limit");
        }
        let limits = Limits {
            header_timeout: settings.header_timeout,
            drain: settings.request_timeout,
            max_connections,
            max_in_flight: settings.max_in_flight,
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = || crate::worker::stopped(stop_rx.clone());
        let metrics_task = listeners.metrics.map(|l| {
            let router = backroom_api::metrics_router(state.clone());
            tokio::spawn(crate::server::serve(l, router, Limits { max_connections: 64, ..limits }, stopped()))
        });
        let follow_task = state
            .search
            .clone()
            .map(|index| tokio::spawn(crate::follower(&state, index).run(settings.search_follow_interval, stopped())));
        // Outgoing webhooks: the outbox runner writes deliveries, the dispatcher sends them.
        let mut workers = crate::worker::spawn(
            db.clone(),
            state.checkout.clone(),
            vec![state.webhooks.consumer()],
            settings.webhook_lease,
            stop_rx.clone(),
        );
        workers.push(tokio::spawn(state.webhooks.clone().run(stopped())));
        crate::server::serve(listeners.main, router, limits, async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
        for w in workers {
            let _ = w.await;
        }
        if let Some(t) = follow_task {
            let _ = t.await;
        }
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        db.close().await;
    }
}

/// The master key (`BACKROOM_MASTER_KEY`, or the data directory's key file, created on the
/// first start) and the vault over it; a new key file is announced loudly, since losing it
/// loses every customer's personal data.
async fn open_vault(settings: &Settings, db: &Db) -> anyhow::Result<backroom_vault::Vault> {
    use backroom_vault::{KeySource, MasterKey, Vault};
    let (master, source) = MasterKey::load_or_create(settings.master_key.as_deref(), &settings.data_dir)
        .map_err(|e| anyhow::anyhow!("{}", detail(&e)))?;
    match &source {
        KeySource::Created(path) => {
            tracing::warn!(path = %path.display(), key_id = master.id(), "created a master key file: back it up, it cannot be recovered");
            eprintln!(
                "NOTE: created the master key file {} (key {}); it protects every customer's personal data: back it up                  (or set BACKROOM_MASTER_KEY), see docs/api.md#the-master-key",
                path.display(),
                master.id()
            );
        }
        KeySource::File(path) => {
            tracing::info!(path = %path.display(), key_id = master.id(), "master key from the key file")
        }
        KeySource::Environment => tracing::info!(key_id = master.id(), "master key from BACKROOM_MASTER_KEY"),
    }
    Vault::open(db, master).await.map_err(|e| anyhow::anyhow!("{}", detail(&e)))
}

/// An error's message with its cause (the vault's internal errors say what is wrong there).
fn detail(e: &backroom_kernel::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => cause.to_string(),
        None => e.to_string(),
    }
}

/// Says at every start what the enabled payment providers mean.
fn warn_about_providers(providers: &[String]) {
    if providers.is_empty() {
        tracing::warn!(
            "no payment provider is enabled (BACKROOM_PAYMENT_PROVIDERS): every checkout is refused with payment_provider_unavailable"
        );
    } else if providers.iter().any(|p| p == "test") {
        tracing::warn!(
            "the `test` payment provider is enabled: anyone can place paid orders with test tokens; never enable it on a real store"
        );
        eprintln!(
            "WARNING: the `test` payment provider is enabled (BACKROOM_PAYMENT_PROVIDERS); never on a real store"
        );
    }
}
