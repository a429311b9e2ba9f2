//! `backroom bench browse | checkout | flash-sale | storage`: scenarios that start a real
//! `backroom serve` (a child process of this binary, on a temporary SQLite store or in the
//! run's own PostgreSQL database, see [`crate::scratch`]) or target a running one, and drive
//! it over HTTP from an in-process load generator, open-loop at a fixed rate or closed-loop
//! at a concurrency.
//!
//! Every scenario also measures, in the same run, the two limits our figures are read
//! against: `GET /healthz` requests a second (what HTTP alone allows on this machine) and
//! checkout-like database transactions a second (what storage allows: one commit each, and
//! batched through the group-commit writer). Nothing is asserted except the flash sale's
//! "exactly K orders" (machines are noisy).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use backroom_db::{ConnectOptions, Db};
use serde::Serialize;
use serde_json::{Value, json};

use crate::memory::Rss;

/// Options every scenario takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadOptions {
    /// Run on this PostgreSQL server (`postgres://…`), in a database the bench creates there
    /// for the run (`backroom_bench_…`) and drops at the end; nothing else on the server is
    /// touched. A temporary SQLite store when left out.
    #[arg(long, value_parser = crate::scratch::parse_server_url)]
    pub database_url: Option<String>,
    /// Drive the server already running at this URL instead of starting one (needs --token;
    /// the storage baseline needs --database-url too).
    #[arg(long, requires = "token")]
    pub target: Option<String>,
    /// An owner API key (or admin token) of the --target server.
    #[arg(long)]
    pub token: Option<String>,
    /// Requests (or purchases) in flight at once: closed loop.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Send at this fixed rate a second instead (open loop; latency counts from the moment
    /// each request was due, so a slow server cannot hide behind a lower rate).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The started server's `BACKROOM_WRITER_MAX_BATCH` (1: no group commit, to compare).
    #[arg(long)]
    pub writer_max_batch: Option<usize>,
    /// The started server's `BACKROOM_WRITER_QUEUE`: write jobs that may wait for the writer
    /// before it answers `503 overloaded` (a small queue shows load shedding). The server's
    /// default when left out.
    #[arg(long)]
    pub writer_queue: Option<usize>,
}

/// How a run was driven.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// A fixed number of operations in flight: the next starts when one ends.
    Closed { concurrency: usize },
    /// Operations started at a fixed rate a second, whether the earlier ones ended or not.
    Open { rate: u32 },
}

impl LoadOptions {
    /// The settings a started server gets from these options, as environment variables.
    pub fn server_env(&self) -> Vec<(&'static str, String)> {
        let batch = self.writer_max_batch.unwrap_or(backroom_db::writer::MAX_BATCH);
        let mut env = vec![("BACKROOM_WRITER_MAX_BATCH", batch.to_string())];
        env.extend(self.writer_queue.map(|q| ("BACKROOM_WRITER_QUEUE", q.to_string())));
        env
    }

    pub fn load(&self) -> Load {
        match self.rate {
            Some(rate) => Load::Open { rate: rate.max(1) },
            None => Load::Closed { concurrency: self.concurrency.max(1) },
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub name: String,
    pub load: Load,
    pub ok: usize,
    /// Failed answers by status and problem `code` (`409 insufficient_stock`), or `transport`.
    pub errors: BTreeMap<String, usize>,
    pub seconds: f64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Run {
    pub fn new(name: &str, load: Load, mut lat: Vec<Duration>, errors: BTreeMap<String, usize>, took: Duration) -> Run {
        lat.sort();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            ms(lat[i])
        };
        Run {
            name: name.to_owned(),
            load,
            ok: lat.len(),
            seconds: took.as_secs_f64(),
            throughput_per_s: lat.len() as f64 / took.as_secs_f64().max(1e-9),
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            max_ms: lat.last().map_or(0.0, |d| ms(*d)),
            errors,
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let load = match self.load {
            Load::Closed { concurrency } => format!("{concurrency} in flight"),
            Load::Open { rate } => format!("{rate}/s offered"),
        };
        write!(
            f,
            "  {:<34} {:>9.0}/s  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  ({} ok, {load})",
            self.name, self.throughput_per_s, self.p50_ms, self.p95_ms, self.p99_ms, self.ok
        )?;
        for (code, n) in &self.errors {
            write!(f, "\n  {:<34} {n} × {code}", "")?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The limits measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    /// `GET /healthz` a second at the run's concurrency.
    pub healthz_per_s: f64,
    /// Checkout-like transactions a second, one commit each (storage without batching).
    pub db_one_per_commit_per_s: Option<f64>,
    /// The same transactions through the group-commit writer.
    pub db_batched_per_s: Option<f64>,
}

impl std::fmt::Display for Baselines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "  limits: GET /healthz {:.0}/s", self.healthz_per_s)?;
        if let (Some(one), Some(batched)) = (self.db_one_per_commit_per_s, self.db_batched_per_s) {
            write!(f, "; checkout-like DB transactions {one:.0}/s one per commit, {batched:.0}/s batched")?;
        }
        Ok(())
    }
}

/// A scenario's whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub database: String,
    pub baselines: Baselines,
    pub runs: Vec<Run>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flash_sale: Option<FlashSale>,
    /// The started server's resident memory during the measured run (where sampled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_memory: Option<Rss>,
    /// The started server's CPU time (user + system) per operation of the measured run, in
    /// milliseconds: purchases for `checkout`, checkouts for `flash-sale`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_ms_per_op: Option<f64>,
    pub summary: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "bench {} on {}", self.scenario, self.database)?;
        for r in &self.runs {
            writeln!(f, "{r}")?;
        }
        if let Some(fs) = &self.flash_sale {
            writeln!(f, "{fs}")?;
        }
        if let Some(rss) = &self.server_memory {
            writeln!(f, "{rss}")?;
        }
        if let Some(cpu) = self.server_cpu_ms_per_op {
            writeln!(f, "  server CPU: {cpu:.3} ms per operation (process CPU time ÷ operations)")?;
        }
        writeln!(f, "{}", self.baselines)?;
        write!(f, "{}", self.summary)
    }
}

