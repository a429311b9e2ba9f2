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
