//! Staff's side of pricing: regions with their countries, tax rates, promotions, and the
//! weight and tax class of variants.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::support::{Res, TestApp};

/// Asserts a `422 validation_failed` with an error on `field`, and answers the message.
#[track_caller]
fn invalid(r: Res, field: &str) -> String {
    let p = r.problem(422, "validation_failed");
    let errors = p["errors"].as_array().unwrap_or_else(|| panic!("no errors: {p}"));
    let e = errors.iter().find(|e| e["field"] == field).unwrap_or_else(|| panic!("no error on {field}: {p}"));
    e["message"].as_str().unwrap().to_owned()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// Runs one statement on the app's database (for state the admin API cannot make, such as
/// uses of a promotion or a region's shipping option).
async fn exec(app: &TestApp, statement: &'static str, args: Vec<String>) {
    app.db
        .write(move |mut conn| {
            Box::pin(async move {
                backroom_db::sql::query(statement)
                    .bind_all(args)
                    .execute(&mut conn)
                    .await
                    .map_err(backroom_db::storage)?;
                Ok(backroom_db::writer::Done::Commit(()))
            })
        })
        .await
        .unwrap();
}

/// Creates a region. Lists are newest first by id, whose time part counts milliseconds: the
/// pause keeps the order of creation certain.
async fn region(app: &TestApp, name: &str, currency: &str, countries: &[&str]) -> Value {
    let r = app
        .admin_post("/admin/regions", json!({"name": name, "currency": currency, "countries": countries}))
        .await
        .expect(201);
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    r
}

both!(regions_are_created_read_changed_and_deleted, |app: TestApp| async move {
    let pt = app
        .admin_post(
            "/admin/regions",
            json!({"name": "Portugal", "currency": "EUR", "countries": ["PT"], "tax_inclusive": true}),
        )
        .await
        .expect(201);
    let pt_id = id(&pt);
    assert!(pt_id.starts_with("reg_"), "{pt}");
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    assert_eq!(pt["name"], "Portugal");
    assert_eq!(pt["currency"], "EUR");
    assert_eq!(pt["countries"], json!(["PT"]));
    assert_eq!(pt["tax_inclusive"], true);
    assert!(pt["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(app.admin_get(&format!("/admin/regions/{pt_id}")).await.expect(200), pt);

    // tax_inclusive is false when left out; countries come back sorted.
    let us = region(&app, "North America", "USD", &["US", "CA"]).await;
    assert_eq!(us["tax_inclusive"], false);
    assert_eq!(us["countries"], json!(["CA", "US"]));

    // A country belongs to at most one region.
    let p = app
        .admin_post("/admin/regions", json!({"name": "Iberia", "currency": "EUR", "countries": ["ES", "PT"]}))
        .await
        .problem(409, "conflict");
    assert!(p["detail"].as_str().unwrap().contains("PT"), "{p}");
    let p = app
        .admin_patch(&format!("/admin/regions/{}", id(&us)), json!({"countries": ["US", "PT"]}))
        .await
        .problem(409, "conflict");
    assert!(p["detail"].as_str().unwrap().contains("PT"), "{p}");
    assert_eq!(
        app.admin_get(&format!("/admin/regions/{}", id(&us))).await.expect(200)["countries"],
        json!(["CA", "US"])
    );

    // PATCH: the set of countries is replaced; a region may keep its own countries.
    let changed = app
        .admin_patch(
            &format!("/admin/regions/{pt_id}"),
            json!({"name": "Portugal & Spain", "countries": ["PT", "ES"], "tax_inclusive": false}),
        )
        .await
        .expect(200);
    assert_eq!(changed["name"], "Portugal & Spain");
    assert_eq!(changed["countries"], json!(["ES", "PT"]));
    assert_eq!(changed["tax_inclusive"], false);
    assert_eq!(changed["created_at"], pt["created_at"]);
    let changed = app.admin_patch(&format!("/admin/regions/{pt_id}"), json!({"countries": ["ES"]})).await.expect(200);
    assert_eq!(changed["countries"], json!(["ES"]));
    // PT is free again.
    let pt2 = region(&app, "Portugal", "EUR", &["PT"]).await;

    // The currency changes while nothing is priced in the old one…
    let changed = app.admin_patch(&format!("/admin/regions/{pt_id}"), json!({"currency": "GBP"})).await.expect(200);
    assert_eq!(changed["currency"], "GBP");
    // …and not once a shipping option is.
    exec(
        &app,
        "INSERT INTO shipping_options (id, name, region_id, currency, price, created_at, updated_at) \
         VALUES ('so_test', 'Standard', $1, 'GBP', 500, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        vec![pt_id.clone()],
    )
    .await;
    let why =
        invalid(app.admin_patch(&format!("/admin/regions/{pt_id}"), json!({"currency": "EUR"})).await, "currency");
    assert!(why.contains("shipping option"), "{why}");
    // The same currency again is no change.
    app.admin_patch(&format!("/admin/regions/{pt_id}"), json!({"currency": "GBP"})).await.expect(200);

    // Deleting takes the countries, tax rates and shipping options with it.
    let rate =
        app.admin_post("/admin/tax-rates", json!({"region_id": pt_id, "name": "VAT", "rate": "20"})).await.expect(201);
    app.admin_delete(&format!("/admin/regions/{pt_id}")).await.expect(204);
    app.admin_get(&format!("/admin/regions/{pt_id}")).await.problem(404, "not_found");
    app.admin_get(&format!("/admin/tax-rates/{}", id(&rate))).await.problem(404, "not_found");
    app.admin_delete(&format!("/admin/regions/{pt_id}")).await.problem(404, "not_found");
    app.admin_patch(&format!("/admin/regions/{pt_id}"), json!({"name": "X"})).await.problem(404, "not_found");
    region(&app, "Spain", "EUR", &["ES"]).await;
    let list = app.admin_get("/admin/regions").await.expect(200);
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Spain", "Portugal", "North America"]);
    assert_eq!(list["next_cursor"], Value::Null);
    assert_eq!(id(&list["items"][1]), id(&pt2));
    app.admin_get("/admin/regions/reg_nope").await.problem(404, "not_found");
});

both!(region_fields_are_checked, |app: TestApp| async move {
    let ok = json!({"name": "Portugal", "currency": "EUR", "countries": ["PT"]});
    let with = |field: &str, value: Value| {
        let mut b = ok.clone();
        b[field] = value;
        b
    };
    let cases = [
        (with("name", json!("")), "name"),
        (with("name", json!("   ")), "name"),
        (with("name", json!("a\u{7}b")), "name"),
        (with("name", json!("x".repeat(201))), "name"),
        (with("currency", json!("EURO")), "currency"),
        (with("currency", json!("eur")), "currency"),
        (with("countries", json!([])), "countries"),
        (with("countries", json!(["pt"])), "countries[0]"),
        (with("countries", json!(["PT", "ZZ"])), "countries[1]"),
        (with("countries", json!(["PT", "ES", "PT"])), "countries[2]"),
        (with("countries", json!("PT")), "countries"),
        (with("tax_inclusive", json!("yes")), "tax_inclusive"),
        (with("vat", json!(true)), "body"),
    ];
    for (body, field) in cases {
        let r = app.admin_post("/admin/regions", body.clone()).await;
        if field == "body" {
            r.problem(422, "validation_failed");
        } else {
            invalid(r, field);
        }
    }
    let too_many: Vec<String> =
        (0..251).map(|i| format!("{}{}", (b'A' + i / 26 % 26) as char, (b'A' + i % 26) as char)).collect();
    invalid(app.admin_post("/admin/regions", with("countries", json!(too_many))).await, "countries");
    // Every mistake at once, and nothing written.
    let p = app
        .admin_post("/admin/regions", json!({"name": "", "currency": "XYZ", "countries": ["pt"]}))
        .await
        .problem(422, "validation_failed");
    assert_eq!(p["errors"].as_array().unwrap().len(), 3, "{p}");
    assert_eq!(app.admin_get("/admin/regions").await.expect(200)["items"], json!([]));

    let r = region(&app, "Portugal", "EUR", &["PT"]).await;
    let path = format!("/admin/regions/{}", id(&r));
    invalid(app.admin_patch(&path, json!({"countries": []})).await, "countries");
    invalid(app.admin_patch(&path, json!({"currency": "ABC"})).await, "currency");
    invalid(app.admin_patch(&path, json!({"name": ""})).await, "name");
    app.admin_patch(&path, json!({"region": "x"})).await.problem(422, "validation_failed");
});

both!(regions_tax_rates_and_promotions_are_listed_a_page_at_a_time, |app: TestApp| async move {
    let mut regions = Vec::new();
    for (i, c) in ["PT", "ES", "FR"].iter().enumerate() {
        regions.push(id(&region(&app, &format!("Region {i}"), "EUR", &[c]).await));
    }
    let first = app.admin_get("/admin/regions?limit=2").await.expect(200);
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = app.admin_get(&format!("/admin/regions?limit=2&cursor={cursor}")).await.expect(200);
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["next_cursor"], Value::Null);
    let mut seen: Vec<String> =
        first["items"].as_array().unwrap().iter().chain(second["items"].as_array().unwrap()).map(id).collect();
    seen.reverse();
    assert_eq!(seen, regions, "newest first, each once");
    invalid(app.admin_get("/admin/regions?limit=0").await, "limit");
    invalid(app.admin_get("/admin/regions?limit=101").await, "limit");
    invalid(app.admin_get("/admin/regions?cursor=garbage").await, "cursor");

    for (class, rate) in [("standard", "23"), ("reduced", "6"), ("intermediate", "13")] {
        app.admin_post(
            "/admin/tax-rates",
            json!({"region_id": regions[0], "name": "IVA", "rate": rate, "tax_class": class}),
        )
        .await
        .expect(201);
    }
    app.admin_post("/admin/tax-rates", json!({"region_id": regions[1], "name": "IVA", "rate": "21"})).await.expect(201);
    let page = app.admin_get(&format!("/admin/tax-rates?region_id={}&limit=2", regions[0])).await.expect(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest =
        app.admin_get(&format!("/admin/tax-rates?region_id={}&limit=2&cursor={cursor}", regions[0])).await.expect(200);
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
    assert_eq!(app.admin_get("/admin/tax-rates").await.expect(200)["items"].as_array().unwrap().len(), 4);
    assert_eq!(app.admin_get("/admin/tax-rates?region_id=reg_nope").await.expect(200)["items"], json!([]));

    for i in 0..3 {
        app.admin_post("/admin/promotions", json!({"code": format!("CODE{i}"), "type": "free_shipping"}))
            .await
            .expect(201);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let page = app.admin_get("/admin/promotions?limit=2").await.expect(200);
    assert_eq!(page["items"][0]["code"], "CODE2");
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app.admin_get(&format!("/admin/promotions?limit=2&cursor={cursor}")).await.expect(200);
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["code"], "CODE0");
    // The code filter, in any case.
    let found = app.admin_get("/admin/promotions?code=code1").await.expect(200);
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["code"], "CODE1");
    assert_eq!(app.admin_get("/admin/promotions?code=NOPE").await.expect(200)["items"], json!([]));
});

both!(tax_rates_are_one_per_class_and_region, |app: TestApp| async move {
    let pt = id(&region(&app, "Portugal", "EUR", &["PT"]).await);
    let es = id(&region(&app, "Spain", "EUR", &["ES"]).await);
    let iva = app
        .admin_post("/admin/tax-rates", json!({"region_id": pt, "name": "IVA", "rate": "23", "tax_class": "standard"}))
        .await
        .expect(201);
    let iva_id = id(&iva);
    assert!(iva_id.starts_with("txr_"), "{iva}");
    assert_eq!(iva["region_id"], pt.as_str());
    assert_eq!(iva["name"], "IVA");
    assert_eq!(iva["rate"], "23");
    assert_eq!(iva["tax_class"], "standard");
    assert_eq!(app.admin_get(&format!("/admin/tax-rates/{iva_id}")).await.expect(200), iva);

    // The class defaults to standard: a second standard rate in the region is a conflict…
    let p = app
        .admin_post("/admin/tax-rates", json!({"region_id": pt, "name": "Other", "rate": "20"}))
        .await
        .problem(409, "conflict");
    assert!(p["detail"].as_str().unwrap().contains("standard"), "{p}");
    // …but not in another region, nor for another class. Rates are normalised.
    let es_rate =
        app.admin_post("/admin/tax-rates", json!({"region_id": es, "name": "IVA", "rate": "21.00"})).await.expect(201);
    assert_eq!(es_rate["rate"], "21");
    let reduced = app
        .admin_post(
            "/admin/tax-rates",
            json!({"region_id": pt, "name": "IVA reduzido", "rate": "5.50", "tax_class": "reduced"}),
        )
        .await
        .expect(201);
    assert_eq!(reduced["rate"], "5.5");
    let zero = app
        .admin_post("/admin/tax-rates", json!({"region_id": pt, "name": "Isento", "rate": "0", "tax_class": "zero"}))
        .await
        .expect(201);
    assert_eq!(zero["rate"], "0");

    // The fields are checked.
    let ok = json!({"region_id": pt, "name": "IVA", "rate": "13", "tax_class": "intermediate"});
    let with = |field: &str, value: Value| {
        let mut b = ok.clone();
        b[field] = value;
        b
    };
    let why = invalid(app.admin_post("/admin/tax-rates", with("rate", json!(13))).await, "rate");
    assert!(why.contains("string"), "{why}");
    for bad in [json!("100.5"), json!("1.23456"), json!("-1"), json!("13%"), json!(null), json!("")] {
        invalid(app.admin_post("/admin/tax-rates", with("rate", bad)).await, "rate");
    }
    let why = invalid(app.admin_post("/admin/tax-rates", with("region_id", json!("reg_nope"))).await, "region_id");
    assert!(why.contains("no region"), "{why}");
    invalid(app.admin_post("/admin/tax-rates", with("name", json!(""))).await, "name");
    invalid(app.admin_post("/admin/tax-rates", with("name", json!("x".repeat(101)))).await, "name");
    for bad in ["Standard", "", "a b", &"a".repeat(51)] {
        invalid(app.admin_post("/admin/tax-rates", with("tax_class", json!(bad))).await, "tax_class");
    }
    invalid(app.admin_post("/admin/tax-rates", json!({"region_id": pt, "name": "IVA"})).await, "rate");
    app.admin_post("/admin/tax-rates", with("country", json!("PT"))).await.problem(422, "validation_failed");

    // PATCH.
    let path = format!("/admin/tax-rates/{iva_id}");
    let changed = app.admin_patch(&path, json!({"rate": "22.5", "name": "IVA normal"})).await.expect(200);
    assert_eq!((changed["rate"].as_str(), changed["name"].as_str()), (Some("22.5"), Some("IVA normal")));
    assert_eq!(changed["tax_class"], "standard");
    let p = app.admin_patch(&path, json!({"tax_class": "reduced"})).await.problem(409, "conflict");
    assert!(p["detail"].as_str().unwrap().contains("reduced"), "{p}");
    invalid(app.admin_patch(&path, json!({"rate": 22})).await, "rate");
    invalid(app.admin_patch(&path, json!({"rate": null})).await, "rate");
    app.admin_patch(&path, json!({"region_id": es})).await.problem(422, "validation_failed");
    assert_eq!(app.admin_get(&path).await.expect(200)["rate"], "22.5");
    app.admin_patch("/admin/tax-rates/txr_nope", json!({"rate": "1"})).await.problem(404, "not_found");

    // DELETE.
    app.admin_delete(&path).await.expect(204);
    app.admin_get(&path).await.problem(404, "not_found");
    app.admin_delete(&path).await.problem(404, "not_found");
    // The class is free again.
    app.admin_post("/admin/tax-rates", json!({"region_id": pt, "name": "IVA", "rate": "23"})).await.expect(201);
});

both!(promotions_are_created_changed_and_deleted, |app: TestApp| async move {
    let summer = app
        .admin_post(
            "/admin/promotions",
            json!({"code": "summer10", "type": "percentage", "value": 12.5, "usage_limit": 100, "per_customer_limit": 1,
                   "starts_at": "2026-06-01T00:00:00Z", "ends_at": "2026-09-01T00:00:00+02:00",
                   "min_subtotal": {"amount": 3000, "currency": "EUR"}}),
        )
        .await
        .expect(201);
    let summer_id = id(&summer);
    assert!(summer_id.starts_with("promo_"), "{summer}");
    assert_eq!(summer["code"], "SUMMER10");
    assert_eq!(summer["type"], "percentage");
    assert_eq!(summer["value"], json!(12.5));
    assert_eq!(summer["usage_limit"], 100);
    assert_eq!(summer["per_customer_limit"], 1);
    assert_eq!(summer["starts_at"], "2026-06-01T00:00:00Z");
    assert_eq!(summer["ends_at"], "2026-08-31T22:00:00Z");
    assert_eq!(summer["min_subtotal"], json!({"amount": 3000, "currency": "EUR"}));
    assert_eq!(summer["used"], 0);
    assert_eq!(app.admin_get(&format!("/admin/promotions/{summer_id}")).await.expect(200), summer);

    // Codes are unique whatever their case.
    let p = app
        .admin_post("/admin/promotions", json!({"code": "Summer10", "type": "free_shipping"}))
        .await
        .problem(409, "conflict");
    assert!(p["detail"].as_str().unwrap().contains("SUMMER10"), "{p}");

    let fixed = app
        .admin_post(
            "/admin/promotions",
            json!({"code": "FIVE-OFF", "type": "fixed", "value": {"amount": 500, "currency": "EUR"}}),
        )
        .await
        .expect(201);
    assert_eq!(fixed["value"], json!({"amount": 500, "currency": "EUR"}));
    assert_eq!(fixed["usage_limit"], Value::Null);
    assert_eq!(fixed["starts_at"], Value::Null);
    let free = app
        .admin_post("/admin/promotions", json!({"code": "SHIPFREE", "type": "free_shipping", "value": null}))
        .await
        .expect(201);
    assert_eq!((free["type"].as_str(), &free["value"]), (Some("free_shipping"), &Value::Null));
    let exact = app
        .admin_post("/admin/promotions", json!({"code": "THIRD", "type": "percentage", "value": 33.3333}))
        .await
        .expect(201);
    assert_eq!(exact["value"], json!(33.3333));

    // PATCH: value, limits, window; null clears.
    let path = format!("/admin/promotions/{summer_id}");
    let changed = app
        .admin_patch(&path, json!({"value": 15, "usage_limit": null, "ends_at": null, "min_subtotal": null}))
        .await
        .expect(200);
    assert_eq!(changed["value"], json!(15));
    assert_eq!(changed["usage_limit"], Value::Null);
    assert_eq!(changed["ends_at"], Value::Null);
    assert_eq!(changed["min_subtotal"], Value::Null);
    assert_eq!(changed["per_customer_limit"], 1, "what the patch leaves out stays");
    assert_eq!(changed["starts_at"], "2026-06-01T00:00:00Z");
    invalid(app.admin_patch(&path, json!({"ends_at": "2026-05-01T00:00:00Z"})).await, "ends_at");
    invalid(app.admin_patch(&path, json!({"value": {"amount": 5, "currency": "EUR"}})).await, "value");
    invalid(app.admin_patch(&path, json!({"value": null})).await, "value");
    invalid(app.admin_patch(&path, json!({"code": "WINTER"})).await, "code");
    invalid(app.admin_patch(&path, json!({"type": "fixed"})).await, "type");
    invalid(
        app.admin_patch(
            &format!("/admin/promotions/{}", id(&fixed)),
            json!({"value": {"amount": 0, "currency": "EUR"}}),
        )
        .await,
        "value.amount",
    );
    let why = invalid(
        app.admin_patch(
            &format!("/admin/promotions/{}", id(&fixed)),
            json!({"min_subtotal": {"amount": 100, "currency": "USD"}}),
        )
        .await,
        "min_subtotal.currency",
    );
    assert!(why.contains("EUR"), "{why}");
    invalid(app.admin_patch(&format!("/admin/promotions/{}", id(&free)), json!({"value": 10})).await, "value");

    // usage_limit never goes below the uses orders hold.
    exec(&app, "UPDATE promotions SET used = 5 WHERE id = $1", vec![summer_id.clone()]).await;
    let why = invalid(app.admin_patch(&path, json!({"usage_limit": 4})).await, "usage_limit");
    assert!(why.contains('5'), "{why}");
    let at_limit = app.admin_patch(&path, json!({"usage_limit": 5})).await.expect(200);
    assert_eq!((at_limit["usage_limit"].as_i64(), at_limit["used"].as_i64()), (Some(5), Some(5)));

    // 404s and DELETE.
    app.admin_get("/admin/promotions/promo_nope").await.problem(404, "not_found");
    app.admin_patch("/admin/promotions/promo_nope", json!({"usage_limit": 3})).await.problem(404, "not_found");
    app.admin_delete(&path).await.expect(204);
    app.admin_get(&path).await.problem(404, "not_found");
    app.admin_delete(&path).await.problem(404, "not_found");
    // The code is free again.
    app.admin_post("/admin/promotions", json!({"code": "SUMMER10", "type": "free_shipping"})).await.expect(201);
});

both!(promotion_fields_are_checked, |app: TestApp| async move {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"code": "", "type": "free_shipping"}), "code"),
        (json!({"code": "HAS SPACE", "type": "free_shipping"}), "code"),
        (json!({"code": "ÉTÉ", "type": "free_shipping"}), "code"),
        (json!({"code": "A".repeat(51), "type": "free_shipping"}), "code"),
        (json!({"code": "X", "type": "bogus"}), "type"),
        (json!({"code": "X"}), "type"),
        (json!({"code": "X", "type": "percentage"}), "value"),
        (json!({"code": "X", "type": "percentage", "value": 0}), "value"),
        (json!({"code": "X", "type": "percentage", "value": -5}), "value"),
        (json!({"code": "X", "type": "percentage", "value": 100.5}), "value"),
        (json!({"code": "X", "type": "percentage", "value": 12.34567}), "value"),
        (json!({"code": "X", "type": "percentage", "value": "10"}), "value"),
        (json!({"code": "X", "type": "fixed"}), "value"),
        (json!({"code": "X", "type": "fixed", "value": 5}), "value"),
        (json!({"code": "X", "type": "fixed", "value": {"amount": 0, "currency": "EUR"}}), "value.amount"),
        (json!({"code": "X", "type": "fixed", "value": {"amount": 1.5, "currency": "EUR"}}), "value.amount"),
        (json!({"code": "X", "type": "fixed", "value": {"amount": 5, "currency": "EURO"}}), "value.currency"),
        (
            json!({"code": "X", "type": "fixed", "value": {"amount": 5, "currency": "EUR"}, "min_subtotal": {"amount": 10, "currency": "USD"}}),
            "min_subtotal.currency",
        ),
        (json!({"code": "X", "type": "free_shipping", "value": 10}), "value"),
        (json!({"code": "X", "type": "free_shipping", "usage_limit": 0}), "usage_limit"),
        (json!({"code": "X", "type": "free_shipping", "per_customer_limit": -1}), "per_customer_limit"),
        (json!({"code": "X", "type": "free_shipping", "usage_limit": 1.5}), "usage_limit"),
        (
            json!({"code": "X", "type": "free_shipping", "starts_at": "2026-06-01T00:00:00Z", "ends_at": "2026-06-01T00:00:00Z"}),
            "ends_at",
        ),
        (json!({"code": "X", "type": "free_shipping", "starts_at": "tomorrow"}), "starts_at"),
        (
            json!({"code": "X", "type": "free_shipping", "min_subtotal": {"amount": -1, "currency": "EUR"}}),
            "min_subtotal",
        ),
    ];
    for (body, field) in cases {
        let r = app.admin_post("/admin/promotions", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        invalid(r, field);
    }
    app.admin_post("/admin/promotions", json!({"code": "X", "type": "free_shipping", "stackable": true}))
        .await
        .problem(422, "validation_failed");
    // Several mistakes at once; nothing written.
    let p = app
        .admin_post("/admin/promotions", json!({"code": "", "type": "percentage", "value": 0, "usage_limit": 0}))
        .await
        .problem(422, "validation_failed");
    assert_eq!(p["errors"].as_array().unwrap().len(), 3, "{p}");
    assert_eq!(app.admin_get("/admin/promotions").await.expect(200)["items"], json!([]));
});