// ---- the server under test ------------------------------------------------------------

/// The server a scenario drives: a child `backroom serve`, or a running one (--target).
pub struct Server {
    /// Its base URL, `http://127.0.0.1:port`.
    pub base: String,
    /// An admin bearer token for it.
    pub token: String,
    /// Its database (a started server, or --target with --database-url).
    pub database_url: Option<String>,
    /// An HTTP client with a pool sized for the run.
    pub client: reqwest::Client,
    child: Option<Child>,
    /// The child's data directory (its log and search index live there).
    dir: Option<std::path::PathBuf>,
    /// Removed when the server is dropped (after the child is stopped).
    _temp: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP client for a run with up to `connections` requests in flight.
pub fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections.max(64))
        .timeout(Duration::from_secs(60))
        .build()?)
}

impl Server {
    /// Starts `backroom serve` on a fresh store after `prepare` filled its database (or
    /// targets the running server of `opts.target`, whose data are used as they are). The
    /// store is a temporary SQLite file, or `opts.database_url`: the run's own database.
    pub async fn start<F, Fut>(opts: &LoadOptions, prepare: F) -> anyhow::Result<Server>
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        Self::start_with_env(opts, &opts.server_env(), prepare).await
    }

    /// [`Server::start`] with these settings (environment variables) instead of the options'.
    pub async fn start_with_env<F, Fut>(
        opts: &LoadOptions,
        env: &[(&str, String)],
        prepare: F,
    ) -> anyhow::Result<Server>
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let client = client(opts.concurrency)?;
        if let Some(target) = &opts.target {
            let token = opts.token.clone().unwrap_or_default();
            return Ok(Server {
                base: target.trim_end_matches('/').to_owned(),
                token,
                database_url: opts.database_url.clone(),
                client,
                child: None,
                dir: None,
                _temp: None,
            });
        }
        let temp = tempfile::tempdir()?;
        let url = match &opts.database_url {
            Some(u) => u.clone(),
            None => backroom_db::sqlite_url_in(temp.path()),
        };
        {
            let db = Db::connect(&ConnectOptions::new(&url)).await.context("open the bench database")?;
            db.migrate().await?;
            prepare(db.clone()).await?;
            db.close().await;
        }
        let dir = temp.path().to_owned();
        Server::spawn(client, &dir, Some(temp), &url, env).await
    }

    /// Starts `backroom serve` (this very binary) on the migrated database `url`, with `dir`
    /// as its data directory and `env` as further settings; `temp` is removed once the server
    /// stopped. Answers when it is ready (its search index built).
    pub async fn spawn(
        client: reqwest::Client,
        dir: &std::path::Path,
        temp: Option<tempfile::TempDir>,
        url: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Server> {
        let token = "bench-admin-token-0123456789".to_owned();
        let log = std::fs::File::create(dir.join("server.log"))?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("BACKROOM_DATA_DIR", dir)
            .env("BACKROOM_DATABASE_URL", url)
            .env("BACKROOM_ADMIN_TOKEN", &token)
            // The scenarios buy with the test provider, which a server only offers when told.
            .env("BACKROOM_PAYMENT_PROVIDERS", "test")
            .env("BACKROOM_LOG", "warn")
            // Every simulated shopper comes from this one address: limits off, unless the
            // scenario's own settings (`env`, below) turn them on (`login-flood`).
            .env("BACKROOM_RATE_LIMITS", "off")
            // The same few shoppers buy thousands of times from one address (some declined on
            // purpose): risk scoring off too, or its velocity rules would hold or block them.
            .env("BACKROOM_RISK", "off")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("start backroom serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?).read_line(&mut line)?;
        let Some(base) = line.trim().strip_prefix("backroom listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            bail!("backroom serve did not start: {line:?}\n{log}");
        };
        let server = Server {
            base: base.to_owned(),
            token,
            database_url: Some(url.to_owned()),
            client,
            child: Some(child),
            dir: Some(dir.to_owned()),
            _temp: temp,
        };
        // Ready once the search index is built and the database answers.
        for _ in 0..600 {
            if server.client.get(format!("{}/readyz", server.base)).send().await.is_ok_and(|r| r.status().is_success())
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("backroom serve was not ready after 60 s")
    }

    /// The server's log (a started server only).
    pub fn log_path(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.join("server.log"))
    }

    /// The started server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An admin call that must succeed.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let res = self.client.request(method, self.url(path)).bearer_auth(&self.token).json(&body).send().await?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {body}");
        }
        Ok(body)
    }

    /// Creates `n` published one-variant products with `stock` units each; answers the
    /// variant ids.
    pub async fn products(&self, n: usize, stock: i64, tag: &str) -> anyhow::Result<Vec<String>> {
        let mut variants = Vec::with_capacity(n);
        for i in 0..n {
            let p = self
                .admin(
                    reqwest::Method::POST,
                    "/admin/products",
                    json!({"title": format!("Bench {tag} {i}"), "handle": format!("bench-{tag}-{i}-{}", std::process::id()),
                        "status": "published",
                        "variants": [{"sku": format!("BENCH-{tag}-{i}-{}", std::process::id()),
                            "prices": [{"amount": 1990 + i as i64, "currency": "EUR"}]}]}),
                )
                .await?;
            let id = p["variants"][0]["id"].as_str().ok_or_else(|| anyhow!("no variant in {p}"))?.to_owned();
            self.admin(reqwest::Method::PUT, &format!("/admin/variants/{id}/stock"), json!({"on_hand": stock})).await?;
            variants.push(id);
        }
        Ok(variants)
    }

    /// `GET /healthz` a second at `concurrency` for `seconds`.
    pub async fn healthz(&self, concurrency: usize, seconds: f64) -> f64 {
        let urls = Arc::new(vec![self.url("/healthz")]);
        get_urls("GET /healthz", Load::Closed { concurrency }, seconds, &self.client, urls).await.throughput_per_s
    }

    /// The storage limits (needs the database URL; not while a load runs).
    pub async fn baselines(&self, concurrency: usize, seconds: f64) -> anyhow::Result<Baselines> {
        progress_line("measuring the limits: GET /healthz and raw database transactions");
        let healthz_per_s = self.healthz(concurrency, seconds).await;
        let (mut one, mut batched) = (None, None);
        if let Some(url) = &self.database_url {
            // On SQLite a scratch file beside the store's (same disk, same settings); on
            // PostgreSQL scratch tables in the run's own database, dropped afterwards.
            let scratch = match &self.dir {
                Some(d) if url.starts_with("sqlite:") => format!("sqlite://{}", d.join("baseline.db").display()),
                _ => url.clone(),
            };
            let db = Db::connect(&ConnectOptions::new(&scratch)).await?;
            let clients = if db.dialect() == backroom_db::Dialect::Sqlite { 1 } else { concurrency };
            one = Some(crate::storage::one_per_commit(&db, clients, seconds).await?);
            batched = Some(crate::storage::batched(&db, concurrency, seconds).await?);
            db.close().await;
        }
        Ok(Baselines { healthz_per_s, db_one_per_commit_per_s: one, db_batched_per_s: batched })
    }
}

