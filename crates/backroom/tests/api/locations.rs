//! Stock over several locations is counted one way: the storefront's `available` (the sum
//! over locations) is what a cart may hold and what a checkout can buy; a line is reserved
//! from as many locations as it needs, the default location first, then the others by id.

use backroom_db::writer::Done;
use backroom_inventory::reservations::{self, ReserveLine, Shortage};
use backroom_kernel::id::OrderId;
use serde_json::{Value, json};

use crate::both;
use crate::support::TestApp;

/// A published product with one variant; answers the variant id.
async fn variant(app: &TestApp, handle: &str) -> String {
    let p = app.product(handle, &[&format!("{}-1", handle.to_uppercase())]).await;
    p["variants"][0]["id"].as_str().unwrap().to_owned()
}

/// A new stock location; answers its id.
async fn location(app: &TestApp, name: &str) -> String {
    let loc = app.admin_post("/admin/stock-locations", json!({"name": name})).await.expect(201);
    loc["id"].as_str().unwrap().to_owned()
}

/// Sets a variant's `on_hand` at a location.
async fn put(app: &TestApp, variant_id: &str, location_id: &str, on_hand: i64) {
    app.admin_put(
        &format!("/admin/variants/{variant_id}/stock"),
        json!({"on_hand": on_hand, "location_id": location_id}),
    )
    .await
    .expect(200);
}