both!(staff_roles_reach_pricing_as_the_grants_say, |app: TestApp| async move {
    let key = |role: &'static str| {
        let app = &app;
        async move {
            let k = app
                .admin_post("/admin/api-keys", json!({"name": format!("{role} key"), "role": role}))
                .await
                .expect(201);
            k["token"].as_str().unwrap().to_owned()
        }
    };
    let region = region(&app, "Portugal", "EUR", &["PT"]).await;
    let region_id = id(&region);
    let viewer = key("viewer").await;
    let editor = key("editor").await;
    let orders = key("orders").await;
    let writes: Vec<(&str, Value)> = vec![
        ("/admin/regions", json!({"name": "Spain", "currency": "EUR", "countries": ["ES"]})),
        ("/admin/tax-rates", json!({"region_id": region_id, "name": "IVA", "rate": "23"})),
        ("/admin/promotions", json!({"code": "ROLE", "type": "free_shipping"})),
    ];
    for (path, body) in &writes {
        // Viewers read, and never write.
        app.as_key(&viewer, Method::GET, path, None).await.expect(200);
        app.as_key(&viewer, Method::POST, path, Some(body.clone())).await.problem(403, "forbidden");
        // The orders role neither reads nor writes pricing.
        app.as_key(&orders, Method::GET, path, None).await.problem(403, "forbidden");
        app.as_key(&orders, Method::POST, path, Some(body.clone())).await.problem(403, "forbidden");
    }
    let path = format!("/admin/regions/{region_id}");
    app.as_key(&viewer, Method::PATCH, &path, Some(json!({"name": "X"}))).await.problem(403, "forbidden");
    app.as_key(&viewer, Method::DELETE, &path, None).await.problem(403, "forbidden");
    // Editors run the store's pricing.
    for (path, body) in writes {
        app.as_key(&editor, Method::POST, path, Some(body)).await.expect(201);
    }
    app.as_key(&editor, Method::PATCH, &path, Some(json!({"name": "Portugal"}))).await.expect(200);
    // Writes are audited under their resource's name.
    let log = app.admin_get("/admin/audit-log").await.expect(200).to_string();
    for action in ["region.create", "tax_rate.create", "promotion.create", "region.update"] {
        assert!(log.contains(action), "{action} missing from {log}");
    }
});

