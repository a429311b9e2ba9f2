//! Price lists: staff CRUD and its validation, and "one price" with price lists: a member of a
//! list's group sees the list's price (with `original_price`) on the product page, in listings,
//! in search results, in the cart and in the order, while everyone else sees the base price,
//! through the response cache too.

use reqwest::Method;
use serde_json::{Value, json};

use crate::access_matrix::customer;
use crate::both;
use crate::support::{Res, TestApp};

/// What a variant's base price (EUR 49.00, [`TestApp::product`]) shows.
fn base() -> Value {
    json!({"amount": 4900, "currency": "EUR"})
}

/// What a member sees for a list price of `amount`.
fn member(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR", "original_price": {"amount": 4900, "currency": "EUR"}})
}

/// A group; answers its id.
async fn group(app: &TestApp, name: &str) -> String {
    let g = app.admin_post("/admin/customer-groups", json!({"name": name})).await.expect(201);
    g["id"].as_str().unwrap().to_owned()
}

async fn join(app: &TestApp, group: &str, customer: &str) {
    app.admin_post(&format!("/admin/customer-groups/{group}/customers"), json!({"customer_ids": [customer]}))
        .await
        .expect(200);
}

/// A price list for `groups` with one EUR price of `variant`; answers its id.
async fn list(app: &TestApp, groups: &[&str], variant: &str, amount: i64, schedule: Value) -> String {
    let mut body = json!({"name": "Members", "customer_group_ids": groups,
                          "prices": [{"variant_id": variant, "amount": amount, "currency": "EUR"}]});
    if let (Some(b), Some(s)) = (body.as_object_mut(), schedule.as_object()) {
        b.extend(s.clone());
    }
    let l = app.admin_post("/admin/price-lists", body).await.expect(201);
    l["id"].as_str().unwrap().to_owned()
}

