//! Who may call which admin route: permission as data.
//!
//! [`ADMIN_ROUTES`] is the one table of `/admin/*`: each route's method, path, the permission it
//! needs, what its body holds, and its handler. The router registers the admin routes from it
//! and nothing else ([`admin_router`]); [`guard`] checks it before any handler or body
//! extractor runs:
//!
//! 1. no `Authorization: Bearer <key>`, or an unknown or revoked key: `401 unauthenticated`
//!    with `WWW-Authenticate: Bearer`;
//! 2. a role without the route's permission: `403 forbidden`, whatever the body holds;
//! 3. the [`backroom_auth::Principal`] goes into the request's extensions for the [`crate::extract::Staff`]
//!    extractor, and the route's [`Content`] decides whether its JSON body is scanned for card
//!    numbers.
//!
//! It fails closed: an `/admin` route that reaches the guard without an entry (registered
//! past the table) is `403` for every key, and a method the table does not list for a path is
//! `405`, so no handler runs without its permission checked.

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use backroom_auth::Permission;

use crate::AppState;
use crate::error::ApiError;
use crate::routes::{admin, checkout};

/// What the body of an admin route holds, for the card-number scan ([`crate::pci`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Catalog or stock data: titles, descriptions, attributes, SKUs, locations. Barcodes
    /// there (an EAN-13 passes the Luhn check one time in ten) are identifiers: not scanned.
    ProductData,
    /// Anything else, or no body: a JSON body is scanned like a shopper's.
    Scanned,
}

/// Marks a request whose route carries product data; [`crate::extract::ApiJson`] then skips
/// the card-number scan. Only [`guard`] inserts it, from the table.
#[derive(Debug, Clone, Copy)]
pub struct ProductData;

/// One admin route.
#[derive(Debug)]
pub struct AdminRoute {
    pub method: Method,
    /// The path as the router matches it (`/admin/products/{id}`).
    pub path: &'static str,
    pub permission: Permission,
    pub content: Content,
    /// The handler, registered for `method` under `path`.
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

macro_rules! admin {
    ($method:ident $path:literal, $permission:ident, $content:ident, $handler:path) => {
        AdminRoute {
            method: Method::$method,
            path: $path,
            permission: Permission::$permission,
            content: Content::$content,
            handler: |filter| on(filter, $handler),
        }
    };
}

/// Every admin route. A new one is added here, and only here.
pub static ADMIN_ROUTES: &[AdminRoute] = &[
    admin!(GET "/admin/products", CatalogRead, Scanned, admin::list_products),
    admin!(POST "/admin/products", CatalogWrite, ProductData, admin::create_product),
    admin!(GET "/admin/products/{id}", CatalogRead, Scanned, admin::get_product),
    admin!(PATCH "/admin/products/{id}", CatalogWrite, ProductData, admin::update_product),
    admin!(DELETE "/admin/products/{id}", CatalogWrite, Scanned, admin::delete_product),
    admin!(POST "/admin/products/{id}/variants", CatalogWrite, ProductData, admin::add_variant),
    admin!(GET "/admin/variants/{variant_id}", CatalogRead, Scanned, admin::get_variant),
    admin!(PATCH "/admin/variants/{variant_id}", CatalogWrite, ProductData, admin::update_variant),
    admin!(DELETE "/admin/variants/{variant_id}", CatalogWrite, Scanned, admin::delete_variant),
    admin!(PUT "/admin/variants/{variant_id}/stock", InventoryWrite, ProductData, admin::set_stock),
    admin!(GET "/admin/variants/{variant_id}/stock", InventoryRead, Scanned, admin::get_stock),
    admin!(GET "/admin/variants/{variant_id}/stock/adjustments", InventoryRead, Scanned, admin::stock_adjustments),
    admin!(GET "/admin/stock-locations", InventoryRead, Scanned, admin::list_locations),
    admin!(POST "/admin/stock-locations", InventoryWrite, ProductData, admin::create_location),
    admin!(GET "/admin/categories", CatalogRead, Scanned, admin::list_categories),
    admin!(POST "/admin/categories", CatalogWrite, ProductData, admin::create_category),
    admin!(GET "/admin/categories/{id}", CatalogRead, Scanned, admin::get_category),
    admin!(PATCH "/admin/categories/{id}", CatalogWrite, ProductData, admin::update_category),
    admin!(DELETE "/admin/categories/{id}", CatalogWrite, Scanned, admin::delete_category),
    admin!(GET "/admin/api-keys", KeysManage, Scanned, admin::list_keys),
    admin!(POST "/admin/api-keys", KeysManage, Scanned, admin::create_key),
    admin!(DELETE "/admin/api-keys/{id}", KeysManage, Scanned, admin::revoke_key),
    admin!(GET "/admin/orders", OrdersRead, Scanned, checkout::list_orders),
    admin!(GET "/admin/orders/{id}", OrdersRead, Scanned, checkout::get_order),
    admin!(GET "/admin/outbox", OpsRead, Scanned, checkout::outbox),
];

/// The admin routes of [`ADMIN_ROUTES`], to merge into the app's router.
pub fn admin_router() -> Router<AppState> {
    ADMIN_ROUTES.iter().fold(Router::new(), |router, r| {
        let filter = MethodFilter::try_from(r.method.clone()).expect("the table uses standard methods");
        router.route(r.path, (r.handler)(filter))
    })
}

/// What the table says of a request to an `/admin` path.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The route's entry.
    Route { permission: Permission, content: Content },
    /// No route matched the path (the router answers `404`).
    NoRoute,
    /// The table lists the path, not this method: `405` with these methods in `Allow`.
    MethodNotAllowed(Vec<Method>),
    /// A route the router matched that the table does not list: refused.
    Unlisted,
}

