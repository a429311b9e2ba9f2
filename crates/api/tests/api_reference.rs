//! The API reference: every operation of the OpenAPI document reads well (summary, description,
//! id, tags with descriptions), its examples are valid against their schemas, `/docs` serves
//! the readable page, and the router serves exactly the documented operations.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

const OWNER_TOKEN: &str = "api-reference-test-owner-token";

fn document() -> Value {
    serde_json::from_str(&backroom_api::openapi::json()).expect("the document is JSON")
}

/// Every documented operation: method (upper case), path, and the operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    out
}

#[test]
fn every_operation_has_a_summary_a_description_and_an_id() {
    let doc = document();
    let ops = operations(&doc);
    assert!(ops.len() >= 39, "{} operations", ops.len());
    for (method, path, op) in &ops {
        let text = |key: &str| op[key].as_str().unwrap_or_default().trim().to_owned();
        let summary = text("summary");
        assert!(!summary.is_empty(), "{method} {path}: no summary");
        assert!(!summary.contains('\n') && summary.len() <= 60, "{method} {path}: the summary is one short line");
        assert!(!text("description").is_empty(), "{method} {path}: no description");
        assert!(!text("operationId").is_empty(), "{method} {path}: no operationId");
        for (status, res) in op["responses"].as_object().expect("responses") {
            assert!(
                !res["description"].as_str().unwrap_or_default().is_empty(),
                "{method} {path} {status}: a response without a description"
            );
        }
    }
}

#[test]
fn every_tag_is_described_and_used() {
    let doc = document();
    let tags: BTreeSet<String> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| {
            let name = t["name"].as_str().expect("tag name").to_owned();
            assert!(!t["description"].as_str().unwrap_or_default().trim().is_empty(), "tag {name}: no description");
            name
        })
        .collect();
    let mut used = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let op_tags = op["tags"].as_array().unwrap_or_else(|| panic!("{method} {path}: no tag"));
        assert!(!op_tags.is_empty(), "{method} {path}: no tag");
        for t in op_tags {
            let t = t.as_str().expect("tag").to_owned();
            assert!(tags.contains(&t), "{method} {path}: tag {t} is not declared with a description");
            used.insert(t);
        }
    }
    assert_eq!(used, tags, "a declared tag has no operation");
}

#[test]
fn the_description_points_to_the_docs_in_the_repository() {
    let doc = document();
    let description = doc["info"]["description"].as_str().expect("info.description");
    assert!(description.contains("docs/api.md"), "{description}");
    assert!(description.contains("/docs"), "{description}");
    let api_md = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
    assert!(std::path::Path::new(api_md).exists(), "docs/api.md is missing");
}

/// A validator of `schema`, whose `$ref`s point into the document's components.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let root = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
}

/// Every example of a request or response body, with the schema it must satisfy.
fn examples(doc: &Value) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    let mut of_content = |at: String, content: &Value| {
        for (media, body) in content.as_object().into_iter().flatten() {
            let schema = &body["schema"];
            if let Some(example) = body.get("example") {
                out.push((format!("{at} {media}"), schema.clone(), example.clone()));
            }
            for (name, example) in body.get("examples").and_then(Value::as_object).into_iter().flatten() {
                out.push((format!("{at} {media} {name}"), schema.clone(), example["value"].clone()));
            }
        }
    };
    for (method, path, op) in operations(doc) {
        of_content(format!("{method} {path} request"), &op["requestBody"]["content"]);
        for (status, res) in op["responses"].as_object().expect("responses") {
            of_content(format!("{method} {path} {status}"), &res["content"]);
        }
    }
    out
}

#[test]
fn examples_are_valid_against_their_schemas() {
    let doc = document();
    let examples = examples(&doc);
    for (at, schema, example) in &examples {
        let v = validator(&doc, schema);
        let errors: Vec<String> = v.iter_errors(example).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{at}: the example does not match its schema:\n{}", errors.join("\n"));
    }
    // The main flows: product with variants and prices, stock, cart, line, checkout with
    // `tok_visa`, the order, and problems.
    let has = |at: &str| examples.iter().any(|(a, _, _)| a.starts_with(at));
    for at in [
        "POST /admin/products request",
        "POST /admin/products 201",
        "PUT /admin/variants/{variant_id}/stock request",
        "PUT /admin/variants/{variant_id}/stock 200",
        "POST /store/carts request",
        "POST /store/carts 201",
        "POST /store/carts/{id}/items request",
        "POST /store/carts/{id}/items 200",
        "POST /store/carts/{id}/items 409",
        "POST /store/carts/{id}/checkout request",
        "POST /store/carts/{id}/checkout 201",
        "POST /store/carts/{id}/checkout 402",
        "POST /store/carts/{id}/checkout 409",
        "GET /admin/orders/{id} 200",
    ] {
        assert!(has(at), "no example for {at}");
    }
    let checkout = examples.iter().find(|(a, _, _)| a.starts_with("POST /store/carts/{id}/checkout request")).unwrap();
    assert_eq!(checkout.2["payment"]["token"], "tok_visa");
    let conflict = examples.iter().find(|(a, _, _)| a.starts_with("POST /store/carts/{id}/checkout 409")).unwrap();
    assert_eq!(conflict.2["code"], "insufficient_stock");
}

