//! `backroom`: serve, migrate, seed, admin. See README.md.

use std::process::ExitCode;

use backroom::config::{Flags, Settings};
use backroom_auth::{Auth, Role};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "backroom", version, about = "Headless commerce backend", propagate_version = true)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API (applies migrations first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Load data into the store.
    Seed {
        /// A believable demo store: about 50 products in categories, with variants, prices and stock.
        #[arg(long, required = true)]
        demo: bool,
    },
    /// Administrative tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Rebuild this process's search index from the database.
    Reindex,
    /// Benchmarks that print figures (see docs/benchmarks.md).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Generate a catalog in a temporary SQLite store, index it, and measure search and
    /// product pages over HTTP.
    Search {
        /// Products to generate.
        #[arg(long, default_value_t = 100_000)]
        products: usize,
        /// Search requests a second (open loop).
        #[arg(long, default_value_t = 500)]
        search_rate: u32,
        /// Product page requests a second (open loop).
        #[arg(long, default_value_t = 5_000)]
        detail_rate: u32,
        /// Product page requests in flight for the throughput run (closed loop).
        #[arg(long, default_value_t = 64)]
        detail_concurrency: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Keep the generated store in this directory, and reuse it when it is there already.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Browse a generated catalog over HTTP: product pages, category listings with facets,
    /// and searches.
    Browse {
        /// Products to generate (a started server only).
        #[arg(long, default_value_t = 10_000)]
        products: usize,
        #[command(flatten)]
        load: backroom::load::LoadOptions,
    },
    /// Purchases over HTTP: create a cart, add an item, check out with the test provider.
    Checkout {
        /// Products the purchases spread over; 1 is one hot SKU.
        #[arg(long, default_value_t = 100)]
        skus: usize,
        #[command(flatten)]
        load: backroom::load::LoadOptions,
    },
    /// The storage limit alone: checkout-like transactions a second straight on the database,
    /// one commit each and through the group-commit writer (no HTTP, no server).
    Storage {
        #[command(flatten)]
        load: backroom::load::LoadOptions,
    },
    /// N buyers with carts ready race for K units of one variant, all at once, over HTTP.
    /// Fails (exit 1) unless exactly K orders are placed.
    FlashSale {
        #[arg(long, default_value_t = 10_000)]
        buyers: usize,
        #[arg(long, default_value_t = 1_000)]
        units: i64,
        #[command(flatten)]
        load: backroom::load::LoadOptions,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an API key and print it once (only its hash is stored).
    CreateKey {
        /// owner, admin, editor or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A label to recognise the key by.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "expected one of owner, admin, editor, viewer".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        println!("{}", backroom_api::openapi::json());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::resolve(&cli.flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("backroom: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime starts");
    if let Command::Bench { command } = cli.command {
        return match rt.block_on(bench(command)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("backroom: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match rt.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backroom: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BACKROOM_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    if settings.database_url.starts_with("sqlite:") {
        settings.ensure_data_dir().map_err(anyhow::Error::msg)?;
    }
    let db = backroom::open_db_with(backroom_db::ConnectOptions {
        writer_max_batch: settings.writer_max_batch,
        ..backroom_db::ConnectOptions::new(&settings.database_url)
    })
    .await?;
    match command {
        Command::Serve => {
            let search = backroom::open_search(&settings.data_dir)?;
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, database = %backroom::config::redact(&settings.database_url), "backroom listening");
            println!("backroom listening on http://{addr}");
            let (app, state) =
                backroom::app(db.clone(), settings.admin_token.as_deref(), settings.checkout, Some(search.clone()));
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let follow = backroom::follower(&state, search);
            let follow_task = tokio::spawn(
                follow.run(std::time::Duration::from_millis(200), backroom::worker::stopped(stop_rx.clone())),
            );
            let checkout = backroom_checkout::Checkout::new(
                db.clone(),
                backroom_payments::Providers::builtin(db.clone()),
                settings.checkout,
            );
            let workers = backroom::worker::spawn(db.clone(), checkout, Vec::new(), stop_rx.clone());
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    shutdown().await;
                    let _ = stop_tx.send(true);
                })
                .await?;
            for w in workers {
                let _ = w.await;
            }
            let _ = follow_task.await;
            db.close().await;
        }
        Command::Migrate => println!("migrations applied"),
        Command::Seed { .. } => {
            let report = backroom::seed::demo(&db).await?;
            println!("{report}");
        }
        Command::Admin { command: AdminCommand::CreateKey { role, name } } => {
            let (key, token) = Auth::new(db.clone(), None).create_key(&name, role).await?;
            println!("{token}");
            eprintln!("created API key {} ({}); the key above is shown only this once", key.id, role);
        }
        Command::Openapi | Command::Bench { .. } => unreachable!("handled before start-up"),
        Command::Reindex => {
            let index = backroom::open_search(&settings.data_dir)?;
            let position = backroom_search::follow::head(&db).await?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} products ({per_sec}, {eta} left)")
                    .expect("a valid template"),
            );
            let started = std::time::Instant::now();
            let n = backroom_search::rebuild(
                &index,
                &backroom_catalog::Catalog::new(db.clone()),
                &backroom_inventory::Inventory::new(db.clone()),
                &position,
                |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                },
            )
            .await?;
            bar.finish_and_clear();
            println!("search index rebuilt: {n} products in {:.1?}", started.elapsed());
        }
    }
    db.close().await;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn bench(command: BenchCommand) -> anyhow::Result<()> {
    use backroom::load;
    let (report, json) = match command {
        BenchCommand::Search { products, search_rate, detail_rate, detail_concurrency, seconds, json, dir } => {
            return bench_search(products, search_rate, detail_rate, detail_concurrency, seconds, json, dir).await;
        }
        BenchCommand::Browse { products, load } => (load::browse(&load, products).await?, load.json),
        BenchCommand::Checkout { skus, load } => (load::checkout(&load, skus).await?, load.json),
        BenchCommand::Storage { load } => (load::storage(&load).await?, load.json),
        BenchCommand::FlashSale { buyers, units, load } => (load::flash_sale(&load, buyers, units).await?, load.json),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    if let Some(fs) = &report.flash_sale
        && (fs.orders as i64 != fs.units || fs.allocated != fs.units)
    {
        anyhow::bail!("FAILED: {} orders and {} units allocated for {} units", fs.orders, fs.allocated, fs.units);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn bench_search(
    products: usize,
    search_rate: u32,
    detail_rate: u32,
    detail_concurrency: usize,
    seconds: u64,
    json: bool,
    dir: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use backroom::bench;
    let temp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let db = backroom::open_db(&backroom_db::sqlite_url_in(&dir)).await?;
    let catalog = backroom_catalog::Catalog::new(db.clone());
    let started = std::time::Instant::now();
    let existing = catalog.count_products(None).await?;
    let (handles, variants) = if existing > 0 {
        eprintln!("reusing the {existing} products in {}", dir.display());
        bench::handles(&db).await?
    } else {
        eprintln!("generating {products} products in {}", dir.display());
        let bar = indicatif::ProgressBar::new(products as u64);
        let out = bench::generate(&db, products, 42, |n| bar.set_position(n as u64)).await?;
        bar.finish_and_clear();
        out
    };
    let products = handles.len();
    let generate_seconds = started.elapsed().as_secs_f64();
    eprintln!("{products} products, {variants} variants ready in {generate_seconds:.1}s; indexing");
    let index = backroom::open_search(&dir)?;
    let position = backroom_search::follow::head(&db).await?;
    let started = std::time::Instant::now();
    backroom_search::rebuild(
        &index,
        &backroom_catalog::Catalog::new(db.clone()),
        &backroom_inventory::Inventory::new(db.clone()),
        &position,
        |_, _| {},
    )
    .await?;
    let index_seconds = started.elapsed().as_secs_f64();
    eprintln!("indexed in {index_seconds:.1}s");
    // The index alone, without HTTP or the database: where the search time goes.
    let probe = bench::search_urls("", 2_000, 7);
    let started = std::time::Instant::now();
    let mut slowest = std::time::Duration::ZERO;
    for url in &probe {
        let pairs: Vec<(String, String)> = serde_urlencoded_pairs(url.split_once('?').map_or("", |(_, q)| q));
        let t = std::time::Instant::now();
        bench::search_in_process(&index, &pairs)?;
        slowest = slowest.max(t.elapsed());
    }
    eprintln!(
        "index alone: {:.2} ms per search on average, slowest {:.2} ms ({} searches)",
        started.elapsed().as_secs_f64() * 1000.0 / probe.len() as f64,
        slowest.as_secs_f64() * 1000.0,
        probe.len()
    );

    let (app, _) = backroom::app(db.clone(), None, Default::default(), Some(index));
    let base = bench::serve_in_thread(app)?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(2048).build()?;
    let searches = bench::search_urls(&base, 5_000, 42);
    let details: Vec<String> =
        handles.iter().step_by((handles.len() / 5_000).max(1)).map(|h| format!("{base}/store/products/{h}")).collect();
    eprintln!("warming up");
    use backroom::load::{Load, get_urls};
    use std::sync::Arc;
    let secs = seconds as f64;
    let (searches, details) = (Arc::new(searches), Arc::new(details));
    get_urls("warm-up", Load::Closed { concurrency: 8 }, 2.0, &client, searches.clone()).await;
    let mut runs = Vec::new();
    eprintln!("search: one at a time for {seconds}s");
    runs.push(
        get_urls("search (one at a time)", Load::Closed { concurrency: 1 }, secs, &client, searches.clone()).await,
    );
    // Fresh queries, not the ones above: the response cache would answer those.
    let fresh = Arc::new(bench::search_urls(&base, (search_rate as u64 * seconds) as usize, 4242));
    let (search_load, detail_load) = (Load::Open { rate: search_rate }, Load::Open { rate: detail_rate });
    eprintln!("search: {search_rate}/s for {seconds}s");
    runs.push(get_urls("search (open loop, new queries)", search_load, secs, &client, fresh).await);
    eprintln!("search: {search_rate}/s for {seconds}s, queries seen before");
    runs.push(get_urls("search (open loop, cached)", search_load, secs, &client, searches).await);
    eprintln!("product page: {detail_concurrency} in flight for {seconds}s");
    let closed = Load::Closed { concurrency: detail_concurrency };
    runs.push(get_urls("product page (closed loop)", closed, secs, &client, details.clone()).await);
    eprintln!("product page: {detail_rate}/s for {seconds}s");
    runs.push(get_urls("product page (open loop)", detail_load, secs, &client, details).await);
    let report = bench::SearchReport { products, variants, generate_seconds, index_seconds, runs };
    if json {
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

fn serde_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.replace("%20", " "))).collect()
}
