//! The audit log's middleware: every `/admin` write answered `2xx` is recorded
//! ([`backroom_auth::audit`]) with its actor, action, resource id and client address, after
//! the handler succeeded and before the answer leaves. A failed write, a read, a refused or
//! unauthenticated call: nothing is recorded. The request's body is never looked at.
//!
//! Each write route's action is data on its registration line ([`crate::routes::Routes::admin`]):
//! derived from its method and path by [`derive_action`], or named there with `.action(…)`.
//! The guard ([`crate::access::guard`]) puts it into the request as [`Audited`].
//!
//! Recording is a write of its own, right after the handler's. If it fails the client still
//! gets its success (the change is made; turning it into an error would invite a retry that
//! makes it twice): the failure is logged as an error and counted in
//! `audit_log_failures_total`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use backroom_auth::Principal;

use crate::AppState;
use crate::client::ClientAddr;

/// The most bytes of a `201` answer read to find the created resource's `id`. Answers are
/// small JSON documents; a larger one is recorded without a resource id.
const MAX_CREATED_BODY: usize = 1024 * 1024;

/// The audit action of the request's route, put there by the guard for writes.
#[derive(Debug, Clone)]
pub struct Audited {
    pub action: Arc<str>,
}

/// Whether `action` is shaped `<resource>.<verb>`, both snake_case.
pub fn is_action(action: &str) -> bool {
    let word = |w: &str| {
        !w.is_empty()
            && w.starts_with(|c: char| c.is_ascii_lowercase())
            && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    action.split_once('.').is_some_and(|(resource, verb)| word(resource) && word(verb))
}

/// The action of a write route, from its method and path (`None` for reads):
///
/// - `POST` to a collection (a plural last segment) creates one of it: `POST /admin/products`
///   and `POST /admin/products/{id}/variants` are `product.create` and `variant.create`;
/// - `POST` to another word after a resource is that action on it:
///   `POST /admin/customers/{id}/erase` is `customer.erase`;
/// - `PATCH` updates, `PUT` sets, `DELETE` deletes what the path ends with:
///   `PATCH /admin/variants/{variant_id}` is `variant.update`, `PUT /admin/variants/{variant_id}/stock`
///   is `stock.set`.
///
/// Segments are made singular and snake_case (`api-keys` is `api_key`, `categories` is
/// `category`). Where this is wrong, the registration names the action.
pub fn derive_action(method: &Method, path: &str) -> Option<String> {
    let verb = match *method {
        Method::POST => "create",
        Method::PATCH => "update",
        Method::PUT => "set",
        Method::DELETE => "delete",
        _ => return None,
    };
    let segments: Vec<&str> = path.trim_start_matches("/admin").split('/').filter(|s| !s.is_empty()).collect();
    let is_param = |s: &str| s.starts_with('{');
    let last = *segments.last()?;
    let previous_word = segments.iter().rev().skip(1).find(|s| !is_param(s)).copied();
    let (resource, verb) = if is_param(last) {
        (previous_word?, verb)
    } else if *method == Method::POST && !last.ends_with('s') {
        // A word that is not a collection: an action on the resource before it.
        match previous_word {
            Some(resource) if segments.len() >= 3 && is_param(segments[segments.len() - 2]) => (resource, last),
            _ => (last, verb),
        }
    } else {
        (last, verb)
    };
    let action = format!("{}.{}", singular(resource), verb.replace('-', "_"));
    is_action(&action).then_some(action)
}

/// `categories` → `category`, `addresses` → `address`, `api-keys` → `api_key`, `stock` → `stock`.
fn singular(word: &str) -> String {
    let word = word.replace('-', "_");
    if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = word.strip_suffix("sses") {
        format!("{stem}ss")
    } else if word.ends_with('s') && !word.ends_with("ss") {
        word[..word.len() - 1].to_owned()
    } else {
        word
    }
}

/// The value of the last `{parameter}` of `template` in `path` (`/admin/products/{id}` and
/// `/admin/products/prod_1` give `prod_1`).
pub fn last_path_param(template: &str, path: &str) -> Option<String> {
    template
        .split('/')
        .zip(path.split('/'))
        .filter(|(t, _)| t.starts_with('{') && t.ends_with('}'))
        .map(|(_, v)| v.to_owned())
        .last()
        .filter(|v| !v.is_empty())
}

/// Records each successful admin write in the audit log (see the module's description).
pub async fn layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(audited) = req.extensions().get::<Audited>().cloned() else {
        return next.run(req).await;
    };
    let Some(principal) = req.extensions().get::<Principal>().cloned() else {
        return next.run(req).await;
    };
    let ip = ClientAddr::of(req.extensions());
    let path_id = req.extensions().get::<MatchedPath>().and_then(|m| last_path_param(m.as_str(), req.uri().path()));
    let res = next.run(req).await;
    if !res.status().is_success() {
        return res;
    }
    let (res, resource_id) = if res.status() == StatusCode::CREATED {
        match created_id(res).await {
            (res, Some(id)) => (res, Some(id)),
            (res, None) => (res, path_id),
        }
    } else {
        (res, path_id)
    };
    if let Err(e) = s.audit.record(&principal.actor, &audited.action, resource_id.as_deref(), ip.0).await {
        metrics::counter!("audit_log_failures_total").increment(1);
        tracing::error!(error = %e, action = %audited.action, actor = principal.actor.id(),
            "could not record a staff write in the audit log; the write itself succeeded");
    }
    res
}

