//! The `stripe` provider against localstripe, a stateful fake of Stripe's API
//! (`BACKROOM_TEST_STRIPE_URL`; scripts/test.sh starts one, scripts/localstripe.sh starts one
//! for a local run). Without that URL these tests fail under CI and are skipped, saying so,
//! elsewhere. Card numbers go to the fake Stripe only (to make a PaymentMethod, as Stripe.js
//! does in a browser); Backroom only ever sees the `pm_…` id.
//!
//! The webhook signature tests need no fake Stripe and always run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backroom_payments::PaymentProvider;
use backroom_payments::stripe::{Secret, StripeConfig, StripeProvider, sign};
use serde_json::{Value, json};

use crate::both;
use crate::support::{TestApp, checkout_body};

const SECRET_KEY: &str = "sk_test_backroom_0123456789";
const WEBHOOK_SECRET: &str = "whsec_backroom_test_secret";

/// localstripe's URL, or `None` (skip) outside CI; under CI a missing URL fails the test.
fn localstripe() -> Option<String> {
    match std::env::var("BACKROOM_TEST_STRIPE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().trim_end_matches('/').to_owned()),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "BACKROOM_TEST_STRIPE_URL is not set: under CI the Stripe tests run against localstripe (scripts/test.sh starts it)"
            );
            eprintln!(
                "SKIPPED: BACKROOM_TEST_STRIPE_URL is not set; run scripts/localstripe.sh and export the URL it prints"
            );
            None
        }
    }
}

/// The test settings with `stripe` enabled against localstripe (an unreachable address when
/// it is not there: those tests return before they call it).
fn with_stripe(s: &mut backroom::config::Settings) {
    s.payment_providers = vec!["test".into(), "stripe".into()];
    s.stripe_secret_key = Some(Secret::new(SECRET_KEY));
    s.stripe_webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    s.stripe_api_base = std::env::var("BACKROOM_TEST_STRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:9".into());
}

/// A client of the fake Stripe, as the storefront's Stripe.js and Stripe's dashboard would use it.
struct Fake {
    base: String,
    client: reqwest::Client,
}

impl Fake {
    fn new(base: String) -> Fake {
        Fake { base, client: reqwest::Client::new() }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let res = self.client.post(format!("{}{path}", self.base)).bearer_auth(SECRET_KEY).form(form).send().await;
        let res = res.expect("localstripe answers");
        let status = res.status();
        let body: Value = res.json().await.expect("JSON from localstripe");
        assert!(status.is_success(), "localstripe POST {path}: {status} {body}");
        body
    }

    async fn get(&self, path: &str) -> Value {
        let res = self.client.get(format!("{}{path}", self.base)).bearer_auth(SECRET_KEY).send().await;
        let res = res.expect("localstripe answers");
        assert!(res.status().is_success(), "localstripe GET {path}: {}", res.status());
        res.json().await.expect("JSON from localstripe")
    }

    /// A PaymentMethod for a test card, made at the fake Stripe (as Stripe.js would).
    async fn payment_method(&self, number: &str) -> String {
        let pm = self
            .post(
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", number),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2034"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        pm["id"].as_str().expect("a pm_ id").to_owned()
    }

    /// Every intent whose metadata names this attempt.
    async fn intents_of(&self, attempt: &str) -> Vec<Value> {
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                None => "/v1/payment_intents?limit=100".to_owned(),
                Some(a) => format!("/v1/payment_intents?limit=100&starting_after={a}"),
            };
            let page = self.get(&path).await;
            let data = page["data"].as_array().expect("a list").clone();
            found.extend(data.iter().filter(|i| i["metadata"]["attempt_id"] == attempt).cloned());
            match (page["has_more"].as_bool(), data.last()) {
                (Some(true), Some(last)) => after = Some(last["id"].as_str().unwrap().to_owned()),
                _ => return found,
            }
        }
    }
}

fn stripe_body(pm: &str) -> Value {
    let mut body = checkout_body(pm);
    body["payment"] = json!({"provider": "stripe", "token": pm});
    body
}

