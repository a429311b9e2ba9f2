//! Storefront views of published products, kept current from the outbox, so that a search
//! result page is index work and serialisation only (no SQL on a warm server).
//!
//! [`ProductViews`] holds one [`StoreProduct`] (prices and `available` included) for every
//! published product. It is loaded in bulk when the outbox follower starts ([`Follow`], pages
//! of a few set-based queries), then changed *per product*: `product.changed` reloads that
//! product (or forgets it when it is no longer published), `stock.changed` reloads the
//! products of those variants, `category.changed` the products linked to that category. The
//! follower reads those products once per batch for the search index and the views together
//! ([`backroom_search::follow::Follow`]); [`Follow`] builds the views from that load.
//! Writes made through this process mark the products they touched stale at once (the HTTP
//! layer, [`crate::cache::layer`], after admin writes and checkouts), so the next read loads
//! them from the database, as the product page does (P4); the follower then reloads them.
//!
//! Races between loads are settled by tickets: every load takes a ticket (a process-wide
//! counter) *before* it reads the database, and a slot keeps the answer of the latest ticket.
//! Every change is followed by a load or a mark whose ticket is taken after the change
//! committed, so that one wins over any read that may have missed the change. A write whose
//! products this process cannot name (a variant whose product is not in the views yet, a
//! category) raises a floor instead: answers read before it are not kept.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use backroom_catalog::{Catalog, Product, ProductFilter, ProductStatus};
use backroom_db::outbox::BoxFuture;
use backroom_inventory::Inventory;
use backroom_kernel::{PageRequest, Result};
use backroom_search::follow::{Changes, Loaded, ProductFollower, Wanted};

use crate::routes::store::{StoreProduct, StoreVariant};

/// Products per page of the bulk load (the most a catalog page holds).
const LOAD_PAGE: i64 = 100;

/// What a write through this process changed, as its handler tells the HTTP layer (a
/// response extension). An admin write or checkout that succeeds without one makes every
/// view stale ([`ProductViews::mark_all_stale`]), as the response cache is dropped.
#[derive(Debug, Clone, Default)]
pub struct Touched {
    pub products: Vec<String>,
    pub variants: Vec<String>,
    pub categories: Vec<String>,
}

impl Touched {
    /// A write that changes no product view (an API key, a new category or location).
    pub fn nothing() -> Self {
        Touched::default()
    }

    pub fn product(id: impl Into<String>) -> Self {
        Touched { products: vec![id.into()], ..Default::default() }
    }

    pub fn variants(ids: Vec<String>) -> Self {
        Touched { variants: ids, ..Default::default() }
    }

    pub fn category(id: impl Into<String>) -> Self {
        Touched { categories: vec![id.into()], ..Default::default() }
    }
}

enum State {
    Live(Arc<StoreProduct>),
    /// Not published, deleted, or never was.
    Gone,
    /// Changed by this process: the next read loads it.
    Stale,
}

struct Slot {
    ticket: u64,
    state: State,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    /// The product of each variant of a live view.
    owners: HashMap<String, String>,
    /// How many slots are live.
    live: usize,
}

impl Inner {
    fn set(&mut self, id: &str, slot: Slot) {
        let old = self.slots.insert(id.to_owned(), slot);
        if let Some(Slot { state: State::Live(p), .. }) = old {
            self.live -= 1;
            for v in &p.variants {
                if self.owners.get(&v.id).is_some_and(|o| o == id) {
                    self.owners.remove(&v.id);
                }
            }
        }
        if let Some(Slot { state: State::Live(p), .. }) = self.slots.get(id) {
            self.live += 1;
            for v in &p.variants {
                self.owners.insert(v.id.clone(), id.to_owned());
            }
        }
    }
}

/// The storefront views of one process; see the module documentation.
#[derive(Default)]
pub struct ProductViews {
    inner: RwLock<Inner>,
    tickets: AtomicU64,
    /// Answers read with a ticket below this are not kept (a change this process could not
    /// name may have happened after they were read).
    floor: AtomicU64,
    /// Slots written with a ticket below this are stale ([`ProductViews::mark_all_stale`]).
    stale_before: AtomicU64,
    loaded: AtomicBool,
    db_loads: AtomicU64,
}

/// Views found among the ids asked for, and the ids that must be read from the database.
pub struct Lookup {
    pub found: HashMap<String, Arc<StoreProduct>>,
    pub missing: Vec<String>,
}

impl ProductViews {
    /// A ticket for a load about to read the database.
    pub fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Whether the bulk load at start has finished.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// How many times a read had to load products from the database (cold or stale views).
    pub fn db_loads(&self) -> u64 {
        self.db_loads.load(Ordering::Relaxed)
    }