/// Looks `method` and the router's matched path up in the table (`HEAD` as `GET`).
pub fn decide(method: &Method, matched: Option<&str>) -> Decision {
    let Some(path) = matched else {
        return Decision::NoRoute;
    };
    let method = if method == Method::HEAD { &Method::GET } else { method };
    let mut allowed = Vec::new();
    for r in ADMIN_ROUTES.iter().filter(|r| r.path == path) {
        if r.method == method {
            return Decision::Route { permission: r.permission, content: r.content };
        }
        allowed.push(r.method.clone());
    }
    if allowed.is_empty() {
        return Decision::Unlisted;
    }
    if allowed.contains(&Method::GET) {
        allowed.push(Method::HEAD);
    }
    Decision::MethodNotAllowed(allowed)
}

/// The bearer token of a request, if it sends one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The middleware in front of every `/admin` route: authenticate, then authorise by the table,
/// before any handler or body extractor runs.
pub async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !(path == "/admin" || path.starts_with("/admin/")) {
        return next.run(req).await;
    }
    let principal = match bearer(req.headers()) {
        None => return ApiError::Unauthenticated.into_response(),
        Some(token) => match s.auth.authenticate(token).await {
            Ok(Some(p)) => p,
            Ok(None) => return ApiError::Unauthenticated.into_response(),
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    match decide(req.method(), matched.as_deref()) {
        Decision::NoRoute => next.run(req).await,
        Decision::MethodNotAllowed(methods) => {
            let allow = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(",");
            let mut res = ApiError::MethodNotAllowed.into_response();
            if let Ok(v) = HeaderValue::from_str(&allow) {
                res.headers_mut().insert(header::ALLOW, v);
            }
            res
        }
        Decision::Unlisted => {
            tracing::error!(route = matched.as_deref().unwrap_or(""), method = %req.method(),
                "an admin route missing from access::ADMIN_ROUTES was refused");
            ApiError::Forbidden.into_response()
        }
        Decision::Route { permission, content } => {
            if principal.require(permission).is_err() {
                return ApiError::Forbidden.into_response();
            }
            req.extensions_mut().insert(principal);
            if content == Content::ProductData {
                req.extensions_mut().insert(ProductData);
            }
            next.run(req).await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn table() -> BTreeSet<(String, String)> {
        ADMIN_ROUTES.iter().map(|r| (r.method.as_str().to_owned(), r.path.to_owned())).collect()
    }

    #[test]
    fn every_route_is_listed_once_under_admin() {
        assert_eq!(table().len(), ADMIN_ROUTES.len(), "a route is listed twice");
        for r in ADMIN_ROUTES {
            assert!(r.path.starts_with("/admin/"), "{} {}", r.method, r.path);
            assert!(MethodFilter::try_from(r.method.clone()).is_ok(), "{} {}", r.method, r.path);
        }
    }

    /// The registered admin routes are the table's (the router takes them from nowhere else);
    /// this checks the table against the OpenAPI document, so that neither lists an admin
    /// operation the other lacks.
    #[test]
    fn every_documented_admin_operation_has_an_entry_and_back() {
        let doc: serde_json::Value = serde_json::from_str(&crate::openapi::json()).unwrap();
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            if !path.starts_with("/admin") {
                continue;
            }
            for method in ops.as_object().unwrap().keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        assert_eq!(documented, table());
    }

    #[test]
    fn only_catalog_and_stock_writes_carry_product_data() {
        for r in ADMIN_ROUTES.iter().filter(|r| r.content == Content::ProductData) {
            assert!(
                matches!(r.permission, Permission::CatalogWrite | Permission::InventoryWrite),
                "{} {} is not catalog or stock data",
                r.method,
                r.path
            );
            assert!(matches!(r.method, Method::POST | Method::PUT | Method::PATCH), "{} {}", r.method, r.path);
        }
    }

    #[test]
    fn the_table_decides_and_fails_closed() {
        assert_eq!(
            decide(&Method::GET, Some("/admin/products")),
            Decision::Route { permission: Permission::CatalogRead, content: Content::Scanned }
        );
        assert_eq!(
            decide(&Method::HEAD, Some("/admin/products")),
            Decision::Route { permission: Permission::CatalogRead, content: Content::Scanned }
        );
        assert_eq!(
            decide(&Method::POST, Some("/admin/products")),
            Decision::Route { permission: Permission::CatalogWrite, content: Content::ProductData }
        );
        assert_eq!(
            decide(&Method::POST, Some("/admin/api-keys")),
            Decision::Route { permission: Permission::KeysManage, content: Content::Scanned }
        );
        assert_eq!(
            decide(&Method::PUT, Some("/admin/products")),
            Decision::MethodNotAllowed(vec![Method::GET, Method::POST, Method::HEAD])
        );
        assert_eq!(
            decide(&Method::DELETE, Some("/admin/outbox")),
            Decision::MethodNotAllowed(vec![Method::GET, Method::HEAD])
        );
        assert_eq!(decide(&Method::GET, Some("/admin/not-in-the-table")), Decision::Unlisted);
        assert_eq!(decide(&Method::GET, None), Decision::NoRoute);
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(bearer(&with("Bearer bk_1")), Some("bk_1"));
        assert_eq!(bearer(&with("bearer bk_1")), Some("bk_1"));
        assert_eq!(bearer(&with("BEARER  bk_1 ")), Some("bk_1"));
        assert_eq!(bearer(&with("Basic abc")), None);
        assert_eq!(bearer(&with("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