async fn get_as(app: &TestApp, token: Option<&str>, path: &str) -> Res {
    let mut req = app.client.get(app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    app.send(req).await
}

/// The first variant's first price on the product page, in the plain listing and in search
/// results, as `token`'s shopper reads them.
async fn prices_seen(app: &TestApp, token: Option<&str>) -> [Value; 3] {
    let page = get_as(app, token, "/store/products/listed").await.expect(200);
    let plain = get_as(app, token, "/store/products").await.expect(200);
    let search = get_as(app, token, "/store/products?q=listed").await.expect(200);
    [
        page["variants"][0]["prices"][0].clone(),
        plain["items"][0]["variants"][0]["prices"][0].clone(),
        search["items"][0]["variants"][0]["prices"][0].clone(),
    ]
}

/// A published product `listed` (EUR 49.00) found by search; answers its variant id.
async fn listed(app: &TestApp) -> String {
    let p = app.product("listed", &["LISTED-1"]).await;
    app.get_until("/store/products?q=listed", |b| b["total"] == 1).await;
    p["variants"][0]["id"].as_str().unwrap().to_owned()
}

both!(staff_create_read_change_and_delete_price_lists, |app: TestApp| async move {
    let variant = listed(&app).await;
    let (g1, g2) = (group(&app, "Wholesale").await, group(&app, "VIP").await);
    let created = app
        .admin_post(
            "/admin/price-lists",
            json!({"name": " Wholesale ", "customer_group_ids": [g1, g1], "starts_at": "2024-01-01T00:00:00Z",
                   "prices": [{"variant_id": variant, "amount": 3900, "currency": "EUR"},
                              {"variant_id": variant, "amount": 4500, "currency": "USD"}]}),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("plist_"), "{created}");
    assert_eq!(created["name"], "Wholesale");
    assert_eq!(created["customer_group_ids"], json!([g1]));
    assert_eq!(created["starts_at"], "2024-01-01T00:00:00Z");
    assert_eq!(created["ends_at"], Value::Null);
    assert_eq!(
        created["prices"],
        json!([{"variant_id": variant, "amount": 3900, "currency": "EUR"},
               {"variant_id": variant, "amount": 4500, "currency": "USD"}])
    );
    assert_eq!(app.admin_get(&format!("/admin/price-lists/{id}")).await.expect(200), created);

    // Changed: the prices are replaced, the schedule opened, the groups replaced.
    let changed = app
        .admin_patch(
            &format!("/admin/price-lists/{id}"),
            json!({"name": "Trade", "customer_group_ids": [g2], "starts_at": null, "ends_at": "2099-01-01T00:00:00Z",
                   "prices": [{"variant_id": variant, "amount": 3500, "currency": "EUR"}]}),
        )
        .await
        .expect(200);
    assert_eq!(changed["name"], "Trade");
    assert_eq!(changed["customer_group_ids"], json!([g2]));
    assert_eq!(changed["starts_at"], Value::Null);
    assert_eq!(changed["ends_at"], "2099-01-01T00:00:00Z");
    assert_eq!(changed["prices"], json!([{"variant_id": variant, "amount": 3500, "currency": "EUR"}]));
    // A patch without `prices` keeps them.
    let renamed = app.admin_patch(&format!("/admin/price-lists/{id}"), json!({"name": "Trade 2"})).await.expect(200);
    assert_eq!(renamed["prices"], changed["prices"]);

    // Listed newest first, a page at a time, with their number of prices.
    let second = list(&app, &[&g1], &variant, 100, json!({})).await;
    let third = list(&app, &[], &variant, 100, json!({})).await;
    let page = app.admin_get("/admin/price-lists?limit=2").await.expect(200);
    let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [third.as_str(), second.as_str()]);
    assert_eq!(page["items"][0]["price_count"], 1);
    assert!(page["items"][0].get("prices").is_none());
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app.admin_get(&format!("/admin/price-lists?limit=2&cursor={cursor}")).await.expect(200);
    assert_eq!(rest["items"][0]["id"], id.as_str());
    assert_eq!(rest["next_cursor"], Value::Null);

    // Deleted: gone.
    assert_eq!(app.admin_delete(&format!("/admin/price-lists/{id}")).await.status, 204);
    app.admin_get(&format!("/admin/price-lists/{id}")).await.problem(404, "not_found");
    app.admin_delete(&format!("/admin/price-lists/{id}")).await.problem(404, "not_found");
    app.admin_patch(&format!("/admin/price-lists/{id}"), json!({"name": "x"})).await.problem(404, "not_found");

    // Every write told the outbox, in its own transaction.
    let events = backroom_db::outbox::list(&app.db, "price_list.changed").await.unwrap();
    let actions: Vec<String> = events
        .iter()
        .map(|e| {
            let p: Value = serde_json::from_str(&e.payload).unwrap();
            format!("{} {}", p["price_list_id"].as_str().unwrap(), p["action"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        actions,
        [
            format!("{id} created"),
            format!("{id} updated"),
            format!("{id} updated"),
            format!("{second} created"),
            format!("{third} created"),
            format!("{id} deleted"),
        ]
    );
});

both!(price_lists_refuse_bad_input_naming_each_field, |app: TestApp| async move {
    let variant = listed(&app).await;
    let g = group(&app, "Wholesale").await;
    let fields = |r: Res| -> Vec<String> {
        let body = r.problem(422, "validation_failed");
        body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
    };
    let ok_price = json!({"variant_id": variant, "amount": 3900, "currency": "EUR"});

    let bad = app
        .admin_post(
            "/admin/price-lists",
            json!({"name": " ", "customer_group_ids": [g], "starts_at": "2030-01-01T00:00:00Z",
                   "ends_at": "2030-01-01T00:00:00Z",
                   "prices": [ok_price,
                              {"variant_id": variant, "amount": -1, "currency": "EUR"},
                              {"variant_id": variant, "amount": 1, "currency": "EURO"},
                              {"variant_id": variant, "amount": 1_000_000_000_001_i64, "currency": "USD"},
                              {"variant_id": variant, "amount": 1, "currency": "EUR"}]}),
        )
        .await;
    assert_eq!(
        fields(bad),
        ["name", "ends_at", "prices[1].amount", "prices[1]", "prices[2].currency", "prices[3].amount", "prices[4]"]
    );
    let long = app
        .admin_post("/admin/price-lists", json!({"name": "x".repeat(201), "customer_group_ids": [g], "prices": []}))
        .await;
    assert_eq!(fields(long), ["name"]);

    // Unknown groups and variants, each named; nothing is written.
    let unknown = app
        .admin_post(
            "/admin/price-lists",
            json!({"name": "Members", "customer_group_ids": [g, "cgrp_nope"],
                   "prices": [ok_price, ok_price.clone(), {"variant_id": "var_nope", "amount": 1, "currency": "EUR"}]}),
        )
        .await;
    assert_eq!(fields(unknown), ["prices[1]"], "shape first");
    let unknown = app
        .admin_post(
            "/admin/price-lists",
            json!({"name": "Members", "customer_group_ids": [g, "cgrp_nope"],
                   "prices": [ok_price, {"variant_id": "var_nope", "amount": 1, "currency": "EUR"}]}),
        )
        .await;
    assert_eq!(fields(unknown), ["customer_group_ids[1]", "prices[1].variant_id"]);
    assert_eq!(app.admin_get("/admin/price-lists").await.expect(200)["items"], json!([]));

    // More than 10,000 prices; an unknown field; a wrong type.
    let many: Vec<Value> =
        (0..10_001).map(|i| json!({"variant_id": format!("var_{i}"), "amount": 1, "currency": "EUR"})).collect();
    let r =
        app.admin_post("/admin/price-lists", json!({"name": "Many", "customer_group_ids": [g], "prices": many})).await;
    assert_eq!(fields(r), ["prices"]);
    let r = app.admin_post("/admin/price-lists", json!({"name": "X", "customer_group_ids": [g], "discount": 5})).await;
    assert!(r.problem(422, "validation_failed").to_string().contains("discount"));
    let r = app
        .admin_post("/admin/price-lists", json!({"name": "X", "customer_group_ids": [g], "starts_at": "soon"}))
        .await;
    assert_eq!(fields(r), ["starts_at"]);

    // A patch is checked against what the list holds: the schedule stays ordered.
    let id = list(&app, &[&g], &variant, 3900, json!({"starts_at": "2030-01-01T00:00:00Z"})).await;
    let r = app.admin_patch(&format!("/admin/price-lists/{id}"), json!({"ends_at": "2029-01-01T00:00:00Z"})).await;
    assert_eq!(fields(r), ["ends_at"]);
    let r = app
        .admin_patch(
            &format!("/admin/price-lists/{id}"),
            json!({"prices": [{"variant_id": "var_nope", "amount": 1, "currency": "EUR"}], "customer_group_ids": ["cgrp_x"]}),
        )
        .await;
    assert_eq!(fields(r), ["customer_group_ids[0]", "prices[0].variant_id"]);
    let kept = app.admin_get(&format!("/admin/price-lists/{id}")).await.expect(200);
    assert_eq!(kept["prices"][0]["amount"], 3900);
    assert_eq!(kept["customer_group_ids"], json!([g]));
});

both!(a_viewer_reads_price_lists_but_cannot_change_them, |app: TestApp| async move {
    let variant = listed(&app).await;
    let g = group(&app, "Wholesale").await;
    let id = list(&app, &[&g], &variant, 3900, json!({})).await;
    let k = app.admin_post("/admin/api-keys", json!({"name": "viewer key", "role": "viewer"})).await.expect(201);
    let viewer = k["token"].as_str().unwrap().to_owned();
    let body = json!({"name": "Members", "customer_group_ids": [g], "prices": []});
    app.as_key(&viewer, Method::POST, "/admin/price-lists", Some(body)).await.problem(403, "forbidden");
    let path = format!("/admin/price-lists/{id}");
    app.as_key(&viewer, Method::PATCH, &path, Some(json!({"name": "x"}))).await.problem(403, "forbidden");
    app.as_key(&viewer, Method::DELETE, &path, None).await.problem(403, "forbidden");
    app.as_key(&viewer, Method::GET, &path, None).await.expect(200);
    app.as_key(&viewer, Method::GET, "/admin/price-lists", None).await.expect(200);
    // And nobody without a key.
    app.get("/admin/price-lists").await.problem(401, "unauthenticated");
});

both!(one_price_everywhere_with_price_lists, |app: TestApp| async move {
    let variant = listed(&app).await;
    let (member_id, member_token) = customer(&app, "member@example.com").await;
    let (other_id, other_token) = customer(&app, "other@example.com").await;
    let (wholesale, vip) = (group(&app, "Wholesale").await, group(&app, "VIP").await);
    join(&app, &vip, &other_id).await;
    // Signed in but in no group yet: the base price, like everyone.
    assert_eq!(prices_seen(&app, Some(&member_token)).await, [base(), base(), base()]);

    // Lists of the member's group: the lowest active one wins; one above the base changes nothing.
    list(&app, &[&wholesale], &variant, 3900, json!({})).await;
    let cheaper = list(&app, &[&wholesale], &variant, 3700, json!({})).await;
    list(&app, &[&wholesale], &variant, 5000, json!({})).await;
    // Another group's list: not the member's.
    list(&app, &[&vip], &variant, 100, json!({"ends_at": "2099-01-01T00:00:00Z"})).await;
    // Joining the group shows at once (this process reads the member's groups again).
    join(&app, &wholesale, &member_id).await;

    // The same variant at the same moment: each shopper sees their own price everywhere.
    assert_eq!(prices_seen(&app, Some(&member_token)).await, [member(3700), member(3700), member(3700)]);
    assert_eq!(prices_seen(&app, None).await, [base(), base(), base()]);
    assert_eq!(prices_seen(&app, Some(&other_token)).await, [member(100), member(100), member(100)]);
    let anonymous = app.get("/store/products/listed").await.expect(200);
    assert!(anonymous["variants"][0]["prices"][0].get("original_price").is_none(), "{anonymous}");

    // A change of the list's prices shows for the member everywhere (search within its bound).
    app.admin_patch(
        &format!("/admin/price-lists/{cheaper}"),
        json!({"prices": [{"variant_id": variant, "amount": 3300, "currency": "EUR"}]}),
    )
    .await
    .expect(200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let seen = prices_seen(&app, Some(&member_token)).await;
        if seen == [member(3300), member(3300), member(3300)] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the member never saw the new price everywhere: {seen:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(prices_seen(&app, None).await, [base(), base(), base()]);

    // The cart and the order show the same price: the member's line at the list price with
    // the base beside it, the anonymous shopper's at the base price.
    let line = |b: &Value| {
        let mut l = json!({"unit_price": b["items"][0]["unit_price"]});
        if let Some(o) = b["items"][0].get("original_price") {
            l["original_price"] = o.clone();
        }
        l
    };
    let bearer = |req: reqwest::RequestBuilder| req.bearer_auth(&member_token);
    let cart =
        app.send(bearer(app.client.post(app.url("/store/carts"))).json(&json!({"currency": "EUR"}))).await.expect(201);
    let cart_id = cart["id"].as_str().unwrap().to_owned();
    let cart = app
        .send(
            bearer(app.client.post(app.url(&format!("/store/carts/{cart_id}/items"))))
                .json(&json!({"variant_id": variant, "quantity": 1})),
        )
        .await
        .expect(200);
    let member_line = json!({"unit_price": {"amount": 3300, "currency": "EUR"},
                             "original_price": {"amount": 4900, "currency": "EUR"}});
    assert_eq!(line(&cart), member_line, "{cart}");
    let order = app
        .send(
            bearer(app.client.post(app.url(&format!("/store/carts/{cart_id}/checkout"))))
                .header("Idempotency-Key", "member-order")
                .json(&crate::support::checkout_body("tok_visa")),
        )
        .await
        .expect(201);
    assert_eq!(line(&order), member_line, "{order}");
    let anonymous_cart = app.cart_with("EUR", &[(&variant, 1)]).await;
    let anonymous_cart = app.get(&format!("/store/carts/{anonymous_cart}")).await.expect(200);
    assert_eq!(line(&anonymous_cart), json!({"unit_price": base()}), "{anonymous_cart}");

    // Deleted: the next cheapest of the member's lists.
    assert_eq!(app.admin_delete(&format!("/admin/price-lists/{cheaper}")).await.status, 204);
    assert_eq!(prices_seen(&app, Some(&member_token)).await, [member(3900), member(3900), member(3900)]);

    // A token that is no live customer's is served as anonymous on the catalog.
    assert_eq!(prices_seen(&app, Some("cst_not_a_token")).await, [base(), base(), base()]);
    // Price filters use base prices (docs/pricing.md).
    let filtered = get_as(&app, Some(&member_token), "/store/products?currency=EUR&price_max=4000").await.expect(200);
    assert_eq!(filtered["total"], 0);
});

both!(scheduled_lists_apply_only_while_active, |app: TestApp| async move {
    let variant = listed(&app).await;
    let (member_id, token) = customer(&app, "member@example.com").await;
    let g = group(&app, "Wholesale").await;
    join(&app, &g, &member_id).await;
    let later = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let earlier = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    // Not started yet, and already ended: nothing.
    list(&app, &[&g], &variant, 3000, json!({"starts_at": later})).await;
    list(&app, &[&g], &variant, 3100, json!({"starts_at": "2020-01-01T00:00:00Z", "ends_at": earlier})).await;
    assert_eq!(prices_seen(&app, Some(&token)).await, [base(), base(), base()]);

    // A list that starts in a moment applies from then, and ends on time, with no write in
    // between.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(3);
    let ends = soon + chrono::Duration::seconds(3);
    list(&app, &[&g], &variant, 3200, json!({"starts_at": soon.to_rfc3339(), "ends_at": ends.to_rfc3339()})).await;
    if chrono::Utc::now() < soon - chrono::Duration::milliseconds(500) {
        assert_eq!(prices_seen(&app, Some(&token)).await, [base(), base(), base()]);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !prices_seen(&app, Some(&token)).await.contains(&member(3200)) {
        assert!(std::time::Instant::now() < deadline, "the scheduled list never applied");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let wait = (ends - chrono::Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_millis(50);
    tokio::time::sleep(wait).await;
    assert_eq!(prices_seen(&app, Some(&token)).await, [base(), base(), base()]);
});

both!(the_response_cache_does_not_leak_members_prices, |app: TestApp| async move {
    let variant = listed(&app).await;
    let (member_id, token) = customer(&app, "member@example.com").await;
    let g = group(&app, "Wholesale").await;
    join(&app, &g, &member_id).await;
    list(&app, &[&g], &variant, 3900, json!({})).await;
    for path in ["/store/products/listed", "/store/products"] {
        let first = get_as(&app, Some(&token), path).await;
        assert_eq!(first.headers["cache-control"], "private, no-store");
        let first = first.expect(200);
        let anonymous = app.get(path).await;
        assert!(anonymous.headers["cache-control"].to_str().unwrap().contains("public"));
        assert!(anonymous.headers.get_all("vary").iter().any(|v| v.to_str().unwrap().contains("authorization")));
        let anonymous = anonymous.expect(200);
        // Served from the cache now for anonymous shoppers: still never to the member.
        let again = app.get(path).await.expect(200);
        let member_again = get_as(&app, Some(&token), path).await.expect(200);
        let again_anonymous = app.get(path).await.expect(200);
        let price = |b: &Value| {
            if b["items"].is_array() {
                b["items"][0]["variants"][0]["prices"][0].clone()
            } else {
                b["variants"][0]["prices"][0].clone()
            }
        };
        assert_eq!(price(&first), member(3900), "{path}");
        assert_eq!(price(&member_again), member(3900), "{path}");
        for a in [&anonymous, &again, &again_anonymous] {
            assert_eq!(price(a), base(), "{path}");
        }
    }
});
