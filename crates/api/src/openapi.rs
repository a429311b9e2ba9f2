//! The OpenAPI document, generated from the handlers' annotations. A committed copy lives in
//! `docs/openapi.json`; a test fails when the two drift.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, checkout, ops, store};

#[derive(OpenApi)]
#[openapi(
    info(title = "Backroom", description = "Headless commerce backend: catalog, stock, carts, checkout, orders. See API.md for the core contract."),
    paths(
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        admin::list_products, admin::create_product, admin::get_product, admin::update_product, admin::delete_product,
        admin::add_variant, admin::get_variant, admin::update_variant, admin::delete_variant,
        admin::set_stock, admin::get_stock, admin::stock_adjustments, admin::list_locations, admin::create_location,
        admin::list_categories, admin::create_category, admin::get_category, admin::update_category, admin::delete_category,
        admin::list_keys, admin::create_key, admin::revoke_key,
        store::list_products, store::get_product, store::list_categories,
        checkout::create_cart, checkout::get_cart, checkout::add_item, checkout::set_quantity, checkout::remove_item,
        checkout::checkout, checkout::list_orders, checkout::get_order, checkout::outbox,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "catalog", description = "Products, variants, prices, categories (admin)"),
        (name = "inventory", description = "Stock levels, locations, the adjustments ledger (admin)"),
        (name = "auth", description = "API keys (owner only)"),
        (name = "storefront", description = "Public catalog reads, carts and checkout"),
        (name = "orders", description = "Orders (admin)"),
        (name = "ops", description = "Health, readiness, metrics, this document"),
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

/// The document as pretty JSON (built once).
pub fn json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc.to_pretty_json().expect("the OpenAPI document serialises")
    })
    .clone()
}
