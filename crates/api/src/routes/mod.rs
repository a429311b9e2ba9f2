//! The routes, registered once each with their OpenAPI description.
//!
//! A handler carries its `#[utoipa::path]` annotation (method, path, parameters, answers) and
//! its doc comment (first paragraph the summary, the rest the description). Each routes module
//! registers its handlers in one function per capability, one line each:
//!
//! ```ignore
//! r.public(routes!(get_product));
//! r.admin(CatalogWrite, ProductData, routes!(create_product));
//! ```
//!
//! `routes!` (utoipa-axum's) reads the method and path from the annotation, so the router, the
//! OpenAPI document ([`crate::openapi`]) and, for `/admin` routes, the access table that
//! [`crate::access::guard`] checks ([`AccessTable`]) all come from that one line. [`all`] is
//! every capability together; nothing else adds a route to the app.

pub mod admin;
pub mod checkout;
pub mod customers;
pub mod feed;
pub mod imports;
pub mod oms;
pub mod ops;
pub mod price_lists;
pub mod pricing;
pub mod shipping;
pub mod stock_batch;
pub mod store;
pub mod stripe_webhooks;
pub mod webhooks;

use std::collections::BTreeSet;

use axum::Router;
use axum::http::Method;
use backroom_auth::{Permission, Role};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::AppState;
use crate::access::{AccessTable, AdminRoute, Content};

/// The request's `Idempotency-Key` (1–255 printable ASCII characters), or `400
/// idempotency_key_required`: for checkout, refunds and stock batches alike.
pub(crate) fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<String, crate::error::ApiError> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| backroom_checkout::idempotency::valid_key(k))
        .map(str::to_owned)
        .ok_or(crate::error::ApiError::IdempotencyKeyRequired)
}

/// Every route of the app, capability by capability.
pub fn all() -> Routes {
    let mut r = Routes::new();
    ops::routes(&mut r);
    admin::routes(&mut r);
    store::routes(&mut r);
    feed::routes(&mut r);
    imports::routes(&mut r);
    checkout::routes(&mut r);
    customers::routes(&mut r);
    shipping::routes(&mut r);
    price_lists::routes(&mut r);
    pricing::routes(&mut r);
    oms::routes(&mut r);
    stock_batch::routes(&mut r);
    stripe_webhooks::routes(&mut r);
    webhooks::routes(&mut r);
    r
}

/// Routes as registered: the axum routes, their OpenAPI operations, and the access entry of
/// each `/admin` one.
pub struct Routes {
    router: OpenApiRouter<AppState>,
    access: Vec<AdminRoute>,
    served: BTreeSet<(Method, String)>,
    customer: BTreeSet<(Method, String)>,
}

/// What [`Routes`] come to once all are registered.
pub struct Parts {
    /// The routes, to serve (layers and fallback are added by [`crate::router`]).
    pub router: Router<AppState>,
    /// Their operations, paths and schemas; [`crate::openapi`] adds the rest of the document.
    pub openapi: utoipa::openapi::OpenApi,
    /// Who may call which `/admin` route.
    pub access: AccessTable,
    /// Every method and path registered (`GET` routes answer `HEAD` as well).
    pub served: BTreeSet<(Method, String)>,
    /// The store routes that need a customer's token ([`Routes::customer`]).
    pub customer: BTreeSet<(Method, String)>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    pub fn new() -> Self {
        Self { router: OpenApiRouter::new(), access: Vec::new(), served: BTreeSet::new(), customer: BTreeSet::new() }
    }

    /// Routes anyone may call (never under `/admin`). Panics on an `/admin` path: those are
    /// registered with [`Routes::admin`], with their permission.
    pub fn public(&mut self, route: UtoipaMethodRouter<AppState>) -> &mut Self {
        for (path, _) in operations(&route) {
            assert!(!under_admin(&path), "{path}: an /admin route is registered with Routes::admin");
        }
        self.add(route)
    }

    /// A customer's own routes under `/store`: without a live customer token `401
    /// unauthenticated` (their handlers take [`crate::extract::Customer`]); what another
    /// customer owns is `404`. The access-matrix test checks each from this list.
    pub fn customer(&mut self, route: UtoipaMethodRouter<AppState>) -> &mut Self {
        for (path, method) in operations(&route) {
            assert!(path.starts_with("/store/"), "{path}: a customer's route lives under /store");
            self.customer.insert((method, path));
        }
        self.add(route)
    }

