//! The committed `docs/openapi.json` must equal what the code generates.
//! Refresh it with `UPDATE_OPENAPI=1 cargo test -p backroom-api --test openapi_drift`.

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

#[test]
fn committed_openapi_matches_the_code() {
    let generated = backroom_api::openapi::json() + "\n";
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(COMMITTED, &generated).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p backroom-api --test openapi_drift` and commit it"
    );
}

#[test]
fn admin_operations_need_a_key_and_errors_are_problems() {
    let doc: serde_json::Value = serde_json::from_str(&backroom_api::openapi::json()).unwrap();
    let mut operations = 0;
    let mut operation_ids = std::collections::HashSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            operations += 1;
            let needs_key = path.starts_with("/admin");
            assert_eq!(op.get("security").is_some(), needs_key, "{method} {path}: security");
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            assert!(operation_ids.insert(id.clone()), "{method} {path}: operationId {id} is not unique");
            // The statuses the extractors answer must be listed where they can happen.
            // The edge answers these on any route: sizes, and card-shaped headers.
            let mut expected = vec!["414", "431", "422"];
            if needs_key {
                expected.extend(["401", "403"]);
                let scheme = &op["responses"]["401"]["headers"]["WWW-Authenticate"]["schema"]["enum"];
                assert_eq!(scheme, &serde_json::json!(["Bearer"]), "{method} {path}: 401 without WWW-Authenticate");
            }
            if op.get("requestBody").is_some() {
                expected.extend(["400", "413", "415", "422"]);
            }
            for status in expected {
                assert!(op["responses"].get(status).is_some(), "{method} {path}: {status} not documented");
            }
            for (status, res) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') {
                    let schema = &res["content"]["application/problem+json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/Problem", "{method} {path} {status}");
                }
            }
        }
    }
    assert!(operations >= 29, "{operations} operations");
}

#[test]
fn every_link_names_an_operation_and_its_parameters() {
    let doc: serde_json::Value = serde_json::from_str(&backroom_api::openapi::json()).unwrap();
    let mut params_of = std::collections::HashMap::new();
    for ops in doc["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            let names: Vec<String> = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            params_of.insert(op["operationId"].as_str().unwrap().to_owned(), names);
        }
    }
    let mut links = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (status, res) in op["responses"].as_object().unwrap() {
                for (name, link) in res.get("links").and_then(|l| l.as_object()).into_iter().flatten() {
                    links += 1;
                    let at = format!("{method} {path} {status} link {name}");
                    assert!(link.get("operation_id").is_none(), "{at}: operation_id instead of operationId");
                    let target = link["operationId"].as_str().unwrap_or_else(|| panic!("{at}: no operationId"));
                    let known = params_of.get(target).unwrap_or_else(|| panic!("{at}: no operation {target}"));
                    for param in link["parameters"].as_object().unwrap().keys() {
                        assert!(known.contains(param), "{at}: {target} has no parameter {param}");
                    }
                }
            }
        }
    }
    assert!(links > 0, "no links");
}
