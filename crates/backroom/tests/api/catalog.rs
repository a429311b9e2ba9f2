use serde_json::{Value, json};

use crate::both;
use crate::support::TestApp;

both!(newcomer_flow_create_stock_and_see_in_store, |app: TestApp| async move {
    let p = app
        .admin_post(
            "/admin/products",
            json!({"title": "Linen shirt", "handle": "linen-shirt", "description": "Cool in summer", "status": "published",
                   "variants": [{"sku": "LS-M-WHITE", "title": "M / White", "options": {"size": "M", "color": "White"},
                                 "prices": [{"amount": 4900, "currency": "EUR"}], "allow_backorder": false}]}),
        )
        .await
        .expect(201);
    assert!(p["id"].as_str().unwrap().starts_with("prod_"));
    assert_eq!(p["handle"], "linen-shirt");
    assert_eq!(p["status"], "published");
    let v = &p["variants"][0];
    assert!(v["id"].as_str().unwrap().starts_with("var_"));
    assert_eq!(v["sku"], "LS-M-WHITE");
    assert_eq!(v["prices"], json!([{"amount": 4900, "currency": "EUR"}]));
    assert_eq!(v["options"], json!({"size": "M", "color": "White"}));
    assert!(p["created_at"].as_str().unwrap().ends_with('Z'));
    let vid = v["id"].as_str().unwrap();

    // Not tracked yet: available is null.
    let s = app.get("/store/products/linen-shirt").await.expect(200);
    assert_eq!(s["variants"][0]["available"], Value::Null);

    let stock = app.admin_put(&format!("/admin/variants/{vid}/stock"), json!({"on_hand": 10})).await.expect(200);
    assert_eq!(
        stock,
        json!({"variant_id": vid, "location_id": "loc_default", "on_hand": 10, "reserved": 0, "allocated": 0, "available": 10})
    );

    let list = app.get("/store/products").await.expect(200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["next_cursor"], Value::Null);
    let item = &list["items"][0];
    assert_eq!(item["title"], "Linen shirt");
    assert_eq!(item["variants"][0]["available"], 10);
    assert_eq!(item["variants"][0]["prices"][0]["amount"], 4900);
    assert!(item.get("status").is_none(), "the storefront does not show admin fields");

    let by_id = app.get(&format!("/store/products/{}", p["id"].as_str().unwrap())).await.expect(200);
    assert_eq!(by_id["handle"], "linen-shirt");
    assert_eq!(by_id["variants"][0]["available"], 10);
});

