//! The `backroom` binary's library: settings, start-up, and the demo seed. `main.rs` only
//! parses the command line.

pub mod config;
pub mod seed;
pub mod worker;

use backroom_api::AppState;
use backroom_db::{ConnectOptions, Db};

/// Opens the database and applies migrations.
pub async fn open_db(url: &str) -> anyhow::Result<Db> {
    let db = Db::connect(&ConnectOptions::new(url))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", config::redact(url)))?;
    db.migrate().await.map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
    Ok(db)
}

/// The HTTP app over an open, migrated database.
pub fn app(db: Db, admin_token: Option<&str>, checkout: backroom_checkout::Settings) -> axum::Router {
    backroom_api::router(AppState::new(db, admin_token, checkout))
}
