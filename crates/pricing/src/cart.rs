//! What a cart (and the order made from it) needs from pricing: its region with the tax
//! rates, its promotion and its shipping option, read together ([`Context::load`]), and the
//! engine's input built from them ([`Context::price`]). The cart, the checkout and the order
//! all come through here, so they cannot compute an amount differently.

use std::collections::HashMap;

use backroom_db::Conn;
use backroom_kernel::{Code, Currency, Error, Money, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::{self, Discount, Input, LineInput, Totals};
use crate::model::{self, Promotion, PromotionKind, Region, STANDARD, ShippingOption};
use crate::rate::Rate;

/// A promotion as a cart or an order shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppliedPromotion {
    #[schema(example = "promo_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    #[schema(example = "SUMMER10")]
    pub code: String,
    /// `percentage`, `fixed` or `free_shipping`.
    #[serde(rename = "type")]
    #[schema(example = "percentage")]
    pub kind: String,
    /// What it took off: the lines' discounts, or the shipping price for free shipping.
    pub amount: Money,
}

/// The shipping method of a cart or an order: the price is the one quoted when it was chosen
/// (zero once the option's `free_over` is reached).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShippingMethod {
    #[schema(example = "so_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub option_id: String,
    #[schema(example = "Standard")]
    pub name: String,
    pub price: Money,
    /// The carrier did not answer in time: the price is the last good quote or the flat price.
    pub estimated: bool,
}

/// Why a promotion does not apply to a cart (`422 promotion_invalid` when applying it).
pub fn not_applicable(why: impl Into<String>) -> Error {
    Error::refused(Code::PromotionInvalid, why.into())
}

/// A promotion whose uses are all taken (`409 promotion_exhausted`).
pub fn exhausted(code: &str) -> Error {
    Error::refused(Code::PromotionExhausted, format!("the code {code} has been used up"))
}

impl Promotion {
    /// The discount this promotion gives a cart in `currency` whose subtotal (before
    /// discounts) is `subtotal`, at `at`; or why it does not apply. Usage limits are checked
    /// apart ([`Promotion::is_exhausted`], and in the checkout's write).
    pub fn discount_for(&self, currency: Currency, subtotal: i64, at: DateTime<Utc>) -> Result<Discount> {
        if !self.is_live(at) {
            return Err(not_applicable(format!("the code {} is not valid now", self.code)));
        }
        if let Some(min) = self.min_subtotal {
            if min.currency() != currency {
                return Err(not_applicable(format!("the code {} is for carts in {}", self.code, min.currency())));
            }
            if subtotal < min.amount() {
                return Err(not_applicable(format!(
                    "the code {} needs a subtotal of at least {} {}",
                    self.code,
                    min.amount(),
                    currency
                )));
            }
        }
        Ok(match self.kind {
            PromotionKind::Percentage(p) => Discount::Percentage(p),
            PromotionKind::Fixed(m) if m.currency() == currency => Discount::Fixed(m.amount()),
            PromotionKind::Fixed(m) => {
                return Err(not_applicable(format!("the code {} is for carts in {}", self.code, m.currency())));
            }
            PromotionKind::FreeShipping => Discount::FreeShipping,
        })
    }
}

impl Promotion {
    /// Whether a use is left for this shopper now: not [`Promotion::is_exhausted`], and fewer
    /// than `per_customer_limit` uses by the customer (or, for a guest, by the e-mail's keyed
    /// hash). Advisory: the checkout's write decides ([`crate::uses::claim`]).
    pub async fn has_use_left(
        &self,
        conn: &mut Conn<'_>,
        customer_id: Option<&str>,
        email_index: Option<&str>,
    ) -> Result<bool> {
        if self.is_exhausted() {
            return Ok(false);
        }
        Ok(match self.per_customer_limit {
            Some(limit) => model::uses_by(conn, &self.id, customer_id, email_index).await? < limit,
            None => true,
        })
    }
}

/// A line as pricing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub unit_price: i64,
    pub quantity: i64,
    pub tax_class: String,
}

/// A cart's region, rates, promotion and shipping option.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub region: Option<Region>,
    /// The region's rate per tax class.
    pub rates: HashMap<String, Rate>,
    pub promotion: Option<Promotion>,
    pub option: Option<ShippingOption>,
}

