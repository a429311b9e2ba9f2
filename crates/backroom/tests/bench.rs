//! `backroom bench …` through the real binary: the scenarios run end to end, the flash sale
//! sells exactly K units, and a bench given a PostgreSQL server works in a database of its
//! own, touches nothing else there, and drops its database again (after a failure and an
//! interruption too).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use common::{backroom, run};

/// Runs `bench flash-sale --json` with `args` (on the PostgreSQL server at `database_url`, or
/// SQLite), checks it succeeded, and answers its JSON report and its stderr.
fn flash_sale_report(database_url: Option<&str>, args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = backroom(dir.path());
    cmd.args(["bench", "flash-sale", "--json"]).args(args);
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    (serde_json::from_str(&out).unwrap(), err)
}

/// `bench flash-sale` with 40 buyers for 7 units (plus `extra` flags); answers its JSON
/// report and its stderr after checking that exactly 7 orders were placed, the rest being
/// sold-out answers.
fn flash_sale(database_url: Option<&str>, extra: &[&str]) -> (Value, String) {
    let args = [&["--buyers", "40", "--units", "7", "--seconds", "1"], extra].concat();
    let (report, err) = flash_sale_report(database_url, &args);
    let sale = &report["flash_sale"];
    assert_eq!(sale["orders"], 7, "{report}");
    assert_eq!(sale["sold_out_answers"], 33, "{report}");
    assert_eq!(sale["overloaded_answers"], 0, "{report}");
    assert_eq!(sale["answers"], json!({"201": 7, "409 insufficient_stock": 33}), "{report}");
    assert_eq!(sale["allocated"], 7);
    assert_eq!(sale["available"], 0);
    assert!(report["baselines"]["healthz_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["baselines"]["db_batched_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["summary"].as_str().unwrap().contains("7 orders for 7 units (exact)"), "{report}");
    if cfg!(target_os = "linux") {
        let rss = &report["server_memory"];
        let (start, peak, end) =
            (rss["start_mib"].as_f64().unwrap(), rss["peak_mib"].as_f64().unwrap(), rss["end_mib"].as_f64().unwrap());
        assert!(start > 0.0 && peak >= start && peak >= end && end > 0.0, "{report}");
    }
    (report, err)
}

#[test]
fn bench_flash_sale_sells_exactly_k_units_on_sqlite_closed_and_open_loop() {
    let (report, _) = flash_sale(None, &["--concurrency", "8"]);
    assert_eq!(report["flash_sale"]["load"], json!({"closed": {"concurrency": 8}}), "{report}");
    let (report, _) = flash_sale(None, &["--rate", "400"]);
    assert_eq!(report["flash_sale"]["load"], json!({"open": {"rate": 400}}), "{report}");
}

/// The database a bench said it created (`[bench] created database NAME on …`).
fn bench_database(stderr: &str) -> String {
    let at = stderr.find("created database ").unwrap_or_else(|| panic!("no database created: {stderr}"));
    let name = stderr[at + "created database ".len()..].split_whitespace().next().unwrap().to_owned();
    assert!(name.starts_with("backroom_bench_"), "{name}");
    name
}

/// Whether a database of this name is on the server of `url`.
async fn database_exists(url: &str, name: &str) -> bool {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    found.is_some()
}

/// A database holding someone else's data, among them tables of the names the store's
/// migrations and the storage limit's scratch tables use.
async fn foreign_database() -> Option<backroom_db::testing::TestDatabase> {
    let db = backroom_db::testing::fresh_postgres().await?;
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    for sql in [
        "CREATE TABLE keep_me (id INT PRIMARY KEY, note TEXT NOT NULL)",
        "INSERT INTO keep_me VALUES (1, 'precious'), (2, 'also precious')",
        "CREATE TABLE products (id TEXT PRIMARY KEY, title TEXT NOT NULL)",
        "INSERT INTO products VALUES ('p1', 'not a bench product')",
        "CREATE TABLE bench_raw_stock (id TEXT PRIMARY KEY, on_hand BIGINT NOT NULL)",
        "INSERT INTO bench_raw_stock VALUES ('mine', 5)",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
    }
    Some(db)
}

/// The foreign database is exactly as [`foreign_database`] left it.
async fn assert_untouched(url: &str) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::TEXT FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(tables, ["bench_raw_stock", "keep_me", "products"]);
    let kept: Vec<(i32, String)> =
        sqlx::query_as("SELECT id, note FROM keep_me ORDER BY id").fetch_all(&mut conn).await.unwrap();
    assert_eq!(kept, [(1, "precious".to_owned()), (2, "also precious".to_owned())]);
    let products: Vec<(String, String)> =
        sqlx::query_as("SELECT id, title FROM products").fetch_all(&mut conn).await.unwrap();
    assert_eq!(products, [("p1".to_owned(), "not a bench product".to_owned())]);
    let stock: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, on_hand FROM bench_raw_stock").fetch_all(&mut conn).await.unwrap();
    assert_eq!(stock, [("mine".to_owned(), 5)]);
}

