//! The search index as an outbox consumer: every process keeps its own index and follows
//! the outbox as a broadcast reader ([`backroom_db::outbox::Broadcast`]); the position it
//! has reached is saved in the index's commit, so a restart carries on where it stopped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use backroom_catalog::Catalog;
use backroom_db::outbox::{Action, Batch, BoxFuture, Consumer, Envelope, Event};
use backroom_inventory::Inventory;
use backroom_kernel::{Error, Result};

use crate::SearchIndex;

/// What this process's outbox followers of product changes have done, for tests and
/// monitoring: how many times they loaded changed products (catalog rows and availability)
/// from the database (the `outbox_product_loads_total` metric counts the same).
#[derive(Debug, Default)]
pub struct Stats {
    loads: AtomicU64,
}

impl Stats {
    /// Loads of changed products so far.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Counts one load of changed products.
    pub fn count_load(&self) {
        self.loads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("outbox_product_loads_total").increment(1);
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

/// What `events` ask the index to do.
pub fn changes(events: &[Envelope]) -> Changes {
    let mut c = Changes::default();
    for e in events {
        match &e.event {
            Event::ProductChanged(p) => {
                c.products.insert(p.product_id.clone());
            }
            Event::StockChanged(s) => c.variants.extend(s.variant_ids.iter().cloned()),
            Event::CategoryChanged(cat) if cat.action == Action::Deleted => c.everything = true,
            Event::CategoryChanged(cat) => {
                c.categories.insert(cat.category_id.clone());
            }
            Event::OrderPlaced(_) | Event::OrderPaymentFailed(_) => {}
        }
    }
    c
}

/// Keeps one process's index in step with the outbox: a broadcast [`Consumer`] of product,
/// category and stock changes.
pub struct IndexConsumer {
    pub index: Arc<SearchIndex>,
    pub catalog: Catalog,
    pub inventory: Inventory,
    pub stats: Arc<Stats>,
}

impl IndexConsumer {
    /// Applies `events`, saving `position` (the reader's position after them) with the index.
    pub async fn apply(&self, events: &[Envelope], position: &str) -> Result<()> {
        let mut c = changes(events);
        tracing::debug!(events = events.len(), to = position, changes = ?c, "search index follows the outbox");
        if c.is_empty() {
            // Nothing for the index: move on without a commit. The saved position lags
            // until the next change; after a restart those events are read again, which
            // changes nothing.
            return Ok(());
        }
        if c.everything {
            crate::rebuild(&self.index, &self.catalog, &self.inventory, position, |_, _| {}).await?;
            return Ok(());
        }
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
        self.stats.count_load();
        let products = self.catalog.products(&ids).await?;
        let found: HashSet<&str> = products.iter().map(|p| p.id.as_str()).collect();
        let removed: Vec<String> = ids.iter().filter(|id| !found.contains(id.as_str())).cloned().collect();
        let variant_ids: Vec<String> = products.iter().flat_map(|p| p.variants.iter().map(|v| v.id.clone())).collect();
        let available = self.inventory.availability(&variant_ids).await?;
        let idx = self.index.clone();
        let pos = position.to_owned();
        tokio::task::spawn_blocking(move || idx.apply(&products, &removed, &available, &pos))
            .await
            .map_err(Error::internal)?
    }

    /// Brings the index up: carries on from the position saved with it, or rebuilds it at
    /// `head` when it is new, was unreadable, or was built on another kind of database
    /// (the API serves from the database meanwhile).
    pub async fn start(&self, head: &str) -> Result<String> {
        self.index.set_categories(&self.catalog.category_tree().await?);
        let kind = head.split_once(':').map_or(head, |(k, _)| k);
        let saved = self.index.saved_position().filter(|p| p.split_once(':').is_some_and(|(k, _)| k == kind));
        if let Some(saved) = saved {
            self.index.set_ready(true);
            return Ok(saved);
        }
        tracing::info!("building the search index");
        let n = crate::rebuild(&self.index, &self.catalog, &self.inventory, head, |_, _| {}).await?;
        tracing::info!(products = n, "search index built");
        Ok(head.to_owned())
    }
}

impl Consumer for IndexConsumer {
    fn name(&self) -> &'static str {
        "search-index"
    }

    fn wants(&self, event: &Event) -> bool {
        matches!(event, Event::ProductChanged(_) | Event::CategoryChanged(_) | Event::StockChanged(_))
    }

    fn handle<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let position = batch
                .position
                .ok_or_else(|| Error::internal("the search index follows the outbox through a broadcast runner"))?;
            self.apply(batch.events, position).await
        })
    }

    fn resume<'a>(&'a self, head: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(self.start(head))
    }
}
