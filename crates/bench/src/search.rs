//! `backroom bench search`: a realistic generated catalog ([`crate::catalog`]) in a SQLite
//! store, indexed, then served by a real `backroom serve` child and driven over HTTP by the
//! in-process load generator ([`crate::load::drive`], open or closed loop). Prints figures;
//! asserts nothing (machines are noisy).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backroom_catalog::Catalog;
use backroom_db::{ConnectOptions, Db};
use backroom_inventory::Inventory;
use backroom_search::SearchIndex;
use serde::Serialize;

use crate::load::{Load, Run, Server, get_urls};

/// The flags of `bench search`.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchOptions {
    /// Products to generate.
    #[arg(long, default_value_t = 100_000)]
    pub products: usize,
    /// Search requests a second (open loop).
    #[arg(long, default_value_t = 500)]
    pub search_rate: u32,
    /// Product page requests a second (open loop).
    #[arg(long, default_value_t = 5_000)]
    pub detail_rate: u32,
    /// Product page requests in flight for the throughput run (closed loop).
    #[arg(long, default_value_t = 64)]
    pub detail_concurrency: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep the generated store in this directory, and reuse it when it is there already.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Everything `bench search` measured.
#[derive(Debug, Clone, Serialize)]
pub struct SearchReport {
    pub products: usize,
    pub variants: usize,
    pub generate_seconds: f64,
    pub index_seconds: f64,
    pub runs: Vec<Run>,
}

/// Where `backroom serve` keeps the search index of its data directory (as
/// `backroom::search_dir` says), so that the index built here is the one it serves.
fn index_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("search-index")
}

/// Runs `bench search` and prints its report.
pub async fn run(o: SearchOptions) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = o.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let url = backroom_db::sqlite_url_in(&dir);
    let db = Db::connect(&ConnectOptions::new(&url)).await?;
    db.migrate().await?;
    let catalog = Catalog::new(db.clone());
    let started = Instant::now();
    let existing = catalog.count_products(None).await?;
    let (handles, variants) = if existing > 0 {
        eprintln!("reusing the {existing} products in {}", dir.display());
        crate::catalog::handles(&db).await?
    } else {
        eprintln!("generating {} products in {}", o.products, dir.display());
        let bar = indicatif::ProgressBar::new(o.products as u64);
        let out = crate::catalog::generate(&db, o.products, 42, |n| bar.set_position(n as u64)).await?;
        bar.finish_and_clear();
        out
    };
    let products = handles.len();
    let generate_seconds = started.elapsed().as_secs_f64();
    eprintln!("{products} products, {variants} variants ready in {generate_seconds:.1}s; indexing");
    let index = SearchIndex::open(&index_dir(&dir))?;
    let position = backroom_db::outbox::broadcast::head(&db).await?;
    let started = Instant::now();
    backroom_search::rebuild(&index, &catalog, &Inventory::new(db.clone()), &position, |_, _| {}).await?;
    let index_seconds = started.elapsed().as_secs_f64();
    eprintln!("indexed in {index_seconds:.1}s");
    // The index alone, without HTTP or the database: where the search time goes.
    let probe = crate::catalog::search_urls("", 2_000, 7);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for url in &probe {
        let pairs = query_pairs(url.split_once('?').map_or("", |(_, q)| q));
        let t = Instant::now();
        search_in_process(&index, &pairs)?;
        slowest = slowest.max(t.elapsed());
    }
    eprintln!(
        "index alone: {:.2} ms per search on average, slowest {:.2} ms ({} searches)",
        started.elapsed().as_secs_f64() * 1000.0 / probe.len() as f64,
        slowest.as_secs_f64() * 1000.0,
        probe.len()
    );
    // The server opens the same index (and the same store): this process lets go of both.
    drop(index);
    db.close().await;

    let client = crate::load::client(2048)?;
    let server = Server::spawn(client, &dir, None, &url, &[]).await?;
    let (base, client) = (server.base.clone(), server.client.clone());
    let searches = crate::catalog::search_urls(&base, 5_000, 42);
    let details: Vec<String> =
        handles.iter().step_by((handles.len() / 5_000).max(1)).map(|h| format!("{base}/store/products/{h}")).collect();
    // Search pages are made of the server's storefront views, loaded when it starts: measure
    // once they are (a server without them answers from the database meanwhile).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        let text = match client.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let views = text
            .lines()
            .find_map(|l| l.strip_prefix("product_views "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if views > 0.0 {
            eprintln!("storefront views loaded ({views} products) after {:.1}s", started.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("warming up");
    let (seconds, secs) = (o.seconds, o.seconds as f64);
    let (searches, details) = (Arc::new(searches), Arc::new(details));
    get_urls("warm-up", Load::Closed { concurrency: 8 }, 2.0, &client, searches.clone()).await;
    let mut runs = Vec::new();
    eprintln!("search: one at a time for {seconds}s");
    runs.push(
        get_urls("search (one at a time)", Load::Closed { concurrency: 1 }, secs, &client, searches.clone()).await,
    );
    // Fresh queries, not the ones above: the response cache would answer those.
    let (search_rate, detail_rate) = (o.search_rate.max(1), o.detail_rate.max(1));
    let fresh = Arc::new(crate::catalog::search_urls(&base, (search_rate as u64 * seconds).max(1) as usize, 4242));
    let (search_load, detail_load) = (Load::Open { rate: search_rate }, Load::Open { rate: detail_rate });
    eprintln!("search: {search_rate}/s for {seconds}s");
    runs.push(get_urls("search (open loop, new queries)", search_load, secs, &client, fresh).await);
    eprintln!("search: {search_rate}/s for {seconds}s, queries seen before");
    runs.push(get_urls("search (open loop, cached)", search_load, secs, &client, searches).await);
    eprintln!("product page: {} in flight for {seconds}s", o.detail_concurrency);
    let closed = Load::Closed { concurrency: o.detail_concurrency.max(1) };
    runs.push(get_urls("product page (closed loop)", closed, secs, &client, details.clone()).await);
    eprintln!("product page: {detail_rate}/s for {seconds}s");
    runs.push(get_urls("product page (open loop)", detail_load, secs, &client, details).await);
    drop(server);
    let report = SearchReport { products, variants, generate_seconds, index_seconds, runs };
    if o.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "catalog: {} products, {} variants; generated in {:.1}s, indexed in {:.1}s",
            report.products, report.variants, report.generate_seconds, report.index_seconds
        );
        for r in &report.runs {
            println!("{r}");
        }
    }
    Ok(())
}

/// The `key=value` pairs of a query string made by [`crate::catalog::search_urls`].
fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.replace("%20", " "))).collect()
}

/// Runs one search straight on the index, with the query parameters of a URL.
pub fn search_in_process(index: &SearchIndex, pairs: &[(String, String)]) -> anyhow::Result<u64> {
    let mut p = backroom_search::SearchParams { limit: 20, ..Default::default() };
    let mut filters: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in pairs {
        match k.as_str() {
            "q" => p.q = Some(v.clone()),
            "category" => p.category = Some(v.clone()),
            "currency" => p.currency = backroom_kernel::Currency::parse(v).ok(),
            "price_min" => p.price_min = v.parse().ok(),
            "price_max" => p.price_max = v.parse().ok(),
            "in_stock" => p.in_stock = v == "true",
            "sort" => p.sort = backroom_search::Sort::parse(v).unwrap_or_default(),
            "facets" => {}
            name => filters.entry(name.to_owned()).or_default().push(v.clone()),
        }
    }
    p.filters = filters.into_iter().collect();
    Ok(index.search(&p)?.total)
}