    /// How many published products have a view.
    pub fn len(&self) -> usize {
        self.read().live
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The views of `ids` that are current; the others (unknown, stale) are `missing`.
    /// Products known not to be published are in neither.
    pub fn lookup(&self, ids: &[String]) -> Lookup {
        let stale_before = self.stale_before.load(Ordering::SeqCst);
        let inner = self.read();
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match inner.slots.get(id) {
                Some(Slot { ticket, state: State::Live(p) }) if *ticket >= stale_before => {
                    found.insert(id.clone(), p.clone());
                }
                Some(Slot { ticket, state: State::Gone }) if *ticket >= stale_before => {}
                _ => missing.push(id.clone()),
            }
        }
        Lookup { found, missing }
    }

    /// Keeps what a load with `ticket` read for `ids`: `loaded` are the published ones, the
    /// others are gone. A slot already written by a later ticket is left alone. Answers
    /// whether the answer was kept (not when read before the floor).
    pub fn put(&self, ticket: u64, ids: &[String], loaded: &[Arc<StoreProduct>]) -> bool {
        let mut inner = self.write();
        if ticket < self.floor.load(Ordering::SeqCst) {
            return false;
        }
        let by_id: HashMap<&str, &Arc<StoreProduct>> = loaded.iter().map(|p| (p.id.as_str(), p)).collect();
        for id in ids {
            if inner.slots.get(id).is_some_and(|s| s.ticket > ticket) {
                continue;
            }
            let state = by_id.get(id.as_str()).map_or(State::Gone, |p| State::Live((*p).clone()));
            inner.set(id, Slot { ticket, state });
        }
        true
    }

    /// Answers read before now are not kept: a change this process cannot name happened.
    pub fn raise_floor(&self) {
        let _inner = self.write();
        let ticket = self.ticket();
        self.floor.fetch_max(ticket, Ordering::SeqCst);
    }

    /// Marks products changed by this process: the next read of each loads it.
    pub fn mark_stale(&self, ids: &[String]) {
        let mut inner = self.write();
        let ticket = self.ticket();
        for id in ids {
            inner.set(id, Slot { ticket, state: State::Stale });
        }
    }

    /// Marks what a write through this process touched; what it cannot name raises the floor.
    pub fn touch(&self, touched: &Touched) {
        let mut inner = self.write();
        let ticket = self.ticket();
        let mut products: HashSet<String> = touched.products.iter().cloned().collect();
        let mut blind = false;
        for v in &touched.variants {
            match inner.owners.get(v) {
                Some(p) => {
                    products.insert(p.clone());
                }
                None => blind = true,
            }
        }
        if !touched.categories.is_empty() {
            blind = true;
            let cats: HashSet<&str> = touched.categories.iter().map(String::as_str).collect();
            products.extend(inner.slots.iter().filter_map(|(id, s)| match &s.state {
                State::Live(p) if p.categories.iter().any(|c| cats.contains(c.id.as_str())) => Some(id.clone()),
                _ => None,
            }));
        }
        for id in &products {
            inner.set(id, Slot { ticket, state: State::Stale });
        }
        if blind {
            self.floor.fetch_max(ticket, Ordering::SeqCst);
        }
    }

    /// Makes every view stale (a write this process cannot describe): reads load from the
    /// database again, and keep what they load.
    pub fn mark_all_stale(&self) {
        let _inner = self.write();
        let ticket = self.ticket();
        self.stale_before.fetch_max(ticket, Ordering::SeqCst);
        self.floor.fetch_max(ticket, Ordering::SeqCst);
    }

