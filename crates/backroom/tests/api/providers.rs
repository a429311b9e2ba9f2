//! Payment providers are opt-in, every provider call has a deadline, and a refunded charge
//! is never a paid order.

use std::time::Duration;

use backroom_payments::PaymentProvider;
use serde_json::{Value, json};

use crate::both;
use crate::support::{TestApp, checkout_body};

/// Stock of a variant as the admin sees it: (on_hand, reserved, allocated).
async fn stock_of(app: &TestApp, v: &str) -> (i64, i64, i64) {
    let s = app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200);
    (s["on_hand"].as_i64().unwrap(), s["reserved"].as_i64().unwrap(), s["allocated"].as_i64().unwrap())
}

async fn order_count(app: &TestApp) -> usize {
    app.admin_get("/admin/orders?limit=100").await.expect(200)["items"].as_array().unwrap().len()
}

both!(
    no_provider_is_enabled_by_default,
    settings = |s: &mut backroom::config::Settings| s.payment_providers.clear(),
    |app: TestApp| async move {
        let p = app.product("free-lunch", &["FREE-1"]).await;
        let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
        app.stock(&v, 5).await;
        let cart = app.cart_with("EUR", &[(&v, 2)]).await;
        for _ in 0..2 {
            let r = app.send(app.checkout_req(&cart, Some("k-1"), "tok_visa")).await;
            assert!(r.headers.get("idempotency-replayed").is_none());
            r.problem(422, "payment_provider_unavailable");
        }
        // Nothing reserved, no order, no attempt, no stored key, the cart still open.
        assert_eq!(stock_of(&app, &v).await, (5, 0, 0));
        assert_eq!(order_count(&app).await, 0);
        assert_eq!(app.get(&format!("/store/carts/{cart}")).await.expect(200)["status"], "open");
        assert!(backroom_db::outbox::list(&app.db, "order.placed").await.unwrap().is_empty());
    }
);

both!(a_provider_that_is_not_enabled_is_refused, |app: TestApp| async move {
    let p = app.product("other-pay", &["OP-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 3).await;
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    let url = app.url(&format!("/store/carts/{cart}/checkout"));
    for provider in ["stripe", "paypal", "TEST", ""] {
        let mut body = checkout_body("tok_visa");
        body["payment"]["provider"] = json!(provider);
        let r = app
            .send(app.client.post(&url).header("Idempotency-Key", "other").json(&body))
            .await
            .problem(422, "payment_provider_unavailable");
        assert!(r["detail"].as_str().unwrap().contains("test"), "names what is enabled: {r}");
    }
    assert_eq!(stock_of(&app, &v).await, (3, 0, 0));
    assert_eq!(order_count(&app).await, 0);
    // The key was not used up: the enabled provider works with it.
    app.send(app.client.post(&url).header("Idempotency-Key", "other").json(&checkout_body("tok_visa")))
        .await
        .expect(201);
});

both!(
    a_provider_past_its_deadline_is_a_lost_answer,
    settings = |s: &mut backroom::config::Settings| s.provider_timeout = Duration::from_millis(300),
    |app: TestApp| async move {
        let p = app.product("slowpoke", &["SLOW-1"]).await;
        let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
        app.stock(&v, 2).await;
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        // `tok_slow` answers after a minute; the deadline turns it into a lost answer (202)
        // instead of holding the shopper (and the stock) that long.
        let pending = app.send(app.checkout_req(&cart, Some("slow-1"), "tok_slow")).await.expect(202);
        assert_eq!(pending["status"], "pending_payment");
        let id = pending["id"].as_str().unwrap().to_owned();
        // Recovery asks the provider's ledger, finds the capture, and places the order.
        let order = app.admin_get_until(&format!("/admin/orders/{id}"), |o| o["status"] == "placed").await;
        assert_eq!(order["payment"]["status"], "captured");
        assert_eq!(stock_of(&app, &v).await, (2, 0, 1));
    }
);

both!(
    a_refunded_charge_is_not_a_paid_order,
    settings = |s: &mut backroom::config::Settings| s.checkout.recovery_interval = Duration::from_secs(3600),
    |app: TestApp| async move {
        let p = app.product("boomerang", &["BOOM-1"]).await;
        let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
        app.stock(&v, 2).await;
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        let pending = app.send(app.checkout_req(&cart, Some("r-1"), "tok_timeout")).await.expect(202);
        let id = pending["id"].as_str().unwrap().to_owned();
        let attempt = pending["payment"]["id"].as_str().unwrap().to_owned();
        // The money is given back at the provider before recovery learns of the charge.
        let refund = backroom_payments::RefundRequest {
            idempotency_key: "ref_1".into(),
            charge_key: attempt.clone(),
            amount: backroom_kernel::Money::new(4900, backroom_kernel::Currency::parse("EUR").unwrap()).unwrap(),
        };
        let refunded = backroom_payments::TestProvider::new(app.db.clone()).refund(&refund).await.unwrap();
        assert!(matches!(refunded, backroom_payments::RefundStatus::Succeeded { .. }), "{refunded:?}");
        let done = app.checkout.recover().await.unwrap();
        assert_eq!((done.placed, done.failed), (0, 1), "{done:?}");
        let order: Value = app.admin_get(&format!("/admin/orders/{id}")).await.expect(200);
        assert_eq!(order["status"], "cancelled", "{order}");
        assert_eq!(order["payment"]["status"], "refunded", "{order}");
        // The stock is back, the cart open again, and nothing says `order.placed`.
        assert_eq!(stock_of(&app, &v).await, (2, 0, 0));
        assert_eq!(app.get(&format!("/store/carts/{cart}")).await.expect(200)["status"], "open");
        assert!(backroom_db::outbox::list(&app.db, "order.placed").await.unwrap().is_empty());
    }
);
