//! `backroom`: serve, migrate, seed, admin. See README.md.

use std::process::ExitCode;

use backroom::config::{Flags, Settings};
use backroom_auth::{Auth, Role};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "backroom",
    version,
    about = "Headless commerce backend",
    propagate_version = true,
    after_help = backroom::config::ENV_ONLY_HELP
)]
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
    /// Import data from a file.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Rebuild this process's search index from the database.
    Reindex,
    /// The master key that protects personal data (see docs/api.md#the-master-key).
    MasterKey {
        #[command(subcommand)]
        command: MasterKeyCommand,
    },
    /// Benchmarks that print figures (see docs/benchmarks.md).
    Bench {
        #[command(subcommand)]
        command: backroom_bench::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an API key and print it once (only its hash is stored).
    CreateKey {
        /// owner, admin, editor, orders, support or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A label to recognise the key by.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Create or update products from a CSV file (the columns are in docs/integrations.md),
    /// with a progress bar; as `POST /admin/imports/products` does. Refused rows are listed.
    Products {
        /// The CSV file.
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum MasterKeyCommand {
    /// Print a new random master key (base64), for BACKROOM_MASTER_KEY or a key file.
    Generate,
    /// Rewrap every data key under a new master key; run with the store stopped. The current
    /// key is BACKROOM_MASTER_KEY or the data directory's key file; with the key file, the new
    /// key replaces it (the old one is kept beside it as master.key.<id>.old).
    Rotate {
        /// A file holding the new key in base64 (make one with `backroom master-key generate`).
        #[arg(long)]
        new_key_file: std::path::PathBuf,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("expected one of {}", Role::ALL.map(Role::as_str).join(", ")))
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
    if let Command::MasterKey { command: MasterKeyCommand::Generate } = cli.command {
        println!("{}", backroom_vault::MasterKey::generate().to_base64());
        return ExitCode::SUCCESS;
    }
    if let Command::Bench { command } = cli.command {
        return match rt.block_on(backroom_bench::run(command)) {
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
    // Colour only for a person at a terminal: a log file or journal gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour).with_writer(std::io::stderr).init();
}

/// `backroom master-key rotate`: rewraps every data key, then puts the new key where the old
/// one was read from (the key file), or says to change BACKROOM_MASTER_KEY.
async fn rotate_master_key(
    settings: &Settings,
    db: &backroom_db::Db,
    new_key_file: &std::path::Path,
) -> anyhow::Result<()> {
    use backroom_vault::{KEY_FILE, KeySource, MasterKey, Vault};
    let text = std::fs::read_to_string(new_key_file)
        .map_err(|e| anyhow::anyhow!("reading the new key from {}: {e}", new_key_file.display()))?;
    let new = MasterKey::from_base64(&text)
        .map_err(|_| anyhow::anyhow!("{}: not a master key (32 bytes in base64)", new_key_file.display()))?;
    let key_file = settings.data_dir.join(KEY_FILE);
    let (old, source) = match &settings.master_key {
        Some(k) => (
            MasterKey::from_base64(k).map_err(|_| anyhow::anyhow!("invalid BACKROOM_MASTER_KEY"))?,
            KeySource::Environment,
        ),
        None => {
            let text = std::fs::read_to_string(&key_file).map_err(|e| {
                anyhow::anyhow!("no BACKROOM_MASTER_KEY and no key file {} to rotate: {e}", key_file.display())
            })?;
            let old = MasterKey::from_base64(&text)
                .map_err(|_| anyhow::anyhow!("{}: not a master key", key_file.display()))?;
            (old, KeySource::File(key_file.clone()))
        }
    };
    if old.id() == new.id() {
        anyhow::bail!("the new key is the current key ({})", old.id());
    }
    let n = Vault::rotate(db, &old, &new).await.map_err(|e| match std::error::Error::source(&e) {
        Some(cause) => anyhow::anyhow!("{cause}"),
        None => anyhow::anyhow!("{e}"),
    })?;
    eprintln!("rewrapped {n} data keys from master key {} to {}", old.id(), new.id());
    match source {
        KeySource::Environment => {
            eprintln!(
                "now set BACKROOM_MASTER_KEY to the new key before starting the store; keep the old key until then"
            )
        }
        _ => {
            let kept = settings.data_dir.join(format!("{KEY_FILE}.{}.old", old.id()));
            std::fs::rename(&key_file, &kept)?;
            std::fs::copy(new_key_file, &key_file)?;
            #[cfg(unix)]
            std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            eprintln!(
                "{} now holds the new key; the old one is in {} (delete it once backups hold the new key)",
                key_file.display(),
                kept.display()
            );
        }
    }
    Ok(())
}

/// `backroom import products FILE.csv`: the import job of the API, run here with a progress
/// bar.
async fn import_products(settings: Settings, file: &std::path::Path) -> anyhow::Result<()> {
    let csv = std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let app = backroom::Application::build(settings).await?;
    let state = app.state();
    let id = backroom_api::imports::create_job(state, "product_import").await?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows ({per_sec}, {eta} left)")
            .expect("a valid template"),
    );
    let job = backroom_api::imports::run_import(state, &id, &csv, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await?;
    bar.finish_and_clear();
    for e in &job.errors {
        eprintln!("row {}: {}", e.row, e.message);
    }
    println!("{} ({}): {} of {} rows read, {} refused", job.status, job.id, job.processed, job.total, job.errors.len());
    if job.status != "succeeded" {
        anyhow::bail!("the import failed");
    }
    Ok(())
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    if let Command::Serve = command {
        // The ports first: one in use is reported before anything is created or migrated.
        let listeners = backroom::Listeners::bind(&settings).await?;
        let app = backroom::Application::build(settings).await?;
        let addr = listeners.local_addr();
        tracing::info!(%addr, database = %backroom::config::redact(&app.settings().database_url),
            providers = ?app.settings().payment_providers, "backroom listening");
        println!("backroom listening on http://{addr}");
        if let Some(at) = listeners.metrics_addr() {
            eprintln!("metrics on http://{at}/metrics");
        }
        app.run(listeners, shutdown()).await;
        return Ok(());
    }
    if let Command::Import { command: ImportCommand::Products { file } } = &command {
        return import_products(settings, file).await;
    }
    if settings.database_url.starts_with("sqlite:") {
        settings.ensure_data_dir().map_err(anyhow::Error::msg)?;
    }
    let db = backroom::open_db_with(backroom::connect_options(&settings)).await?;
    match command {
        Command::Serve => unreachable!("served above"),
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
        Command::Import { .. } => unreachable!("imported above"),
        Command::Openapi | Command::Bench { .. } | Command::MasterKey { command: MasterKeyCommand::Generate } => {
            unreachable!("handled before start-up")
        }
        Command::MasterKey { command: MasterKeyCommand::Rotate { new_key_file } } => {
            rotate_master_key(&settings, &db, &new_key_file).await?;
        }
        Command::Reindex => {
            let index = backroom::open_search(&settings.data_dir)?;
            let position = backroom_db::outbox::broadcast::head(&db).await?;
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
