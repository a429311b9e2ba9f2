//! Following the outbox for the state a process keeps per product: its search index
//! ([`IndexConsumer`]) and its storefront views (`api::views`, which implements
//! [`ProductFollower`] there).
//!
//! One broadcast [`Consumer`], [`Follow`], reads each batch of product, stock and category
//! changes and loads the products it names from the database *once* (catalog rows and
//! availability: a [`Loaded`]), then hands that one load to every [`ProductFollower`], in the
//! order they were added. Before the load, each follower may add products of its own and name
//! the products of changed variants it knows ([`ProductFollower::before_load`]); the storefront
//! views take their ticket there, so that a load that read the database before a change is
//! never kept.
//!
//! Every process keeps its own index and follows the outbox as a broadcast reader
//! ([`backroom_db::outbox::Broadcast`]); the position it has reached is saved in the index's
//! commit, so a restart carries on where it stopped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use backroom_catalog::{Catalog, Product};
use backroom_db::outbox::{Action, Batch, BoxFuture, Consumer, Envelope, Event, broadcast};
use backroom_inventory::Inventory;
use backroom_kernel::{Error, Result};

use crate::SearchIndex;

/// Products per set of queries of a load (8 queries: 7 for the catalog rows, 1 for stock).
const PAGE: usize = 500;

/// What a batch of events changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub products: HashSet<String>,
    pub variants: HashSet<String>,
    /// Categories created, renamed or moved: their products' paths changed.
    pub categories: HashSet<String>,
    /// Categories deleted: their product links are gone (the index rebuilds everything).
    pub deleted_categories: HashSet<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
            && self.variants.is_empty()
            && self.categories.is_empty()
            && self.deleted_categories.is_empty()
    }

    /// Whether a category was deleted: the index rebuilds everything then.
    pub fn everything(&self) -> bool {
        !self.deleted_categories.is_empty()
    }
}

/// What `events` changed.
pub fn changes(events: &[Envelope]) -> Changes {
    let mut c = Changes::default();
    for e in events {
        match &e.event {
            Event::ProductChanged(p) => {
                c.products.insert(p.product_id.clone());
            }
            Event::StockChanged(s) => c.variants.extend(s.variant_ids.iter().cloned()),
            Event::CategoryChanged(cat) if cat.action == Action::Deleted => {
                c.deleted_categories.insert(cat.category_id.clone());
            }
            Event::CategoryChanged(cat) => {
                c.categories.insert(cat.category_id.clone());
            }
            Event::OrderPlaced(_)
            | Event::OrderPaymentFailed(_)
            | Event::CustomerCreated(_)
            | Event::CustomerErased(_)
            | Event::PriceListChanged(_)
            | Event::PromotionExhausted(_)
            | Event::OrderFulfilled(_)
            | Event::OrderShipped(_)
            | Event::OrderDelivered(_)
            | Event::OrderCanceled(_)
            | Event::OrderRefunded(_)
            | Event::ReturnReceived(_)
            | Event::WebhookEndpointDisabled(_) => {}
        }
    }
    c
}

/// The products a batch's load reads, gathered before it: those the events name, those the
/// followers add ([`ProductFollower::before_load`]), then those of the changed variants and
/// categories.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub products: HashSet<String>,
    /// Changed variants whose product no follower has named yet: [`Follow`] reads their
    /// products from the database.
    pub variants: HashSet<String>,
}

/// The products a batch names, loaded once from the database for every follower.
#[derive(Debug, Default)]
pub struct Loaded {
    /// What the batch's events changed.
    pub changes: Changes,
    /// Every product asked for; those not in `products` no longer exist.
    pub ids: Vec<String>,
    /// The catalog rows of the products that exist, whatever their status.
    pub products: Vec<Product>,
    /// Units available per tracked variant of `products`, as [`Inventory::availability`]
    /// counts them for the product page and the cart (untracked variants are missing).
    pub available: HashMap<String, i64>,
}

impl Loaded {
    /// Reads the products `ids` and their availability, [`PAGE`] products per set of queries.
    pub async fn read(catalog: &Catalog, inventory: &Inventory, changes: Changes, ids: Vec<String>) -> Result<Loaded> {
        let mut products = Vec::with_capacity(ids.len());
        let mut available = HashMap::new();
        for chunk in ids.chunks(PAGE) {
            let found = catalog.products(chunk).await?;
            let variants: Vec<String> = found.iter().flat_map(|p| p.variants.iter().map(|v| v.id.clone())).collect();
            available.extend(inventory.availability(&variants).await?);
            products.extend(found);
        }
        Ok(Loaded { changes, ids, products, available })
    }

    /// The products asked for that no longer exist.
    pub fn deleted(&self) -> Vec<String> {
        let found: HashSet<&str> = self.products.iter().map(|p| p.id.as_str()).collect();
        self.ids.iter().filter(|id| !found.contains(id.as_str())).cloned().collect()
    }
}

/// State a process keeps per product and follows from the outbox through one [`Follow`],
/// which loads each batch's products once for all of them.
pub trait ProductFollower: Send + Sync {
    /// A short, stable name for logs.
    fn name(&self) -> &'static str;

    /// Called once per batch, before its load reads the database: adds to `wanted` what this
    /// follower needs loaded beyond what the events name, and may name the products of
    /// changed variants it knows (moving them from `wanted.variants` to `wanted.products`, so
    /// that they are not looked up). Answers a number of its own that comes back to
    /// [`ProductFollower::apply`] with the load: the storefront views take their ticket here.
    fn before_load(&self, changes: &Changes, wanted: &mut Wanted) -> u64 {
        let _ = (changes, wanted);
        0
    }