pub fn progress_line(msg: &str) {
    eprintln!("\x1b[1m[bench]\x1b[0m {msg}");
}

/// The answer's status, or the error label: `409 insufficient_stock`, `transport`.
pub async fn status_of(req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
    let res = req.send().await.map_err(|_| "transport".to_owned())?;
    let status = res.status().as_u16();
    let bytes = res.bytes().await.map_err(|_| "transport".to_owned())?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status >= 400 {
        return Err(format!("{status} {}", body["code"].as_str().unwrap_or("")).trim().to_owned());
    }
    Ok((status, body))
}

/// GETs `urls` in turn under `load` for `seconds`.
pub async fn get_urls(name: &str, load: Load, seconds: f64, client: &reqwest::Client, urls: Arc<Vec<String>>) -> Run {
    let client = client.clone();
    drive(name, load, seconds, None, move |i| {
        let (client, url) = (client.clone(), urls[i as usize % urls.len()].clone());
        async move { status_of(client.get(url)).await.map(|_| ()) }
    })
    .await
}

/// Runs `op` under `load` for `seconds`; `op(i)` is the i-th operation. Progress goes to
/// stderr while it runs (when stderr is a terminal).
pub async fn drive<F, Fut>(name: &str, load: Load, seconds: f64, total: Option<u64>, op: F) -> Run
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new((seconds * 10.0) as u64),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>24} {bar:30} {msg}").expect("a valid progress template"),
    );
    bar.set_prefix(name.to_owned());
    let done = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(if total.is_some() { 0.0 } else { seconds });
    let ticker = {
        let (bar, done) = (bar.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = done.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                match total {
                    Some(_) => bar.set_position(n),
                    None => bar.set_position((secs * 10.0) as u64),
                }
                bar.set_message(format!("{n} done, {:.0}/s", n as f64 / secs.max(1e-9)));
            }
        })
    };
    let record = {
        let (done, errors) = (done.clone(), errors.clone());
        move |r: Result<(), String>| {
            done.fetch_add(1, Ordering::Relaxed);
            if let Err(code) = r {
                *errors.lock().expect("error counts").entry(code).or_default() += 1;
            }
        }
    };
    let stop = move |i: u64| match total {
        Some(n) => i >= n,
        None => Instant::now() >= until,
    };
    let mut lat = Vec::new();
    match load {
        Load::Closed { concurrency } => {
            let next = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (op, next, record) = (op.clone(), next.clone(), record.clone());
                    tokio::spawn(async move {
                        let mut lat = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if stop(i) {
                                return lat;
                            }
                            let t0 = Instant::now();
                            let r = op(i).await;
                            if r.is_ok() {
                                lat.push(t0.elapsed());
                            }
                            record(r);
                        }
                    })
                })
                .collect();
            for t in tasks {
                lat.extend(t.await.unwrap_or_default());
            }
        }
        Load::Open { rate } => {
            let every = Duration::from_secs_f64(1.0 / rate as f64);
            let t0 = tokio::time::Instant::now();
            let mut tasks = Vec::new();
            for i in 0.. {
                if stop(i) {
                    break;
                }
                let due = t0 + every * i as u32;
                tokio::time::sleep_until(due).await;
                let (op, record) = (op.clone(), record.clone());
                tasks.push(tokio::spawn(async move {
                    let r = op(i).await;
                    let ok = r.is_ok();
                    record(r);
                    ok.then(|| due.elapsed())
                }));
            }
            for t in tasks {
                if let Ok(Some(d)) = t.await {
                    lat.push(d);
                }
            }
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    let errors = std::mem::take(&mut *errors.lock().expect("error counts"));
    Run::new(name, load, lat, errors, start.elapsed())
}