/// `(on_hand, reserved, allocated, available)` of a variant at one location, as the admin
/// stock view shows it.
async fn at(app: &TestApp, variant_id: &str, location_id: &str) -> (i64, i64, i64, i64) {
    let s = app.admin_get(&format!("/admin/variants/{variant_id}/stock")).await.expect(200);
    let l = s["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["location_id"] == location_id)
        .unwrap_or_else(|| panic!("no level at {location_id}: {s}"));
    let n = |k: &str| l[k].as_i64().unwrap();
    (n("on_hand"), n("reserved"), n("allocated"), n("available"))
}

/// What the storefront shows as available for the product's first variant.
async fn shown(app: &TestApp, handle: &str) -> Value {
    app.get(&format!("/store/products/{handle}")).await.expect(200)["variants"][0]["available"].clone()
}

/// An order's reservation parts: `(location_id, quantity, status)`, sorted.
async fn parts(app: &TestApp, order_id: &str) -> Vec<(String, i64, String)> {
    let sql = "SELECT location_id, quantity, status FROM stock_reservations WHERE order_id = $1";
    let mut rows: Vec<(String, i64, String)> = match app.db.pools() {
        backroom_db::Pools::Sqlite { reader, .. } => sqlx::query_as(sql).bind(order_id).fetch_all(reader).await,
        backroom_db::Pools::Postgres(pool) => sqlx::query_as(sql).bind(order_id).fetch_all(pool).await,
    }
    .unwrap();
    rows.sort();
    rows
}

/// Number of reservation rows of any order.
async fn reservation_rows(app: &TestApp) -> i64 {
    let sql = "SELECT COUNT(*) FROM stock_reservations";
    match app.db.pools() {
        backroom_db::Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.unwrap(),
        backroom_db::Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

fn part(location_id: &str, quantity: i64, status: &str) -> (String, i64, String) {
    (location_id.to_owned(), quantity, status.to_owned())
}

/// Parts sorted as [`parts`] answers them.
fn sorted<const N: usize>(parts: [(String, i64, String); N]) -> Vec<(String, i64, String)> {
    let mut v = parts.to_vec();
    v.sort();
    v
}

both!(units_in_two_locations_sell_as_one_count, |app: TestApp| async move {
    let v = variant(&app, "scarf").await;
    let wh = location(&app, "Warehouse Porto").await;
    put(&app, &v, "loc_default", 3).await;
    put(&app, &v, &wh, 3).await;
    assert_eq!(shown(&app, "scarf").await, 6);

    // The cart allows what the storefront shows, and refuses more with the same figure.
    let cart = app.cart_with("EUR", &[]).await;
    let items = format!("/store/carts/{cart}/items");
    let r = app
        .send(app.client.post(app.url(&items)).json(&json!({"variant_id": v, "quantity": 7})))
        .await
        .problem(409, "insufficient_stock");
    assert_eq!(r["items"], json!([{"variant_id": v, "requested": 7, "available": 6}]));
    app.send(app.client.post(app.url(&items)).json(&json!({"variant_id": v, "quantity": 5}))).await.expect(200);

    let order = app.send(app.checkout_req(&cart, Some("two-loc"), "tok_visa")).await.expect(201);
    assert_eq!(order["status"], "placed");
    assert_eq!(order["items"][0]["quantity"], 5);
    // The default location first, then the warehouse for the rest.
    assert_eq!(at(&app, &v, "loc_default").await, (3, 0, 3, 0));
    assert_eq!(at(&app, &v, &wh).await, (3, 0, 2, 1));
    let s = app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200);
    assert_eq!((s["on_hand"].as_i64(), s["allocated"].as_i64(), s["available"].as_i64()), (Some(6), Some(5), Some(1)));
    assert_eq!(shown(&app, "scarf").await, 1);
    let id = order["id"].as_str().unwrap();
    assert_eq!(parts(&app, id).await, sorted([part("loc_default", 3, "allocated"), part(&wh, 2, "allocated")]));

    // The ledger has a reservation and an allocation line per location.
    let ledger = app.admin_get(&format!("/admin/variants/{v}/stock/adjustments")).await.expect(200);
    let lines: Vec<(&str, i64, i64)> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["reason"].as_str().unwrap().ends_with(id))
        .map(|l| {
            (
                l["location_id"].as_str().unwrap(),
                l["reserved_delta"].as_i64().unwrap(),
                l["allocated_delta"].as_i64().unwrap(),
            )
        })
        .collect();
    for expected in [("loc_default", 3, 0), ("loc_default", -3, 3), (wh.as_str(), 2, 0), (wh.as_str(), -2, 2)] {
        assert!(lines.contains(&expected), "{expected:?} in {lines:?}");
    }
    assert_eq!(lines.len(), 4, "{lines:?}");

    // One unit is left, in the warehouse; it sells too.
    let last = app.cart_with("EUR", &[(&v, 1)]).await;
    app.send(app.checkout_req(&last, Some("last"), "tok_visa")).await.expect(201);
    assert_eq!(at(&app, &v, &wh).await, (3, 0, 3, 0));
    assert_eq!(shown(&app, "scarf").await, 0);
});

both!(more_than_the_sum_is_refused_and_reserves_nothing, |app: TestApp| async move {
    let v = variant(&app, "gloves").await;
    let wh = location(&app, "Warehouse Faro").await;
    put(&app, &v, "loc_default", 3).await;
    put(&app, &v, &wh, 4).await;
    let cart = app.cart_with("EUR", &[(&v, 7)]).await;
    // A recount takes one unit away: 3 + 3 are left for a cart of 7.
    put(&app, &v, &wh, 3).await;
    assert_eq!(shown(&app, "gloves").await, 6);
    let r = app.send(app.checkout_req(&cart, Some("seven"), "tok_visa")).await.problem(409, "insufficient_stock");
    assert_eq!(r["items"], json!([{"variant_id": v, "requested": 7, "available": 6}]));
    assert_eq!(at(&app, &v, "loc_default").await, (3, 0, 0, 3));
    assert_eq!(at(&app, &v, &wh).await, (3, 0, 0, 3));
    assert_eq!(reservation_rows(&app).await, 0);
    assert_eq!(app.admin_get("/admin/orders").await.expect(200)["items"], json!([]));
    assert_eq!(app.get(&format!("/store/carts/{cart}")).await.expect(200)["status"], "open");

    // The reservation itself (past the checkout's pre-check, as in a race) reports the same
    // figure, and a line it cannot serve leaves no part of any line behind.
    let other = variant(&app, "mittens").await;
    put(&app, &other, &wh, 2).await;
    let (v2, other2) = (v.clone(), other.clone());
    let (short, ok) = app
        .db
        .write(move |mut conn| {
            Box::pin(async move {
                let expires = backroom_kernel::now() + std::time::Duration::from_secs(15 * 60);
                let line = |variant_id: &str, quantity| ReserveLine {
                    variant_id: variant_id.to_owned(),
                    quantity,
                    allow_backorder: false,
                };
                let short = reservations::reserve(
                    &mut conn,
                    &OrderId::generate(),
                    &[line(&other2, 2), line(&v2, 7)],
                    expires,
                    "test",
                )
                .await?;
                let ok =
                    reservations::reserve(&mut conn, &OrderId::generate(), &[line(&v2, 6)], expires, "test").await?;
                Ok(Done::Rollback((short, ok)))
            })
        })
        .await
        .unwrap();
    assert_eq!(short, Err(vec![Shortage { variant_id: v.clone(), requested: 7, available: 6 }]));
    assert_eq!(ok, Ok(vec![v.clone()]));
    assert_eq!(reservation_rows(&app).await, 0, "rolled back with its job");
    assert_eq!(at(&app, &other, &wh).await, (2, 0, 0, 2));
});

both!(a_declined_payment_releases_every_part, |app: TestApp| async move {
    let v = variant(&app, "belt").await;
    let wh = location(&app, "Warehouse Braga").await;
    put(&app, &v, "loc_default", 3).await;
    put(&app, &v, &wh, 3).await;
    let cart = app.cart_with("EUR", &[(&v, 5)]).await;
    let r = app.send(app.checkout_req(&cart, Some("no"), "tok_declined")).await.problem(402, "payment_declined");
    assert_eq!(r["code"], "payment_declined");
    assert_eq!(at(&app, &v, "loc_default").await, (3, 0, 0, 3));
    assert_eq!(at(&app, &v, &wh).await, (3, 0, 0, 3));
    assert_eq!(shown(&app, "belt").await, 6);
    let failed = app.admin_get("/admin/orders?status=canceled").await.expect(200);
    let id = failed["items"][0]["id"].as_str().unwrap();
    assert_eq!(parts(&app, id).await, sorted([part("loc_default", 3, "released"), part(&wh, 2, "released")]));

    // The same cart pays now: the released units are taken again, in the same order.
    let order = app.send(app.checkout_req(&cart, Some("yes"), "tok_visa")).await.expect(201);
    assert_eq!(at(&app, &v, "loc_default").await, (3, 0, 3, 0));
    assert_eq!(at(&app, &v, &wh).await, (3, 0, 2, 1));
    let id = order["id"].as_str().unwrap();
    assert_eq!(parts(&app, id).await, sorted([part("loc_default", 3, "allocated"), part(&wh, 2, "allocated")]));
});

both!(backorders_take_what_is_there_then_go_below_zero_at_the_first_location, |app: TestApp| async move {
    let p = app.product("poster", &["POSTER-1", "POSTER-2"]).await;
    let (v, far) =
        (p["variants"][0]["id"].as_str().unwrap().to_owned(), p["variants"][1]["id"].as_str().unwrap().to_owned());
    for id in [&v, &far] {
        app.admin_patch(&format!("/admin/variants/{id}"), json!({"allow_backorder": true})).await.expect(200);
    }
    let wh = location(&app, "Warehouse Evora").await;
    put(&app, &v, "loc_default", 1).await;
    put(&app, &v, &wh, 2).await;
    // Stocked only away from the default location: that one is its first.
    put(&app, &far, &wh, 1).await;
    let cart = app.cart_with("EUR", &[(&v, 5), (&far, 3)]).await;
    let order = app.send(app.checkout_req(&cart, Some("back"), "tok_visa")).await.expect(201);
    assert_eq!(at(&app, &v, "loc_default").await, (1, 0, 3, -2));
    assert_eq!(at(&app, &v, &wh).await, (2, 0, 2, 0));
    assert_eq!(at(&app, &far, &wh).await, (1, 0, 3, -2));
    assert_eq!(shown(&app, "poster").await, 0, "a location below zero counts as none");
    let id = order["id"].as_str().unwrap();
    let all = parts(&app, id).await;
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.contains(&part("loc_default", 3, "allocated")), "{all:?}");
});

