//! Product search: an embedded Tantivy index in the data directory, one document per
//! published product, prepared ahead of time from the catalog (title, description, SKUs,
//! category path, attributes, option values, the lowest price per currency, availability).
//!
//! The index only decides *which* products match and in what order. What a result shows
//! (prices, availability) is read from the database, the same source the product page and
//! the cart use, so a listing never shows another price than the cart charges (P4).
//!
//! The index follows the outbox as a broadcast reader (see [`follow`]): every process keeps its
//! own index and reads every event, and the position it has reached is saved in the index's
//! commit, so a restart carries on where it stopped.

pub mod follow;
mod schema;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use backroom_catalog::{Catalog, Category, Product, ProductFilter, ProductStatus};
use backroom_inventory::Inventory;
use backroom_kernel::{Currency, Error, PageRequest, Result};
use serde::Serialize;
use tantivy::collector::{Count, FacetCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Facet, IndexRecordOption, Value};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

use schema::Fields;
pub use schema::PRICE_BUCKETS;

/// Sort orders of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Best match first; newest first without a query.
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        match s {
            "relevance" => Some(Sort::Relevance),
            "price_asc" => Some(Sort::PriceAsc),
            "price_desc" => Some(Sort::PriceDesc),
            "newest" => Some(Sort::Newest),
            _ => None,
        }
    }
}

/// A checked search request.
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    pub q: Option<String>,
    /// A category id or handle; its sub-categories count too.
    pub category: Option<String>,
    /// `(name, values)`: a product matches when any of its attribute or option values for
    /// `name` is one of `values` (case-insensitive); several names must all match.
    pub filters: Vec<(String, Vec<String>)>,
    pub currency: Option<Currency>,
    pub price_min: Option<i64>,
    pub price_max: Option<i64>,
    pub in_stock: bool,
    pub sort: Sort,
    pub limit: u32,
    pub offset: u32,
}

/// One facet value and how many matching products have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FacetCount {
    pub value: String,
    pub count: u64,
}

/// A price range and how many matching products have their lowest price in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PriceRangeCount {
    /// Lower bound in minor units, inclusive.
    pub min: i64,
    /// Upper bound in minor units, exclusive; `null` for the last range.
    pub max: Option<i64>,
    pub count: u64,
}

/// Counts for the current filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Facets {
    /// By category handle: the top level, or the children of the selected category.
    pub categories: Vec<FacetCount>,
    /// By attribute or option name, then value.
    pub attributes: BTreeMap<String, Vec<FacetCount>>,
    /// Ranges of the lowest price in the requested currency (when one is given).
    pub price_ranges: Vec<PriceRangeCount>,
}

/// What a search found: product ids in order, the total, the facets.
#[derive(Debug, Clone)]
pub struct Found {
    pub ids: Vec<String>,
    pub total: u64,
    pub facets: Facets,
}

/// The search index of one process.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    /// Attribute and option names seen, for facet counting.
    names: RwLock<HashSet<String>>,
    /// Category id → path of handles from the root, for filters.
    categories: RwLock<HashMap<String, Vec<String>>>,
    dir: PathBuf,
    /// False while a rebuild runs; callers fall back to the database then.
    ready: std::sync::atomic::AtomicBool,
    /// Searches running at once: one per core. More only queue on the CPU and add thread
    /// switches; waiting here keeps the latency of each one low.
    permits: tokio::sync::Semaphore,
}

fn tantivy_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("search index: {e}"))
}