/// Stock of a variant as the admin sees it: (on_hand, reserved, allocated).
async fn stock_of(app: &TestApp, v: &str) -> (i64, i64, i64) {
    let s = app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200);
    (s["on_hand"].as_i64().unwrap(), s["reserved"].as_i64().unwrap(), s["allocated"].as_i64().unwrap())
}

/// A product with `n` units in stock, and a cart holding one of them.
async fn cart_of_one(app: &TestApp, handle: &str, n: i64) -> (String, String) {
    let p = app.product(handle, &[&handle.to_uppercase()]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, n).await;
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    (v, cart)
}

async fn checkout(app: &TestApp, cart: &str, key: &str, pm: &str) -> crate::support::Res {
    let url = app.url(&format!("/store/carts/{cart}/checkout"));
    app.send(app.client.post(url).header("Idempotency-Key", key).json(&stripe_body(pm))).await
}

/// Posts `event` to `/webhooks/stripe`, signed as Stripe does at `at` (unix seconds).
async fn deliver(app: &TestApp, event: &Value, at: i64) -> crate::support::Res {
    let body = serde_json::to_vec(event).unwrap();
    let signature = sign(&body, WEBHOOK_SECRET, at);
    app.send(
        app.client
            .post(app.url("/webhooks/stripe"))
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", signature)
            .body(body),
    )
    .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

both!(a_stripe_payment_is_captured, settings = with_stripe, |app: TestApp| async move {
    let Some(base) = localstripe() else { return };
    let fake = Fake::new(base.clone());
    let (v, cart) = cart_of_one(&app, "stripe-ok", 3).await;
    let pm = fake.payment_method("4242424242424242").await;
    let order = checkout(&app, &cart, "s-1", &pm).await.expect(201);
    assert_eq!(order["status"], "placed", "{order}");
    assert_eq!(order["payment"]["provider"], "stripe");
    assert_eq!(order["payment"]["status"], "captured");
    assert!(order["payment"].get("next_action").is_none(), "{order}");
    let attempt = order["payment"]["id"].as_str().unwrap().to_owned();
    let intent_id = order["payment"]["reference"].as_str().expect("the intent is the reference").to_owned();
    assert!(intent_id.starts_with("pi_"), "{order}");
    // Stripe holds one captured intent for the order total, with our ids as metadata.
    let intent = fake.get(&format!("/v1/payment_intents/{intent_id}")).await;
    assert_eq!(intent["status"], "succeeded", "{intent}");
    assert_eq!(intent["amount"], order["total"]["amount"]);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["metadata"]["attempt_id"], attempt.as_str());
    assert_eq!(intent["metadata"]["order_id"], order["id"]);
    assert_eq!(fake.intents_of(&attempt).await.len(), 1);
    assert_eq!(stock_of(&app, &v).await, (3, 0, 1));
    // A replay answers the same, and charges nothing more.
    let again = checkout(&app, &cart, "s-1", &pm).await;
    assert_eq!(again.headers.get("idempotency-replayed").map(|h| h.to_str().unwrap()), Some("true"));
    assert_eq!(again.expect(201)["id"], order["id"]);
    assert_eq!(fake.intents_of(&attempt).await.len(), 1);

    // The provider itself: status by attempt, and a partial refund keyed by the refund id.
    let provider =
        StripeProvider::new(StripeConfig { secret_key: Secret::new(SECRET_KEY), webhook_secret: None, api_base: base })
            .unwrap();
    let status = provider.status(&attempt).await.unwrap();
    assert_eq!(status, backroom_payments::ChargeStatus::Captured { reference: intent_id.clone() });
    let eur = backroom_kernel::Currency::parse("EUR").unwrap();
    let refund = backroom_payments::RefundRequest {
        idempotency_key: format!("ref_{attempt}"),
        charge_key: attempt.clone(),
        amount: backroom_kernel::Money::new(1000, eur).unwrap(),
    };
    match provider.refund(&refund).await.unwrap() {
        backroom_payments::RefundStatus::Succeeded { reference } => {
            assert!(reference.starts_with("re_"), "{reference}")
        }
        other => panic!("refund: {other:?}"),
    }
    let refunds = fake.get(&format!("/v1/refunds?payment_intent={intent_id}")).await;
    assert_eq!(refunds["data"][0]["amount"], 1000, "{refunds}");
    // An attempt Stripe never saw.
    assert_eq!(provider.status("pay_never_sent").await.unwrap(), backroom_payments::ChargeStatus::NotFound);

    // A refund through Backroom's own API goes to Stripe keyed by its `ref_` id.
    let order_id = order["id"].as_str().unwrap();
    let ours = app
        .send(
            app.client
                .post(app.url(&format!("/admin/orders/{order_id}/refunds")))
                .bearer_auth(crate::support::ADMIN_TOKEN)
                .header("Idempotency-Key", "r-1")
                .json(&json!({"amount": {"amount": 700, "currency": "EUR"}, "reason": "goodwill"})),
        )
        .await
        .expect(201);
    assert_eq!(ours["status"], "succeeded", "{ours}");
    // Stripe then reports every refund of the charge (`charge.refunded`): the one made above
    // straight at the provider (as in Stripe's dashboard) is recorded on the order; Backroom's
    // own (the same `re_` id) is not counted twice; a redelivery changes nothing.
    let listed = fake.get(&format!("/v1/refunds?payment_intent={intent_id}")).await;
    let mut refunds: Vec<Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"id": r["id"], "amount": r["amount"], "metadata": r["metadata"]}))
        .collect();
    assert_eq!(refunds.len(), 2, "{listed}");
    // Backroom names its own refund in the refund's metadata.
    let ours_id = ours["id"].as_str().unwrap();
    assert!(refunds.iter().any(|r| r["metadata"]["refund_id"] == ours_id), "{listed}");
    // A report that overtakes Backroom's own answer (another `re_` id, which Backroom has not
    // recorded, but naming Backroom's refund) is not counted: the refund's own path records it.
    refunds.push(json!({"id": "re_overtaking", "amount": 700, "metadata": {"refund_id": ours_id}}));
    let event = |id: &str| {
        json!({"id": id, "type": "charge.refunded", "data": {"object": {"id": "ch_dash", "object": "charge",
            "payment_intent": intent_id, "amount_refunded": 1700, "currency": "eur",
            "metadata": {"attempt_id": attempt}, "refunds": {"data": refunds}}}})
    };
    assert_eq!(deliver(&app, &event("evt_dash_1"), now()).await.expect(200)["result"], "refunds");
    assert_eq!(deliver(&app, &event("evt_dash_1"), now()).await.expect(200)["result"], "duplicate");
    assert_eq!(deliver(&app, &event("evt_dash_2"), now()).await.expect(200)["result"], "refunds");
    let seen = app.admin_get(&format!("/admin/orders/{order_id}")).await.expect(200);
    assert_eq!(seen["refunded_total"]["amount"], 1700, "{seen}");
    assert_eq!(seen["payment_status"], "partially_refunded");
    assert_eq!(seen["refunds"].as_array().unwrap().len(), 2, "{seen}");
});