/// The `id` of a `201` answer's JSON body, and the answer with its body put back.
async fn created_id(res: Response) -> (Response, Option<String>) {
    let (parts, body) = res.into_parts();
    match axum::body::to_bytes(body, MAX_CREATED_BODY).await {
        Ok(bytes) => {
            let id = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
            (Response::from_parts(parts, Body::from(bytes)), id)
        }
        Err(e) => {
            // The body could not be read whole: the client's answer is lost either way.
            tracing::error!(error = %e, "could not read a created resource's answer");
            (Response::from_parts(parts, Body::empty()), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_derived_from_method_and_path() {
        let d = |m: Method, p: &str| derive_action(&m, p);
        assert_eq!(d(Method::POST, "/admin/products").as_deref(), Some("product.create"));
        assert_eq!(d(Method::PATCH, "/admin/products/{id}").as_deref(), Some("product.update"));
        assert_eq!(d(Method::DELETE, "/admin/products/{id}").as_deref(), Some("product.delete"));
        assert_eq!(d(Method::POST, "/admin/products/{id}/variants").as_deref(), Some("variant.create"));
        assert_eq!(d(Method::PATCH, "/admin/variants/{variant_id}").as_deref(), Some("variant.update"));
        assert_eq!(d(Method::PUT, "/admin/variants/{variant_id}/stock").as_deref(), Some("stock.set"));
        assert_eq!(d(Method::POST, "/admin/categories").as_deref(), Some("category.create"));
        assert_eq!(d(Method::POST, "/admin/stock-locations").as_deref(), Some("stock_location.create"));
        assert_eq!(d(Method::POST, "/admin/api-keys").as_deref(), Some("api_key.create"));
        assert_eq!(d(Method::POST, "/admin/customers/{id}/erase").as_deref(), Some("customer.erase"));
        assert_eq!(d(Method::POST, "/admin/orders/{id}/refunds").as_deref(), Some("refund.create"));
        assert_eq!(d(Method::POST, "/admin/customers/{id}/addresses").as_deref(), Some("address.create"));
        assert_eq!(d(Method::GET, "/admin/products"), None);
        assert_eq!(d(Method::HEAD, "/admin/products/{id}"), None);
    }

    #[test]
    fn every_admin_write_has_an_action_and_no_read_has_one() {
        let access = crate::routes::all().into_parts().access;
        let mut actions = std::collections::BTreeMap::new();
        for r in access.routes() {
            match (&r.method, &r.action) {
                (&Method::GET | &Method::HEAD, None) => {}
                (&Method::GET | &Method::HEAD, Some(a)) => panic!("{} {} is a read with action {a}", r.method, r.path),
                (_, Some(a)) => {
                    assert!(is_action(a), "{a}");
                    actions.insert(format!("{} {}", r.method, r.path), a.clone());
                }
                (_, None) => panic!("{} {} is a write without an action", r.method, r.path),
            }
        }
        assert_eq!(actions["DELETE /admin/api-keys/{id}"], "api_key.revoke");
        assert_eq!(actions["POST /admin/api-keys"], "api_key.create");
        assert_eq!(actions["PUT /admin/variants/{variant_id}/stock"], "stock.set");
    }

    #[test]
    fn the_last_path_parameter_is_the_resource() {
        assert_eq!(last_path_param("/admin/products/{id}", "/admin/products/prod_1").as_deref(), Some("prod_1"));
        assert_eq!(
            last_path_param("/admin/variants/{variant_id}/stock", "/admin/variants/var_9/stock").as_deref(),
            Some("var_9")
        );
        assert_eq!(last_path_param("/admin/products", "/admin/products"), None);
    }

    #[test]
    fn actions_are_snake_case_pairs() {
        for ok in ["product.create", "api_key.revoke", "stock.set", "price_list2.update"] {
            assert!(is_action(ok), "{ok}");
        }
        for bad in ["product", "Product.create", "product.", ".create", "a.b.c", "api-key.create", "_x.y"] {
            assert!(!is_action(bad), "{bad}");
        }
    }
}