both!(racing_buyers_over_two_locations_never_oversell, |app: TestApp| async move {
    const BUYERS: usize = 30;
    // 7 + 5 units, 2 per buyer: 6 orders, one of them split over both locations.
    let v = variant(&app, "rush").await;
    let wh = location(&app, "Warehouse Coimbra").await;
    put(&app, &v, "loc_default", 7).await;
    put(&app, &v, &wh, 5).await;
    let mut carts = Vec::new();
    for _ in 0..BUYERS {
        carts.push(app.cart_with("EUR", &[(&v, 2)]).await);
    }
    let mut tasks = Vec::new();
    for (i, cart) in carts.iter().enumerate() {
        let req = app.checkout_req(cart, Some(&format!("rush-{i}")), "tok_visa");
        tasks.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }));
    }
    let mut placed = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            201 => placed.push(body["id"].as_str().unwrap().to_owned()),
            409 => {
                assert_eq!(body["code"], "insufficient_stock", "{body}");
                // Stock goes down 2 at a time from 12: a refusal only when none is left.
                assert_eq!(body["items"][0]["available"], 0, "{body}");
                assert_eq!(body["items"][0]["requested"], 2, "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(placed.len(), 6);
    assert_eq!(at(&app, &v, "loc_default").await, (7, 0, 7, 0));
    assert_eq!(at(&app, &v, &wh).await, (5, 0, 5, 0));
    let mut split = 0;
    for id in &placed {
        let p = parts(&app, id).await;
        assert_eq!(p.iter().map(|(_, q, _)| q).sum::<i64>(), 2, "{p:?}");
        assert!(p.iter().all(|(_, _, s)| s == "allocated"), "{p:?}");
        if p.len() == 2 {
            split += 1;
        }
    }
    assert_eq!(split, 1, "the seventh default unit and the first warehouse unit make one order");
    assert_eq!(shown(&app, "rush").await, 0);
});