both!(a_declined_stripe_card_releases_the_stock, settings = with_stripe, |app: TestApp| async move {
    let Some(base) = localstripe() else { return };
    let fake = Fake::new(base);
    let (v, cart) = cart_of_one(&app, "stripe-no", 2).await;
    // localstripe's card that is declined when charged.
    let pm = fake.payment_method("4000000000000341").await;
    let problem = checkout(&app, &cart, "d-1", &pm).await.problem(402, "payment_declined");
    assert_eq!(problem["reason"], "card_declined", "{problem}");
    assert_eq!(stock_of(&app, &v).await, (2, 0, 0));
    assert_eq!(app.get(&format!("/store/carts/{cart}")).await.expect(200)["status"], "open");
    // An unknown PaymentMethod is refused by Stripe: declined too, nothing held.
    checkout(&app, &cart, "d-2", "pm_does_not_exist").await.problem(402, "payment_declined");
    assert_eq!(stock_of(&app, &v).await, (2, 0, 0));
});

both!(three_d_secure_waits_for_the_webhook, settings = with_stripe, |app: TestApp| async move {
    let Some(base) = localstripe() else { return };
    let fake = Fake::new(base);
    let (v, cart) = cart_of_one(&app, "stripe-3ds", 2).await;
    // localstripe's card that needs 3-D Secure.
    let pm = fake.payment_method("4000002760003184").await;
    let pending = checkout(&app, &cart, "3ds-1", &pm).await.expect(202);
    assert_eq!(pending["status"], "pending_payment", "{pending}");
    let secret = pending["payment"]["next_action"]["client_secret"].as_str().expect("next_action").to_owned();
    let intent_id = pending["payment"]["reference"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(&intent_id), "{pending}");
    assert_eq!(stock_of(&app, &v).await, (2, 1, 0));
    // The replay shows the next action too.
    let replay = checkout(&app, &cart, "3ds-1", &pm).await.expect(202);
    assert_eq!(replay["payment"]["next_action"]["client_secret"], secret.as_str());
    // Recovery leaves it waiting (the customer has the reservation's lifetime to act).
    app.checkout.recover().await.unwrap();
    let id = pending["id"].as_str().unwrap().to_owned();
    assert_eq!(app.admin_get(&format!("/admin/orders/{id}")).await.expect(200)["status"], "pending_payment");

    // The customer passes 3-D Secure in the browser; Stripe sends payment_intent.succeeded.
    fake.post(
        &format!("/v1/payment_intents/{intent_id}/_authenticate"),
        &[("client_secret", &secret), ("success", "true")],
    )
    .await;
    let intent = fake.get(&format!("/v1/payment_intents/{intent_id}")).await;
    assert_eq!(intent["status"], "succeeded", "{intent}");
    let event = json!({"id": format!("evt_{intent_id}"), "object": "event", "type": "payment_intent.succeeded",
                       "data": {"object": intent}});
    assert_eq!(deliver(&app, &event, now()).await.expect(200)["result"], "applied");
    let order = app.admin_get(&format!("/admin/orders/{id}")).await.expect(200);
    assert_eq!(order["status"], "placed", "{order}");
    assert_eq!(order["payment"]["status"], "captured");
    assert_eq!(stock_of(&app, &v).await, (2, 0, 1));
    // The same event again (Stripe retries): nothing changes, however often and however signed.
    assert_eq!(deliver(&app, &event, now()).await.expect(200)["result"], "duplicate");
    assert_eq!(deliver(&app, &event, now() - 60).await.expect(200)["result"], "duplicate");
    let after = app.admin_get(&format!("/admin/orders/{id}")).await.expect(200);
    assert_eq!(after["history"], order["history"]);
    let placed = backroom_db::outbox::list(&app.db, "order.placed").await.unwrap();
    assert_eq!(placed.len(), 1);
    assert_eq!(stock_of(&app, &v).await, (2, 0, 1));
    // The checkout's key now answers with the placed order.
    assert_eq!(checkout(&app, &cart, "3ds-1", &pm).await.expect(201)["status"], "placed");
});

