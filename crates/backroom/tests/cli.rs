//! The real `backroom` binary: settings validation, the newcomer's commands, serve.

mod common;

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use common::{backroom, run};

#[test]
fn version_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(backroom(dir.path()).arg("--version"));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("backroom {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_settings_stop_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    // (environment, arguments, what the message must name)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("BACKROOM_LISTEN", "not-an-address")], vec!["migrate"], "BACKROOM_LISTEN"),
        (vec![], vec!["--listen", "1.2.3.4:99999", "migrate"], "--listen"),
        (vec![("BACKROOM_DATABASE_URL", "mysql://x")], vec!["migrate"], "BACKROOM_DATABASE_URL"),
        (vec![("BACKROOM_ADMIN_TOKEN", "short")], vec!["migrate"], "BACKROOM_ADMIN_TOKEN"),
        (vec![("BACKROOM_CONFIG", "missing.toml")], vec!["migrate"], "missing.toml"),
        (vec![("BACKROOM_WRITER_MAX_BATCH", "0")], vec!["migrate"], "BACKROOM_WRITER_MAX_BATCH"),
    ];
    for (env, args, mentions) in cases {
        let mut cmd = backroom(dir.path());
        cmd.envs(env.iter().copied()).args(&args);
        let (code, _, err) = run(&mut cmd);
        assert_eq!(code, 2, "{args:?} {env:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(mentions), "{err} should mention {mentions}");
    }
    std::fs::write(dir.path().join("backroom.toml"), "listen = \"127.0.0.1:1\"\ncolour = \"blue\"\n").unwrap();
    let (code, _, err) = run(backroom(dir.path()).arg("migrate"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("colour"), "{err}");
    // The file is read, and the environment wins over it.
    std::fs::write(dir.path().join("backroom.toml"), "listen = \"nonsense\"\n").unwrap();
    let (code, _, err) = run(backroom(dir.path()).arg("migrate"));
    assert_eq!(code, 2);
    assert!(err.contains("backroom.toml"), "{err}");
    let (code, out, err) = run(backroom(dir.path()).env("BACKROOM_LISTEN", "127.0.0.1:0").arg("migrate"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("migrations applied"));
}

/// Starts `backroom serve` on a free port; answers the child and its base URL.
fn serve(dir: &std::path::Path, db_url: &str) -> (std::process::Child, String) {
    let mut cmd = backroom(dir);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", db_url]).stderr(Stdio::inherit());
    common::spawn_serve(&mut cmd)
}

async fn newcomer(db_url: String) {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(backroom(dir.path()).args(["migrate", "--database-url", &db_url]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("migrations applied"));
    let (code, out, err) = run(backroom(dir.path()).args(["seed", "--demo", "--database-url", &db_url]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("demo store loaded"), "{out}");
    let (code, out, _) = run(backroom(dir.path()).args(["seed", "--demo", "--database-url", &db_url]));
    assert_eq!(code, 0);
    assert!(out.contains("already loaded"), "{out}");
    let (code, key, err) =
        run(backroom(dir.path()).args(["admin", "create-key", "--role", "owner", "--database-url", &db_url]));
    assert_eq!(code, 0, "{err}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("bk_") && key.len() > 40, "{key}");

    let (mut child, base) = serve(dir.path(), &db_url);
    let http = reqwest::Client::new();
    let list: Value = http.get(format!("{base}/store/products?limit=100")).send().await.unwrap().json().await.unwrap();
    let demo = list["items"].as_array().unwrap();
    assert!(demo.len() >= 40, "the demo store shows its products: {}", demo.len());
    assert!(demo.iter().any(|p| p["variants"].as_array().unwrap().len() > 1));
    assert!(demo.iter().all(|p| p["variants"][0]["prices"].as_array().unwrap().len() == 2));

    let created = http
        .post(format!("{base}/admin/products"))
        .bearer_auth(&key)
        .json(&json!({"title": "Newcomer tee", "handle": "newcomer-tee", "status": "published",
                      "variants": [{"sku": "NEW-TEE-M", "prices": [{"amount": 1999, "currency": "EUR"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let vid = created["variants"][0]["id"].as_str().unwrap();
    let stock = http
        .put(format!("{base}/admin/variants/{vid}/stock"))
        .bearer_auth(&key)
        .json(&json!({"on_hand": 12}))
        .send()
        .await
        .unwrap();
    assert_eq!(stock.status(), 200);
    let shown: Value =
        http.get(format!("{base}/store/products/newcomer-tee")).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown["variants"][0]["available"], 12);
    assert_eq!(shown["variants"][0]["prices"][0], json!({"amount": 1999, "currency": "EUR"}));

    // SIGTERM shuts down cleanly.
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_flow_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    newcomer(backroom_db::sqlite_url_in(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_flow_on_postgres() {
    if let Some(pg) = backroom_db::testing::fresh_postgres().await {
        let url = pg.url().to_owned();
        newcomer(url).await;
    }
}

#[test]
fn default_database_is_sqlite_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(backroom(dir.path()).arg("migrate"));
    assert_eq!(code, 0, "{err}");
    assert!(dir.path().join("backroom-data/backroom.db").exists());
    let (code, _, err) = run(backroom(dir.path()).env("BACKROOM_DATA_DIR", "elsewhere").arg("migrate"));
    assert_eq!(code, 0, "{err}");
    assert!(dir.path().join("elsewhere/backroom.db").exists());
}

#[test]
fn import_products_from_csv_reports_refused_rows_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("p.csv");
    std::fs::write(&csv, "handle,title,status,sku,prices,stock\nshirt,Shirt,published,SH-1,EUR 10.00,3\n,Nope,draft,X-1,EUR 1.00,\nshirt,,,SH-2,EUR 11.00,\n").unwrap();
    for _ in 0..2 {
        let (code, out, err) = run(backroom(dir.path()).args(["import", "products"]).arg(&csv));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("succeeded") && out.contains("3 of 3 rows read, 1 refused"), "{out}");
        assert!(err.contains("row 3: handle is empty"), "{err}");
    }
    let (code, _, err) = run(backroom(dir.path()).args(["import", "products", "missing.csv"]));
    assert_ne!(code, 0);
    assert!(err.contains("missing.csv"), "{err}");
}

/// Places one paid order through a fresh `serve` over `db_url`; answers its id.
async fn place_order(dir: &std::path::Path, db_url: &str, owner: &str, email: &str) -> String {
    let mut cmd = backroom(dir);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", db_url, "--payment-providers", "test"])
        .stderr(Stdio::null());
    let (mut child, base) = common::spawn_serve(&mut cmd);
    let http = reqwest::Client::new();
    let product: Value = http
        .post(format!("{base}/admin/products"))
        .bearer_auth(owner)
        .json(&json!({"title": "Key tee", "handle": format!("key-tee-{}", email.len()), "status": "published",
                      "variants": [{"sku": format!("KEY-{}", email.len()), "prices": [{"amount": 500, "currency": "EUR"}]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vid = product["variants"][0]["id"].as_str().expect("a variant").to_owned();
    let cart: Value = http
        .post(format!("{base}/store/carts"))
        .json(&json!({"currency": "EUR"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cart_id = cart["id"].as_str().unwrap();
    let added = http
        .post(format!("{base}/store/carts/{cart_id}/items"))
        .json(&json!({"variant_id": vid, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
    let order: Value = http
        .post(format!("{base}/store/carts/{cart_id}/checkout"))
        .header("Idempotency-Key", "k1")
        .json(&json!({"email": email, "payment": {"provider": "test", "token": "tok_visa"},
                      "shipping_address": {"name": "Rota Key", "line1": "1 Rotation Rd", "city": "Porto",
                                           "postal_code": "4000", "country": "PT"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(order["status"], "placed", "{order}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    order["id"].as_str().unwrap().to_owned()
}

/// The e-mail of an order as a fresh `serve` with `env` reads it.
async fn order_email(dir: &std::path::Path, db_url: &str, owner: &str, order_id: &str) -> Value {
    let mut cmd = backroom(dir);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", db_url]).stderr(Stdio::null());
    let (mut child, base) = common::spawn_serve(&mut cmd);
    let order: Value = reqwest::Client::new()
        .get(format!("{base}/admin/orders/{order_id}"))
        .bearer_auth(owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    order["email"].clone()
}

/// `master-key rotate` rewraps the data keys: orders stay readable with the new key, the old
/// key no longer opens the store (refused at start, naming both keys), and a wrong new key file
/// changes nothing.
async fn master_key_rotation(db_url: String) {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(backroom(dir.path()).args(["migrate", "--database-url", &db_url]));
    assert_eq!(code, 0, "{err}");
    let (_, owner, _) =
        run(backroom(dir.path()).args(["admin", "create-key", "--role", "owner", "--database-url", &db_url]));
    let owner = owner.trim().to_owned();
    let order = place_order(dir.path(), &db_url, &owner, "rota@example.com").await;
    let key_file = dir.path().join("backroom-data").join("master.key");
    let old = std::fs::read_to_string(&key_file).expect("serve created the key file");

    std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
    let (code, _, err) = run(backroom(dir.path()).args([
        "master-key",
        "rotate",
        "--new-key-file",
        "bad.key",
        "--database-url",
        &db_url,
    ]));
    assert_ne!(code, 0);
    assert!(err.contains("bad.key"), "{err}");

    let (code, new, _) = run(backroom(dir.path()).args(["master-key", "generate"]));
    assert_eq!(code, 0);
    std::fs::write(dir.path().join("new.key"), &new).unwrap();
    let (code, _, err) = run(backroom(dir.path()).args([
        "master-key",
        "rotate",
        "--new-key-file",
        "new.key",
        "--database-url",
        &db_url,
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("rewrapped"), "{err}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), new.trim(), "the key file holds the new key");
    assert_eq!(order_email(dir.path(), &db_url, &owner, &order).await, "rota@example.com");

    let (code, _, err) = run(backroom(dir.path()).env("BACKROOM_MASTER_KEY", old.trim()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db_url,
    ]));
    assert_ne!(code, 0, "the old key must not open the store");
    assert!(err.contains("BACKROOM_MASTER_KEY"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    master_key_rotation(backroom_db::sqlite_url_in(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_on_postgres() {
    if let Some(pg) = backroom_db::testing::fresh_postgres().await {
        let url = pg.url().to_owned();
        master_key_rotation(url).await;
    }
}