both!(concurrent_transactions_lock_in_one_order_and_never_oversell, |app: TestApp| async move {
    // Reservations in transactions of their own (on PostgreSQL, truly concurrent), each over
    // two variants named in either order: no deadlock, no oversell.
    const TASKS: usize = 32;
    let p = app.product("pair", &["PAIR-A", "PAIR-B"]).await;
    let ids: Vec<String> = (0..2).map(|i| p["variants"][i]["id"].as_str().unwrap().to_owned()).collect();
    let wh = location(&app, "Warehouse Aveiro").await;
    for v in &ids {
        put(&app, v, "loc_default", 9).await;
        put(&app, v, &wh, 11).await;
    }
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let db = app.db.clone();
        let mut lines: Vec<ReserveLine> =
            ids.iter().map(|v| ReserveLine { variant_id: v.clone(), quantity: 2, allow_backorder: false }).collect();
        if i % 2 == 1 {
            lines.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin().await.unwrap();
            let expires = backroom_kernel::now() + std::time::Duration::from_secs(15 * 60);
            let order = OrderId::generate();
            let got = reservations::reserve(&mut tx.conn(), &order, &lines, expires, "test").await.unwrap();
            if got.is_ok() {
                tx.commit().await.unwrap();
            }
            got.is_ok()
        }));
    }
    let mut reserved = 0;
    for t in tasks {
        if t.await.unwrap() {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 10, "20 units of each variant, 2 per transaction");
    for v in &ids {
        assert_eq!(at(&app, v, "loc_default").await, (9, 9, 0, 0));
        assert_eq!(at(&app, v, &wh).await, (11, 11, 0, 0));
    }
    // Per variant: 4 orders at the default location, 1 split, 5 at the warehouse.
    assert_eq!(reservation_rows(&app).await, 2 * (4 + 2 + 5), "one row per order, variant and location part");
});