both!(a_failed_payment_webhook_releases_the_order, settings = with_stripe, |app: TestApp| async move {
    let Some(base) = localstripe() else { return };
    let fake = Fake::new(base);
    let (v, cart) = cart_of_one(&app, "stripe-3ds-no", 2).await;
    let pm = fake.payment_method("4000002760003184").await;
    let pending = checkout(&app, &cart, "3f-1", &pm).await.expect(202);
    let intent_id = pending["payment"]["reference"].as_str().unwrap().to_owned();
    let secret = pending["payment"]["next_action"]["client_secret"].as_str().unwrap().to_owned();
    fake.post(
        &format!("/v1/payment_intents/{intent_id}/_authenticate"),
        &[("client_secret", &secret), ("success", "false")],
    )
    .await;
    // localstripe sends no event for a failed authentication: the event is the one Stripe
    // would send, around the intent as the fake holds it.
    let intent = fake.get(&format!("/v1/payment_intents/{intent_id}")).await;
    let event = json!({"id": format!("evt_f_{intent_id}"), "type": "payment_intent.payment_failed",
                       "data": {"object": intent}});
    assert_eq!(deliver(&app, &event, now()).await.expect(200)["result"], "applied");
    let id = pending["id"].as_str().unwrap();
    let order = app.admin_get(&format!("/admin/orders/{id}")).await.expect(200);
    assert_eq!(order["status"], "canceled", "{order}");
    assert_eq!(order["payment_status"], "voided", "{order}");
    assert_eq!(stock_of(&app, &v).await, (2, 0, 0));
    assert_eq!(app.get(&format!("/store/carts/{cart}")).await.expect(200)["status"], "open");
});