// ---- scenarios --------------------------------------------------------------------------

fn checkout_body() -> Value {
    json!({"email": "buyer@example.com",
        "shipping_address": {"name": "Bench Buyer", "line1": "1 Load St", "city": "Porto", "postal_code": "4000", "country": "PT"},
        "payment": {"provider": "test", "token": "tok_visa"}})
}

async fn new_cart(client: &reqwest::Client, base: &str, variant: &str) -> Result<String, String> {
    let (_, cart) = status_of(client.post(format!("{base}/store/carts")).json(&json!({"currency": "EUR"}))).await?;
    let id = cart["id"].as_str().ok_or("no cart id")?.to_owned();
    status_of(
        client.post(format!("{base}/store/carts/{id}/items")).json(&json!({"variant_id": variant, "quantity": 1})),
    )
    .await?;
    Ok(id)
}

/// The started server's CPU milliseconds per operation since `before` (`None` for a server
/// this bench did not start, or without `/proc`).
fn cpu_per_op(server: &Server, before: Option<f64>, ops: usize) -> Option<f64> {
    let (before, after) = (before?, crate::memory::cpu_seconds(server.pid()?)?);
    (ops > 0).then(|| (after - before) * 1000.0 / ops as f64)
}

pub fn database_name(server: &Server) -> String {
    match &server.database_url {
        Some(u) if u.starts_with("postgres") => "PostgreSQL".into(),
        Some(_) => "SQLite (synchronous=FULL)".into(),
        None => "a running server".into(),
    }
}

/// Sets up what a priced purchase needs: a tax-inclusive region for the checkout's country
/// with a 23 % standard rate, a flat shipping option and an unlimited 10 % code. Answers the
/// option's id.
async fn pricing_setup(server: &Server) -> anyhow::Result<String> {
    use reqwest::Method;
    let region = server
        .admin(
            Method::POST,
            "/admin/regions",
            json!({"name": "Bench PT", "currency": "EUR", "countries": ["PT"], "tax_inclusive": true}),
        )
        .await?;
    let region = region["id"].as_str().ok_or_else(|| anyhow::anyhow!("no region id: {region}"))?.to_owned();
    server.admin(Method::POST, "/admin/tax-rates", json!({"region_id": region, "name": "IVA", "rate": "23"})).await?;
    server
        .admin(Method::POST, "/admin/promotions", json!({"code": "BENCH10", "type": "percentage", "value": 10}))
        .await?;
    let option = server
        .admin(
            Method::POST,
            "/admin/shipping-options",
            json!({"name": "Flat", "region_id": region, "price": {"amount": 500, "currency": "EUR"}}),
        )
        .await?;
    Ok(option["id"].as_str().ok_or_else(|| anyhow::anyhow!("no option id: {option}"))?.to_owned())
}

/// Gives a cart the checkout's address, the bench's code and the shipping option.
async fn price_cart(client: &reqwest::Client, base: &str, cart: &str, option: &str) -> Result<(), String> {
    let address = &checkout_body()["shipping_address"];
    status_of(client.patch(format!("{base}/store/carts/{cart}")).json(&json!({"shipping_address": address}))).await?;
    status_of(client.post(format!("{base}/store/carts/{cart}/promotions")).json(&json!({"code": "BENCH10"}))).await?;
    status_of(client.post(format!("{base}/store/carts/{cart}/shipping-method")).json(&json!({"option_id": option})))
        .await?;
    Ok(())
}

