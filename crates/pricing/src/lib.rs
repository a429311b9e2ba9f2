//! Pricing: the one place where amounts are computed ([`engine`]), and the module that owns
//! regions and their tax rates, price lists, promotions and shipping options.
//!
//! Tables: `regions`, `region_countries`, `tax_rates`, `price_lists`, `price_list_groups`,
//! `price_list_prices`, `promotions`, `promotion_uses`, `shipping_options`.

pub mod carrier;
pub mod cart;
pub mod check;
pub mod engine;
pub mod model;
pub mod price_lists;
pub mod promotions;
pub mod rate;
pub mod regions;
pub mod shipping;
pub mod tax_rates;
pub mod uses;

pub use carrier::{CarrierConfig, Carriers, Destination, Quote, QuoteItem};
pub use cart::{AppliedPromotion, Context, Line, Priced, ShippingMethod};
pub use engine::{Discount, Input, LineInput, LineTotals, Totals, compute};
pub use model::{CarrierSettings, Promotion, PromotionKind, Region, ShippingOption, TaxRate};
pub use price_lists::{LivePrices, PriceBook, PriceLists};
pub use rate::Rate;
