//! The access matrix, generated from the route table: every route the app serves × {anonymous,
//! customer A, customer B, a key of each staff role}, with the status each must get.
//!
//! - An `/admin` route: anonymous and customer tokens `401`; a role the route's permission
//!   ([`backroom_auth::Role::allows`]) admits never gets `401`/`403`; any other role `403`.
//! - A customer's own route (registered with `Routes::customer`): anonymous `401`; A reaching
//!   A's resource never `401`/`403`/`404`; B reaching A's resource `404`, as for one that does not
//!   exist.
//! - A public route: no customer and no anonymous caller gets `401`/`403` (a staff key sent as
//!   a shopper's token may get `401`); a customer's cart reached by id is `404` for anyone but
//!   its owner.
//! - Nobody gets a `5xx`.
//!
//! A route whose path parameters this test cannot fill fails it: a new route is added here
//! with its ids, and so its access is checked from its first day.

use std::collections::BTreeMap;

use backroom_auth::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::support::*;

/// Who calls.
#[derive(Debug, Clone)]
enum Caller {
    Anonymous,
    CustomerA,
    CustomerB,
    Staff(Role, String),
}

/// What A owns, by the name of the path parameter that reaches it.
struct Owned {
    cart: String,
    item: String,
    order: String,
    address: String,
}

/// A customer: registered, signed in; answers (id, token).
pub async fn customer(app: &TestApp, email: &str) -> (String, String) {
    let c = app
        .send(app.client.post(app.url("/store/customers")).json(&json!({
            "email": email, "password": "a long enough password", "first_name": "Test", "last_name": "Shopper"})))
        .await
        .expect(201);
    let s = app
        .send(
            app.client
                .post(app.url("/store/auth/token"))
                .json(&json!({"email": email, "password": "a long enough password"})),
        )
        .await
        .expect(200);
    (c["id"].as_str().unwrap().to_owned(), s["token"].as_str().unwrap().to_owned())
}

/// A's cart with one line, an order of A's (another cart, checked out) and an address.
async fn owned_by(app: &TestApp, token: &str, variant: &str) -> Owned {
    let bearer = |req: reqwest::RequestBuilder| req.bearer_auth(token);
    let mut carts = Vec::new();
    for _ in 0..2 {
        let cart = app
            .send(bearer(app.client.post(app.url("/store/carts"))).json(&json!({"currency": "EUR"})))
            .await
            .expect(201);
        let id = cart["id"].as_str().unwrap().to_owned();
        let cart = app
            .send(
                bearer(app.client.post(app.url(&format!("/store/carts/{id}/items"))))
                    .json(&json!({"variant_id": variant, "quantity": 1})),
            )
            .await
            .expect(200);
        carts.push((id, cart["items"][0]["id"].as_str().unwrap().to_owned()));
    }
    // A's open cart carries a code, so that removing it is A's to do.
    app.admin_post("/admin/promotions", json!({"code": "MATRIX", "type": "percentage", "value": 5})).await.expect(201);
    app.send(
        bearer(app.client.post(app.url(&format!("/store/carts/{}/promotions", carts[0].0))))
            .json(&json!({"code": "MATRIX"})),
    )
    .await
    .expect(200);
    let order = app
        .send(
            bearer(app.client.post(app.url(&format!("/store/carts/{}/checkout", carts[1].0))))
                .header("Idempotency-Key", "matrix")
                .json(&checkout_body("tok_visa")),
        )
        .await
        .expect(201);
    let address = app
        .send(bearer(app.client.post(app.url("/store/customers/me/addresses"))).json(&json!({
            "name": "Ana Silva", "line1": "Rua Augusta 1", "city": "Lisboa", "postal_code": "1100-048", "country": "PT"})))
        .await
        .expect(201);
    Owned {
        cart: carts[0].0.clone(),
        item: carts[0].1.clone(),
        order: order["id"].as_str().unwrap().to_owned(),
        address: address["id"].as_str().unwrap().to_owned(),
    }
}