/// `bench checkout`: each purchase creates a cart, adds an item, and checks out with the
/// test provider. `skus` products share the load (1 = one hot SKU). `priced` adds a region
/// with tax, a promotion and shipping (see [`pricing_setup`]).
pub async fn checkout(opts: &LoadOptions, skus: usize, priced: bool) -> anyhow::Result<Report> {
    let server = Server::start(opts, |_| async { Ok(()) }).await?;
    progress_line(&format!("creating {skus} products with stock"));
    let variants = Arc::new(server.products(skus.max(1), 100_000_000, "checkout").await?);
    let option = if priced { Some(Arc::new(pricing_setup(&server).await?)) } else { None };
    let requests = if priced { 6.0 } else { 3.0 };
    let baselines = server.baselines(opts.concurrency, (opts.seconds as f64 / 2.0).max(1.0)).await?;
    let (client, base, body) = (server.client.clone(), server.base.clone(), Arc::new(checkout_body()));
    let checkout_lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let memory = server.pid().and_then(|pid| crate::memory::Sampler::start(pid, Duration::from_millis(100)));
    let cpu_before = server.pid().and_then(crate::memory::cpu_seconds);
    let purchases = {
        let checkout_lat = checkout_lat.clone();
        let name = if priced {
            "priced purchase (cart+item+address+code+shipping+checkout)"
        } else {
            "purchase (cart+item+checkout)"
        };
        drive(name, opts.load(), opts.seconds as f64, None, move |i| {
            let (client, base, body, variants, checkout_lat, option) =
                (client.clone(), base.clone(), body.clone(), variants.clone(), checkout_lat.clone(), option.clone());
            async move {
                let variant = &variants[i as usize % variants.len()];
                let cart = new_cart(&client, &base, variant).await?;
                if let Some(option) = &option {
                    price_cart(&client, &base, &cart, option).await?;
                }
                let t0 = Instant::now();
                let req = client
                    .post(format!("{base}/store/carts/{cart}/checkout"))
                    .header("Idempotency-Key", format!("bench-{i}"))
                    .json(&*body);
                let (status, _) = status_of(req).await?;
                checkout_lat.lock().expect("latencies").push(t0.elapsed());
                if status != 201 { Err(format!("{status} not placed")) } else { Ok(()) }
            }
        })
        .await
    };
    let server_memory = match memory {
        Some(m) => m.finish().await,
        None => None,
    };
    let cpu = cpu_per_op(&server, cpu_before, purchases.ok);
    let lat = std::mem::take(&mut *checkout_lat.lock().expect("latencies"));
    let checkout_only = Run::new(
        "  of which the checkout request",
        purchases.load,
        lat,
        BTreeMap::new(),
        Duration::from_secs_f64(purchases.seconds),
    );
    let summary = format!(
        "summary: {:.0} purchases/s ({:.0} checkout requests/s) on {}, checkout p99 {:.1} ms{}; {:.2}× of GET /healthz{}",
        purchases.throughput_per_s,
        checkout_only.throughput_per_s,
        database_name(&server),
        checkout_only.p99_ms,
        cpu.map(|c| format!(", server CPU {c:.3} ms per purchase")).unwrap_or_default(),
        purchases.throughput_per_s * requests / baselines.healthz_per_s.max(1.0),
        baselines
            .db_batched_per_s
            .map(|b| format!(
                " ({requests} requests per purchase), {:.2}× of batched raw DB transactions",
                purchases.throughput_per_s / b.max(1.0)
            ))
            .unwrap_or_default(),
    );
    Ok(Report {
        scenario: format!(
            "checkout ({skus} SKU{}{})",
            if skus == 1 { "" } else { "s" },
            if priced { ", priced: region with tax, promotion, shipping" } else { "" }
        ),
        database: database_name(&server),
        baselines,
        runs: vec![purchases, checkout_only],
        flash_sale: None,
        server_memory,
        server_cpu_ms_per_op: cpu,
        summary,
    })
}

/// `bench browse`: product pages, category listings with facets, and searches.
pub async fn browse(opts: &LoadOptions, products: usize) -> anyhow::Result<Report> {
    let server = Server::start(opts, |db| async move {
        progress_line(&format!("generating {products} products"));
        crate::catalog::generate(&db, products, 42, |_| {}).await.map(|_| ())
    })
    .await?;
    let handles: Vec<String> = {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        while out.len() < 5_000 {
            let mut url = format!("{}/store/products?limit=100", server.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = server.client.get(url).send().await?.json().await?;
            for p in page["items"].as_array().into_iter().flatten() {
                out.extend(p["handle"].as_str().map(str::to_owned));
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        out
    };
    if handles.is_empty() {
        bail!("the store has no published products to browse");
    }
    let categories: Value = server.client.get(server.url("/store/categories")).send().await?.json().await?;
    let mut category_ids: Vec<String> = Vec::new();
    collect_ids(&categories, &mut category_ids);
    if category_ids.is_empty() {
        category_ids.push(String::new());
    }
    let baselines = server.baselines(opts.concurrency, (opts.seconds as f64 / 2.0).max(1.0)).await?;
    let base = server.base.clone();
    let detail: Arc<Vec<String>> = Arc::new(handles.iter().map(|h| format!("{base}/store/products/{h}")).collect());
    let listing: Arc<Vec<String>> = Arc::new(
        category_ids
            .iter()
            .flat_map(|c| {
                ["newest", "price_asc"]
                    .map(|s| format!("{base}/store/products?category={c}&currency=EUR&facets=true&sort={s}"))
            })
            .collect(),
    );
    let search: Arc<Vec<String>> = Arc::new(crate::catalog::search_urls(&base, 5_000, 42));
    let mut runs = Vec::new();
    for (name, urls) in [("product page", detail), ("category listing + facets", listing), ("search", search)] {
        runs.push(get_urls(name, opts.load(), opts.seconds as f64, &server.client, urls).await);
    }
    let summary = format!(
        "summary: product page {:.0}/s, listing {:.0}/s, search {:.0}/s on {}; product page at {:.2}× of GET /healthz",
        runs[0].throughput_per_s,
        runs[1].throughput_per_s,
        runs[2].throughput_per_s,
        database_name(&server),
        runs[0].throughput_per_s / baselines.healthz_per_s.max(1.0)
    );
    Ok(Report {
        scenario: "browse".into(),
        database: database_name(&server),
        baselines,
        runs,
        flash_sale: None,
        server_memory: None,
        server_cpu_ms_per_op: None,
        summary,
    })
}

fn collect_ids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect_ids(i, out)),
        Value::Object(m) => {
            if let Some(id) = m.get("id").and_then(Value::as_str) {
                out.push(id.to_owned());
            }
            m.values().filter(|v| v.is_array() || v.is_object()).for_each(|v| collect_ids(v, out));
        }
        _ => {}
    }
}