both!(drafts_and_archived_are_hidden_from_the_store, |app: TestApp| async move {
    app.admin_post("/admin/products", json!({"title": "Draft thing", "handle": "draft-thing"})).await.expect(201);
    let p = app.product("live-thing", &["LIVE-1"]).await;
    let list = app.get("/store/products").await.expect(200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    app.get("/store/products/draft-thing").await.problem(404, "not_found");
    let id = p["id"].as_str().unwrap();
    app.admin_patch(&format!("/admin/products/{id}"), json!({"status": "archived"})).await.expect(200);
    app.get("/store/products/live-thing").await.problem(404, "not_found");
    assert_eq!(app.get("/store/products").await.expect(200)["items"], json!([]));
});

both!(handle_is_derived_from_title_and_status_defaults_to_draft, |app: TestApp| async move {
    let p = app.admin_post("/admin/products", json!({"title": "Wool Scarf (Blue)"})).await.expect(201);
    assert_eq!(p["handle"], "wool-scarf-blue");
    assert_eq!(p["status"], "draft");
    assert_eq!(p["variants"], json!([]));
});

both!(bad_product_input_is_refused_with_field_paths_and_nothing_written, |app: TestApp| async move {
    let long = "x".repeat(256);
    let cases = [
        (json!({"title": "Ok", "handle": "Not Lower"}), "handle"),
        (json!({"title": "Ok", "handle": "a".repeat(101)}), "handle"),
        (json!({"title": "Ok", "handle": "under_score"}), "handle"),
        (json!({"title": ""}), "title"),
        (json!({"title": "   "}), "title"),
        (json!({"title": long}), "title"),
        (
            json!({"title": "Ok", "variants": [{"sku": "A1", "prices": [{"amount": -1, "currency": "EUR"}]}]}),
            "variants[0].prices[0].amount",
        ),
        (
            json!({"title": "Ok", "variants": [{"sku": "A1", "prices": [{"amount": 1_000_000_000_001i64, "currency": "EUR"}]}]}),
            "variants[0].prices[0].amount",
        ),
        (
            json!({"title": "Ok", "variants": [{"sku": "A1", "prices": [{"amount": 100, "currency": "EURO"}]}]}),
            "variants[0].prices[0].currency",
        ),
        (
            json!({"title": "Ok", "variants": [{"sku": "A1", "prices": [{"amount": 100, "currency": "XYZ"}]}]}),
            "variants[0].prices[0].currency",
        ),
        (
            json!({"title": "Ok", "variants": [{"sku": "A1", "prices": [{"amount": 19.99, "currency": "EUR"}]}]}),
            "variants[0].prices[0].amount",
        ),
        (json!({"title": "Ok", "variants": [{"sku": "has space"}]}), "variants[0].sku"),
        (
            json!({"title": "Ok", "variants": [{"sku": "A1", "prices": [{"amount": 1, "currency": "EUR"}, {"amount": 2, "currency": "EUR"}]}]}),
            "variants[0].prices[1].currency",
        ),
        (json!({"title": "Ok", "status": "live"}), "status"),
        (json!({"title": "Ok", "category_ids": ["cat_nope"]}), "category_ids"),
        (json!({"title": "Ok", "variants": [{"sku": "A1", "colour": "red"}]}), "variants[0]"),
    ];
    for (body, field) in cases {
        let problem = app.admin_post("/admin/products", body.clone()).await.problem(422, "validation_failed");
        let errors = problem["errors"].as_array().unwrap_or_else(|| panic!("no errors for {body}: {problem}"));
        assert!(
            errors.iter().any(|e| e["field"].as_str().unwrap().starts_with(field)),
            "expected an error on {field} for {body}, got {problem}"
        );
    }
    // Several mistakes are reported together.
    let p = app
        .admin_post("/admin/products", json!({"title": "", "handle": "BAD", "variants": [{"sku": ""}]}))
        .await
        .problem(422, "validation_failed");
    assert!(p["errors"].as_array().unwrap().len() >= 3, "{p}");
    assert_eq!(app.product_count().await, 0, "nothing is written after a refusal");
});

both!(duplicates_conflict_and_leave_nothing_half_written, |app: TestApp| async move {
    app.product("shirt", &["SKU-1", "SKU-2"]).await;
    app.admin_post("/admin/products", json!({"title": "Again", "handle": "shirt"})).await.problem(409, "conflict");
    // A new product whose second variant reuses a SKU: neither the product nor its first variant stays.
    app.admin_post(
        "/admin/products",
        json!({"title": "Other", "handle": "other", "variants": [{"sku": "NEW-1"}, {"sku": "SKU-2"}]}),
    )
    .await
    .problem(409, "conflict");
    app.admin_post(
        "/admin/products",
        json!({"title": "Twice", "handle": "twice", "variants": [{"sku": "D-1"}, {"sku": "D-1"}]}),
    )
    .await
    .problem(409, "conflict");
    assert_eq!(app.product_count().await, 1);
    app.admin_get("/admin/products/other").await.problem(404, "not_found");
    // NEW-1 is still free.
    app.product("other", &["NEW-1"]).await;
    // Renaming a handle onto another is a conflict too; the failed patch changes nothing.
    let other = app.admin_get("/admin/products?limit=1").await.expect(200)["items"][0].clone();
    let id = other["id"].as_str().unwrap();
    app.admin_patch(&format!("/admin/products/{id}"), json!({"handle": "shirt", "title": "Changed"}))
        .await
        .problem(409, "conflict");
    let after = app.admin_get(&format!("/admin/products/{id}")).await.expect(200);
    assert_eq!(after["title"], other["title"]);
    assert_eq!(after["handle"], "other");
});

both!(variants_can_be_added_changed_and_removed, |app: TestApp| async move {
    let p = app.product("tee", &["TEE-S"]).await;
    let pid = p["id"].as_str().unwrap();
    let v = app
        .admin_post(
            &format!("/admin/products/{pid}/variants"),
            json!({"sku": "TEE-M", "options": {"size": "M"}, "prices": [{"amount": 2500, "currency": "EUR"}, {"amount": 2900, "currency": "USD"}]}),
        )
        .await
        .expect(201);
    assert_eq!(v["title"], "M", "the title defaults to the option values");
    assert_eq!(v["position"], 1);
    let vid = v["id"].as_str().unwrap();
    app.admin_post(&format!("/admin/products/{pid}/variants"), json!({"sku": "TEE-S"})).await.problem(409, "conflict");
    app.admin_post("/admin/products/prod_nope/variants", json!({"sku": "TEE-X"})).await.problem(404, "not_found");

    // PATCH prices replaces the whole list.
    let changed = app
        .admin_patch(
            &format!("/admin/variants/{vid}"),
            json!({"prices": [{"amount": 1000, "currency": "JPY"}], "title": "Medium", "allow_backorder": true}),
        )
        .await
        .expect(200);
    assert_eq!(changed["prices"], json!([{"amount": 1000, "currency": "JPY"}]));
    assert_eq!(changed["title"], "Medium");
    assert_eq!(changed["allow_backorder"], true);
    app.admin_patch(&format!("/admin/variants/{vid}"), json!({"prices": [{"amount": -5, "currency": "EUR"}]}))
        .await
        .problem(422, "validation_failed");
    app.admin_patch(&format!("/admin/variants/{vid}"), json!({"sku": "TEE-S"})).await.problem(409, "conflict");
    let still = app.admin_get(&format!("/admin/variants/{vid}")).await.expect(200);
    assert_eq!(still["prices"], changed["prices"], "a refused patch changes nothing");
    assert_eq!(still["sku"], "TEE-M");
    app.admin_patch("/admin/variants/var_nope", json!({"title": "x"})).await.problem(404, "not_found");

    app.admin_delete(&format!("/admin/variants/{vid}")).await.expect(204);
    app.admin_get(&format!("/admin/variants/{vid}")).await.problem(404, "not_found");
    let p = app.admin_get(&format!("/admin/products/{pid}")).await.expect(200);
    assert_eq!(p["variants"].as_array().unwrap().len(), 1);

    app.admin_delete(&format!("/admin/products/{pid}")).await.expect(204);
    app.admin_get(&format!("/admin/products/{pid}")).await.problem(404, "not_found");
    app.admin_delete(&format!("/admin/products/{pid}")).await.problem(404, "not_found");
});

both!(product_patch_replaces_attributes_and_categories, |app: TestApp| async move {
    let cat = app.admin_post("/admin/categories", json!({"name": "Shirts"})).await.expect(201);
    let cid = cat["id"].as_str().unwrap();
    let p = app
        .admin_post("/admin/products", json!({"title": "Shirt", "attributes": {"Brand": "Acme", "material": "linen"}}))
        .await
        .expect(201);
    assert_eq!(p["attributes"], json!({"brand": "Acme", "material": "linen"}));
    let id = p["id"].as_str().unwrap();
    let p2 = app
        .admin_patch(&format!("/admin/products/{id}"), json!({"attributes": {"brand": "Other"}, "category_ids": [cid]}))
        .await
        .expect(200);
    assert_eq!(p2["attributes"], json!({"brand": "Other"}));
    assert_eq!(p2["categories"], json!([{"id": cid, "handle": "shirts", "name": "Shirts"}]));
    assert!(p2["updated_at"].as_str() >= p["updated_at"].as_str());
    app.admin_patch(&format!("/admin/products/{id}"), json!({"title": ""})).await.problem(422, "validation_failed");
    app.admin_patch("/admin/products/prod_nope", json!({"title": "x"})).await.problem(404, "not_found");
});

both!(categories_form_a_tree_and_filter_products_with_descendants, |app: TestApp| async move {
    let clothing = app.admin_post("/admin/categories", json!({"name": "Clothing"})).await.expect(201);
    let cl = clothing["id"].as_str().unwrap();
    let shirts = app.admin_post("/admin/categories", json!({"name": "Shirts", "parent_id": cl})).await.expect(201);
    let sh = shirts["id"].as_str().unwrap();
    app.admin_post("/admin/categories", json!({"name": "Shirts"})).await.problem(409, "conflict");
    app.admin_post("/admin/categories", json!({"name": "X", "parent_id": "cat_nope"}))
        .await
        .problem(422, "validation_failed");

    let tree = app.get("/store/categories").await.expect(200);
    assert_eq!(tree["items"][0]["handle"], "clothing");
    assert_eq!(tree["items"][0]["children"][0]["handle"], "shirts");

    for (h, cats) in [("in-shirts", vec![sh]), ("in-clothing", vec![cl]), ("nowhere", vec![])] {
        app.admin_post(
            "/admin/products",
            json!({"title": h, "handle": h, "status": "published", "category_ids": cats}),
        )
        .await
        .expect(201);
    }
    let mut in_clothing: Vec<String> = app
        .get_until("/store/products?category=clothing", |b| b["items"].as_array().is_some_and(|i| i.len() == 2))
        .await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["handle"].as_str().unwrap().to_owned())
        .collect();
    in_clothing.sort();
    assert_eq!(in_clothing, ["in-clothing", "in-shirts"]);
    let in_shirts = app.get_until(&format!("/store/products?category={sh}"), |b| b["total"] == 1).await;
    assert_eq!(in_shirts["items"].as_array().unwrap().len(), 1);

    // A cycle is refused; a category with children cannot go.
    app.admin_patch(&format!("/admin/categories/{cl}"), json!({"parent_id": sh}))
        .await
        .problem(422, "validation_failed");
    app.admin_delete(&format!("/admin/categories/{cl}")).await.problem(409, "category_has_children");
    app.admin_patch(&format!("/admin/categories/{sh}"), json!({"move_to_root": true, "name": "Shirts & tops"}))
        .await
        .expect(200);
    app.admin_delete(&format!("/admin/categories/{cl}")).await.expect(204);
    app.admin_get(&format!("/admin/categories/{cl}")).await.problem(404, "not_found");
    let got = app.admin_get(&format!("/admin/categories/{sh}")).await.expect(200);
    assert_eq!(got["parent_id"], Value::Null);
    assert_eq!(got["name"], "Shirts & tops");
});

