use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both;
use crate::support::TestApp;

fn titles(body: &Value) -> Vec<String> {
    body["items"].as_array().unwrap().iter().map(|p| p["title"].as_str().unwrap().to_owned()).collect()
}

fn variant(sku: &str, options: Value, eur: i64) -> Value {
    json!({"sku": sku, "options": options, "prices": [{"amount": eur, "currency": "EUR"}, {"amount": eur + 400, "currency": "USD"}]})
}

/// A small catalog; answers once the index holds all four products.
async fn shop(app: &TestApp) {
    let clothing = app.admin_post("/admin/categories", json!({"name": "Clothing"})).await.expect(201);
    let shirts =
        app.admin_post("/admin/categories", json!({"name": "Shirts", "parent_id": clothing["id"]})).await.expect(201);
    let shoes = app.admin_post("/admin/categories", json!({"name": "Shoes"})).await.expect(201);
    let products = [
        json!({"title": "Linen shirt", "description": "Breezy summer linen", "category_ids": [shirts["id"]],
               "attributes": {"brand": "Nordhavn"},
               "variants": [variant("LIN-M-W", json!({"color": "White", "size": "M"}), 4900), variant("LIN-L-N", json!({"color": "Navy", "size": "L"}), 5200)]}),
        json!({"title": "Oxford shirt", "description": "Button-down cotton", "category_ids": [shirts["id"]],
               "attributes": {"brand": "Atelier"}, "variants": [variant("OXF-M-W", json!({"color": "White", "size": "M"}), 5900)]}),
        json!({"title": "Trail runner", "description": "Grippy shoes for muddy trails", "category_ids": [shoes["id"]],
               "attributes": {"brand": "Ridgeway"}, "variants": [variant("TRL-42", json!({"color": "Olive", "size": "42"}), 12900)]}),
        json!({"title": "Canvas tote", "description": "Carries everything", "variants": [variant("TOTE", json!({"color": "Sand"}), 2500)]}),
    ];
    for mut p in products {
        p["status"] = json!("published");
        let created = app.admin_post("/admin/products", p).await.expect(201);
        for v in created["variants"].as_array().unwrap() {
            let stock = if v["sku"] == "TRL-42" { 0 } else { 10 };
            if v["sku"] != "TOTE" {
                app.stock(v["id"].as_str().unwrap(), stock).await;
            }
        }
    }
    app.get_until("/store/products?facets=true&in_stock=false", |b| b["total"] == 4).await;
    // Stock events are applied too.
    app.get_until("/store/products?in_stock=true", |b| b["total"] == 3).await;
}