/// What a flash sale did.
#[derive(Debug, Clone, Serialize)]
pub struct FlashSale {
    pub buyers: usize,
    pub units: i64,
    /// How the checkouts were sent.
    pub load: Load,
    /// Checkouts answered `201`: orders placed.
    pub orders: usize,
    /// `409 insufficient_stock` answers: the buyer came too late.
    pub sold_out_answers: usize,
    /// `503` answers: the server turned the buyer away (nothing was bought).
    pub overloaded_answers: usize,
    /// Of those, answers without a `Retry-After` header.
    pub overloaded_without_retry_after: usize,
    /// Every answer by status and problem `code` (`201`, `409 insufficient_stock`,
    /// `503 overloaded`), or `transport` when none came.
    pub answers: BTreeMap<String, usize>,
    /// From the first checkout sent to the answer of the last placed order.
    pub sell_out_ms: f64,
    /// From the first checkout sent to the last answer.
    pub total_ms: f64,
    pub sold_out_p50_ms: f64,
    pub sold_out_p99_ms: f64,
    pub overloaded_p50_ms: f64,
    pub overloaded_p99_ms: f64,
    pub placed_p99_ms: f64,
    /// The variant's allocated and available units afterwards.
    pub allocated: i64,
    pub available: i64,
}

impl FlashSale {
    /// The sale's invariants: every order placed holds one allocated unit, no more orders
    /// than units, and every unit sold unless some buyers were turned away with `503`.
    pub fn check(&self) -> Result<(), String> {
        let orders = self.orders as i64;
        if orders != self.allocated {
            Err(format!("{orders} orders placed but {} units allocated", self.allocated))
        } else if orders > self.units {
            Err(format!("{orders} orders for {} units: oversold", self.units))
        } else if self.overloaded_answers == 0 && orders != self.units {
            Err(format!("{orders} orders for {} units, and no buyer was turned away with 503", self.units))
        } else {
            Ok(())
        }
    }

    fn verdict(&self) -> String {
        match self.check() {
            Ok(()) if self.orders as i64 == self.units => "exact".into(),
            Ok(()) => format!(
                "consistent: {} left unsold, {} buyers turned away with 503",
                self.units - self.orders as i64,
                self.overloaded_answers
            ),
            Err(why) => format!("WRONG: {why}"),
        }
    }
}

impl std::fmt::Display for FlashSale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let load = match self.load {
            Load::Closed { concurrency } => format!("all at once over {concurrency} connections"),
            Load::Open { rate } => format!("{rate} checkouts/s offered"),
        };
        writeln!(f, "  flash sale: {} buyers, {} units, {load}", self.buyers, self.units)?;
        let answers: Vec<String> = self.answers.iter().map(|(code, n)| format!("{n} × {code}")).collect();
        writeln!(f, "    answers                {}", answers.join(", "))?;
        writeln!(f, "    orders placed          {}", self.orders)?;
        writeln!(f, "    sold-out answers (409) {}", self.sold_out_answers)?;
        if self.overloaded_answers > 0 {
            writeln!(
                f,
                "    turned away (503)      {}, p50 {:.1} ms, p99 {:.1} ms; {} without Retry-After",
                self.overloaded_answers,
                self.overloaded_p50_ms,
                self.overloaded_p99_ms,
                self.overloaded_without_retry_after
            )?;
        }
        if self.orders as i64 == self.units {
            writeln!(
                f,
                "    sold out after         {:.0} ms (all answered after {:.0} ms)",
                self.sell_out_ms, self.total_ms
            )?;
        } else {
            writeln!(f, "    not sold out           (all answered after {:.0} ms)", self.total_ms)?;
        }
        if self.sold_out_answers > 0 {
            writeln!(
                f,
                "    sold-out answer        p50 {:.1} ms, p99 {:.1} ms",
                self.sold_out_p50_ms, self.sold_out_p99_ms
            )?;
        }
        writeln!(f, "    placed order answer    p99 {:.1} ms", self.placed_p99_ms)?;
        write!(
            f,
            "    stock afterwards       allocated {}, available {}; {}",
            self.allocated,
            self.available,
            self.verdict()
        )
    }
}

/// A checkout's answer: its status (0: none came), its label (`201`,
/// `409 insufficient_stock`, `transport`), and whether it carried `Retry-After`.
async fn answer_of(req: reqwest::RequestBuilder) -> (u16, String, bool) {
    let Ok(res) = req.send().await else { return (0, "transport".into(), false) };
    let status = res.status().as_u16();
    let retry_after = res.headers().contains_key(reqwest::header::RETRY_AFTER);
    let Ok(bytes) = res.bytes().await else { return (0, "transport".into(), false) };
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let label = match body["code"].as_str() {
        Some(code) if status >= 400 => format!("{status} {code}"),
        _ => status.to_string(),
    };
    (status, label, retry_after)
}

