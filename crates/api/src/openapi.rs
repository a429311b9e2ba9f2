//! The OpenAPI document: the operations of the registered routes ([`crate::routes::all`]), from
//! their handlers' annotations, with the title, description and tags of [`ApiDoc`] and the
//! errors common to whole classes of operations. A committed copy lives in `docs/openapi.json`;
//! a test fails when the two drift.

pub mod examples;

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's title, description, tags and security scheme; its paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(title = "Backroom", description = "Headless commerce backend: catalog, stock, carts, checkout, orders. A readable reference of this document is served at `/docs`; the repository's `docs/api.md` describes what it leaves open (conventions, every error code, limits, overload, settings).\n\nThe main flow: staff create a product with its variants and prices (`POST /admin/products`) and set each variant's stock (`PUT /admin/variants/{variant_id}/stock`); a shopper's storefront creates a cart (`POST /store/carts`), adds lines (`POST /store/carts/{id}/items`) and checks out (`POST /store/carts/{id}/checkout`), which answers the order. Staff calls need `Authorization: Bearer <api key>`; storefront calls need no key. Errors are problem documents (`application/problem+json`) with a stable `code`.\n\nEvery answer carries `X-Content-Type-Options: nosniff`; answers under `/admin`, `/store/carts`, `/store/orders`, `/store/customers` and `/store/auth` carry `Cache-Control: no-store`. Every `503` carries `Retry-After`; `503 overloaded` means the request was shed before any of it was done. A request whose headers total over 16 KiB, with one header line over 8 KiB, or with more than 100 header lines, is `431 request_header_fields_too_large`; a URI over 8 KiB is `414 uri_too_long`. An `Idempotency-Key` or `X-Request-Id` shaped like a card number is `422 card_data_refused` on any route, and is neither logged, stored nor echoed. Browser origins listed in `BACKROOM_CORS_ORIGINS` may call the API (CORS preflight `204`). Store routes are rate-limited per client address in three classes (`login`, `checkout`, `browse`): every store answer carries `RateLimit-Policy` (such as `\"browse\";q=1200;w=60`) and `RateLimit` (such as `\"browse\";r=1187;t=0`), and a client past its limit gets `429 rate_limited` with `Retry-After`."),
    modifiers(&BearerAuth),
    tags(
        (name = "catalog", description = "Staff: products, their variants (one SKU each) with prices in any currency, and the category tree. Products start as `draft`; only `published` ones reach the storefront."),
        (name = "inventory", description = "Staff: stock per variant and location, the locations, and the ledger of every stock change. A variant with no stock set is not tracked and sells without limit."),
        (name = "auth", description = "Owners and admins: the API keys staff send as `Authorization: Bearer <key>`, each with a role (`owner`, `admin`, `editor`, `orders`, `support`, `viewer`), and the audit log of every staff write."),
        (name = "storefront", description = "Anyone: the published catalog as shoppers see it, with prices and units available, full-text search and facets."),
        (name = "carts", description = "Anyone holding the cart's id: carts in one currency, their lines, and checkout into an order with a payment provider."),
        (name = "orders", description = "Staff: orders with their payments and history, and the outbox of the events they raise."),
        (name = "customers", description = "Shoppers: register, sign in for a customer token (`Authorization: Bearer <token>`), and keep their profile and address book. Staff: find, export and erase customers, and group them. Personal fields are stored encrypted, each customer under their own key."),
        (name = "shipping", description = "Staff: the ways to ship to each region, with a flat price or a carrier that quotes the price per destination (falling back to its last good quote or the flat price when it is slow or failing)."),
        (name = "pricing", description = "Staff: regions (countries sold to in one currency, prices shown with or without tax), their tax rates per tax class, discount codes (promotions), and price lists: prices of some variants for the signed-in customers of some groups, optionally on a schedule."),
        (name = "stripe", description = "Stripe: the events Stripe sends about payments (`POST /webhooks/stripe`), accepted only with a valid `Stripe-Signature`."),
        (name = "webhooks", description = "Owners and admins: outgoing webhooks. Endpoints that receive events (orders placed, shipped, refunded, …) signed per the Standard Webhooks specification, retried with growing delays, with their delivery history."),
        (name = "ops", description = "Probes, metrics, this document and its readable reference (`/docs`)."),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The errors that the extractors and middleware answer for whole classes of operations,
/// added to every operation they can reach (an operation's own description wins; one listed
/// without a description gets the common one):
/// `401` (with its `WWW-Authenticate` header) and `403` where a key is needed,
/// `400`/`413`/`415`/`422` where a JSON body is read, `422` where query parameters are parsed,
/// `429` (with `Retry-After`) under `/store`, and on every operation `414`, `431` and `422`
/// (a card-shaped `Idempotency-Key` or `X-Request-Id`). Without them the document would not list statuses the server really sends.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        for (path, item) in doc.paths.paths.iter_mut() {
            // Probes are never shed (`backroom serve`'s in-flight cap lets them through).
            let probe = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
            for (_, op) in crate::routes::operations_mut(item) {
                let mut add = |status: &str, description: &str| {
                    let res =
                        op.responses.responses.entry(status.to_owned()).or_insert_with(|| problem(description).into());
                    if let utoipa::openapi::RefOr::T(res) = res
                        && res.description.is_empty()
                    {
                        res.description = description.to_owned();
                    }
                };
                if op.security.is_some() {
                    add("401", "`unauthenticated`: no `Authorization: Bearer <api key>`, or an unknown or revoked key");
                    add("403", "`forbidden`: the key's role lacks the permission");
                }
                if op.request_body.is_some() {
                    add("400", "`malformed_json`: the body is not valid JSON");
                    add("413", "`payload_too_large`: the body is over 1 MiB");
                    add("415", "`unsupported_media_type`: the body is not sent as `application/json`");
                    add("422", "`validation_failed` (with `errors`), or `card_data_refused`");
                }
                let has_query = op
                    .parameters
                    .as_ref()
                    .is_some_and(|ps| ps.iter().any(|p| matches!(p.parameter_in, ParameterIn::Query)));
                if has_query {
                    add("422", "`validation_failed`: a query parameter is invalid; see `errors`");
                }
                add("414", "`uri_too_long`: the URI is over 8 KiB");
                add(
                    "431",
                    "`request_header_fields_too_large`: the headers total over 16 KiB, one is over 8 KiB, or there are over 100",
                );
                add(
                    "422",
                    "`card_data_refused`: an `Idempotency-Key` or `X-Request-Id` header shaped like a card number",
                );
                if path.starts_with("/store") {
                    add(
                        "429",
                        "`rate_limited`: this client sent more requests of this kind (login, checkout, or the rest) \
                         than its rate limit allows; retry after `Retry-After` seconds. Every store answer carries \
                         `RateLimit-Policy` and `RateLimit`",
                    );
                }
                if !probe {
                    add(
                        "503",
                        "`overloaded`: shed before any of it was done (too many requests in flight, a full write \
                         queue); `request_timeout`: not answered within the request deadline; `unavailable`: the \
                         database cannot be reached. Retry after `Retry-After` seconds",
                    );
                }
                if let Some(utoipa::openapi::RefOr::T(res)) = op.responses.responses.get_mut("401") {
                    res.headers.insert("WWW-Authenticate".to_owned(), www_authenticate());
                }
                for status in ["429", "503"] {
                    if let Some(utoipa::openapi::RefOr::T(res)) = op.responses.responses.get_mut(status) {
                        res.headers.insert("Retry-After".to_owned(), retry_after());
                    }
                }
            }
        }
    }
}

/// The `WWW-Authenticate` header of every `401`.
fn www_authenticate() -> utoipa::openapi::header::Header {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["Bearer"])))
        .description(Some("`Bearer`: the scheme to authenticate with"))
        .build()
}

/// The `Retry-After` of every `503`: seconds to wait before retrying.
fn retry_after() -> utoipa::openapi::header::Header {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
        .description(Some("seconds to wait before retrying"))
        .build()
}

/// A problem+json response with `description`.
fn problem(description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            crate::error::PROBLEM_JSON,
            ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
        )
        .build()
}

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::routes::all().into_parts().openapi);
    CommonErrors.modify(&mut doc);
    crate::redact::nullable_in_schema(&mut doc);
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as pretty JSON (built once).
pub fn json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc = document();
        let json = doc.to_pretty_json().expect("the OpenAPI document serialises");
        // utoipa 5 writes a response link's `operationId` as `operation_id` (fixed in utoipa 6);
        // only links have that key with a string value. The drift test checks every link.
        json.replace("\"operation_id\": \"", "\"operationId\": \"")
    })
    .clone()
}