both!(variants_carry_weight_and_tax_class, |app: TestApp| async move {
    let p = app
        .admin_post(
            "/admin/products",
            json!({"title": "Book", "handle": "book", "status": "published", "variants": [
                {"sku": "BOOK-1", "prices": [{"amount": 1500, "currency": "EUR"}], "weight_g": 450, "tax_class": "reduced"},
                {"sku": "BOOK-2", "prices": [{"amount": 1500, "currency": "EUR"}]}
            ]}),
        )
        .await
        .expect(201);
    let (v1, v2) = (&p["variants"][0], &p["variants"][1]);
    assert_eq!((v1["weight_g"].as_i64(), v1["tax_class"].as_str()), (Some(450), Some("reduced")));
    assert_eq!((&v2["weight_g"], v2["tax_class"].as_str()), (&Value::Null, Some("standard")));
    let product_id = id(&p);
    let v1_id = id(v1);

    // Shown to shoppers too.
    let s = app.get_until("/store/products/book", |b| b["variants"][0]["weight_g"] == 450).await;
    assert_eq!(s["variants"][0]["tax_class"], "reduced");
    assert_eq!(s["variants"][1]["tax_class"], "standard");

    // Added on their own, changed and cleared.
    let v3 = app
        .admin_post(
            &format!("/admin/products/{product_id}/variants"),
            json!({"sku": "BOOK-3", "weight_g": 0, "tax_class": "zero"}),
        )
        .await
        .expect(201);
    assert_eq!((v3["weight_g"].as_i64(), v3["tax_class"].as_str()), (Some(0), Some("zero")));
    let path = format!("/admin/variants/{v1_id}");
    let changed = app.admin_patch(&path, json!({"weight_g": 10_000_000, "tax_class": "standard"})).await.expect(200);
    assert_eq!((changed["weight_g"].as_i64(), changed["tax_class"].as_str()), (Some(10_000_000), Some("standard")));
    let kept = app.admin_patch(&path, json!({"title": "Hardback"})).await.expect(200);
    assert_eq!((kept["weight_g"].as_i64(), kept["tax_class"].as_str()), (Some(10_000_000), Some("standard")));
    let cleared = app.admin_patch(&path, json!({"weight_g": null})).await.expect(200);
    assert_eq!(cleared["weight_g"], Value::Null);
    assert_eq!(app.admin_get(&path).await.expect(200)["weight_g"], Value::Null);
    let product = app.admin_get(&format!("/admin/products/{product_id}")).await.expect(200);
    assert_eq!(product["variants"][2]["tax_class"], "zero");

    // Checked where they are given.
    for (body, field) in [
        (json!({"title": "X", "variants": [{"sku": "X-1", "weight_g": -1}]}), "variants[0].weight_g"),
        (json!({"title": "X", "variants": [{"sku": "X-1", "weight_g": 10_000_001}]}), "variants[0].weight_g"),
        (json!({"title": "X", "variants": [{"sku": "X-1", "weight_g": 1.5}]}), "variants[0].weight_g"),
        (json!({"title": "X", "variants": [{"sku": "X-1", "tax_class": "Reduced"}]}), "variants[0].tax_class"),
        (json!({"title": "X", "variants": [{"sku": "X-1", "tax_class": ""}]}), "variants[0].tax_class"),
    ] {
        invalid(app.admin_post("/admin/products", body).await, field);
    }
    invalid(app.admin_patch(&path, json!({"weight_g": -5})).await, "weight_g");
    invalid(app.admin_patch(&path, json!({"tax_class": "a b"})).await, "tax_class");
    invalid(
        app.admin_post(&format!("/admin/products/{product_id}/variants"), json!({"sku": "BOOK-4", "tax_class": "A"}))
            .await,
        "tax_class",
    );
});