/// `bench flash-sale`: `buyers` carts ready, `units` units of one variant, then one checkout
/// per buyer: all at once over `concurrency` connections (a load balancer's pool), or
/// at `rate` a second (open loop). Each answer's latency counts from the moment its request
/// was due. The server's memory is sampled while the sale runs.
pub async fn flash_sale(opts: &LoadOptions, buyers: usize, units: i64) -> anyhow::Result<Report> {
    let server = Server::start(opts, |_| async { Ok(()) }).await?;
    let variant = server.products(1, units, "drop").await?.remove(0);
    // The carts are ready before the sale: each buyer added the item while stock was there.
    progress_line(&format!("preparing {buyers} carts"));
    let carts: Arc<Mutex<Vec<String>>> = Arc::default();
    // Not more at once than the writer may queue (a small --writer-queue sheds the rest).
    let prep_load = Load::Closed { concurrency: opts.concurrency.min(64).min(opts.writer_queue.unwrap_or(64)).max(1) };
    let prep = {
        let (client, base, variant, carts) =
            (server.client.clone(), server.base.clone(), variant.clone(), carts.clone());
        drive("carts", prep_load, 0.0, Some(buyers as u64), move |_| {
            let (client, base, variant, carts) = (client.clone(), base.clone(), variant.clone(), carts.clone());
            async move {
                // A server that sheds load may turn a cart away too (the worker's writes share
                // the queue): that buyer tries again, for a minute at most.
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut tries = 0u64;
                let id = loop {
                    match new_cart(&client, &base, &variant).await {
                        Err(e) if e.starts_with("503") && Instant::now() < deadline => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(10 * tries.min(20))).await;
                        }
                        other => break other?,
                    }
                };
                carts.lock().expect("carts").push(id);
                Ok(())
            }
        })
        .await
    };
    if !prep.errors.is_empty() {
        bail!("preparing the carts failed: {:?}", prep.errors);
    }
    let baselines = server.baselines(opts.concurrency, (opts.seconds as f64 / 4.0).clamp(1.0, 3.0)).await?;
    let carts = Arc::new(std::mem::take(&mut *carts.lock().expect("carts")));
    let load = opts.load();
    progress_line(&match load {
        Load::Closed { concurrency } => format!("{buyers} buyers check out at once over {concurrency} connections"),
        Load::Open { rate } => format!("{buyers} buyers check out at {rate}/s"),
    });
    /// Status, label, Retry-After, latency, and when the answer came (from the start).
    type Answer = (u16, String, bool, Duration, Duration);
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let memory = server.pid().and_then(|pid| crate::memory::Sampler::start(pid, Duration::from_millis(100)));
    let cpu_before = server.pid().and_then(crate::memory::cpu_seconds);
    let start = Instant::now();
    let run = {
        let (client, base, body, answers) =
            (server.client.clone(), server.base.clone(), Arc::new(checkout_body()), answers.clone());
        drive("flash sale", load, 0.0, Some(buyers as u64), move |i| {
            let (client, base, body, answers, carts) =
                (client.clone(), base.clone(), body.clone(), answers.clone(), carts.clone());
            async move {
                let cart = &carts[i as usize];
                // Open loop: from when the request was due, so a slow generator hides nothing.
                let due = match load {
                    Load::Open { rate } => start + Duration::from_secs_f64(i as f64 / f64::from(rate)),
                    Load::Closed { .. } => Instant::now(),
                };
                let req = client
                    .post(format!("{base}/store/carts/{cart}/checkout"))
                    .header("Idempotency-Key", "flash")
                    .json(&*body);
                let (status, label, retry_after) = answer_of(req).await;
                let answered = Instant::now();
                answers.lock().expect("answers").push((
                    status,
                    label.clone(),
                    retry_after,
                    answered.saturating_duration_since(due),
                    answered - start,
                ));
                if status == 201 { Ok(()) } else { Err(label) }
            }
        })
        .await
    };
    let server_memory = match memory {
        Some(m) => m.finish().await,
        None => None,
    };
    let cpu = cpu_per_op(&server, cpu_before, buyers);
    let answers = std::mem::take(&mut *answers.lock().expect("answers"));
    let (mut placed, mut sold_out, mut overloaded) = (Vec::new(), Vec::new(), Vec::new());
    let (mut by_label, mut without_retry_after) = (BTreeMap::<String, usize>::new(), 0);
    let mut sell_out = Duration::ZERO;
    for (status, label, retry_after, latency, at) in answers {
        match status {
            201 => {
                placed.push(latency);
                sell_out = sell_out.max(at);
            }
            409 if label == "409 insufficient_stock" => sold_out.push(latency),
            503 => {
                overloaded.push(latency);
                without_retry_after += usize::from(!retry_after);
            }
            _ => {}
        }
        *by_label.entry(label).or_default() += 1;
    }
    let total = Duration::from_secs_f64(run.seconds);
    let (sold_n, shed_n) = (sold_out.len(), overloaded.len());
    let sold = Run::new("sold out", run.load, sold_out, BTreeMap::new(), total);
    let shed = Run::new("overloaded", run.load, overloaded, BTreeMap::new(), total);
    let placed_run = Run::new("placed", run.load, placed.clone(), BTreeMap::new(), total);
    let stock = server.admin(reqwest::Method::GET, &format!("/admin/variants/{variant}/stock"), Value::Null).await?;
    let fs = FlashSale {
        buyers,
        units,
        load,
        orders: placed.len(),
        sold_out_answers: sold_n,
        overloaded_answers: shed_n,
        overloaded_without_retry_after: without_retry_after,
        answers: by_label,
        sell_out_ms: ms(sell_out),
        total_ms: ms(total),
        sold_out_p50_ms: sold.p50_ms,
        sold_out_p99_ms: sold.p99_ms,
        overloaded_p50_ms: shed.p50_ms,
        overloaded_p99_ms: shed.p99_ms,
        placed_p99_ms: placed_run.p99_ms,
        allocated: stock["allocated"].as_i64().unwrap_or(-1),
        available: stock["available"].as_i64().unwrap_or(-1),
    };
    let summary = format!(
        "summary: {} orders for {} units ({}), {}, {} turned away (503), {:.0} checkouts/s on {}{}{}",
        fs.orders,
        fs.units,
        fs.verdict(),
        if fs.orders as i64 == fs.units {
            format!("sold out in {:.0} ms, sold-out p99 {:.1} ms", fs.sell_out_ms, fs.sold_out_p99_ms)
        } else {
            "not sold out".to_owned()
        },
        fs.overloaded_answers,
        buyers as f64 / run.seconds.max(1e-9),
        database_name(&server),
        server_memory.map(|m| format!(", server RSS peak {:.0} MiB", m.peak_mib)).unwrap_or_default(),
        cpu.map(|c| format!(", server CPU {c:.3} ms per checkout")).unwrap_or_default(),
    );
    Ok(Report {
        scenario: format!("flash-sale ({buyers} buyers, {units} units)"),
        database: database_name(&server),
        baselines,
        runs: vec![run],
        flash_sale: Some(fs),
        server_memory,
        server_cpu_ms_per_op: cpu,
        summary,
    })
}

