//! Following the outbox as a broadcast reader: every process reads every event (unlike the
//! delivery worker, which hands each event to one worker).
//!
//! The position must never skip an event that commits late. On SQLite the single writer
//! commits events in id order, so the last id read is a safe position. On PostgreSQL ids come
//! from a sequence and can commit out of order, so the position is a transaction horizon
//! instead: each event records the id of the transaction that wrote it (`txid`), and a read
//! takes only events of transactions older than every transaction still running
//! (`pg_snapshot_xmin`), all of which have ended; the next read starts at that horizon.
//! A long-running transaction holds the horizon back (events wait for it), never skips one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backroom_catalog::Catalog;
use backroom_db::{Db, Dialect, on_conn, storage};
use backroom_inventory::Inventory;
use backroom_kernel::{Error, Result};

use crate::SearchIndex;

/// An event as a broadcast reader sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Row {
    pub topic: String,
    pub payload: String,
}

/// The head of the outbox now: a position from which nothing committed later is missed.
pub async fn head(db: &Db) -> Result<String> {
    let mut r = db.read().await?;
    match db.dialect() {
        Dialect::Sqlite => {
            let id: i64 = on_conn!(&mut r.conn(), c => sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM outbox")
                .fetch_one(&mut *c)
                .await
                .map_err(storage))?;
            Ok(format!("sqlite:{id}"))
        }
        Dialect::Postgres => {
            let xmin: i64 = on_conn!(&mut r.conn(), c => sqlx::query_scalar(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            )
            .fetch_one(&mut *c)
            .await
            .map_err(storage))?;
            Ok(format!("pg:{xmin}"))
        }
    }
}

fn parse(position: &str) -> Result<i64> {
    position
        .split_once(':')
        .and_then(|(_, n)| n.parse().ok())
        .ok_or_else(|| Error::internal(format!("bad outbox position {position}")))
}

/// Events after `position`, and the position after them.
pub async fn read(db: &Db, position: &str) -> Result<(Vec<Row>, String)> {
    let from = parse(position)?;
    let mut r = db.read().await?;
    match db.dialect() {
        Dialect::Sqlite => {
            let rows: Vec<(i64, String, String)> = on_conn!(&mut r.conn(), c => sqlx::query_as(
                "SELECT id, topic, payload FROM outbox WHERE id > $1 ORDER BY id LIMIT 10000",
            )
            .bind(from)
            .fetch_all(&mut *c)
            .await
            .map_err(storage))?;
            let next = rows.last().map_or(from, |r| r.0);
            Ok((rows.into_iter().map(|(_, topic, payload)| Row { topic, payload }).collect(), format!("sqlite:{next}")))
        }
        Dialect::Postgres => {
            let horizon: i64 = on_conn!(&mut r.conn(), c => sqlx::query_scalar(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            )
            .fetch_one(&mut *c)
            .await
            .map_err(storage))?;
            let rows: Vec<Row> = on_conn!(&mut r.conn(), c => sqlx::query_as(
                "SELECT topic, payload FROM outbox WHERE txid >= $1 AND txid < $2 ORDER BY id",
            )
            .bind(from)
            .bind(horizon)
            .fetch_all(&mut *c)
            .await
            .map_err(storage))?;
            Ok((rows, format!("pg:{horizon}")))
        }
    }
}

/// What a batch of events asks the index to do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub products: HashSet<String>,
    pub variants: HashSet<String>,
    /// Categories created, renamed or moved: their products' paths changed.
    pub categories: HashSet<String>,
    /// A category was deleted (its product links are gone): rebuild everything.
    pub everything: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.products.is_empty() && self.variants.is_empty() && self.categories.is_empty() && !self.everything
    }
}