/// The checker catches a wrong example: a product without its title, an order line without
/// its price.
#[test]
fn the_example_check_refuses_a_wrong_example() {
    let doc = document();
    let new_product = serde_json::json!({"$ref": "#/components/schemas/NewProduct"});
    assert!(validator(&doc, &new_product).is_valid(&backroom_api::openapi::examples::new_product()));
    assert!(!validator(&doc, &new_product).is_valid(&serde_json::json!({"handle": "no-title"})));
    let order = serde_json::json!({"$ref": "#/components/schemas/Order"});
    let mut wrong = backroom_api::openapi::examples::order();
    wrong["items"][0].as_object_mut().unwrap().remove("unit_price");
    assert!(!validator(&doc, &order).is_valid(&wrong));
}

/// An app over a fresh SQLite database, with an owner token.
async fn app(dir: &std::path::Path) -> axum::Router {
    let db = backroom_db::Db::connect(&backroom_db::ConnectOptions::new(backroom_db::sqlite_url_in(dir)))
        .await
        .expect("open the database");
    db.migrate().await.expect("migrate");
    let providers = backroom_payments::Providers::enabled(&db, &["test".to_owned()], Duration::from_secs(5))
        .expect("the test provider");
    let vault = backroom_vault::Vault::open(&db, backroom_vault::MasterKey::generate()).await.expect("the vault");
    let checkout = backroom_checkout::Checkout::new(db.clone(), providers, Default::default(), vault);
    let state = backroom_api::AppState::new(db, Some(OWNER_TOKEN), checkout, None);
    backroom_api::router(state)
}

async fn send(app: &axum::Router, method: Method, path: &str) -> axum::response::Response {
    let mut req = Request::builder().method(method.clone()).uri(path);
    if path.starts_with("/admin") {
        req = req.header(header::AUTHORIZATION, format!("Bearer {OWNER_TOKEN}"));
    }
    if path.ends_with("/checkout") {
        req = req.header("idempotency-key", "api-reference-test");
    }
    let body = if [Method::POST, Method::PUT, Method::PATCH].contains(&method) {
        req = req.header(header::CONTENT_TYPE, "application/json");
        Body::from("{}")
    } else {
        Body::empty()
    };
    app.clone().oneshot(req.body(body).expect("a request")).await.expect("an answer")
}

#[tokio::test]
async fn docs_is_a_public_html_page_that_reads_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let res = send(&app, Method::GET, "/docs").await;
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(res.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    let html = String::from_utf8(body.to_vec()).unwrap();
    assert!(html.contains("data-url=\"/openapi.json\""), "{html}");
    assert!(html.contains("<title>Backroom API reference</title>"), "{html}");
    let res = send(&app, Method::GET, "/openapi.json").await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// Parses `http_requests_total{method="GET",route="/x",status="200"} 1` lines.
fn requests_seen(metrics: &str) -> BTreeSet<(String, String, String)> {
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let len = line[start..].find('"')?;
        Some(line[start..start + len].to_owned())
    };
    metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| Some((label(l, "method")?, label(l, "route")?, label(l, "status")?)))
        .collect()
}

/// The path with each `{param}` filled in.
fn concrete(path: &str) -> String {
    path.split('/').map(|seg| if seg.starts_with('{') { "x_nope" } else { seg }).collect::<Vec<_>>().join("/")
}

/// The router serves exactly the documented operations: the registrations and the document
/// list the same methods and paths (the router takes its routes from nowhere else), every
/// documented operation reaches a route with its documented path, and a documented path
/// refuses every method the document does not list for it.
#[tokio::test]
async fn the_router_serves_exactly_the_documented_operations() {
    let doc = document();
    let documented: BTreeSet<(String, String)> =
        operations(&doc).into_iter().map(|(method, path, _)| (method, path)).collect();
    let registered: BTreeSet<(String, String)> = backroom_api::routes::all()
        .into_parts()
        .served
        .into_iter()
        .map(|(method, path)| (method.as_str().to_owned(), path))
        .collect();
    assert_eq!(registered, documented, "registered routes and documented operations differ");
    // ...and `router()` adds layers and the fallback to them, no route of its own.
    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap();
    let body = &lib[lib.find("pub fn router(").expect("fn router")..];
    let body = &body[..body.find("\n}\n").expect("the end of fn router")];
    for call in [".route(", ".route_service(", ".nest(", ".nest_service(", ".merge("] {
        assert!(!body.contains(call), "router() adds a route with {call}: register it in crate::routes instead");
    }

    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let methods = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in &methods {
            let res = send(&app, method.clone(), &concrete(path)).await;
            let listed = documented.contains(&(method.as_str().to_owned(), path.clone()));
            if listed {
                assert_ne!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: documented, not served");
            } else {
                assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: served, not documented");
            }
        }
    }
    // Each documented operation was routed by its documented path (the matched route is the
    // `route` label of the request metrics).
    let seen = requests_seen(&backroom_api::metrics_handle().render());
    for (method, path) in &documented {
        assert!(
            seen.iter().any(|(m, r, s)| m == method && r == path && s != "405"),
            "{method} {path}: no request was routed to it; seen: {seen:?}"
        );
    }
}