/// A loopback proxy in front of the fake Stripe that swallows the answer to the first
/// PaymentIntent creation it passes on (Stripe creates the intent; its answer never comes
/// back). It runs on a thread of its own, so a settings closure can start it; answers its URL.
fn lossy_proxy(upstream: String) -> String {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let client = reqwest::Client::new();
            let lose = Arc::new(AtomicBool::new(true));
            let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (client, upstream, lose) = (client.clone(), upstream.clone(), lose.clone());
                async move {
                    let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
                    let mut req = client.request(method.clone(), format!("{upstream}{path}")).body(body);
                    for name in ["authorization", "content-type", "idempotency-key"] {
                        if let Some(v) = headers.get(name) {
                            req = req.header(name, v.clone());
                        }
                    }
                    let res = req.send().await.expect("localstripe answers the proxy");
                    let status = StatusCode::from_u16(res.status().as_u16()).unwrap();
                    let bytes = res.bytes().await.unwrap();
                    if method == Method::POST
                        && uri.path() == "/v1/payment_intents"
                        && lose.swap(false, Ordering::SeqCst)
                    {
                        // The answer is lost: the caller's deadline ends the wait.
                        tokio::time::sleep(Duration::from_secs(120)).await;
                    }
                    (status, [("content-type", "application/json")], bytes)
                }
            };
            let app = axum::Router::new().fallback(handler);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap())).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().expect("the proxy starts")
}

both!(
    a_lost_stripe_answer_is_recovered,
    settings = |s: &mut backroom::config::Settings| {
        with_stripe(s);
        if let Ok(base) = std::env::var("BACKROOM_TEST_STRIPE_URL") {
            s.stripe_api_base = lossy_proxy(base.trim_end_matches('/').to_owned());
        }
        s.provider_timeout = Duration::from_secs(1);
        // The test runs recovery itself.
        s.checkout.recovery_interval = Duration::from_secs(3600);
    },
    |app: TestApp| async move {
        let Some(base) = localstripe() else { return };
        let fake = Fake::new(base.clone());
        let (v, cart) = cart_of_one(&app, "stripe-lost", 2).await;
        let pm = fake.payment_method("4242424242424242").await;
        let pending = checkout(&app, &cart, "l-1", &pm).await.expect(202);
        assert_eq!(pending["status"], "pending_payment", "{pending}");
        let attempt = pending["payment"]["id"].as_str().unwrap().to_owned();
        // Stripe did take the payment: one intent, captured, under this attempt.
        let intents = fake.intents_of(&attempt).await;
        assert_eq!(intents.len(), 1, "{intents:?}");
        assert_eq!(intents[0]["status"], "succeeded");
        // Recovery finds it by the attempt id in its metadata and places the order.
        let done = app.checkout.recover().await.unwrap();
        assert_eq!((done.placed, done.failed), (1, 0), "{done:?}");
        let id = pending["id"].as_str().unwrap();
        let order = app.admin_get(&format!("/admin/orders/{id}")).await.expect(200);
        assert_eq!(order["status"], "placed", "{order}");
        assert_eq!(order["payment"]["reference"], intents[0]["id"]);
        assert_eq!(stock_of(&app, &v).await, (2, 0, 1));
        assert_eq!(fake.intents_of(&attempt).await.len(), 1, "charged once");
        // The checkout's key answers with the placed order now.
        assert_eq!(checkout(&app, &cart, "l-1", &pm).await.expect(201)["status"], "placed");
    }
);

