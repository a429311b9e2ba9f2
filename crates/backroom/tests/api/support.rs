//! `TestApp`: the real app on 127.0.0.1:0 over a fresh database (a temporary SQLite file,
//! or a new PostgreSQL database), driven over HTTP.

use std::net::SocketAddr;

use backroom_db::Db;
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `$body` (a `|app: TestApp| async move { … }`) once on SQLite and once on PostgreSQL;
/// with a `settings = |s: &mut Settings| …` before the body, on an app with those settings.
#[macro_export]
macro_rules! both {
    ($name:ident, settings = $settings:expr, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::support::TestApp::spawn_with($crate::support::Backend::Sqlite, $settings).await;
                ($body)(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(app) =
                    $crate::support::TestApp::try_spawn_with($crate::support::Backend::Postgres, $settings).await
                else {
                    return;
                };
                ($body)(app).await;
            }
        }
    };
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::support::TestApp::spawn($crate::support::Backend::Sqlite).await;
                ($body)(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(app) = $crate::support::TestApp::try_spawn($crate::support::Backend::Postgres).await else {
                    return;
                };
                ($body)(app).await;
            }
        }
    };
}

/// A valid checkout body paying with `token`.
pub fn checkout_body(token: &str) -> Value {
    json!({"email": "ana@example.com",
           "shipping_address": {"name": "Ana Silva", "line1": "Rua Augusta 1", "city": "Lisboa",
                                "postal_code": "1100-048", "country": "PT"},
           "payment": {"provider": "test", "token": token}})
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: Db,
    /// The app's checkout (its providers), for tests that drive recovery themselves.
    pub checkout: backroom_checkout::Checkout,
    /// The app's storefront views (search pages are made of them).
    pub views: std::sync::Arc<backroom_api::views::ProductViews>,
    /// What the app's outbox follower of product changes has done (its loads).
    pub follow: std::sync::Arc<backroom_search::follow::Stats>,
    /// The app's outgoing webhooks, for tests that render a delivery's `data` as it is sent.
    pub webhooks: backroom_integrations::Webhooks,
    /// The database the app runs on, for tests that open it again (as another process).
    pub database_url: String,
    /// The PostgreSQL database, dropped when the test ends.
    _pg: Option<backroom_db::testing::TestDatabase>,
    _dir: tempfile::TempDir,
}

/// A response: status, content type and JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Res {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Res {
    /// Asserts the status, printing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self.body
    }

    /// Asserts a problem+json answer with this status and code.
    #[track_caller]
    pub fn problem(self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        assert_eq!(self.content_type, "application/problem+json", "body: {}", self.body);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        for key in ["type", "title", "detail"] {
            assert!(self.body[key].is_string(), "problem without {key}: {}", self.body);
        }
        self.body
    }
}