both!(lists_paginate_with_cursors, |app: TestApp| async move {
    for i in 0..5 {
        app.product(&format!("p-{i}"), &[&format!("P-{i}")]).await;
    }
    let mut seen = Vec::new();
    let mut path = "/store/products?limit=2".to_owned();
    loop {
        let page = app.get(&path).await.expect(200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|p| p["handle"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/store/products?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["p-4", "p-3", "p-2", "p-1", "p-0"], "newest first, each once");
    app.get("/store/products?limit=101").await.problem(422, "validation_failed");
    app.get("/store/products?limit=0").await.problem(422, "validation_failed");
    app.get("/store/products?limit=abc").await.problem(422, "validation_failed");
    app.get("/store/products?cursor=garbage").await.problem(422, "validation_failed");
    app.get(&format!("/store/products?q={}", "a".repeat(257))).await.problem(422, "validation_failed");
    let found = app.get_until("/store/products?q=P-3", |b| b["total"] == 1).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    let none = app.get("/store/products?q=%25").await.expect(200);
    assert_eq!(none["items"], json!([]), "LIKE wildcards in q are plain text");
});

both!(a_product_with_500_variants_round_trips, |app: TestApp| async move {
    let variants: Vec<Value> = (0..500)
        .map(|i| json!({"sku": format!("BIG-{i:03}"), "options": {"n": i.to_string()}, "prices": [{"amount": 100 + i, "currency": "EUR"}, {"amount": 120 + i, "currency": "USD"}]}))
        .collect();
    let p = app
        .admin_post(
            "/admin/products",
            json!({"title": "Big", "handle": "big", "status": "published", "variants": variants}),
        )
        .await
        .expect(201);
    assert_eq!(p["variants"].as_array().unwrap().len(), 500);
    let s = app.get("/store/products/big").await.expect(200);
    let vs = s["variants"].as_array().unwrap();
    assert_eq!(vs.len(), 500);
    assert_eq!(vs[499]["sku"], "BIG-499");
    assert_eq!(vs[499]["prices"], json!([{"amount": 599, "currency": "EUR"}, {"amount": 619, "currency": "USD"}]));
});

both!(unknown_ids_are_404, |app: TestApp| async move {
    for path in [
        "/admin/products/prod_nope",
        "/admin/variants/var_nope",
        "/admin/variants/var_nope/stock",
        "/admin/categories/cat_nope",
    ] {
        app.admin_get(path).await.problem(404, "not_found");
    }
    app.get("/store/products/no-such-handle").await.problem(404, "not_found");
    app.admin_put("/admin/variants/var_nope/stock", json!({"on_hand": 1})).await.problem(404, "not_found");
});