    /// Applies the batch's load; `ticket` is what [`ProductFollower::before_load`] answered,
    /// `position` the reader's position after the batch. An error hands the whole batch to
    /// every follower again later.
    fn apply<'a>(&'a self, loaded: &'a Arc<Loaded>, ticket: u64, position: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Called when the reader starts, with the outbox's head, before any batch; answers the
    /// position to read from (as [`Consumer::resume`]).
    fn resume<'a>(&'a self, head: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move { Ok(head.to_owned()) })
    }
}

/// What a process's [`Follow`] has done, for tests and monitoring: how many times it loaded
/// changed products from the database (the `outbox_product_loads_total` metric counts the
/// same).
#[derive(Debug, Default)]
pub struct Stats {
    loads: AtomicU64,
}

impl Stats {
    /// Loads of changed products so far.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn count_load(&self) {
        self.loads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("outbox_product_loads_total").increment(1);
    }
}

/// The broadcast [`Consumer`] of product, stock and category changes that runs a process's
/// [`ProductFollower`]s: one load of the products a batch names, handed to each follower in
/// the order they were added.
pub struct Follow {
    catalog: Catalog,
    inventory: Inventory,
    followers: Vec<Arc<dyn ProductFollower>>,
    stats: Arc<Stats>,
}

impl Follow {
    /// A follow with no follower yet; it counts its loads in `stats`.
    pub fn new(catalog: Catalog, inventory: Inventory, stats: Arc<Stats>) -> Follow {
        Follow { catalog, inventory, followers: Vec::new(), stats }
    }

    /// Adds a follower; it is handed each load after those added before.
    pub fn with(mut self, follower: Arc<dyn ProductFollower>) -> Self {
        self.followers.push(follower);
        self
    }

    /// Hands `events` to the followers, with one load of the products they name; `position`
    /// is the reader's position after them.
    pub async fn apply(&self, events: &[Envelope], position: &str) -> Result<()> {
        let changes = changes(events);
        tracing::debug!(events = events.len(), to = position, changes = ?changes, "product followers follow the outbox");
        if changes.is_empty() {
            return Ok(());
        }
        let mut wanted = Wanted { products: changes.products.clone(), variants: changes.variants.clone() };
        let tickets: Vec<u64> = self.followers.iter().map(|f| f.before_load(&changes, &mut wanted)).collect();
        let Wanted { mut products, variants } = wanted;
        if !variants.is_empty() {
            let variants: Vec<String> = variants.into_iter().collect();
            products.extend(self.catalog.variants(&variants).await?.into_iter().map(|v| v.product_id));
        }
        for c in &changes.categories {
            products.extend(self.catalog.product_ids_in_category(c).await?);
        }
        let ids: Vec<String> = products.into_iter().collect();
        if !ids.is_empty() {
            self.stats.count_load();
        }
        let loaded = Arc::new(Loaded::read(&self.catalog, &self.inventory, changes, ids).await?);
        for (f, ticket) in self.followers.iter().zip(tickets) {
            f.apply(&loaded, ticket, position)
                .await
                .inspect_err(|e| tracing::warn!(follower = f.name(), error = %e, "product follower failed"))?;
        }
        Ok(())
    }
}

impl Consumer for Follow {
    fn name(&self) -> &'static str {
        "products"
    }

    fn wants(&self, event: &Event) -> bool {
        matches!(event, Event::ProductChanged(_) | Event::CategoryChanged(_) | Event::StockChanged(_))
    }

    fn handle<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let position = batch
                .position
                .ok_or_else(|| Error::internal("product followers follow the outbox through a broadcast runner"))?;
            self.apply(batch.events, position).await
        })
    }

    /// Starts the followers in order; answers the earliest position any of them asks for.
    fn resume<'a>(&'a self, head: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let mut from = head.to_owned();
            for f in &self.followers {
                let p = f.resume(head).await.inspect_err(
                    |e| tracing::warn!(follower = f.name(), error = %e, "product follower could not start"),
                )?;
                from = broadcast::earlier(&from, &p)?.to_owned();
            }
            Ok(from)
        })
    }
}

/// Keeps one process's index in step with the outbox: a [`ProductFollower`] of product,
/// category and stock changes.
pub struct IndexConsumer {
    pub index: Arc<SearchIndex>,
    pub catalog: Catalog,
    pub inventory: Inventory,
}

impl IndexConsumer {
    /// Applies a batch's load, saving `position` (the reader's position after the batch) with
    /// the index.
    pub async fn apply_loaded(&self, loaded: &Arc<Loaded>, position: &str) -> Result<()> {
        let c = &loaded.changes;
        if c.everything() {
            crate::rebuild(&self.index, &self.catalog, &self.inventory, position, |_, _| {}).await?;
            return Ok(());
        }
        if !c.categories.is_empty() {
            self.index.set_categories(&self.catalog.category_tree().await?);
        }
        let (idx, loaded, pos) = (self.index.clone(), loaded.clone(), position.to_owned());
        tokio::task::spawn_blocking(move || idx.apply(&loaded.products, &loaded.deleted(), &loaded.available, &pos))
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

impl ProductFollower for IndexConsumer {
    fn name(&self) -> &'static str {
        "search-index"
    }

    fn apply<'a>(&'a self, loaded: &'a Arc<Loaded>, _ticket: u64, position: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.apply_loaded(loaded, position))
    }

    fn resume<'a>(&'a self, head: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(self.start(head))
    }
}