impl SearchIndex {
    /// Opens the index in `dir`, or creates an empty one when it is missing or unreadable
    /// (the caller then rebuilds it; see [`SearchIndex::needs_rebuild`]).
    pub fn open(dir: &Path) -> Result<Arc<SearchIndex>> {
        let (schema, fields) = schema::build();
        std::fs::create_dir_all(dir).map_err(tantivy_err)?;
        let index = match Index::open_in_dir(dir) {
            Ok(index) if index.schema() == schema => index,
            Ok(_) | Err(_) => {
                if dir.join("meta.json").exists() {
                    tracing::warn!(dir = %dir.display(), "search index unreadable or of an older schema; rebuilding it");
                }
                std::fs::remove_dir_all(dir).map_err(tantivy_err)?;
                std::fs::create_dir_all(dir).map_err(tantivy_err)?;
                Index::create_in_dir(dir, schema).map_err(tantivy_err)?
            }
        };
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(tantivy_err)?;
        let writer = index.writer_with_num_threads(1, 64_000_000).map_err(tantivy_err)?;
        let names = {
            let searcher = reader.searcher();
            let mut names = HashSet::new();
            let mut fc = FacetCollector::for_field("facets");
            fc.add_facet("/attr");
            if let Ok(counts) = searcher.search(&AllQuery, &fc) {
                for (f, _) in counts.get("/attr") {
                    if let Some(name) = f.to_path().get(1) {
                        names.insert((*name).to_owned());
                    }
                }
            }
            names
        };
        Ok(Arc::new(SearchIndex {
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
            names: RwLock::new(names),
            categories: RwLock::new(HashMap::new()),
            dir: dir.to_owned(),
            ready: std::sync::atomic::AtomicBool::new(false),
            permits: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The outbox position saved with the last commit, if any.
    pub fn saved_position(&self) -> Option<String> {
        self.index.load_metas().ok().and_then(|m| m.payload)
    }

    /// Whether the index has no saved position: it is new, or was unreadable.
    pub fn needs_rebuild(&self) -> bool {
        self.saved_position().is_none()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, std::sync::atomic::Ordering::Release)
    }

    /// Number of products in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the category paths used for documents and filters.
    pub fn set_categories(&self, tree: &[Category]) {
        fn walk(nodes: &[Category], prefix: &[String], out: &mut HashMap<String, Vec<String>>) {
            for n in nodes {
                let mut path = prefix.to_vec();
                path.push(n.handle.clone());
                out.insert(n.id.clone(), path.clone());
                out.insert(format!("handle:{}", n.handle), path.clone());
                walk(&n.children, &path, out);
            }
        }
        let mut map = HashMap::new();
        walk(tree, &[], &mut map);
        *self.categories.write().expect("lock") = map;
    }

    fn category_path(&self, key: &str) -> Option<Vec<String>> {
        let cats = self.categories.read().expect("lock");
        cats.get(key).or_else(|| cats.get(&format!("handle:{key}"))).cloned()
    }

    /// Writes (or removes) the documents of these products; commits with `position`.
    /// Products that are missing or not published are removed from the index.
    pub fn apply(
        &self,
        products: &[Product],
        removed: &[String],
        available: &HashMap<String, i64>,
        position: &str,
    ) -> Result<()> {
        let mut writer = self.writer.lock().expect("writer lock");
        for id in removed {
            writer.delete_term(Term::from_field_text(self.fields.id, id));
        }
        for p in products {
            writer.delete_term(Term::from_field_text(self.fields.id, &p.id));
            if p.status == ProductStatus::Published {
                let doc = self.document(p, available);
                tracing::debug!(product = p.id, categories = ?p.categories.iter().map(|c| self.category_path(&c.id)).collect::<Vec<_>>(), "indexing");
                writer.add_document(doc).map_err(tantivy_err)?;
            }
        }
        self.commit(&mut writer, position)
    }

    /// Removes every document (before a rebuild).
    pub fn clear(&self) -> Result<()> {
        let writer = self.writer.lock().expect("writer lock");
        writer.delete_all_documents().map_err(tantivy_err)?;
        Ok(())
    }

    fn commit(&self, writer: &mut IndexWriter, position: &str) -> Result<()> {
        let mut prepared = writer.prepare_commit().map_err(tantivy_err)?;
        prepared.set_payload(position);
        prepared.commit().map_err(tantivy_err)?;
        self.reader.reload().map_err(tantivy_err)
    }

    fn document(&self, p: &Product, available: &HashMap<String, i64>) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, &p.id);
        doc.add_text(f.title, &p.title);
        let mut body = vec![p.description.clone(), p.handle.replace('-', " ")];
        let mut names = Vec::new();
        for c in &p.categories {
            body.push(c.name.clone());
            if let Some(path) = self.category_path(&c.id) {
                let mut segments = vec!["cat".to_owned()];
                segments.extend(path);
                doc.add_facet(f.facets, Facet::from_path(segments));
            }
        }
        for (k, v) in &p.attributes {
            body.push(v.clone());
            doc.add_facet(f.facets, Facet::from_path(["attr", k, v]));
            doc.add_facet(f.facets, Facet::from_path(["f", k, &v.to_lowercase()]));
            names.push(k.clone());
        }
        let mut lowest: HashMap<Currency, i64> = HashMap::new();
        let mut in_stock = false;
        for v in &p.variants {
            body.push(v.sku.clone());
            for (k, val) in &v.options {
                body.push(val.clone());
                doc.add_facet(f.facets, Facet::from_path(["attr", k, val]));
                doc.add_facet(f.facets, Facet::from_path(["f", k, &val.to_lowercase()]));
                names.push(k.clone());
            }
            for m in &v.prices {
                let e = lowest.entry(m.currency()).or_insert(m.amount());
                *e = (*e).min(m.amount());
            }
            // Not tracked, backorderable, or units left: it can be bought.
            in_stock |= v.allow_backorder || available.get(&v.id).is_none_or(|&n| n > 0);
        }
        for (currency, amount) in lowest {
            if let Some(field) = f.prices.get(&currency) {
                doc.add_u64(*field, amount as u64);
            }
            doc.add_facet(
                f.facets,
                Facet::from_path(["price", currency.code(), &schema::bucket_of(amount, currency).to_string()]),
            );
        }
        doc.add_text(f.body, body.join(" "));
        doc.add_u64(f.in_stock, u64::from(in_stock));
        doc.add_i64(f.created, p.created_at.timestamp_micros());
        if !names.is_empty() {
            let mut known = self.names.write().expect("lock");
            known.extend(names);
        }
        doc
    }

    /// Runs a search on a blocking thread, at most one per core at a time.
    pub async fn search_async(self: &Arc<Self>, params: SearchParams) -> Result<Found> {
        let _permit = self.permits.acquire().await.map_err(tantivy_err)?;
        let index = self.clone();
        tokio::task::spawn_blocking(move || index.search(&params)).await.map_err(tantivy_err)?
    }

    /// Runs a search. CPU-bound: call it from a blocking task.
    pub fn search(&self, params: &SearchParams) -> Result<Found> {
        let f = &self.fields;
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(q) = params.q.as_deref() {
            if let Some(text) = self.text_query(q)? {
                must.push((Occur::Must, text));
            } else {
                // Only punctuation: nothing can match.
                return Ok(Found { ids: Vec::new(), total: 0, facets: Facets::default() });
            }
        }
        let mut category_path = None;
        if let Some(c) = params.category.as_deref() {
            let Some(path) = self.category_path(c) else {
                return Ok(Found { ids: Vec::new(), total: 0, facets: Facets::default() });
            };
            let mut segments = vec!["cat".to_owned()];
            segments.extend(path.iter().cloned());
            let facet = Facet::from_path(segments);
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(Term::from_facet(f.facets, &facet), IndexRecordOption::Basic)),
            ));
            category_path = Some(facet);
        }
        for (name, values) in &params.filters {
            let any: Vec<(Occur, Box<dyn Query>)> = values
                .iter()
                .map(|v| {
                    let facet = Facet::from_path(["f", name.to_lowercase().as_str(), v.to_lowercase().as_str()]);
                    (
                        Occur::Should,
                        Box::new(TermQuery::new(Term::from_facet(f.facets, &facet), IndexRecordOption::Basic))
                            as Box<dyn Query>,
                    )
                })
                .collect();
            must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        let price_field = params.currency.and_then(|c| f.prices.get(&c).copied());
        let needs_price = params.price_min.is_some()
            || params.price_max.is_some()
            || matches!(params.sort, Sort::PriceAsc | Sort::PriceDesc);
        if needs_price {
            let Some(field) = price_field else {
                return Ok(Found { ids: Vec::new(), total: 0, facets: Facets::default() });
            };
            let lo = params.price_min.unwrap_or(0).max(0) as u64;
            let hi = params
                .price_max
                .map_or(Bound::Unbounded, |h| Bound::Included(Term::from_field_u64(field, h.max(0) as u64)));
            must.push((Occur::Must, Box::new(RangeQuery::new(Bound::Included(Term::from_field_u64(field, lo)), hi))));
        }
        if params.in_stock {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(Term::from_field_u64(f.in_stock, 1), IndexRecordOption::Basic)),
            ));
        }
        let query: Box<dyn Query> =
            if must.is_empty() { Box::new(AllQuery) } else { Box::new(BooleanQuery::new(must)) };

        let mut fc = FacetCollector::for_field("facets");
        let top_level = category_path.clone().unwrap_or_else(|| Facet::from("/cat"));
        fc.add_facet(top_level.clone());
        let names: Vec<String> = self.names.read().expect("lock").iter().cloned().collect();
        for n in &names {
            fc.add_facet(Facet::from_path(["attr", n.as_str()]));
        }
        if let Some(c) = params.currency {
            fc.add_facet(Facet::from_path(["price", c.code()]));
        }
        let searcher = self.reader.searcher();
        let limit = params.limit.max(1) as usize;
        let offset = params.offset as usize;
        let sort = match (params.sort, params.q.is_some()) {
            (Sort::Relevance, false) => Sort::Newest,
            (s, _) => s,
        };
        let (addresses, total, counts): (Vec<DocAddress>, usize, _) = match sort {
            Sort::Relevance => {
                let (top, total, counts) = searcher
                    .search(&query, &(TopDocs::with_limit(limit).and_offset(offset).order_by_score(), Count, fc))
                    .map_err(tantivy_err)?;
                (top.into_iter().map(|(_, a)| a).collect(), total, counts)
            }
            Sort::PriceAsc | Sort::PriceDesc => {
                let name = schema::price_field_name(params.currency.expect("checked above"));
                let order = if sort == Sort::PriceAsc { Order::Asc } else { Order::Desc };
                let (top, total, counts) = searcher
                    .search(
                        &query,
                        &(TopDocs::with_limit(limit).and_offset(offset).order_by_u64_field(name, order), Count, fc),
                    )
                    .map_err(tantivy_err)?;
                (top.into_iter().map(|(_, a)| a).collect(), total, counts)
            }
            Sort::Newest => {
                let (top, total, counts) = searcher
                    .search(
                        &query,
                        &(
                            TopDocs::with_limit(limit)
                                .and_offset(offset)
                                .order_by_fast_field::<i64>("created", Order::Desc),
                            Count,
                            fc,
                        ),
                    )
                    .map_err(tantivy_err)?;
                (top.into_iter().map(|(_, a)| a).collect(), total, counts)
            }
        };
        let mut ids = Vec::with_capacity(addresses.len());
        for a in addresses {
            let doc: TantivyDocument = searcher.doc(a).map_err(tantivy_err)?;
            if let Some(id) = doc.get_first(f.id).and_then(|v| v.as_str()) {
                ids.push(id.to_owned());
            }
        }

        let mut facets = Facets::default();
        for (facet, count) in counts.get(top_level.clone()) {
            if let Some(last) = facet.to_path().last() {
                facets.categories.push(FacetCount { value: (*last).to_owned(), count });
            }
        }
        for n in &names {
            let values: Vec<FacetCount> = counts
                .get(Facet::from_path(["attr", n.as_str()]))
                .filter_map(|(facet, count)| {
                    facet.to_path().last().map(|v| FacetCount { value: (*v).to_owned(), count })
                })
                .collect();
            if !values.is_empty() {
                facets.attributes.insert(n.clone(), values);
            }
        }
        if let Some(c) = params.currency {
            let by_bucket: HashMap<usize, u64> = counts
                .get(Facet::from_path(["price", c.code()]))
                .filter_map(|(facet, count)| facet.to_path().last().and_then(|b| b.parse().ok()).map(|b| (b, count)))
                .collect();
            for (i, (min, max)) in schema::bucket_bounds(c).into_iter().enumerate() {
                facets.price_ranges.push(PriceRangeCount { min, max, count: by_bucket.get(&i).copied().unwrap_or(0) });
            }
        }
        facets.categories.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
        for values in facets.attributes.values_mut() {
            values.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
        }
        Ok(Found { ids, total: total as u64, facets })
    }

    /// Every word must match, in the title (boosted) or the body; words of 5+ letters
    /// forgive one typo (9+: two); the last word also matches as a prefix (search as you
    /// type). The query is tokenized like the documents, so syntax characters are just text.
    fn text_query(&self, q: &str) -> Result<Option<Box<dyn Query>>> {
        let f = &self.fields;
        let mut analyzer = self.index.tokenizer_for_field(f.title).map_err(tantivy_err)?;
        let mut words = Vec::new();
        let mut stream = analyzer.token_stream(q);
        while stream.advance() {
            words.push(stream.token().text.clone());
        }
        if words.is_empty() {
            return Ok(None);
        }
        let last = words.len() - 1;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (i, w) in words.iter().enumerate() {
            let mut alternatives: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for (field, boost) in [(f.title, 3.0), (f.body, 1.0)] {
                let term = Term::from_field_text(field, w);
                let exact: Box<dyn Query> = Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs));
                alternatives.push((Occur::Should, Box::new(BoostQuery::new(exact, boost * 2.0))));
                let chars = w.chars().count();
                let distance = if chars >= 9 {
                    2
                } else if chars >= 5 {
                    1
                } else {
                    0
                };
                if distance > 0 {
                    alternatives.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(Box::new(FuzzyTermQuery::new(term.clone(), distance, true)), boost)),
                    ));
                }
                if i == last {
                    alternatives.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(Box::new(FuzzyTermQuery::new_prefix(term, 0, true)), boost)),
                    ));
                }
            }
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(alternatives))));
        }
        Ok(Some(Box::new(BooleanQuery::new(clauses))))
    }
}

