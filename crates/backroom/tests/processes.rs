//! Several `backroom serve` processes: two on one PostgreSQL database see each other's
//! changes in their own search indexes; a corrupt index is rebuilt at start while the API
//! serves; `backroom reindex` rebuilds on demand.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "processes-test-admin-token-0123";
/// Processes on one database share one master key (each has its own data directory).
const MASTER_KEY: &str = "cHJvY2Vzc2VzLXRlc3QtbWFzdGVyLWtleS0wMTIzNDU=";

fn serve(data_dir: &Path, db_url: &str) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backroom"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", db_url])
        .arg("--data-dir")
        .arg(data_dir)
        .env("BACKROOM_ADMIN_TOKEN", TOKEN)
        .env("BACKROOM_MASTER_KEY", MASTER_KEY)
        .env("BACKROOM_PAYMENT_PROVIDERS", "test")
        .env("BACKROOM_LOG", "error")
        .env_remove("BACKROOM_CONFIG")
        .stderr(Stdio::null());
    common::spawn_serve(&mut cmd)
}

async fn until(http: &reqwest::Client, url: &str, done: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(r) = http.get(url).send().await
            && r.status() == 200
            && let Ok(body) = r.json::<Value>().await
            && done(&body)
        {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never satisfied the condition");
}

async fn create(http: &reqwest::Client, base: &str, handle: &str) -> Value {
    let r = http
        .post(format!("{base}/admin/products"))
        .bearer_auth(TOKEN)
        .json(&json!({"title": format!("Product {handle}"), "handle": handle, "status": "published",
                      "variants": [{"sku": handle.to_uppercase(), "prices": [{"amount": 1500, "currency": "EUR"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_find_each_others_products() {
    let Some(pg) = backroom_db::testing::fresh_postgres().await else { return };
    let url = pg.url().to_owned();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, a_url) = serve(a_dir.path(), &url);
    let (mut b, b_url) = serve(b_dir.path(), &url);
    let http = reqwest::Client::new();
    until(&http, &format!("{b_url}/store/products?facets=true"), |v| v["total"].is_number()).await;
    let mut lags = Vec::new();
    for i in 0..5 {
        let (from, to) = if i % 2 == 0 { (&a_url, &b_url) } else { (&b_url, &a_url) };
        let started = Instant::now();
        create(&http, from, &format!("shared-{i}")).await;
        until(&http, &format!("{to}/store/products?q=shared-{i}"), |v| v["total"] == 1).await;
        lags.push(started.elapsed());
    }
    let worst = lags.iter().max().unwrap();
    eprintln!("cross-process search lag: {lags:?}");
    assert!(*worst < Duration::from_secs(10));
    // The other process's product page and cache see price changes too.
    let p: Value = http.get(format!("{b_url}/store/products/shared-0")).send().await.unwrap().json().await.unwrap();
    let v = p["variants"][0]["id"].as_str().unwrap();
    let r = http
        .patch(format!("{a_url}/admin/variants/{v}"))
        .bearer_auth(TOKEN)
        .json(&json!({"prices": [{"amount": 999, "currency": "EUR"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until(&http, &format!("{b_url}/store/products/shared-0"), |v| v["variants"][0]["prices"][0]["amount"] == 999).await;
    a.kill().unwrap();
    b.kill().unwrap();
    let _ = (a.wait(), b.wait());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_index_is_rebuilt_at_start_and_reindex_works() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = backroom_db::sqlite_url_in(dir.path());
    let (mut child, base) = serve(dir.path(), &db_url);
    let http = reqwest::Client::new();
    create(&http, &base, "survivor").await;
    until(&http, &format!("{base}/store/products?q=survivor"), |v| v["total"] == 1).await;
    child.kill().unwrap();
    child.wait().unwrap();

    // Break the index.
    let index_dir = dir.path().join("search-index");
    std::fs::write(index_dir.join("meta.json"), b"{ not json").unwrap();
    let (mut child, base) = serve(dir.path(), &db_url);
    // The API answers at once (plain listing from the database) ...
    let plain: Value = http.get(format!("{base}/store/products")).send().await.unwrap().json().await.unwrap();
    assert_eq!(plain["items"][0]["handle"], "survivor");
    // ... and search comes back once the index is rebuilt.
    until(&http, &format!("{base}/store/products?q=survivor"), |v| v["total"] == 1).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_backroom"))
        .args(["reindex", "--database-url", &db_url])
        .arg("--data-dir")
        .arg(dir.path())
        .env("BACKROOM_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("search index rebuilt: 1 products"), "{text}");
}