/// The route's path with its parameters filled: A's resources on store routes, ids that exist
/// nowhere on admin routes (the guard decides before any look-up).
fn fill(path: &str, owned: &Owned, handle: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map(|c| open + c).expect("a closed parameter");
        out.push_str(&rest[..open]);
        let name = &rest[open + 1..close];
        let value = if path.starts_with("/admin") {
            "matrix_none".to_owned()
        } else {
            match (path, name) {
                (p, "id") if p.starts_with("/store/carts/") => owned.cart.clone(),
                (_, "item_id") => owned.item.clone(),
                (p, "code") if p.starts_with("/store/carts/") => "MATRIX".to_owned(),
                (p, "id") if p.starts_with("/store/orders/") => owned.order.clone(),
                (p, "id") if p.starts_with("/store/customers/me/addresses/") => owned.address.clone(),
                (_, "id_or_handle") => handle.to_owned(),
                _ => panic!("{path}: the access matrix does not know the parameter {{{name}}}; add it here"),
            }
        };
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// A body a careful client would send, so that refusals come from access, not validation.
fn body(method: &Method, path: &str, variant: &str) -> Option<Value> {
    if *method == Method::GET || *method == Method::DELETE {
        return None;
    }
    Some(match path {
        "/store/carts" => json!({"currency": "EUR"}),
        "/store/carts/{id}/items" => json!({"variant_id": variant, "quantity": 1}),
        "/store/carts/{id}/items/{item_id}" => json!({"quantity": 2}),
        "/store/carts/{id}/checkout" => checkout_body("tok_visa"),
        "/store/carts/{id}" => json!({"email": "matrix-a@example.com"}),
        "/store/carts/{id}/promotions" => json!({"code": "MATRIX"}),
        "/store/carts/{id}/shipping-method" => json!({"option_id": "so_matrix_none"}),
        "/store/customers/me" => json!({"first_name": "Ana"}),
        "/store/customers/me/addresses/{id}" => json!({"city": "Porto"}),
        _ => json!({}),
    })
}

both!(every_route_answers_every_caller_as_the_route_table_says, |app: TestApp| async move {
    let parts = backroom_api::routes::all().into_parts();
    let product = app.product("matrix", &["MATRIX-1"]).await;
    let variant = product["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&variant, 1000).await;
    let (_a, token_a) = customer(&app, "matrix-a@example.com").await;
    let (_b, token_b) = customer(&app, "matrix-b@example.com").await;
    let owned = owned_by(&app, &token_a, &variant).await;
    let mut callers = vec![Caller::Anonymous, Caller::CustomerB];
    for role in Role::ALL {
        let key = app
            .admin_post("/admin/api-keys", json!({"name": format!("matrix {role}"), "role": role}))
            .await
            .expect(201);
        callers.push(Caller::Staff(role, key["token"].as_str().unwrap().to_owned()));
    }
    // A last, so that A's own writes (a deleted address, a checked-out cart) come after the
    // others have been refused them.
    callers.push(Caller::CustomerA);

    // Deletes last, so that what they remove is there for the routes before them.
    let mut routes: Vec<(Method, String)> = parts.served.iter().cloned().collect();
    routes.sort_by_key(|(m, p)| (*m == Method::DELETE, p.clone()));
    let mut seen = BTreeMap::new();
    for (method, template) in &routes {
        let path = fill(template, &owned, "matrix");
        let admin = parts.access.routes().iter().find(|r| r.method == method && r.path == *template);
        let own_route = parts.customer.contains(&(method.clone(), template.clone()));
        let reaches_a = !template.starts_with("/admin") && template.contains('{') && !template.contains("id_or_handle");
        for caller in &callers {
            // Signing out revokes the token it is sent with: customers sign out with a spare one.
            let spare;
            let signs_out = template == "/store/auth/token" && *method == Method::DELETE;
            let token = match caller {
                Caller::Anonymous => None,
                Caller::CustomerA | Caller::CustomerB if signs_out => {
                    let email = if matches!(caller, Caller::CustomerA) { "matrix-a" } else { "matrix-b" };
                    spare = app
                        .send(app.client.post(app.url("/store/auth/token")).json(
                            &json!({"email": format!("{email}@example.com"), "password": "a long enough password"}),
                        ))
                        .await
                        .expect(200)["token"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    Some(spare.as_str())
                }
                Caller::CustomerA => Some(token_a.as_str()),
                Caller::CustomerB => Some(token_b.as_str()),
                Caller::Staff(_, t) => Some(t.as_str()),
            };
            let mut req = app.client.request(method.clone(), app.url(&path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body(method, template, &variant) {
                req = req.json(&b);
            }
            if template.ends_with("/checkout") {
                req = req.header("Idempotency-Key", format!("matrix-{caller:?}").chars().take(60).collect::<String>());
            }
            let res = app.send(req).await;
            let status = res.status;
            let what = format!("{method} {path} as {caller:?}: {status} {}", res.body);
            assert!(status < 500, "{what}");
            match (admin, caller) {
                (Some(_), Caller::Anonymous | Caller::CustomerA | Caller::CustomerB) => {
                    assert_eq!(status, 401, "{what}")
                }
                (Some(r), Caller::Staff(role, _)) if role.allows(r.permission) => {
                    assert!(status != 401 && status != 403, "{what}")
                }
                (Some(_), Caller::Staff(..)) => assert_eq!(status, 403, "{what}"),
                // A reaches what is A's, and A's own routes.
                (None, Caller::CustomerA) => assert!(![401, 403, 404].contains(&status), "{what}"),
                // A's things do not exist for B, nor for a caller without a token.
                (None, Caller::CustomerB) if reaches_a => assert_eq!(status, 404, "{what}"),
                (None, Caller::Anonymous) if own_route => assert_eq!(status, 401, "{what}"),
                (None, Caller::Anonymous) if reaches_a => assert_eq!(status, 404, "{what}"),
                // A staff key is no customer's token: refused where a customer is needed, and
                // wherever the store reads the shopper from the token (never taken for anonymous).
                (None, Caller::Staff(..)) if own_route || reaches_a => assert_eq!(status, 401, "{what}"),
                (None, Caller::Staff(..)) => assert!(status != 403, "{what}"),
                (None, _) => assert!(status != 401 && status != 403, "{what}"),
            }
            *seen.entry(template.clone()).or_insert(0) += 1;
        }
    }
    assert!(seen.len() > 40, "the matrix covered {} paths", seen.len());

    // Listing never shows A's things to B.
    let b_orders =
        app.send(app.client.get(app.url("/store/customers/me/orders")).bearer_auth(&token_b)).await.expect(200);
    assert_eq!(b_orders["items"], json!([]));
    let b_addresses =
        app.send(app.client.get(app.url("/store/customers/me/addresses")).bearer_auth(&token_b)).await.expect(200);
    assert!(!b_addresses.to_string().contains(&owned.address), "{b_addresses}");
});