fn changes(rows: &[Row]) -> Changes {
    let mut c = Changes::default();
    for r in rows {
        let Ok(p) = serde_json::from_str::<serde_json::Value>(&r.payload) else { continue };
        match r.topic.as_str() {
            "product.changed" => {
                if let Some(id) = p["product_id"].as_str() {
                    c.products.insert(id.to_owned());
                }
            }
            "stock.changed" => {
                for v in p["variant_ids"].as_array().into_iter().flatten().filter_map(|v| v.as_str()) {
                    c.variants.insert(v.to_owned());
                }
            }
            "category.changed" => match (p["action"].as_str(), p["category_id"].as_str()) {
                (Some("deleted"), _) | (_, None) => c.everything = true,
                (_, Some(id)) => {
                    c.categories.insert(id.to_owned());
                }
            },
            _ => {}
        }
    }
    c
}

/// Keeps one process's index in step with the outbox, and tells `on_change` what changed
/// (the HTTP caches listen there).
pub struct Follower {
    pub db: Db,
    pub index: Arc<SearchIndex>,
    pub catalog: Catalog,
    pub inventory: Inventory,
    pub on_change: Arc<dyn Fn(&Changes) + Send + Sync>,
}

impl Follower {
    /// Applies the events after `position`; returns the new position.
    pub async fn step(&self, position: &str) -> Result<String> {
        let (rows, next) = read(&self.db, position).await?;
        let mut c = changes(&rows);
        if !rows.is_empty() {
            tracing::debug!(events = rows.len(), from = position, to = %next, changes = ?c, "search index follows the outbox");
        }
        if c.is_empty() {
            // Nothing for the index (orders, payments): move on without a commit. The saved
            // position lags until the next change; after a restart those events are read
            // again, which changes nothing.
            return Ok(next);
        }
        if c.everything {
            crate::rebuild(&self.index, &self.catalog, &self.inventory, &next, |_, _| {}).await?;
        } else {
            if !c.categories.is_empty() {
                self.index.set_categories(&self.catalog.category_tree().await?);
                for id in &c.categories {
                    c.products.extend(self.catalog.product_ids_in_category(id).await?);
                }
            }
            if !c.variants.is_empty() {
                let ids: Vec<String> = c.variants.iter().cloned().collect();
                for v in self.catalog.variants(&ids).await? {
                    c.products.insert(v.product_id);
                }
            }
            let ids: Vec<String> = c.products.iter().cloned().collect();
            let products = self.catalog.products(&ids).await?;
            let found: HashSet<&str> = products.iter().map(|p| p.id.as_str()).collect();
            let removed: Vec<String> = ids.iter().filter(|id| !found.contains(id.as_str())).cloned().collect();
            let variant_ids: Vec<String> =
                products.iter().flat_map(|p| p.variants.iter().map(|v| v.id.clone())).collect();
            let available = self.inventory.availability(&variant_ids).await?;
            let idx = self.index.clone();
            let pos = next.clone();
            tokio::task::spawn_blocking(move || idx.apply(&products, &removed, &available, &pos))
                .await
                .map_err(Error::internal)??;
        }
        (self.on_change)(&c);
        Ok(next)
    }

    /// Brings the index up (rebuilding it when it is new or was unreadable, while the API
    /// serves from the database), then follows the outbox every `interval` until `stop`.
    pub async fn run(self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut position = loop {
            match self.start().await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::error!(error = %e, "search index start failed; retrying");
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        };
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.step(&position).await {
                Ok(p) => position = p,
                Err(e) => tracing::warn!(error = %e, "search index sync failed; will retry"),
            }
        }
    }

    async fn start(&self) -> Result<String> {
        self.index.set_categories(&self.catalog.category_tree().await?);
        if let Some(saved) = self.index.saved_position().filter(|p| p.starts_with(self.prefix())) {
            self.index.set_ready(true);
            return Ok(saved);
        }
        let position = head(&self.db).await?;
        tracing::info!("building the search index");
        let n = crate::rebuild(&self.index, &self.catalog, &self.inventory, &position, |_, _| {}).await?;
        tracing::info!(products = n, "search index built");
        (self.on_change)(&Changes { everything: true, ..Default::default() });
        Ok(position)
    }

    fn prefix(&self) -> &'static str {
        match self.db.dialect() {
            Dialect::Sqlite => "sqlite:",
            Dialect::Postgres => "pg:",
        }
    }
}