both!(search_finds_filters_sorts_and_counts, |app: TestApp| async move {
    shop(&app).await;
    let s = |path: &'static str| {
        let app = &app;
        async move { app.get(path).await.expect(200) }
    };
    assert_eq!(titles(&s("/store/products?q=linen").await), ["Linen shirt"]);
    assert_eq!(titles(&s("/store/products?q=linnen").await), ["Linen shirt"], "one typo in a longer word");
    assert_eq!(titles(&s("/store/products?q=oxf").await), ["Oxford shirt"], "prefix of the last word");
    assert_eq!(titles(&s("/store/products?q=LIN-M-W").await), ["Linen shirt"], "SKUs are searchable");
    assert_eq!(s("/store/products?q=shirt").await["total"], 2);
    assert_eq!(s("/store/products?q=muddy%20trails").await["total"], 1, "descriptions are searchable");
    assert_eq!(s("/store/products?q=olive").await["total"], 1, "option values are searchable");
    assert_eq!(s("/store/products?q=zzzzzz").await["total"], 0);
    // Query syntax is just text.
    for q in ["shirt%20AND%20(title:%22", "%2B%2B%2B", "%5B%7B%7D%5D", "*", "~2"] {
        app.get(&format!("/store/products?q={q}")).await.expect(200);
    }

    assert_eq!(s("/store/products?category=clothing").await["total"], 2, "sub-categories count");
    assert_eq!(s("/store/products?category=shoes").await["total"], 1);
    assert_eq!(s("/store/products?category=nowhere").await["total"], 0);
    assert_eq!(s("/store/products?color=white").await["total"], 2);
    assert_eq!(s("/store/products?color=White&size=M").await["total"], 2);
    // Names match at product level: some variant is navy, some variant is M.
    assert_eq!(s("/store/products?color=navy&size=m").await["total"], 1);
    assert_eq!(s("/store/products?color=olive,white").await["total"], 3);
    assert_eq!(s("/store/products?brand=ridgeway").await["total"], 1, "attributes filter too");

    let eur = s("/store/products?currency=EUR&price_min=5000&price_max=20000&sort=price_asc").await;
    assert_eq!(titles(&eur), ["Oxford shirt", "Trail runner"]);
    assert_eq!(
        titles(&s("/store/products?in_stock=true&sort=price_asc&currency=EUR").await),
        ["Canvas tote", "Linen shirt", "Oxford shirt"]
    );
    assert_eq!(
        titles(&s("/store/products?sort=price_desc&currency=USD").await),
        ["Trail runner", "Oxford shirt", "Linen shirt", "Canvas tote"]
    );
    assert_eq!(titles(&s("/store/products?sort=newest").await)[0], "Canvas tote");

    // Facets for the current filters.
    let all = s("/store/products?currency=EUR&facets=true").await;
    let f = &all["facets"];
    assert_eq!(f["categories"], json!([{"value": "clothing", "count": 2}, {"value": "shoes", "count": 1}]));
    assert_eq!(
        f["attributes"]["color"],
        json!([{"value": "White", "count": 2}, {"value": "Navy", "count": 1}, {"value": "Olive", "count": 1}, {"value": "Sand", "count": 1}])
    );
    assert_eq!(f["attributes"]["brand"].as_array().unwrap().len(), 3);
    let ranges: Vec<(i64, i64)> = f["price_ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["min"].as_i64().unwrap(), r["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(ranges[..4], [(0, 0), (2500, 2), (5000, 1), (10000, 1)]);
    let shirts = s("/store/products?category=clothing&currency=EUR").await;
    assert_eq!(
        shirts["facets"]["categories"],
        json!([{"value": "shirts", "count": 2}]),
        "children of the selected category"
    );
    assert_eq!(
        shirts["facets"]["attributes"]["color"],
        json!([{"value": "White", "count": 2}, {"value": "Navy", "count": 1}])
    );

    // Pages.
    let first = s("/store/products?sort=price_asc&currency=EUR&limit=3").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let next = first["next_cursor"].as_str().unwrap().to_owned();
    let rest = app.get(&format!("/store/products?sort=price_asc&currency=EUR&limit=3&cursor={next}")).await.expect(200);
    assert_eq!(titles(&rest), ["Trail runner"]);
    assert_eq!(rest["next_cursor"], Value::Null);
    // Results show what the product page shows: prices and availability from the database.
    let runner = &rest["items"][0];
    assert_eq!(runner["variants"][0]["available"], 0);
    assert_eq!(runner["variants"][0]["prices"][0], json!({"amount": 12900, "currency": "EUR"}));
});

both!(bad_search_input_is_refused, |app: TestApp| async move {
    app.get_until("/store/products?facets=true", |b| b["total"] == 0).await;
    for (query, field) in [
        ("sort=cheapest", "sort"),
        ("currency=EUR&price_min=-1", "price_min"),
        ("currency=EUR&price_max=abc", "price_max"),
        ("currency=EUR&price_min=500&price_max=100", "price_min"),
        ("price_min=100", "currency"),
        ("sort=price_asc", "currency"),
        ("currency=EURO", "currency"),
        ("currency=XYZ&sort=price_asc", "currency"),
        ("limit=101", "limit"),
        ("limit=-5", "limit"),
        ("cursor=garbage", "cursor"),
        ("in_stock=maybe", "in_stock"),
        ("facets=1", "facets"),
    ] {
        let r = app.get(&format!("/store/products?{query}")).await.problem(422, "validation_failed");
        assert!(r["errors"].as_array().unwrap().iter().any(|e| e["field"] == field), "{query}: {r}");
    }
    let long = "a".repeat(257);
    app.get(&format!("/store/products?q={long}")).await.problem(422, "validation_failed");
    app.get(&format!("/store/products?q={}", "a".repeat(256))).await.expect(200);
    // A cursor of the database listing is not one of a search.
    app.get("/store/products?q=x&cursor=c1.prod_01abc").await.problem(422, "validation_failed");
});

