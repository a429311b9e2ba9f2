//! The `backroom` binary's library: settings, start-up, and the demo seed. `main.rs` only
//! parses the command line.

pub mod app;
pub mod config;
pub mod seed;
pub mod server;
pub mod worker;

use std::sync::Arc;

pub use app::{Application, Listeners};
use backroom_api::AppState;
use backroom_db::{ConnectOptions, Db};
use backroom_search::SearchIndex;

/// Opens the database and applies migrations.
pub async fn open_db(url: &str) -> anyhow::Result<Db> {
    open_db_with(ConnectOptions::new(url)).await
}

/// [`open_db`] with options (the writer's bounds). A PostgreSQL database that does not exist
/// yet is created when the URL's user may (otherwise the error says what to run).
pub async fn open_db_with(opts: ConnectOptions) -> anyhow::Result<Db> {
    let url = opts.url.as_str();
    let cannot_open =
        |e| anyhow::anyhow!("cannot open the database {}: {}", config::redact(url), backroom_db::describe(&e));
    let db = match Db::connect(&opts).await {
        Ok(db) => db,
        Err(e) if backroom_db::is_missing_database(&e) => {
            backroom_db::create_postgres_database(url).await.map_err(anyhow::Error::msg)?;
            tracing::info!(database = %config::redact(url), "created the database");
            eprintln!("created the database {}", config::redact(url));
            Db::connect(&opts).await.map_err(cannot_open)?
        }
        Err(e) => return Err(cannot_open(e)),
    };
    db.migrate().await.map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
    Ok(db)
}

/// The database options `settings` ask for.
pub fn connect_options(settings: &config::Settings) -> ConnectOptions {
    ConnectOptions {
        writer_max_batch: settings.writer_max_batch,
        writer_queue: settings.writer_queue,
        writer_job_timeout: settings.writer_job_timeout,
        ..ConnectOptions::new(&settings.database_url)
    }
}

/// Where a process keeps its search index.
pub fn search_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("search-index")
}

/// Opens this process's search index; a clear error when another process holds it.
pub fn open_search(data_dir: &std::path::Path) -> anyhow::Result<Arc<SearchIndex>> {
    let dir = search_dir(data_dir);
    SearchIndex::open(&dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the search index in {}: {e} (each running process needs its own --data-dir)",
            dir.display()
        )
    })
}

/// This process's broadcast reader of the outbox: keeps `index` in step, then the storefront
/// views search pages are made of (both from one load of the products each batch of events
/// changed), marks the price book stale on `price_list.changed`, then drops the process's
/// cached catalog answers when something changed. Run it with `.run(interval, stop)`.
pub fn follower(state: &AppState, index: Arc<SearchIndex>) -> backroom_db::outbox::Broadcast {
    let search = backroom_search::follow::IndexConsumer {
        index,
        catalog: state.catalog.clone(),
        inventory: state.inventory.clone(),
    };
    let views = backroom_api::views::Follow {
        views: state.views.clone(),
        catalog: state.catalog.clone(),
        inventory: state.inventory.clone(),
    };
    let products =
        backroom_search::follow::Follow::new(state.catalog.clone(), state.inventory.clone(), state.follow.clone())
            .with(Arc::new(search))
            .with(Arc::new(views));
    backroom_db::outbox::Broadcast::new(state.db.clone())
        .with(Arc::new(products))
        .with(Arc::new(backroom_pricing::price_lists::Follow(state.prices.clone())))
        .with(Arc::new(backroom_api::cache::Invalidation(state.cache.clone())))
}
