//! Issue 15: orders out for systems that poll (`updated_since`), the marketplace feed, and
//! the CSV import/export of products.

use serde_json::{Value, json};

use crate::both;
use crate::support::TestApp;

/// A placed order of one unit of `variant`.
async fn placed(app: &TestApp, variant: &str, key: &str) -> String {
    let cart = app.cart_with("EUR", &[(variant, 1)]).await;
    let order = app.send(app.checkout_req(&cart, Some(key), "tok_visa")).await.expect(201);
    order["id"].as_str().unwrap().to_owned()
}

fn pairs(page: &Value) -> Vec<(String, String)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_str().unwrap().to_owned(), o["updated_at"].as_str().unwrap().to_owned()))
        .collect()
}

both!(updated_since_pages_by_change_and_sees_an_order_changed_meanwhile, |app: TestApp| async move {
    let p = app.product("poll", &["POLL-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 100).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(placed(&app, &v, &format!("poll-{i}")).await);
    }
    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let first = app.admin_get(&format!("/admin/orders?updated_since={}&limit=2", urlencode(&since))).await.expect(200);
    let mut seen = pairs(&first);
    assert_eq!(seen.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), ids[..2].to_vec(), "oldest change first");
    // The first order changes between two pages: it moves past the cursor and is listed
    // again, with its new updated_at; nothing is skipped.
    app.admin_post(&format!("/admin/orders/{}/cancel", ids[0]), json!({})).await.expect(200);
    let mut cursor = first["next_cursor"].as_str().unwrap().to_owned();
    loop {
        let page = app
            .admin_get(&format!("/admin/orders?updated_since={}&limit=2&cursor={cursor}", urlencode(&since)))
            .await
            .expect(200);
        seen.extend(pairs(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let order: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        order,
        vec![ids[0].clone(), ids[1].clone(), ids[2].clone(), ids[3].clone(), ids[4].clone(), ids[0].clone()]
    );
    assert!(seen[5].1 > seen[0].1, "the change has a later updated_at: {seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "no pair repeated: {seen:?}");

    // Polling again from the last updated_at seen gives the last change (and only it).
    let last = &seen[5].1;
    let again = app.admin_get(&format!("/admin/orders?updated_since={}", urlencode(last))).await.expect(200);
    assert_eq!(pairs(&again), vec![seen[5].clone()]);
    // Offsets other than Z are understood.
    let plus = before
        .with_timezone(&chrono::FixedOffset::east_opt(7200).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let all = app.admin_get(&format!("/admin/orders?updated_since={}&limit=100", urlencode(&plus))).await.expect(200);
    assert_eq!(all["items"].as_array().unwrap().len(), 5);

    // Bad values are named.
    for bad in ["yesterday", "2026-13-01T00:00:00Z", "2026-12-01", "2026-12-01T08:00:00"] {
        let e = app
            .admin_get(&format!("/admin/orders?updated_since={}", urlencode(bad)))
            .await
            .problem(422, "validation_failed");
        assert_eq!(e["errors"][0]["field"], "updated_since", "{bad}: {e}");
    }
    let e = app
        .admin_get(&format!("/admin/orders?updated_since={}&cursor=c1.nope", urlencode(&since)))
        .await
        .problem(422, "validation_failed");
    assert_eq!(e["errors"][0]["field"], "cursor", "{e}");
});

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The feed's items: each a map of its child elements' names to their text.
async fn feed(app: &TestApp, currency: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let (status, headers, body) =
        app.send_raw(app.client.get(app.url(&format!("/feeds/products.xml?currency={currency}")))).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/rss+xml"));
    parse_feed(&body)
}

fn parse_feed(body: &[u8]) -> Vec<std::collections::BTreeMap<String, String>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut items = Vec::new();
    let mut item: Option<std::collections::BTreeMap<String, String>> = None;
    let mut field: Option<String> = None;
    let mut depth = 0;
    let mut buf = Vec::new();
    let mut rss_ns = false;
    loop {
        match reader.read_event_into(&mut buf).expect("well-formed XML") {
            Event::Start(e) => {
                depth += 1;
                let name = e.name().as_ref().to_owned();
                if name == "rss" {
                    rss_ns = e.attributes().any(|a| {
                        let a = a.unwrap();
                        a.key.as_ref() == "xmlns:g" && a.value == "http://base.google.com/ns/1.0"
                    });
                }
                if name == "item" {
                    item = Some(Default::default());
                } else if item.is_some() {
                    field = Some(name);
                }
            }
            Event::Text(t) => {
                if let (Some(i), Some(f)) = (item.as_mut(), field.as_ref()) {
                    let text = t.into_inner().into_owned();
                    i.entry(f.clone()).or_default().push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                if let (Some(i), Some(f)) = (item.as_mut(), field.as_ref()) {
                    let name = r.into_inner();
                    let c = match name.as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        other => panic!("unexpected entity {other}"),
                    };
                    i.entry(f.clone()).or_default().push_str(c);
                }
            }
            Event::End(e) => {
                depth -= 1;
                if e.name().as_ref() == "item" {
                    items.push(item.take().unwrap());
                }
                field = None;
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    assert_eq!(depth, 0, "every element closed");
    assert!(rss_ns, "the g: namespace is declared");
    items
}

both!(
    product_feed_is_valid_xml_of_published_variants_in_a_currency_and_follows_price_changes,
    |app: TestApp| async move {
        let shirt = app
        .admin_post(
            "/admin/products",
            json!({"title": "Fish & Chips <Deluxe> \"tee\"", "handle": "fish-tee", "status": "published",
                "description": "Cotton & <b>love</b>",
                "attributes": {"brand": "R&D", "gtin": "4006381333931"},
                "images": [{"url": "https://img.example.com/a.jpg?x=1&y=2"}],
                "variants": [
                    {"sku": "FISH-S", "title": "S", "prices": [{"amount": 1250, "currency": "EUR"}, {"amount": 1400, "currency": "USD"}]},
                    {"sku": "FISH-M", "title": "M", "prices": [{"amount": 1300, "currency": "EUR"}], "allow_backorder": false}]}),
        )
        .await
        .expect(201);
        let s = shirt["variants"][0]["id"].as_str().unwrap().to_owned();
        let m = shirt["variants"][1]["id"].as_str().unwrap().to_owned();
        app.stock(&s, 3).await;
        app.stock(&m, 0).await;
        app.admin_post(
            "/admin/products",
            json!({"title": "Secret draft", "handle": "draft", "status": "draft",
            "variants": [{"sku": "DRAFT-1", "prices": [{"amount": 100, "currency": "EUR"}]}]}),
        )
        .await
        .expect(201);

        let items = feed(&app, "EUR").await;
        assert_eq!(items.len(), 2, "{items:?}");
        let by_id = |id: &str| items.iter().find(|i| i["g:id"] == id).cloned().unwrap();
        let small = by_id(&s);
        assert_eq!(small["g:title"], "Fish & Chips <Deluxe> \"tee\" (S)");
        assert_eq!(small["g:description"], "Cotton & <b>love</b>");
        assert_eq!(small["g:item_group_id"], shirt["id"].as_str().unwrap());
        assert_eq!(small["g:price"], "12.50 EUR");
        assert_eq!(small["g:availability"], "in_stock");
        assert_eq!(small["g:link"], "http://localhost:3000/products/fish-tee");
        assert_eq!(small["g:image_link"], "https://img.example.com/a.jpg?x=1&y=2");
        assert_eq!((small["g:brand"].as_str(), small["g:gtin"].as_str()), ("R&D", "4006381333931"));
        assert_eq!(small["g:condition"], "new");
        assert_eq!(by_id(&m)["g:availability"], "out_of_stock");
        assert!(!items.iter().any(|i| i["g:title"].contains("draft")));

        // Only variants priced in the currency.
        let usd = feed(&app, "USD").await;
        assert_eq!(
            usd.iter().map(|i| (i["g:id"].clone(), i["g:price"].clone())).collect::<Vec<_>>(),
            vec![(s.clone(), "14.00 USD".into())]
        );

        // Served again from the cache, then dropped by a price change.
        assert_eq!(feed(&app, "EUR").await, items);
        app.admin_patch(&format!("/admin/variants/{s}"), json!({"prices": [{"amount": 999, "currency": "EUR"}]}))
            .await
            .expect(200);
        assert_eq!(feed(&app, "EUR").await.iter().find(|i| i["g:id"] == s).unwrap()["g:price"], "9.99 EUR");

        // Bad currencies.
        for q in ["", "?currency=", "?currency=EURO", "?currency=XYZ", "?currency=eur%26"] {
            let r = app.send(app.client.get(app.url(&format!("/feeds/products.xml{q}")))).await;
            let e = r.problem(422, "validation_failed");
            assert_eq!(e["errors"][0]["field"], "currency", "{q}: {e}");
        }
    }
);

async fn import(app: &TestApp, csv: &str) -> Value {
    let req = app
        .client
        .post(app.url("/admin/imports/products"))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .header("content-type", "text/csv")
        .body(csv.to_owned());
    let started = app.send(req).await.expect(202);
    let id = started["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("job_"));
    app.admin_get_until(&format!("/admin/jobs/{id}"), |j| j["status"] != "running").await
}

async fn export(app: &TestApp) -> String {
    let (status, headers, body) = app
        .send_raw(app.client.get(app.url("/admin/exports/products.csv")).bearer_auth(crate::support::ADMIN_TOKEN))
        .await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    String::from_utf8(body).unwrap()
}

/// A product as the admin API shows it, found by handle.
async fn by_handle(app: &TestApp, handle: &str) -> Value {
    let page = app.admin_get("/admin/products?limit=100").await.expect(200);
    let id = page["items"].as_array().unwrap().iter().find(|p| p["handle"] == handle).expect("imported")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.admin_get(&format!("/admin/products/{id}")).await.expect(200)
}

const HEADER: &str = "handle,title,description,status,categories,attributes,images,sku,variant_title,options,prices,allow_backorder,weight_g,tax_class,stock\n";

both!(csv_import_reports_bad_rows_updates_on_reimport_and_round_trips_through_export, |app: TestApp| async move {
    app.admin_post("/admin/categories", json!({"name": "Shirts", "handle": "shirts"})).await.expect(201);
    let csv = format!(
        "{HEADER}\
tee,\"Tee, \"\"classic\"\" & <b>\",\"Soft\ncotton\",published,shirts,\"{{\"\"brand\"\":\"\"Acme\"\"}}\",https://img.example.com/t.jpg,TEE-S,S,\"{{\"\"size\"\":\"\"S\"\"}}\",EUR 12.50|USD 14.00,false,200,standard,5\n\
tee,,,,,,,TEE-M,M,\"{{\"\"size\"\":\"\"M\"\"}}\",EUR 13.00,true,,standard,\n\
,Nameless,,draft,,,,NOHANDLE-1,,,EUR 1.00,false,,standard,\n\
Bad Handle,Bad,,draft,,,,BAD-1,,,EUR 1.00,false,,standard,\n\
mug,Mug,,draft,,,,MUG-1,,,EUR 8.00,false,,standard,\n\
broken,Broken,,draft,,,,BROKEN-1,,,EUR abc,false,,standard,\n"
    );
    let job = import(&app, &csv).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!((job["processed"].as_i64(), job["total"].as_i64()), (Some(6), Some(6)), "{job}");
    let rows: Vec<u64> = job["errors"].as_array().unwrap().iter().map(|e| e["row"].as_u64().unwrap()).collect();
    assert_eq!(rows, vec![4, 5, 7], "{job}");
    assert!(job["errors"][0]["message"].as_str().unwrap().contains("handle"), "{job}");
    let tee = by_handle(&app, "tee").await;
    assert_eq!(tee["title"], "Tee, \"classic\" & <b>");
    assert_eq!(tee["description"], "Soft\ncotton");
    assert_eq!(tee["attributes"]["brand"], "Acme");
    assert_eq!(tee["categories"][0]["handle"], "shirts");
    assert_eq!(tee["variants"].as_array().unwrap().len(), 2);
    assert_eq!(
        tee["variants"][0]["prices"],
        json!([{"amount": 1250, "currency": "EUR"}, {"amount": 1400, "currency": "USD"}])
    );
    let s = tee["variants"][0]["id"].as_str().unwrap();
    assert_eq!(app.admin_get(&format!("/admin/variants/{s}/stock")).await.expect(200)["on_hand"], 5);
    assert_eq!(app.product_count().await, 2);

    // The same file again: updated, not duplicated.
    let again = import(&app, &csv).await;
    assert_eq!(again["errors"].as_array().unwrap().len(), 3);
    assert_eq!(app.product_count().await, 2);

    // An alt text (which CSV does not carry) survives the round trip.
    let tee_id = tee["id"].as_str().unwrap();
    app.admin_patch(
        &format!("/admin/products/{tee_id}"),
        json!({"images": [{"url": "https://img.example.com/t.jpg", "alt": "Front"}]}),
    )
    .await
    .expect(200);
    let tee = by_handle(&app, "tee").await;

    // Export, import the export: nothing changes, and the next export is the same file.
    let first = export(&app).await;
    assert!(first.starts_with(HEADER), "{first}");
    assert_eq!(first.lines().filter(|l| l.starts_with("tee,") || l.starts_with("mug,")).count(), 3, "{first}");
    let back = import(&app, &first).await;
    assert_eq!((back["status"].as_str(), back["errors"].as_array().unwrap().len()), (Some("succeeded"), 0), "{back}");
    assert_eq!(app.product_count().await, 2);
    assert_eq!(export(&app).await, first);
    let after = by_handle(&app, "tee").await;
    for key in ["title", "description", "attributes", "categories", "images", "status"] {
        assert_eq!(after[key], tee[key], "{key}");
    }

    // Not CSV, or not a CSV we know.
    let req =
        app.client.post(app.url("/admin/imports/products")).bearer_auth(crate::support::ADMIN_TOKEN).json(&json!({}));
    app.send(req).await.problem(415, "unsupported_media_type");
    let bad = import(&app, "sku,handle\nX,y\n").await;
    assert_eq!(bad["status"], "failed", "{bad}");
    app.admin_get("/admin/jobs/job_nope").await.problem(404, "not_found");
});

both!(csv_import_of_a_thousand_products_reports_progress_and_finishes, |app: TestApp| async move {
    let mut csv = HEADER.to_owned();
    for i in 0..1000 {
        csv.push_str(&format!("bulk-{i},Bulk {i},,published,,,,BULK-{i},,,EUR 1.{:02},false,,standard,\n", i % 100));
    }
    let req = app
        .client
        .post(app.url("/admin/imports/products"))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .header("content-type", "text/csv; charset=utf-8")
        .body(csv);
    let id = app.send(req).await.expect(202)["id"].as_str().unwrap().to_owned();
    let mut seen_running = Vec::new();
    let job = loop {
        let j = app.admin_get(&format!("/admin/jobs/{id}")).await.expect(200);
        if j["status"] != "running" {
            break j;
        }
        seen_running.push(j["processed"].as_i64().unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!((job["processed"].as_i64(), job["total"].as_i64()), (Some(1000), Some(1000)));
    assert!(seen_running.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {seen_running:?}");
    assert_eq!(app.product_count().await, 1000);
});

/// One master key for both servers of the restart test.
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

both!(
    a_job_running_when_the_server_stopped_is_failed_at_the_next_start,
    settings = |s: &mut backroom::config::Settings| s.master_key = Some(MASTER_KEY.into()),
    |app: TestApp| async move {
        // The server is serving (it has looked for interrupted jobs already).
        app.admin_get("/admin/jobs/job_none").await.problem(404, "not_found");
        // A job row left `running` (its server was killed), then a server starts on the database.
        let mut tx = app.db.begin().await.unwrap();
        backroom_db::sql::query(
            "INSERT INTO jobs (id, kind, status, processed, total, errors, created_at, updated_at) \
         VALUES ('job_killed', 'product_import', 'running', 10, 50, '[]', $1, $1)",
        )
        .bind(backroom_kernel::now())
        .execute(&mut tx.conn())
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let running = app.admin_get("/admin/jobs/job_killed").await.expect(200);
        assert_eq!(running["status"], "running");

        let dir = tempfile::tempdir().unwrap();
        let mut settings = crate::support::test_settings();
        settings.data_dir = dir.path().to_owned();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        settings.database_url = app.database_url.clone();
        settings.master_key = Some(MASTER_KEY.into());
        let listeners = backroom::Listeners::bind(&settings).await.unwrap();
        let second = backroom::Application::build(settings).await.unwrap();
        tokio::spawn(second.run(listeners, std::future::pending()));

        let failed = app.admin_get_until("/admin/jobs/job_killed", |j| j["status"] != "running").await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert_eq!((failed["processed"].as_i64(), failed["total"].as_i64()), (Some(10), Some(50)));
        assert!(failed["errors"][0]["message"].as_str().unwrap().contains("stopped"), "{failed}");
    }
);
