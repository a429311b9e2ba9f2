//! `backroom bench …`: benchmarks that print figures (see docs/benchmarks.md). This crate is
//! no part of the product's code paths: the `backroom` binary only hands it the parsed
//! subcommand ([`run`]).
//!
//! Every scenario that needs a server starts a real `backroom serve` (a child process of the
//! running binary, found through [`std::env::current_exe`]) on a store of its own and drives
//! it over HTTP, or drives a running one (`--target`). A bench never touches data it did not
//! create: on a temporary SQLite store by default, or, with `--database-url`, in a fresh
//! PostgreSQL database of its own on that server ([`scratch`]), dropped again at the end,
//! also when the scenario fails or the bench is interrupted.

pub mod catalog;
pub mod flood;
pub mod load;
pub mod memory;
pub mod scratch;
pub mod search;
pub mod storage;

use anyhow::bail;
use clap::Subcommand;

/// The scenarios of `backroom bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Generate a catalog in a temporary SQLite store, index it, start `backroom serve` on
    /// it, and measure search and product pages over HTTP.
    Search(search::SearchOptions),
    /// Browse a generated catalog over HTTP: product pages, category listings with facets,
    /// and searches.
    Browse {
        /// Products to generate (a started server only).
        #[arg(long, default_value_t = 10_000)]
        products: usize,
        #[command(flatten)]
        load: load::LoadOptions,
    },
    /// Purchases over HTTP: create a cart, add an item, check out with the test provider.
    Checkout {
        /// Products the purchases spread over; 1 is one hot SKU.
        #[arg(long, default_value_t = 100)]
        skus: usize,
        /// Price every purchase in a region with tax (Portugal, 23 % included), a flat shipping
        /// option and a 10 % promotion code: the cart also gets an address, the code and the
        /// shipping method (three more requests), and the checkout counts the code's use.
        #[arg(long)]
        priced: bool,
        #[command(flatten)]
        load: load::LoadOptions,
    },
    /// The storage limit alone: checkout-like transactions a second straight on the database,
    /// one commit each and through the group-commit writer (no HTTP, no server).
    Storage {
        #[command(flatten)]
        load: load::LoadOptions,
    },
    /// Purchases alone, then the same purchases during a flood of wrong-password logins, on a
    /// server with its rate limits on: checkout p99 with and without the flood, and how the
    /// flood was answered (mostly `429 rate_limited`).
    LoginFlood {
        /// Wrong-password logins in flight during the flood.
        #[arg(long, default_value_t = 64)]
        flooders: usize,
        /// The flood's rate, logins a second (0: as fast as the flooders go). The load
        /// generator shares the machine with the server; an unbounded flood measures it too.
        #[arg(long, default_value_t = 2_000)]
        flood_rate: u32,
        #[command(flatten)]
        load: load::LoadOptions,
    },
    /// N buyers with carts ready race for K units of one variant over HTTP, all at once
    /// (closed loop over --concurrency connections) or at --rate checkouts a second. Fails
    /// (exit 1) unless orders placed == units allocated <= K, and == K when no checkout was
    /// turned away with 503.
    FlashSale {
        #[arg(long, default_value_t = 10_000)]
        buyers: usize,
        #[arg(long, default_value_t = 1_000)]
        units: i64,
        #[command(flatten)]
        load: load::LoadOptions,
    },
}

/// Runs one scenario and prints its report (JSON with `--json`). With `--database-url` the
/// scenario runs in a scratch database created for it on that PostgreSQL server, dropped
/// afterwards whatever happened (Ctrl-C and SIGTERM included).
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    // Listen for Ctrl-C and SIGTERM before anything is created, so that no signal can end
    // the process between creating the scratch database (or the server) and removing it.
    let mut interrupted = Interrupted::listen()?;
    let (mut opts, scenario) = match command {
        BenchCommand::Search(options) => {
            return tokio::select! {
                r = search::run(options) => r,
                signal = interrupted.wait() => Err(anyhow::anyhow!("interrupted by {signal}")),
            };
        }
        BenchCommand::Browse { products, load } => (load, Scenario::Browse(products)),
        BenchCommand::Checkout { skus, priced, load } => (load, Scenario::Checkout(skus, priced)),
        BenchCommand::Storage { load } => (load, Scenario::Storage),
        BenchCommand::LoginFlood { flooders, flood_rate, load } => (load, Scenario::LoginFlood(flooders, flood_rate)),
        BenchCommand::FlashSale { buyers, units, load } => {
            if units < 1 || (buyers as i64) < units {
                bail!("a flash sale needs at least one unit and at least as many buyers as units");
            }
            (load, Scenario::FlashSale { buyers, units })
        }
    };
    let scratch = match &opts.database_url {
        Some(server) => {
            let db = tokio::select! {
                db = scratch::Database::create(server) => db?,
                signal = interrupted.wait() => bail!("interrupted by {signal}"),
            };
            opts.database_url = Some(db.url().to_owned());
            Some(db)
        }
        None => None,
    };
    let outcome = tokio::select! {
        r = scenario.run(&opts) => r,
        signal = interrupted.wait() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    // The scenario's server (if any) was stopped when its future ended or was dropped.
    if let Some(db) = scratch
        && let Err(e) = db.drop_database().await
    {
        // When the scenario failed too, its failure is the error; this one is said first.
        return Err(match outcome {
            Err(first) => {
                eprintln!("backroom: {e:#}");
                first
            }
            Ok(_) => e,
        });
    }
    let report = outcome?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    if let Some(sale) = &report.flash_sale
        && let Err(why) = sale.check()
    {
        bail!("FAILED: {why}");
    }
    Ok(())
}

/// A scenario of [`BenchCommand`] that runs under [`load::LoadOptions`].
enum Scenario {
    Browse(usize),
    Checkout(usize, bool),
    Storage,
    LoginFlood(usize, u32),
    FlashSale { buyers: usize, units: i64 },
}

impl Scenario {
    async fn run(self, opts: &load::LoadOptions) -> anyhow::Result<load::Report> {
        match self {
            Scenario::Browse(products) => load::browse(opts, products).await,
            Scenario::Checkout(skus, priced) => load::checkout(opts, skus, priced).await,
            Scenario::Storage => load::storage(opts).await,
            Scenario::LoginFlood(flooders, rate) => flood::login_flood(opts, flooders, rate).await,
            Scenario::FlashSale { buyers, units } => load::flash_sale(opts, buyers, units).await,
        }
    }
}

/// Ctrl-C and SIGTERM, listened for from the moment [`Interrupted::listen`] returns.
struct Interrupted {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Interrupted {
    fn listen() -> anyhow::Result<Interrupted> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Interrupted { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Interrupted {})
    }

    /// Waits for the next signal; answers its name.
    async fn wait(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