/// `bench storage`: the database limits alone, on a scratch database (no HTTP).
pub async fn storage(opts: &LoadOptions) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let url = match &opts.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.path().join("baseline.db").display()),
    };
    let db = Db::connect(&ConnectOptions::new(&url)).await?;
    let postgres = db.dialect() == backroom_db::Dialect::Postgres;
    let seconds = opts.seconds as f64;
    progress_line("checkout-like transactions, one commit each");
    let one = crate::storage::one_per_commit(&db, if postgres { opts.concurrency } else { 1 }, seconds).await?;
    progress_line(&format!("the same through the group-commit writer, {} at once", opts.concurrency));
    let batched = crate::storage::batched(&db, opts.concurrency, seconds).await?;
    let stats = db.writer_stats();
    db.close().await;
    let database = if postgres { "PostgreSQL" } else { "SQLite (synchronous=FULL)" }.to_owned();
    let summary = format!(
        "summary: {one:.0}/s one per commit, {batched:.0}/s batched ({:.1} per commit on average) on {database}",
        stats.jobs as f64 / stats.batches.max(1) as f64
    );
    Ok(Report {
        scenario: "storage".into(),
        database,
        baselines: Baselines {
            healthz_per_s: 0.0,
            db_one_per_commit_per_s: Some(one),
            db_batched_per_s: Some(batched),
        },
        runs: Vec::new(),
        flash_sale: None,
        server_memory: None,
        server_cpu_ms_per_op: None,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(orders: usize, allocated: i64, overloaded: usize) -> FlashSale {
        FlashSale {
            buyers: 100,
            units: 10,
            load: Load::Closed { concurrency: 8 },
            orders,
            sold_out_answers: 100 - orders - overloaded,
            overloaded_answers: overloaded,
            overloaded_without_retry_after: 0,
            answers: BTreeMap::new(),
            sell_out_ms: 0.0,
            total_ms: 0.0,
            sold_out_p50_ms: 0.0,
            sold_out_p99_ms: 0.0,
            overloaded_p50_ms: 0.0,
            overloaded_p99_ms: 0.0,
            placed_p99_ms: 0.0,
            allocated,
            available: 10 - allocated,
        }
    }

    #[test]
    fn a_flash_sale_passes_only_when_its_orders_add_up() {
        assert_eq!(sale(10, 10, 0).check(), Ok(()));
        assert_eq!(sale(10, 10, 0).verdict(), "exact");
        // Buyers turned away with 503 bought nothing: fewer orders, all of them allocated.
        assert_eq!(sale(7, 7, 30).check(), Ok(()));
        assert!(sale(7, 7, 30).verdict().starts_with("consistent: 3 left unsold"));
        // Fewer orders with no 503 to explain them, orders without stock, stock without orders.
        assert!(sale(9, 9, 0).check().unwrap_err().contains("no buyer was turned away"));
        assert!(sale(10, 9, 0).check().unwrap_err().contains("9 units allocated"));
        assert!(sale(7, 8, 30).check().unwrap_err().contains("8 units allocated"));
        assert!(sale(11, 11, 0).check().unwrap_err().contains("oversold"));
        assert!(sale(11, 11, 0).verdict().starts_with("WRONG"));
    }
}
