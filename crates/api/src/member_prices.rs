//! Members' prices on the storefront: a signed-in customer in a group with an active price
//! list sees, on product pages, listings and search results, each variant price at
//! `min(base, lowest active list price)` with the base beside it as `original_price` (only
//! when lower). The cart and the order apply the same rule ([`backroom_pricing::model::member_prices`]).
//!
//! The storefront views ([`crate::views`]) and the search index hold base prices only, shared
//! by every shopper; a member's prices are laid over a copy of them at response time
//! ([`Pricing::apply`]) from this process's [`backroom_pricing::LivePrices`], at the request's
//! moment (schedules start and end on time, without an event).
//!
//! Anonymous requests do no extra work: without an `Authorization` header nothing is looked
//! up. With one, nothing is looked up either while the store has no price list. A header
//! that is not a live customer token gets the anonymous answer here (the catalog is public;
//! carts and checkout refuse such a header with `401`).
//!
//! A member's answer is personal: it is sent with `Cache-Control: private, no-store`, and the
//! response cache ([`crate::cache`]) neither serves nor keeps answers to requests with a token
//! while price lists may apply.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use backroom_kernel::Money;
use backroom_pricing::price_lists::MemberPrices;

use crate::AppState;
use crate::error::ApiError;
use crate::routes::store::StoreProduct;

/// What a member's answer is sent with.
pub const PRIVATE: &str = "private, no-store";

/// The prices of the request's shopper: a member's active lists, or none (anonymous shoppers,
/// non-members, a store without price lists).
#[derive(Debug, Clone, Default)]
pub struct Pricing(Option<MemberPrices>);

impl Pricing {
    /// Whether the shopper is shown some list's prices.
    pub fn is_member(&self) -> bool {
        self.0.is_some()
    }

    /// Lays the member's prices over a product (nothing for anyone else).
    pub fn apply(&self, product: &mut StoreProduct) {
        let Some(member) = &self.0 else { return };
        for v in &mut product.variants {
            for price in &mut v.prices {
                let Ok(base) = Money::new(price.amount, price.currency) else { continue };
                let (pays, original) = member.price(&v.id, base);
                price.amount = pays.amount();
                price.original_price = original;
            }
        }
    }

    /// [`Pricing::apply`] to each product.
    pub fn apply_all(&self, products: &mut [StoreProduct]) {
        if self.is_member() {
            products.iter_mut().for_each(|p| self.apply(p));
        }
    }

    /// The headers of the answer: a member's is private to them.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if self.is_member() {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(PRIVATE));
        }
        h
    }
}

impl FromRequestParts<AppState> for Pricing {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = crate::extract::customer_token(parts) else { return Ok(Pricing(None)) };
        if s.prices.surely_none() {
            return Ok(Pricing(None));
        }
        let book = s.prices.book().await?;
        if book.is_empty() {
            return Ok(Pricing(None));
        }
        let Some(customer) = s.customers.authenticate(token).await? else { return Ok(Pricing(None)) };
        let groups = s.prices.groups_of(customer.as_str()).await?;
        Ok(Pricing(book.for_groups(&groups, backroom_kernel::now())))
    }
}