    /// Published products by id, in order, as shoppers see them: from the views, and from the
    /// database for those not in them (kept for the next read).
    pub async fn products(
        &self,
        catalog: &Catalog,
        inventory: &Inventory,
        ids: &[String],
    ) -> Result<Vec<Arc<StoreProduct>>> {
        let Lookup { mut found, missing } = self.lookup(ids);
        if !missing.is_empty() {
            self.db_loads.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("product_views_db_loads_total").increment(1);
            let ticket = self.ticket();
            let loaded = load(catalog, inventory, &missing).await?;
            self.put(ticket, &missing, &loaded);
            found.extend(loaded.into_iter().map(|p| (p.id.clone(), p)));
        }
        Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    /// Loads every published product, a page at a time; answers how many.
    pub async fn load_all(&self, catalog: &Catalog, inventory: &Inventory) -> Result<usize> {
        let filter = ProductFilter { status: Some(ProductStatus::Published), ..Default::default() };
        let mut cursor: Option<String> = None;
        let mut n = 0;
        loop {
            let page = PageRequest::parse(Some(LOAD_PAGE), cursor.as_deref())?;
            // A page read before a change this process could not name is read again (left
            // out after three tries: reads load those products then).
            let mut next = None;
            for _ in 0..3 {
                let ticket = self.ticket();
                let found = catalog.list_products(&filter, &page).await?;
                next = found.next_cursor;
                let ids: Vec<String> = found.items.iter().map(|p| p.id.clone()).collect();
                let views = to_views(inventory, found.items).await?;
                if self.put(ticket, &ids, &views) {
                    n += views.len();
                    break;
                }
            }
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        self.loaded.store(true, Ordering::SeqCst);
        metrics::gauge!("product_views").set(self.len() as f64);
        Ok(n)
    }

    /// Ids of the live views linked to any of `categories`.
    fn in_categories(&self, categories: &HashSet<&str>) -> Vec<String> {
        self.read()
            .slots
            .iter()
            .filter_map(|(id, s)| match &s.state {
                State::Live(p) if p.categories.iter().any(|c| categories.contains(c.id.as_str())) => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    /// Names the products of the changed variants that have live views: moves those variants
    /// from `wanted.variants` to their products in `wanted.products`.
    fn name_owners(&self, wanted: &mut Wanted) {
        let inner = self.read();
        wanted.variants.retain(|v| match inner.owners.get(v) {
            Some(p) => {
                wanted.products.insert(p.clone());
                false
            }
            None => true,
        });
    }
}

/// Published products by id as shoppers see them, straight from the database: seven
/// queries for the products and one for their stock.
pub async fn load(catalog: &Catalog, inventory: &Inventory, ids: &[String]) -> Result<Vec<Arc<StoreProduct>>> {
    let products: Vec<Product> =
        catalog.products(ids).await?.into_iter().filter(|p| p.status == ProductStatus::Published).collect();
    to_views(inventory, products).await
}

async fn to_views(inventory: &Inventory, products: Vec<Product>) -> Result<Vec<Arc<StoreProduct>>> {
    let ids: Vec<String> = products.iter().flat_map(|p| p.variants.iter().map(|v| v.id.clone())).collect();
    let available = inventory.availability(&ids).await?;
    Ok(products.into_iter().map(|p| Arc::new(store_product(p, &available))).collect())
}

/// A product as shoppers see it, with the units available of each variant.
pub fn store_product(p: Product, available: &HashMap<String, i64>) -> StoreProduct {
    StoreProduct {
        variants: p
            .variants
            .into_iter()
            .map(|v| StoreVariant {
                available: available.get(&v.id).copied(),
                id: v.id,
                sku: v.sku,
                title: v.title,
                options: v.options,
                prices: v.prices.into_iter().map(Into::into).collect(),
                allow_backorder: v.allow_backorder,
                weight_g: v.weight_g,
                tax_class: v.tax_class,
            })
            .collect(),
        id: p.id,
        handle: p.handle,
        title: p.title,
        description: p.description,
        attributes: p.attributes,
        categories: p.categories,
        images: p.images,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

/// Keeps a process's [`ProductViews`] current: a [`ProductFollower`] of product, stock and
/// category changes, handed each batch's load of products after the search index and before
/// the response cache is dropped (so an answer cached after that comes from updated views).
pub struct Follow {
    pub views: Arc<ProductViews>,
    pub catalog: Catalog,
    pub inventory: Inventory,
}

impl ProductFollower for Follow {
    fn name(&self) -> &'static str {
        "product-views"
    }

    /// Before the batch's load: what a category change reaches, the products of changed
    /// variants this process knows, and the ticket the load is kept under.
    fn before_load(&self, changes: &Changes, wanted: &mut Wanted) -> u64 {
        let categories: HashSet<&str> =
            changes.categories.iter().chain(&changes.deleted_categories).map(String::as_str).collect();
        if !categories.is_empty() {
            // A product being read now may carry the category's old name, or (deleted) a link
            // that is gone: such reads are not kept. The products that carry it here are read
            // again (the load also reads those linked to it now).
            self.views.raise_floor();
            wanted.products.extend(self.views.in_categories(&categories));
        }
        self.views.name_owners(wanted);
        // Taken before the load reads the database: a mark made after it wins.
        self.views.ticket()
    }

    fn apply<'a>(&'a self, loaded: &'a Arc<Loaded>, ticket: u64, _position: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let published: Vec<Arc<StoreProduct>> = loaded
                .products
                .iter()
                .filter(|p| p.status == ProductStatus::Published)
                .map(|p| Arc::new(store_product(p.clone(), &loaded.available)))
                .collect();
            self.views.put(ticket, &loaded.ids, &published);
            metrics::gauge!("product_views").set(self.views.len() as f64);
            Ok(())
        })
    }

    /// Loads every published product, then follows from `head` (every change committed
    /// after `head` is read again, so none is missed while loading).
    fn resume<'a>(&'a self, head: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let n = self.views.load_all(&self.catalog, &self.inventory).await?;
            tracing::info!(products = n, seconds = started.elapsed().as_secs_f64(), "product views loaded");
            Ok(head.to_owned())
        })
    }
}