/// The settings every test app starts from: the `test` payment provider enabled (it is off
/// by default), a fast recovery loop, the bootstrap admin token.
pub fn test_settings() -> backroom::config::Settings {
    let defaults = backroom::config::Settings::default();
    backroom::config::Settings {
        payment_providers: vec!["test".into()],
        admin_token: Some(ADMIN_TOKEN.into()),
        checkout: backroom_checkout::Settings {
            recovery_interval: std::time::Duration::from_millis(200),
            ..defaults.checkout
        },
        search_follow_interval: std::time::Duration::from_millis(50),
        ..defaults
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::try_spawn(backend).await.expect("backend available")
    }

    pub async fn try_spawn(backend: Backend) -> Option<TestApp> {
        Self::try_spawn_with(backend, |_| {}).await
    }

    /// [`TestApp::spawn`] with settings changed by `change` (on top of [`test_settings`]).
    pub async fn spawn_with(backend: Backend, change: impl FnOnce(&mut backroom::config::Settings)) -> TestApp {
        Self::try_spawn_with(backend, change).await.expect("backend available")
    }

    pub async fn try_spawn_with(
        backend: Backend,
        change: impl FnOnce(&mut backroom::config::Settings),
    ) -> Option<TestApp> {
        // Quiet unless TEST_LOG is set (then it is the filter, such as `debug`).
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = test_settings();
        settings.data_dir = dir.path().to_owned();
        settings.listen = "127.0.0.1:0".parse().expect("an address");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(backroom_db::testing::fresh_postgres().await?),
        };
        settings.database_url = match &pg {
            None => backroom_db::sqlite_url_in(dir.path()),
            Some(pg) => pg.url().to_owned(),
        };
        change(&mut settings);
        let database_url = settings.database_url.clone();
        // The store as `serve` runs it: one builder, the real server loop with its timeouts
        // and connection cap, the worker and the search follower (the test never stops it).
        let listeners = backroom::Listeners::bind(&settings).await.expect("bind");
        let app = backroom::Application::build(settings).await.expect("build the app");
        let (db, checkout, views) = (app.db().clone(), app.state().checkout.clone(), app.state().views.clone());
        let follow = app.state().follow.clone();
        let webhooks = app.state().webhooks.clone();
        let addr = listeners.local_addr();
        tokio::spawn(app.run(listeners, std::future::pending()));
        Some(TestApp {
            addr,
            client: reqwest::Client::new(),
            db,
            checkout,
            views,
            follow,
            webhooks,
            database_url,
            _pg: pg,
            _dir: dir,
        })
    }

    /// Everything the store keeps at rest, as bytes: every file of its data directory (the
    /// SQLite database with its WAL, the search index, the key file) and, on PostgreSQL, a
    /// `pg_dump` of its database. For scans that personal data is never stored in clear.
    pub async fn stored_bytes(&self) -> Vec<u8> {
        fn walk(dir: &std::path::Path, out: &mut Vec<u8>) {
            for entry in std::fs::read_dir(dir).expect("read the data directory").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.extend_from_slice(&bytes);
                }
            }
        }
        let mut out = Vec::new();
        walk(self._dir.path(), &mut out);
        if self.database_url.starts_with("postgres") {
            let pg_dump = ["pg_dump".to_owned()]
                .into_iter()
                .chain(
                    std::fs::read_dir("/usr/lib/postgresql")
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|d| d.path().join("bin/pg_dump").display().to_string()),
                )
                .find(|p| std::process::Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
                .expect("pg_dump is needed for this test (Debian: postgresql-client-15, installed with postgresql-15)");
            let dump = std::process::Command::new(pg_dump)
                .args(["--data-only", "--dbname", &self.database_url])
                .output()
                .expect("pg_dump runs");
            assert!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
            out.extend_from_slice(&dump.stdout);
        }
        out
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Res {
        let res = req.send().await.expect("request is answered");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let bytes = res.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Res { status, content_type, body, headers }
    }

    /// A request answered as raw bytes (for byte-identical comparisons).
    pub async fn send_raw(&self, req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let res = req.send().await.expect("request is answered");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, headers, res.bytes().await.expect("body").to_vec())
    }

    /// Creates a cart in `currency` holding `quantity` of each variant; answers its id.
    pub async fn cart_with(&self, currency: &str, lines: &[(&str, i64)]) -> String {
        let cart = self
            .send(self.client.post(self.url("/store/carts")).json(&json!({"currency": currency})))
            .await
            .expect(201);
        let id = cart["id"].as_str().expect("cart id").to_owned();
        for (variant, quantity) in lines {
            self.send(
                self.client
                    .post(self.url(&format!("/store/carts/{id}/items")))
                    .json(&json!({"variant_id": variant, "quantity": quantity})),
            )
            .await
            .expect(200);
        }
        id
    }

    /// A checkout request with this key and token.
    pub fn checkout_req(&self, cart_id: &str, key: Option<&str>, token: &str) -> reqwest::RequestBuilder {
        let mut req =
            self.client.post(self.url(&format!("/store/carts/{cart_id}/checkout"))).json(&checkout_body(token));
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        req
    }

    /// Sets a variant's stock at the default location.
    pub async fn stock(&self, variant_id: &str, on_hand: i64) {
        self.admin_put(&format!("/admin/variants/{variant_id}/stock"), json!({"on_hand": on_hand})).await.expect(200);
    }

    /// GETs `path` until `done` holds for the answer (the search index follows the outbox
    /// within a second); fails after 10 s.
    pub async fn get_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.until(path, self.client.get(self.url(path)), done).await
    }

    /// [`TestApp::get_until`] with the admin token.
    pub async fn admin_get_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.until(path, self.admin(reqwest::Method::GET, path, ADMIN_TOKEN), done).await
    }

    async fn until(&self, path: &str, req: reqwest::RequestBuilder, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            let r = self.send(req.try_clone().expect("a GET clones")).await;
            if r.status == 200 && done(&r.body) {
                return r.body;
            }
            last = r.body;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{path} never satisfied the condition; last answer: {last}");
    }

    /// A public request.
    pub async fn get(&self, path: &str) -> Res {
        self.send(self.client.get(self.url(path))).await
    }

    fn admin(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(token)
    }

    pub async fn admin_get(&self, path: &str) -> Res {
        self.send(self.admin(reqwest::Method::GET, path, ADMIN_TOKEN)).await
    }

    pub async fn admin_delete(&self, path: &str) -> Res {
        self.send(self.admin(reqwest::Method::DELETE, path, ADMIN_TOKEN)).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Res {
        self.send(self.admin(reqwest::Method::POST, path, ADMIN_TOKEN).json(&body)).await
    }

    pub async fn admin_patch(&self, path: &str, body: Value) -> Res {
        self.send(self.admin(reqwest::Method::PATCH, path, ADMIN_TOKEN).json(&body)).await
    }

    pub async fn admin_put(&self, path: &str, body: Value) -> Res {
        self.send(self.admin(reqwest::Method::PUT, path, ADMIN_TOKEN).json(&body)).await
    }

    /// A request with another token.
    pub async fn as_key(&self, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Res {
        let mut req = self.admin(method, path, token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    /// Creates a published product with the given SKUs (EUR 49.00 each) and answers it.
    pub async fn product(&self, handle: &str, skus: &[&str]) -> Value {
        let variants: Vec<Value> =
            skus.iter().map(|s| json!({"sku": s, "prices": [{"amount": 4900, "currency": "EUR"}]})).collect();
        self.admin_post(
            "/admin/products",
            json!({"title": format!("Product {handle}"), "handle": handle, "status": "published", "variants": variants}),
        )
        .await
        .expect(201)
    }

    /// Number of products the admin list shows (all statuses).
    pub async fn product_count(&self) -> usize {
        let mut n = 0;
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/admin/products?limit=100&cursor={c}"),
                None => "/admin/products?limit=100".into(),
            };
            let page = self.admin_get(&path).await.expect(200);
            n += page["items"].as_array().expect("items").len();
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return n,
            }
        }
    }
}