both!(
    stripe_webhooks_need_a_valid_signature,
    settings = |s: &mut backroom::config::Settings| s.stripe_webhook_secret = Some(Secret::new(WEBHOOK_SECRET)),
    |app: TestApp| async move {
        let event = json!({"id": "evt_sig_1", "type": "payment_intent.succeeded",
                           "data": {"object": {"id": "pi_x", "object": "payment_intent", "status": "succeeded",
                                               "metadata": {"attempt_id": "pay_unknown"}}}});
        let body = serde_json::to_vec(&event).unwrap();
        let post = |signature: Option<String>, body: Vec<u8>| {
            let mut req =
                app.client.post(app.url("/webhooks/stripe")).header("Content-Type", "application/json").body(body);
            if let Some(s) = signature {
                req = req.header("Stripe-Signature", s);
            }
            app.send(req)
        };
        // No signature, a wrong secret, a tampered body, a stale or future timestamp, garbage.
        post(None, body.clone()).await.problem(400, "invalid_signature");
        post(Some(sign(&body, "whsec_wrong", now())), body.clone()).await.problem(400, "invalid_signature");
        let tampered = String::from_utf8(body.clone()).unwrap().replace("pi_x", "pi_y").into_bytes();
        post(Some(sign(&body, WEBHOOK_SECRET, now())), tampered).await.problem(400, "invalid_signature");
        post(Some(sign(&body, WEBHOOK_SECRET, now() - 301)), body.clone()).await.problem(400, "invalid_signature");
        post(Some(sign(&body, WEBHOOK_SECRET, now() + 301)), body.clone()).await.problem(400, "invalid_signature");
        for garbage in ["", "t=", "v1=abc", "t=1,v1=zz", "t=now,v1=00"] {
            post(Some(garbage.into()), body.clone()).await.problem(400, "invalid_signature");
        }
        // Signed, but not an event: malformed, nothing recorded.
        for junk in [&b"not json"[..], b"{}", b"[]", b"{\"id\": 1}", &[0xff, 0xfe][..]] {
            let r = post(Some(sign(junk, WEBHOOK_SECRET, now())), junk.to_vec()).await;
            assert_eq!(r.status, 400, "{:?}: {}", junk, r.body);
            assert_eq!(r.content_type, "application/problem+json");
        }
        // Valid: an intent of no order of this store is received and recorded, once.
        assert_eq!(
            post(Some(sign(&body, WEBHOOK_SECRET, now())), body.clone()).await.expect(200)["result"],
            "unmatched"
        );
        assert_eq!(
            post(Some(sign(&body, WEBHOOK_SECRET, now())), body.clone()).await.expect(200)["result"],
            "duplicate"
        );
        // Several v1 signatures (a secret being rolled): any one may match.
        let good = sign(&body, WEBHOOK_SECRET, now());
        let other = sign(&body, "whsec_old", now());
        let both_sigs = format!("{other},{}", good.split_once(',').unwrap().1);
        post(Some(both_sigs), body.clone()).await.expect(200);
        // Unknown event types are received and ignored; no object of the expected shape is fine too.
        for event in [
            json!({"id": "evt_sig_2", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}),
            json!({"id": "evt_sig_3", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}}),
            json!({"id": "evt_sig_4", "type": "charge.refunded", "data": {"object": 7}}),
        ] {
            let r = deliver(&app, &event, now()).await.expect(200);
            assert!(["ignored", "unmatched"].contains(&r["result"].as_str().unwrap()), "{r}");
        }
        // charge.refunded reaches the refunds hook (a log line and a metric for now), once.
        let refunded = json!({"id": "evt_ref_1", "type": "charge.refunded",
            "data": {"object": {"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount_refunded": 500,
                                "currency": "eur", "refunds": {"data": [{"id": "re_1", "amount": 500}]}}}});
        assert_eq!(deliver(&app, &refunded, now()).await.expect(200)["result"], "refunds");
        assert_eq!(deliver(&app, &refunded, now()).await.expect(200)["result"], "duplicate");
        // A body over the limit is refused before anything is read into an event.
        let big = vec![b' '; 2 * 1024 * 1024];
        let r = post(Some(sign(&big, WEBHOOK_SECRET, now())), big).await;
        assert_eq!(r.status, 413, "{}", r.body);
    }
);

both!(without_a_webhook_secret_every_event_is_refused, |app: TestApp| async move {
    let event = json!({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {}}});
    deliver(&app, &event, now()).await.problem(400, "invalid_signature");
});