/// Rebuilds the whole index from the database, calling `progress(done, total)` as it goes.
/// `position` is the outbox position taken *before* reading, so no change is missed.
pub async fn rebuild(
    index: &Arc<SearchIndex>,
    catalog: &Catalog,
    inventory: &Inventory,
    position: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64> {
    index.set_categories(&catalog.category_tree().await?);
    let total = catalog.count_products(Some(ProductStatus::Published)).await?;
    let filter = ProductFilter { status: Some(ProductStatus::Published), ..Default::default() };
    let idx = index.clone();
    tokio::task::spawn_blocking(move || idx.clear()).await.map_err(tantivy_err)??;
    let mut done = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let page = PageRequest::parse(Some(100), cursor.as_deref())?;
        let found = catalog.list_products(&filter, &page).await?;
        let variant_ids: Vec<String> =
            found.items.iter().flat_map(|p| p.variants.iter().map(|v| v.id.clone())).collect();
        let available = inventory.availability(&variant_ids).await?;
        let idx = index.clone();
        let items = found.items;
        done += items.len() as u64;
        let last = found.next_cursor.is_none();
        // Commit only at the end: a half-built index never carries a position.
        let writer_items = items.clone();
        tokio::task::spawn_blocking(move || idx.add_without_commit(&writer_items, &available))
            .await
            .map_err(tantivy_err)??;
        progress(done, total);
        if last {
            break;
        }
        cursor = found.next_cursor;
    }
    let idx = index.clone();
    let position = position.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut writer = idx.writer.lock().expect("writer lock");
        idx.commit(&mut writer, &position)
    })
    .await
    .map_err(tantivy_err)??;
    index.set_ready(true);
    Ok(done)
}

impl SearchIndex {
    fn add_without_commit(&self, products: &[Product], available: &HashMap<String, i64>) -> Result<()> {
        let writer = self.writer.lock().expect("writer lock");
        for p in products {
            if p.status == ProductStatus::Published {
                writer.add_document(self.document(p, available)).map_err(tantivy_err)?;
            }
        }
        Ok(())
    }
}
