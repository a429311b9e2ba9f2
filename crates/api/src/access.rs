//! Who may call which admin route: permission as data.
//!
//! Each `/admin` route states the permission it needs and what its body holds on its
//! registration line ([`crate::routes::Routes::admin`]); those lines make the [`AccessTable`].
//! [`guard`] checks it before any handler or body extractor runs:
//!
//! 1. no `Authorization: Bearer <key>`, or an unknown or revoked key: `401 unauthenticated`
//!    with `WWW-Authenticate: Bearer`;
//! 2. a role without the route's permission: `403 forbidden`, whatever the body holds;
//! 3. the [`backroom_auth::Principal`] goes into the request's extensions for the [`crate::extract::Staff`]
//!    extractor, the route's [`Content`] decides whether its JSON body is scanned for card
//!    numbers, and a write's audit action goes along for [`crate::audit::layer`].
//!
//! It fails closed: an `/admin` route that reaches the guard without an entry (added to the
//! router some other way) is `403` for every key, and a method the table does not list for a
//! path is `405`, so no handler runs without its permission checked.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use backroom_auth::Permission;

use crate::AppState;
use crate::error::ApiError;

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

/// One admin route: its method and path as the router matches them, with what the guard
/// needs to know. Made by [`crate::routes::Routes::admin`] from the route's registration.
#[derive(Debug, Clone)]
pub struct AdminRoute {
    pub method: Method,
    /// The path as the router matches it (`/admin/products/{id}`).
    pub path: String,
    pub permission: Permission,
    pub content: Content,
    /// What the audit log calls a successful call (`product.update`); `None` for reads,
    /// which are not audited.
    pub action: Option<String>,
}

/// Every admin route: built from the registrations ([`crate::routes::all`]), so a route is
/// in the table exactly when it is served under `/admin`.
#[derive(Debug, Clone, Default)]
pub struct AccessTable(Vec<AdminRoute>);

impl AccessTable {
    pub fn new(routes: Vec<AdminRoute>) -> Self {
        Self(routes)
    }

    /// The entries, in registration order.
    pub fn routes(&self) -> &[AdminRoute] {
        &self.0
    }

    /// The audit action of a route, when it is a write.
    pub fn action(&self, method: &Method, matched: &str) -> Option<&str> {
        self.0.iter().find(|r| r.method == method && r.path == matched).and_then(|r| r.action.as_deref())
    }

    /// Looks `method` and the router's matched path up in the table (`HEAD` as `GET`).
    pub fn decide(&self, method: &Method, matched: Option<&str>) -> Decision {
        let Some(path) = matched else {
            return Decision::NoRoute;
        };
        let method = if method == Method::HEAD { &Method::GET } else { method };
        let mut allowed = Vec::new();
        for r in self.0.iter().filter(|r| r.path == path) {
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

/// The guard's state: the app's, and the access table.
#[derive(Clone)]
pub struct Guard {
    state: AppState,
    table: Arc<AccessTable>,
}

impl Guard {
    pub fn new(state: AppState, table: AccessTable) -> Self {
        Self { state, table: Arc::new(table) }
    }
}

/// The bearer token of a request, if it sends one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The middleware in front of every `/admin` route: authenticate, then authorise by the table,
/// before any handler or body extractor runs.
pub async fn guard(State(Guard { state: s, table }): State<Guard>, mut req: Request, next: Next) -> Response {
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
    match table.decide(req.method(), matched.as_deref()) {
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
                "an admin route registered past Routes::admin was refused");
            ApiError::Forbidden.into_response()
        }
        Decision::Route { permission, content } => {
            if principal.require(permission).is_err() {
                return ApiError::Forbidden.into_response();
            }
            let action =
                matched.as_deref().and_then(|m| table.action(req.method(), m)).map(std::sync::Arc::<str>::from);
            if let Some(action) = action {
                req.extensions_mut().insert(crate::audit::Audited { action });
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

    fn access() -> AccessTable {
        crate::routes::all().into_parts().access
    }

    fn table() -> BTreeSet<(String, String)> {
        access().routes().iter().map(|r| (r.method.as_str().to_owned(), r.path.clone())).collect()
    }

    #[test]
    fn every_route_is_listed_once_under_admin() {
        let access = access();
        assert_eq!(table().len(), access.routes().len(), "a route is listed twice");
        assert!(access.routes().len() >= 25, "{} admin routes", access.routes().len());
        for r in access.routes() {
            assert!(r.path.starts_with("/admin/"), "{} {}", r.method, r.path);
        }
    }

    /// The admin routes are registered with their entries (`Routes::admin`); this checks the
    /// table against the OpenAPI document, so that neither lists an admin operation the other
    /// lacks.
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
        for r in access().routes().iter().filter(|r| r.content == Content::ProductData) {
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
        let access = access();
        let decide = |method: &Method, matched: Option<&str>| access.decide(method, matched);
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