/// After a bench on the server at `url`: the database it named on stderr is gone and the
/// given database is as it was. Answers the bench database's name.
async fn assert_cleaned_up(url: &str, err: &str) -> String {
    let name = bench_database(err);
    assert!(!database_exists(url, &name).await, "{name} is left behind: {err}");
    assert_untouched(url).await;
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_flash_sale_on_postgres_runs_in_its_own_database_and_leaves_the_rest_alone() {
    let Some(db) = foreign_database().await else { return };
    let url = db.url().to_owned();
    let given = url.clone();
    let (_, err) =
        tokio::task::spawn_blocking(move || flash_sale(Some(&given), &["--concurrency", "8"])).await.unwrap();
    let name = assert_cleaned_up(&url, &err).await;
    assert!(err.contains(&format!("dropped database {name}")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bench_on_postgres_drops_its_database_too() {
    let Some(db) = foreign_database().await else { return };
    let url = db.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = backroom(dir.path());
    // Nothing to browse: the scenario fails after its server started on its database.
    cmd.args(["bench", "browse", "--products", "0", "--seconds", "1", "--concurrency", "2", "--database-url", &url]);
    let (code, _, err) = tokio::task::spawn_blocking(move || run(&mut cmd)).await.unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no published products"), "{err}");
    assert_cleaned_up(&url, &err).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_bench_on_postgres_drops_its_database_too() {
    let Some(db) = foreign_database().await else { return };
    let url = db.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let given = url.clone();
    let (code, err) = tokio::task::spawn_blocking(move || {
        let mut cmd = backroom(dir.path());
        cmd.args(["bench", "checkout", "--skus", "1", "--seconds", "600", "--concurrency", "2"])
            .args(["--database-url", &given])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        // Interrupt once the server runs on the bench's database and the load has begun.
        while !seen.contains("measuring the limits") {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "the bench ended early: {seen}");
            seen.push_str(&line);
        }
        Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        stderr.read_to_string(&mut seen).unwrap();
        (child.wait().unwrap().code(), seen)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert_cleaned_up(&url, &err).await;
}

#[test]
fn bench_refuses_a_sqlite_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("store.db").display());
    let (code, _, err) = run(backroom(dir.path()).args(["bench", "storage", "--database-url", &store]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("PostgreSQL server"), "{err}");
    assert!(!dir.path().join("store.db").exists());
}

/// `bench checkout` and `bench browse` run end to end and report what they measured.
#[test]
fn bench_checkout_and_browse_report_their_runs() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--concurrency", "4", "--seconds", "1", "--json"];
    let (code, out, err) = run(backroom(dir.path()).args(["bench", "checkout", "--skus", "2"]).args(args));
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let purchases = &report["runs"][0];
    assert!(purchases["ok"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(purchases["errors"], json!({}), "{report}");
    assert!(purchases["p99_ms"].as_f64().unwrap() > 0.0);

    let (code, out, err) = run(backroom(dir.path()).args(["bench", "browse", "--products", "30"]).args(args));
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = report["runs"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["product page", "category listing + facets", "search"]);
    for r in report["runs"].as_array().unwrap() {
        assert!(r["ok"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(r["errors"], json!({}), "{report}");
    }
}

/// `bench search` generates, indexes, serves the index it built through `backroom serve`,
/// and measures every run without errors.
#[test]
fn bench_search_serves_the_catalog_it_generated() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let flags = ["--search-rate", "20", "--detail-rate", "20", "--detail-concurrency", "2", "--seconds", "1", "--json"];
    let store_flag = ["--dir", store.to_str().unwrap()];
    let (code, out, err) =
        run(backroom(dir.path()).args(["bench", "search", "--products", "40"]).args(flags).args(store_flag));
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["products"], 40, "{report}");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5, "{report}");
    for r in runs {
        assert!(r["ok"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(r["errors"], json!({}), "{report}");
    }
    // The store is kept and reused.
    let (code, _, err) = run(backroom(dir.path()).args(["bench", "search"]).args(flags).args(store_flag));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("reusing the 40 products"), "{err}");
}

/// With a writer queue of one job some checkouts may be turned away with `503 overloaded`:
/// whatever the split, the bench passes only when every answer is accounted for and the
/// orders placed match the units allocated.
fn turned_away(database_url: Option<&str>, load: &[&str]) {
    let args = [&["--buyers", "200", "--units", "50", "--writer-queue", "1", "--seconds", "1"], load].concat();
    let (report, _) = flash_sale_report(database_url, &args);
    let sale = &report["flash_sale"];
    let n = |k: &str| sale[k].as_u64().unwrap_or_else(|| panic!("{k}: {report}"));
    let answers: u64 = sale["answers"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(answers, 200, "{report}");
    assert_eq!(n("orders") + n("sold_out_answers") + n("overloaded_answers"), 200, "{report}");
    assert_eq!(sale["answers"]["201"].as_u64().unwrap_or(0), n("orders"), "{report}");
    assert_eq!(sale["answers"]["503 overloaded"].as_u64().unwrap_or(0), n("overloaded_answers"), "{report}");
    assert_eq!(n("overloaded_without_retry_after"), 0, "{report}");
    assert_eq!(sale["allocated"].as_u64().unwrap(), n("orders"), "{report}");
    assert!(n("orders") <= 50, "{report}");
    if n("overloaded_answers") == 0 {
        assert_eq!(n("orders"), 50, "{report}");
    }
}

#[test]
fn bench_flash_sale_accounts_for_checkouts_turned_away_on_sqlite() {
    turned_away(None, &["--concurrency", "64"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_flash_sale_accounts_for_checkouts_turned_away_on_postgres() {
    if let Some(pg) = backroom_db::testing::fresh_postgres().await {
        let url = pg.url().to_owned();
        tokio::task::spawn_blocking(move || turned_away(Some(&url), &["--rate", "2000"])).await.unwrap();
    }
}

/// `bench login-flood`: purchases before and during a wrong-password flood on a server with
/// its rate limits on; the shoppers (each its own address) are never limited, the flood is.
#[test]
fn bench_login_flood_limits_the_flood_and_not_the_shoppers() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(backroom(dir.path()).args([
        "bench",
        "login-flood",
        "--json",
        "--seconds",
        "2",
        "--concurrency",
        "4",
        "--flooders",
        "16",
    ]));
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5, "{report}");
    for purchases in [&runs[0], &runs[2]] {
        assert!(purchases["ok"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(purchases["errors"], json!({}), "no purchase is refused: {report}");
    }
    let flood = &runs[4];
    assert!(flood["errors"]["429 rate_limited"].as_u64().unwrap_or(0) > 0, "the flood meets the limits: {report}");
    assert!(report["summary"].as_str().unwrap().contains("during a flood"), "{report}");
}
