//! Personal data at rest: sealed under per-subject keys, never stored in clear.

use serde_json::json;

use crate::both;
use crate::support::*;

/// Whether `needle` occurs in `haystack`, in any letter case (ASCII).
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.to_ascii_lowercase().into_bytes();
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(&needle))
}

/// A guest's order whose e-mail and address are distinctive enough to scan for.
pub fn guest_checkout(email: &str, name: &str, line1: &str) -> serde_json::Value {
    json!({"email": email,
           "shipping_address": {"name": name, "line1": line1, "city": "Coimbra",
                                "postal_code": "3000-001", "country": "PT"},
           "payment": {"provider": "test", "token": "tok_visa"}})
}

both!(a_guests_order_is_sealed_at_rest_and_readable_by_staff, |app: TestApp| async move {
    let product = app.product("seal-tee", &["SEAL-1"]).await;
    let vid = product["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&vid, 5).await;
    let cart = app.cart_with("EUR", &[(vid.as_str(), 1)]).await;
    let body = guest_checkout("Quirinus.Vandermolen@example.org", "Quirinus Vandermolen", "88 Zyzzyva Crescent");
    let order = app
        .send(
            app.client
                .post(app.url(&format!("/store/carts/{cart}/checkout")))
                .header("Idempotency-Key", "seal-1")
                .json(&body),
        )
        .await
        .expect(201);
    assert_eq!(order["email"], "Quirinus.Vandermolen@example.org");
    assert_eq!(order["shipping_address"]["line1"], "88 Zyzzyva Crescent");
    // The replay answers the same body, though the stored outcome has no personal data.
    let replay = app
        .send(
            app.client
                .post(app.url(&format!("/store/carts/{cart}/checkout")))
                .header("Idempotency-Key", "seal-1")
                .json(&body),
        )
        .await;
    assert_eq!(replay.headers["idempotency-replayed"], "true");
    assert_eq!(replay.body, order);

    // Staff read it, and find it by e-mail in any case.
    let id = order["id"].as_str().unwrap();
    let admin = app.admin_get(&format!("/admin/orders/{id}")).await.expect(200);
    assert_eq!(admin["shipping_address"]["name"], "Quirinus Vandermolen");
    let found = app.admin_get("/admin/orders?email=quirinus.vandermolen@EXAMPLE.org").await.expect(200);
    assert_eq!(found["items"][0]["id"], id);

    // Nothing of it in clear anywhere the store keeps data.
    let stored = app.stored_bytes().await;
    for value in ["Quirinus", "Vandermolen", "Zyzzyva"] {
        assert!(!contains(&stored, value), "{value} is stored in clear");
    }
    // The scan itself finds what is there: the order's non-personal data in clear.
    assert!(contains(&stored, id), "the scan sees the stored order");
});

both!(erasure_shreds_a_customer_and_their_orders_keep_the_money, |app: TestApp| async move {
    let product = app.product("erase-tee", &["ERASE-1"]).await;
    let vid = product["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&vid, 5).await;
    let (email, password) = ("Ottoline.Brackenbury@example.net", "a long enough password");
    let c = app
        .send(app.client.post(app.url("/store/customers")).json(&json!({"email": email, "password": password,
            "first_name": "Ottoline", "last_name": "Brackenbury", "phone": "+351 912 777 313"})))
        .await
        .expect(201);
    let id = c["id"].as_str().unwrap().to_owned();
    let token = app
        .send(app.client.post(app.url("/store/auth/token")).json(&json!({"email": email, "password": password})))
        .await
        .expect(200)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send(app.client.post(app.url("/store/customers/me/addresses")).bearer_auth(&token).json(&json!({
        "name": "Ottoline Brackenbury", "line1": "12 Quillfeather Mews", "city": "Braga",
        "postal_code": "4700-001", "country": "PT"})))
        .await
        .expect(201);
    let cart = app
        .send(app.client.post(app.url("/store/carts")).bearer_auth(&token).json(&json!({"currency": "EUR"})))
        .await
        .expect(201);
    let cart_id = cart["id"].as_str().unwrap();
    assert_eq!(cart["customer_id"], id.as_str());
    app.send(
        app.client
            .post(app.url(&format!("/store/carts/{cart_id}/items")))
            .bearer_auth(&token)
            .json(&json!({"variant_id": vid, "quantity": 2})),
    )
    .await
    .expect(200);
    let body = guest_checkout(email, "Ottoline Brackenbury", "12 Quillfeather Mews");
    let order = app
        .send(
            app.client
                .post(app.url(&format!("/store/carts/{cart_id}/checkout")))
                .bearer_auth(&token)
                .header("Idempotency-Key", "erase-1")
                .json(&body),
        )
        .await
        .expect(201);
    assert_eq!(order["customer_id"], id.as_str());
    let order_id = order["id"].as_str().unwrap().to_owned();
    let mine = app.send(app.client.get(app.url("/store/customers/me/orders")).bearer_auth(&token)).await.expect(200);
    assert_eq!(mine["items"][0]["id"], order_id.as_str());
    let export = app.admin_get(&format!("/admin/customers/{id}/export")).await.expect(200).to_string();
    for value in ["Ottoline", "Brackenbury", "912 777 313", "Quillfeather", &order_id] {
        assert!(export.contains(value), "the export holds {value}: {export}");
    }

    let personal = ["Ottoline", "Brackenbury", "912 777 313", "Quillfeather"];
    let before = app.stored_bytes().await;
    for value in personal {
        assert!(!contains(&before, value), "{value} is stored in clear before erasure");
    }

    app.admin_post(&format!("/admin/customers/{id}/erase"), json!({})).await.expect(200);
    let after = app.stored_bytes().await;
    for value in personal {
        assert!(!contains(&after, value), "{value} is stored in clear after erasure");
    }
    let shown = app.admin_get(&format!("/admin/customers/{id}")).await.expect(200);
    assert_eq!(shown["erased"], true, "{shown}");
    for field in ["email", "first_name", "last_name", "phone"] {
        assert!(shown[field].is_null(), "{field}: {shown}");
    }
    // Their order keeps items, prices and totals; its personal fields read as null.
    let kept = app.admin_get(&format!("/admin/orders/{order_id}")).await.expect(200);
    assert_eq!(kept["total"], order["total"]);
    assert_eq!(kept["items"], order["items"]);
    assert!(kept["email"].is_null() && kept["shipping_address"].is_null(), "{kept}");
    // They cannot sign in, and their token is gone.
    app.send(app.client.post(app.url("/store/auth/token")).json(&json!({"email": email, "password": password})))
        .await
        .problem(401, "invalid_credentials");
    app.send(app.client.get(app.url("/store/customers/me")).bearer_auth(&token)).await.problem(401, "unauthenticated");
    // The replayed checkout answer shows the order as it now is: no personal data.
    let replay = app
        .send(
            app.client
                .post(app.url(&format!("/store/carts/{cart_id}/checkout")))
                .header("Idempotency-Key", "erase-1")
                .json(&body),
        )
        .await;
    assert!(replay.status == 201 || replay.status == 404, "{}", replay.body);
    if replay.status == 201 {
        assert!(replay.body["email"].is_null(), "{}", replay.body);
    }
});
