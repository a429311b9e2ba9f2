//! The `backroom` binary's library: settings, start-up, and the demo seed. `main.rs` only
//! parses the command line.

pub mod bench;
pub mod config;
pub mod load;
pub mod seed;
pub mod worker;

use std::sync::Arc;

use backroom_api::AppState;
use backroom_db::{ConnectOptions, Db};
use backroom_search::SearchIndex;

/// Opens the database and applies migrations.
pub async fn open_db(url: &str) -> anyhow::Result<Db> {
    open_db_with(ConnectOptions::new(url)).await
}

/// [`open_db`] with options (the writer's batch size).
pub async fn open_db_with(opts: ConnectOptions) -> anyhow::Result<Db> {
    let url = opts.url.as_str();
    let db = Db::connect(&opts)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", config::redact(url)))?;
    db.migrate().await.map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
    Ok(db)
}

/// The HTTP app over an open, migrated database.
pub fn app(
    db: Db,
    admin_token: Option<&str>,
    checkout: backroom_checkout::Settings,
    search: Option<Arc<SearchIndex>>,
) -> (axum::Router, AppState) {
    let state = AppState::new(db, admin_token, checkout, search);
    (backroom_api::router(state.clone()), state)
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

/// The follower that keeps `index` in step with the outbox and drops the process's cached
/// catalog answers when something changed.
pub fn follower(state: &AppState, index: Arc<SearchIndex>) -> backroom_search::follow::Follower {
    let cache = state.cache.clone();
    backroom_search::follow::Follower {
        db: state.db.clone(),
        index,
        catalog: backroom_catalog::Catalog::new(state.db.clone()),
        inventory: backroom_inventory::Inventory::new(state.db.clone()),
        on_change: Arc::new(move |_| cache.invalidate()),
    }
}