/// What the engine computed for a cart, with what the cart shows of its promotion and shipping.
#[derive(Debug)]
pub struct Priced {
    pub totals: Totals,
    pub promotions: Vec<AppliedPromotion>,
    pub shipping_method: Option<ShippingMethod>,
    /// The stored promotion code that does not apply now, with the reason (checkout refuses
    /// to go on with it: the shopper must see the cart without it first).
    pub promotion_problem: Option<Error>,
}

impl Context {
    /// Reads what is set (a cart with none of them costs no query).
    pub async fn load(
        conn: &mut Conn<'_>,
        region_id: Option<&str>,
        promotion_code: Option<&str>,
        shipping_option_id: Option<&str>,
    ) -> Result<Context> {
        let mut cx = Context::default();
        if let Some(id) = region_id {
            cx.region = model::region(conn, id).await?;
            if cx.region.is_some() {
                cx.rates = model::tax_rates(conn, id).await?;
            }
        }
        if let Some(code) = promotion_code {
            cx.promotion = model::promotion_by_code(conn, code).await?;
        }
        if let Some(id) = shipping_option_id {
            cx.option = model::shipping_option(conn, id)
                .await?
                .filter(|o| cx.region.as_ref().is_some_and(|r| r.id == o.region_id));
        }
        Ok(cx)
    }

    /// The rate of a tax class (zero without a region, or for a class the region has no rate for).
    pub fn rate(&self, class: &str) -> Rate {
        if self.region.is_none() {
            return Rate::ZERO;
        }
        self.rates.get(class).copied().unwrap_or(Rate::ZERO)
    }

    /// Prices `lines` in `currency` at `at`; `shipping_quote` is the price stored when the
    /// shipping method was chosen. A stored promotion that does not apply is left out and
    /// reported in [`Priced::promotion_problem`].
    pub fn price(
        &self,
        currency: Currency,
        lines: &[Line],
        shipping_quote: Option<(i64, bool)>,
        at: DateTime<Utc>,
    ) -> std::result::Result<Priced, engine::TooLarge> {
        let subtotal: i64 =
            lines.iter().map(|l| l.unit_price.saturating_mul(l.quantity)).fold(0i64, |a, b| a.saturating_add(b));
        let (discount, promotion_problem) = match &self.promotion {
            Some(p) => match p.discount_for(currency, subtotal, at) {
                Ok(d) => (Some(d), None),
                Err(e) => (None, Some(e)),
            },
            None => (None, None),
        };
        let mut input = Input {
            currency,
            tax_inclusive: self.region.as_ref().is_some_and(|r| r.tax_inclusive),
            lines: lines
                .iter()
                .map(|l| LineInput {
                    unit_price: l.unit_price,
                    quantity: l.quantity,
                    tax_rate: self.rate(&l.tax_class),
                })
                .collect(),
            discount,
            shipping: 0,
            shipping_tax_rate: self.rate(STANDARD),
        };
        // Free-over compares the subtotal after discounts, so compute the lines first.
        let mut shipping_method = None;
        if let (Some(option), Some((quoted, estimated))) = (&self.option, shipping_quote) {
            let goods = engine::compute(&input)?;
            let after_discounts = goods.subtotal.amount() - goods.discount_total.amount();
            let free = option.free_over.is_some_and(|f| f.currency() == currency && after_discounts >= f.amount());
            input.shipping = if free { 0 } else { quoted };
            shipping_method = Some(ShippingMethod {
                option_id: option.id.clone(),
                name: option.name.clone(),
                price: Money::new(input.shipping, currency).map_err(|_| engine::TooLarge)?,
                estimated,
            });
        }
        let totals = engine::compute(&input)?;
        let promotions = match (&self.promotion, discount) {
            (Some(p), Some(d)) => vec![AppliedPromotion {
                id: p.id.clone(),
                code: p.code.clone(),
                kind: p.kind.type_name().to_owned(),
                amount: match d {
                    Discount::FreeShipping => Money::new(input.shipping, currency).map_err(|_| engine::TooLarge)?,
                    _ => totals.discount_total,
                },
            }],
            _ => Vec::new(),
        };
        Ok(Priced { totals, promotions, shipping_method, promotion_problem })
    }
}