both!(the_index_follows_changes_within_a_second, |app: TestApp| async move {
    app.get_until("/store/products?facets=true", |b| b["total"] == 0).await;
    let started = Instant::now();
    let p = app.product("lagtest", &["LAG-1"]).await;
    app.get_until("/store/products?q=lagtest", |b| b["total"] == 1).await;
    eprintln!("search sync lag ({:?}): {:?}", app.db.dialect(), started.elapsed());
    // Archived: gone from search. Deleted: gone too.
    let id = p["id"].as_str().unwrap();
    app.admin_patch(&format!("/admin/products/{id}"), json!({"status": "archived"})).await.expect(200);
    app.get_until("/store/products?q=lagtest", |b| b["total"] == 0).await;
    app.admin_patch(&format!("/admin/products/{id}"), json!({"status": "published", "title": "Renamed thing"}))
        .await
        .expect(200);
    app.get_until("/store/products?q=renamed", |b| b["total"] == 1).await;
    app.admin_delete(&format!("/admin/products/{id}")).await.expect(204);
    app.get_until("/store/products?q=renamed", |b| b["total"] == 0).await;
    assert!(started.elapsed() < Duration::from_secs(30));
});

both!(one_price_everywhere, |app: TestApp| async move {
    let p = app.product("priced", &["PRICED-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 5).await;
    app.get_until("/store/products?q=priced", |b| b["total"] == 1).await;
    app.admin_patch(&format!("/admin/variants/{v}"), json!({"prices": [{"amount": 3333, "currency": "EUR"}]}))
        .await
        .expect(200);
    // At once, before the index has caught up: every view shows the new price.
    let listed = app.get("/store/products?q=priced").await.expect(200);
    let plain = app.get("/store/products").await.expect(200);
    let page = app.get("/store/products/priced").await.expect(200);
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    let cart = app.get(&format!("/store/carts/{cart}")).await.expect(200);
    let want = json!({"amount": 3333, "currency": "EUR"});
    assert_eq!(listed["items"][0]["variants"][0]["prices"][0], want);
    assert_eq!(plain["items"][0]["variants"][0]["prices"][0], want);
    assert_eq!(page["variants"][0]["prices"][0], want);
    assert_eq!(cart["items"][0]["unit_price"], want);
    assert_eq!(listed["items"][0]["variants"][0]["available"], page["variants"][0]["available"]);
    // And the index catches up for price filters.
    app.get_until("/store/products?currency=EUR&price_max=3333", |b| b["total"] == 1).await;
});

both!(catalog_reads_carry_etags_and_cache_headers, |app: TestApp| async move {
    let p = app.product("cached", &["CACHED-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    let url = app.url("/store/products/cached");
    let first = app.client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'));
    assert!(first.headers()["cache-control"].to_str().unwrap().contains("public"));
    let body = first.text().await.unwrap();
    let again = app.client.get(&url).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert!(again.text().await.unwrap().is_empty());
    assert_eq!(
        app.client.get(&url).send().await.unwrap().text().await.unwrap(),
        body,
        "a cache hit is the same answer"
    );

    // A write through this process: the next read is fresh at once.
    app.admin_patch(&format!("/admin/variants/{v}"), json!({"prices": [{"amount": 7777, "currency": "EUR"}]}))
        .await
        .expect(200);
    let changed = app.client.get(&url).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(changed.status(), 200);
    let new_etag = changed.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["variants"][0]["prices"][0]["amount"], 7777);

    // A write that did not pass through this process's HTTP layer (as from another
    // process): the outbox follower drops the cache.
    let catalog = backroom_catalog::Catalog::new(app.db.clone());
    let patch: backroom_catalog::VariantPatch =
        serde_json::from_value(json!({"prices": [{"amount": 8888, "currency": "EUR"}]})).unwrap();
    catalog.update_variant(&v, &patch).await.unwrap();
    app.get_until("/store/products/cached", |b| b["variants"][0]["prices"][0]["amount"] == 8888).await;
    app.get_until("/store/products", |b| b["items"][0]["variants"][0]["prices"][0]["amount"] == 8888).await;
});

/// Searches until a round of them reads nothing from the database: every product they show
/// has a current storefront view (the follower has applied this process's writes).
async fn warm(app: &TestApp, pages: &[&str]) {
    for round in 0..80 {
        let before = app.views.db_loads();
        for p in pages {
            // A new `limit` each round: the response cache has not seen it.
            app.get(&format!("{p}&limit={}", 20 + round)).await.expect(200);
        }
        if app.views.db_loads() == before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("search pages kept reading the database");
}

fn first_variant(body: &Value) -> &Value {
    &body["items"][0]["variants"][0]
}

both!(search_pages_run_no_sql_on_a_warm_server, |app: TestApp| async move {
    shop(&app).await;
    let pages = ["/store/products?q=shirt", "/store/products?in_stock=false&facets=true", "/store/products?q=tote"];
    warm(&app, &pages).await;
    let loads = app.views.db_loads();
    let linen = app.get("/store/products?q=linen&limit=99").await.expect(200);
    let id = linen["items"][0]["id"].as_str().unwrap().to_owned();

    // No database at all from here on: whatever runs SQL fails.
    app.db.close().await;
    let page = app.get(&format!("/store/products/{id}")).await;
    assert!(page.status >= 500, "the product page reads the database, which is closed: {}", page.status);

    // Never-seen searches still answer, from the index and the storefront views.
    let found = app.get("/store/products?q=linen&sort=newest").await.expect(200);
    assert_eq!(titles(&found), ["Linen shirt"]);
    assert_eq!(first_variant(&found)["prices"][0], json!({"amount": 4900, "currency": "EUR"}));
    assert_eq!(first_variant(&found)["available"], 10);
    let shirts = app.get("/store/products?category=clothing&sort=price_asc&currency=EUR").await.expect(200);
    assert_eq!(titles(&shirts), ["Linen shirt", "Oxford shirt"]);
    let tote = app.get("/store/products?q=canvas&facets=false").await.expect(200);
    assert_eq!(tote["items"][0]["variants"][0]["available"], Value::Null, "untracked stock stays null");
    let all = app.get("/store/products?sort=newest&facets=false").await.expect(200);
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    assert_eq!(app.views.db_loads(), loads, "no search page read products from the database");
});

both!(search_results_follow_changes_made_by_another_process, |app: TestApp| async move {
    shop(&app).await;
    warm(&app, &["/store/products?q=oxford"]).await;
    let found = app.get("/store/products?q=oxford").await.expect(200);
    let product = found["items"][0]["id"].as_str().unwrap().to_owned();
    let variant = first_variant(&found)["id"].as_str().unwrap().to_owned();
    assert_eq!(first_variant(&found)["available"], 10);
    let loads = app.views.db_loads();

    // Another process on the same database: only the outbox tells this one.
    let other = backroom_db::Db::connect(&backroom_db::ConnectOptions::new(&app.database_url)).await.unwrap();
    let catalog = backroom_catalog::Catalog::new(other.clone());
    let inventory = backroom_inventory::Inventory::new(other.clone());
    let patch: backroom_catalog::VariantPatch =
        serde_json::from_value(json!({"prices": [{"amount": 4100, "currency": "EUR"}]})).unwrap();
    catalog.update_variant(&variant, &patch).await.unwrap();
    app.get_until("/store/products?q=oxford", |b| first_variant(b)["prices"][0]["amount"] == 4100).await;

    let count: backroom_inventory::SetStock = serde_json::from_value(json!({"on_hand": 3})).unwrap();
    inventory.set_on_hand(&variant, &count, false, "other-process").await.unwrap();
    let listed = app.get_until("/store/products?q=oxford", |b| first_variant(b)["available"] == 3).await;
    // One price everywhere: the product page (from the database) agrees.
    let page = app.get(&format!("/store/products/{product}")).await.expect(200);
    assert_eq!(first_variant(&listed)["prices"], page["variants"][0]["prices"]);
    assert_eq!(first_variant(&listed)["available"], page["variants"][0]["available"]);
    assert_eq!(app.views.db_loads(), loads, "the follower updated the views; no search read the database");

    // Unpublished, then deleted, by the other process: gone from results.
    let archive: backroom_catalog::ProductPatch = serde_json::from_value(json!({"status": "archived"})).unwrap();
    catalog.update_product(&product, &archive).await.unwrap();
    app.get_until("/store/products?q=oxford", |b| b["items"].as_array().is_some_and(Vec::is_empty)).await;
    let publish: backroom_catalog::ProductPatch = serde_json::from_value(json!({"status": "published"})).unwrap();
    catalog.update_product(&product, &publish).await.unwrap();
    app.get_until("/store/products?q=oxford", |b| first_variant(b)["available"] == 3).await;
    catalog.delete_product(&product).await.unwrap();
    app.get_until("/store/products?q=oxford", |b| b["items"].as_array().is_some_and(Vec::is_empty)).await;
    assert_eq!(app.get("/store/products?q=shirt&facets=false").await.expect(200)["items"].as_array().unwrap().len(), 1);
    other.close().await;
});

/// The follower's loads of changed products once it has caught up with the outbox (nothing
/// loaded for a while).
async fn follower_loads_when_idle(app: &TestApp) -> u64 {
    let mut last = app.follow.loads();
    let mut still = 0;
    while still < 2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = app.follow.loads();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

both!(a_stock_change_is_loaded_once_for_the_index_and_the_views, |app: TestApp| async move {
    shop(&app).await;
    warm(&app, &["/store/products?q=oxford"]).await;
    let found = app.get("/store/products?q=oxford").await.expect(200);
    let variant = first_variant(&found)["id"].as_str().unwrap().to_owned();
    let loads = follower_loads_when_idle(&app).await;
    let searches = app.views.db_loads();

    // Another process sells out the shirt: only the outbox tells this one.
    let other = backroom_db::Db::connect(&backroom_db::ConnectOptions::new(&app.database_url)).await.unwrap();
    let inventory = backroom_inventory::Inventory::new(other.clone());
    let count: backroom_inventory::SetStock = serde_json::from_value(json!({"on_hand": 0})).unwrap();
    inventory.set_on_hand(&variant, &count, false, "other-process").await.unwrap();
    // The index (its in-stock filter) and the storefront views (`available`) both follow.
    app.get_until("/store/products?q=oxford&in_stock=true", |b| b["total"] == 0).await;
    app.get_until("/store/products?q=oxford", |b| first_variant(b)["available"] == 0).await;

    assert_eq!(
        follower_loads_when_idle(&app).await - loads,
        1,
        "one load of the changed product, shared by the search index and the storefront views"
    );
    assert_eq!(app.views.db_loads(), searches, "no search read the database");
    other.close().await;
});

both!(writes_through_this_process_show_in_search_results_at_once, |app: TestApp| async move {
    shop(&app).await;
    warm(&app, &["/store/products?q=oxford", "/store/products?q=linen"]).await;
    let found = app.get("/store/products?q=oxford").await.expect(200);
    let product = found["items"][0]["id"].as_str().unwrap().to_owned();
    let variant = first_variant(&found)["id"].as_str().unwrap().to_owned();

    // A checkout: the units it took are gone from results at once, without the follower.
    let cart = app.cart_with("EUR", &[(&variant, 4)]).await;
    app.send(app.checkout_req(&cart, Some("views-1"), "tok_visa")).await.expect(201);
    let after = app.get("/store/products?q=oxford").await.expect(200);
    assert_eq!(first_variant(&after)["available"], 6);
    let page = app.get(&format!("/store/products/{product}")).await.expect(200);
    assert_eq!(page["variants"][0]["available"], 6);

    // Stock counted through the admin API (4 of the 7 are allocated to the order).
    app.stock(&variant, 7).await;
    assert_eq!(first_variant(&app.get("/store/products?q=oxford").await.expect(200))["available"], 3);

    // Archived through the admin API: out of the results at once (the index may still count it).
    app.admin_patch(&format!("/admin/products/{product}"), json!({"status": "archived"})).await.expect(200);
    let gone = app.get("/store/products?q=oxford").await.expect(200);
    assert!(gone["items"].as_array().unwrap().is_empty(), "{gone}");

    // A renamed category shows its new name in results at once.
    let linen = app.get("/store/products?q=linen").await.expect(200);
    let category = linen["items"][0]["categories"][0]["id"].as_str().unwrap().to_owned();
    app.admin_patch(&format!("/admin/categories/{category}"), json!({"name": "Blouses"})).await.expect(200);
    let renamed = app.get("/store/products?q=linen").await.expect(200);
    assert_eq!(renamed["items"][0]["categories"][0]["name"], "Blouses");
});