    /// Routes under `/admin` that need `permission`; `content` says whether their JSON body is
    /// scanned for card numbers. Each becomes an entry of the access table, and its OpenAPI
    /// description says which roles may call it. A write's audit action is derived from its
    /// method and path ([`crate::audit::derive_action`]); where that would be wrong, name it:
    /// `r.admin(KeysManage, Scanned, routes!(revoke_key)).action("api_key.revoke");`.
    /// Panics on a path outside `/admin`, or an operation whose annotation does not name the
    /// `api_key` security scheme.
    pub fn admin(
        &mut self,
        permission: Permission,
        content: Content,
        mut route: UtoipaMethodRouter<AppState>,
    ) -> AdminRegistration<'_> {
        let from = self.access.len();
        for (path, item) in route.1.paths.iter_mut() {
            assert!(under_admin(path), "{path}: only /admin routes are registered with Routes::admin");
            for (method, op) in operations_mut(item) {
                assert!(op.security.is_some(), "{method} {path}: add `security((\"api_key\" = []))` to its annotation");
                let roles: Vec<String> =
                    Role::ALL.iter().filter(|r| r.allows(permission)).map(|r| format!("`{r}`")).collect();
                let needs = format!("Needs an API key whose role is {}.", roles.join(", "));
                op.description = Some(match op.description.take() {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{needs}"),
                    _ => needs,
                });
                let action = crate::audit::derive_action(&method, path);
                self.access.push(AdminRoute { method, path: path.clone(), permission, content, action });
            }
        }
        self.add(route);
        AdminRegistration { routes: self, from }
    }

    /// Registers `route`. Panics on a method and path registered before.
    fn add(&mut self, route: UtoipaMethodRouter<AppState>) -> &mut Self {
        for (path, method) in operations(&route) {
            assert!(self.served.insert((method.clone(), path.clone())), "{method} {path} is registered twice");
        }
        self.router = std::mem::take(&mut self.router).routes(route);
        self
    }

    /// The router, the document's paths and the access table.
    pub fn into_parts(self) -> Parts {
        let (router, openapi) = self.router.split_for_parts();
        Parts { router, openapi, access: AccessTable::new(self.access), served: self.served, customer: self.customer }
    }
}

/// The admin routes one [`Routes::admin`] call registered, to name their audit action.
pub struct AdminRegistration<'a> {
    routes: &'a mut Routes,
    from: usize,
}

impl AdminRegistration<'_> {
    /// The audit action (`<resource>.<verb>`, such as `customer.erase`) of these routes, in
    /// place of the one derived from method and path. Panics on a read (reads are not
    /// audited) or an action not shaped `<resource>.<verb>` in snake_case.
    pub fn action(self, action: &'static str) {
        assert!(crate::audit::is_action(action), "{action}: an audit action is <resource>.<verb> in snake_case");
        for r in &mut self.routes.access[self.from..] {
            assert!(r.action.is_some(), "{} {}: reads are not audited", r.method, r.path);
            r.action = Some(action.to_owned());
        }
    }
}

fn under_admin(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// Every path and method of a registration.
fn operations(route: &UtoipaMethodRouter<AppState>) -> impl Iterator<Item = (String, Method)> + '_ {
    route.1.paths.iter().flat_map(|(path, item)| {
        // A copy, to list its methods with the one enumeration of a path item's operations
        // (registration runs once, at start).
        let methods: Vec<Method> = operations_mut(&mut item.clone()).map(|(method, _)| method).collect();
        methods.into_iter().map(move |method| (path.clone(), method))
    })
}

/// A path item's operations with their methods.
pub(crate) fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, item.get.as_mut()),
        (Method::PUT, item.put.as_mut()),
        (Method::POST, item.post.as_mut()),
        (Method::DELETE, item.delete.as_mut()),
        (Method::OPTIONS, item.options.as_mut()),
        (Method::HEAD, item.head.as_mut()),
        (Method::PATCH, item.patch.as_mut()),
        (Method::TRACE, item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
}
