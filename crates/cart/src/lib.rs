//! Carts: a shopper's lines with the unit price taken from the catalog when each line was
//! added, and totals as Money. Owns `carts`, `cart_items`.
//!
//! A cart is `open`, `checking_out` while a checkout holds it (no changes then, and no second
//! checkout), or `completed` once its order is placed. Every amount (discounts, taxes,
//! shipping, totals) is computed by `backroom_pricing` from the cart's region, promotion
//! code and shipping method each time the cart is read, so the cart, the checkout and the
//! order cannot disagree.
//!
//! A cart's e-mail and shipping address are personal data: sealed under the cart's own data
//! key (the vault's), like an order's; only the country is kept in clear (it picks the region).

use backroom_catalog::{Catalog, Sellable};
use backroom_db::writer::Done;
use backroom_db::{Conn, Db, storage};
use backroom_inventory::Inventory;
use backroom_inventory::reservations::{Shortage, insufficient_stock};
use backroom_kernel::error::Problems;
use backroom_kernel::{Code, Currency, Error, Money, Result, id, now};
use backroom_orders::Address;
use backroom_pricing::{AppliedPromotion, Promotion, Region, ShippingMethod, ShippingOption};
use backroom_vault::Vault;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The most units of one line.
pub const MAX_QUANTITY: i64 = 1000;

/// The most lines (distinct variants) of one cart: adding another is `422
/// cart_too_many_lines`, with nothing written. It bounds what one checkout reserves and
/// what one anonymous cart id can hold.
pub const MAX_LINES: usize = 100;

/// The refusal of a line past [`MAX_LINES`].
fn too_many_lines() -> Error {
    Error::refused(
        Code::CartTooManyLines,
        format!("a cart holds at most {MAX_LINES} lines; raise the quantity of a line, or remove one"),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CartStatus {
    Open,
    CheckingOut,
    Completed,
}

impl CartStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CartStatus::Open => "open",
            CartStatus::CheckingOut => "checking_out",
            CartStatus::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Open, Self::CheckingOut, Self::Completed].into_iter().find(|c| c.as_str() == s)
    }
}

/// A cart line. The product fields are read from the catalog each time the cart is answered;
/// they are `null` once the variant is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CartItem {
    pub id: String,
    pub variant_id: String,
    pub sku: String,
    /// The variant's title when the line was added, such as `M / White`.
    pub title: String,
    /// The variant's product.
    pub product_id: Option<String>,
    #[schema(example = "Linen shirt")]
    pub product_title: Option<String>,
    #[schema(example = "linen-shirt")]
    pub product_handle: Option<String>,
    /// The url of the product's first image.
    #[schema(example = "https://images.example.com/linen-shirt-1.jpg")]
    pub thumbnail: Option<String>,
    pub quantity: i64,
    /// The price when the line was added (or last confirmed at checkout): a signed-in
    /// member's price-list price where one is lower than the variant's.
    pub unit_price: Money,
    /// The variant's base price, when a price list gave this line a lower `unit_price`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_price: Option<Money>,
    /// `unit_price × quantity`.
    pub total: Money,
    /// The line's share of the promotion's discount.
    pub discount_total: Money,
    /// The line's tax, on its total after discounts (contained in it when prices include tax).
    pub tax_total: Money,
    /// The variant's tax class (for pricing; not shown).
    #[serde(skip)]
    pub tax_class: String,
    /// The variant's weight in grams (for carrier quotes; not shown).
    #[serde(skip)]
    pub weight_g: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Cart {
    /// What pricing and checkout need and the answer does not show.
    #[serde(skip)]
    pub pricing: CartPricing,
    pub id: String,
    /// The customer whose token created the cart; only that token reaches it then. `null` for
    /// an anonymous cart, which its id alone reaches.
    pub customer_id: Option<String>,
    pub currency: Currency,
    /// The shopper's e-mail, once given (`PATCH` or checkout).
    pub email: Option<String>,
    pub shipping_address: Option<Address>,
    /// The region the shipping country belongs to; `null` until an address (or a region) is
    /// given, and always in a store without regions.
    pub region_id: Option<String>,
    /// Prices include tax (the region's setting).
    pub tax_inclusive: bool,
    pub items: Vec<CartItem>,
    /// The lines' totals.
    pub subtotal: Money,
    /// What the promotion takes off the lines.
    pub discount_total: Money,
    pub tax_total: Money,
    pub shipping_total: Money,
    pub total: Money,
    /// The applied promotion code (at most one).
    pub promotions: Vec<AppliedPromotion>,
    /// The chosen shipping method, with the price it will be charged at.
    pub shipping_method: Option<ShippingMethod>,
    pub status: CartStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The cart's pricing inputs that its answer does not show.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CartPricing {
    /// The stored promotion code, applied or not.
    pub promotion_code: Option<String>,
    /// The promotion of that code, when it exists.
    pub promotion: Option<Promotion>,
    /// Why the stored code does not apply now (checkout refuses to go on with it).
    pub promotion_problem: Option<String>,
    /// The region, when the cart has one.
    pub region: Option<Region>,
    /// The chosen shipping option.
    pub shipping_option: Option<ShippingOption>,
    /// The shipping country, in clear.
    pub country: Option<String>,
}

/// `PATCH /store/carts/{id}`: any of the fields.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CartPatch {
    #[schema(example = "ana@example.com")]
    pub email: Option<String>,
    /// Its country picks the cart's region.
    pub shipping_address: Option<Address>,
    /// Must be the region of the address's country, when both are given.
    pub region_id: Option<String>,
}

/// `POST /store/carts/{id}/promotions`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyCode {
    #[schema(example = "SUMMER10")]
    pub code: String,
}

/// The personal part of a cart, sealed as one value under the cart's data key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Personal {
    email: Option<String>,
    shipping_address: Option<Address>,
}

fn personal_context(cart_id: &str) -> String {
    format!("{cart_id}/personal")
}

/// `POST /store/carts`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCart {
    /// ISO 4217 code.
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

/// `POST /store/carts/{id}/items`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    pub variant_id: String,
    /// 1–1000 (with what the cart already has of this variant).
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

/// `PATCH /store/carts/{id}/items/{item_id}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    /// 1–1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

struct CartRow {
    id: String,
    currency: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    customer_id: Option<String>,
    region_id: Option<String>,
    country: Option<String>,
    promotion_code: Option<String>,
    shipping_option_id: Option<String>,
    shipping_amount: Option<i64>,
    shipping_estimated: Option<bool>,
    key_id: Option<String>,
    personal: Option<String>,
}

backroom_db::from_row!(CartRow {
    id,
    currency,
    status,
    created_at,
    updated_at,
    customer_id,
    region_id,
    country,
    promotion_code,
    shipping_option_id,
    shipping_amount,
    shipping_estimated,
    key_id,
    personal
});

const CART_COLUMNS: &str = "id, currency, status, created_at, updated_at, customer_id, region_id, country, \
     promotion_code, shipping_option_id, shipping_amount, shipping_estimated, key_id, personal";

struct ItemRow {
    id: String,
    variant_id: String,
    sku: String,
    title: String,
    quantity: i64,
    unit_price: i64,
    original_price: Option<i64>,
}

backroom_db::from_row!(ItemRow { id, variant_id, sku, title, quantity, unit_price, original_price });

fn too_large() -> Error {
    Error::refused(Code::CartTotalTooLarge, "the cart's total is beyond what one order may hold")
}

/// Loads a cart with its lines and totals, each line with its product as the catalog shows
/// it now (one more query for all lines), priced by `backroom_pricing` (a query for each of
/// region, promotion and shipping option the cart has). Its personal fields are left `null`
/// (see [`Carts::get`]).
pub async fn load(conn: &mut Conn<'_>, cart_id: &str) -> Result<Option<Cart>> {
    Ok(load_row(conn, cart_id).await?.map(|(cart, _)| cart))
}

async fn load_row(conn: &mut Conn<'_>, cart_id: &str) -> Result<Option<(Cart, CartRow)>> {
    let row: Option<CartRow> = backroom_db::sql::query(format!("SELECT {CART_COLUMNS} FROM carts WHERE id = $1"))
        .bind(cart_id)
        .fetch_optional(conn)
        .await
        .map_err(storage)?;
    let Some(row) = row else { return Ok(None) };
    let items: Vec<ItemRow> = backroom_db::sql::query(
        "SELECT id, variant_id, sku, title, quantity, unit_price, original_price FROM cart_items WHERE cart_id = $1 \
         ORDER BY created_at, id",
    )
    .bind(cart_id)
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    let variant_ids: Vec<String> = items.iter().map(|i| i.variant_id.clone()).collect();
    let mut products = backroom_catalog::line_products(conn, &variant_ids).await?;
    let currency = Currency::parse(&row.currency).map_err(Error::internal)?;
    let cx = backroom_pricing::Context::load(
        conn,
        row.region_id.as_deref(),
        row.promotion_code.as_deref(),
        row.shipping_option_id.as_deref(),
    )
    .await?;
    let m = |amount: i64| Money::new(amount, currency).map_err(Error::internal);
    let mut lines = Vec::with_capacity(items.len());
    for i in items {
        let unit_price = m(i.unit_price)?;
        let product = products.remove(&i.variant_id);
        lines.push(CartItem {
            product_id: product.as_ref().map(|p| p.product_id.clone()),
            product_title: product.as_ref().map(|p| p.title.clone()),
            product_handle: product.as_ref().map(|p| p.handle.clone()),
            thumbnail: product.as_ref().and_then(|p| p.thumbnail.clone()),
            tax_class: product
                .as_ref()
                .map_or_else(|| backroom_pricing::model::STANDARD.to_owned(), |p| p.tax_class.clone()),
            weight_g: product.and_then(|p| p.weight_g),
            id: i.id,
            variant_id: i.variant_id,
            sku: i.sku,
            title: i.title,
            quantity: i.quantity,
            unit_price,
            original_price: i.original_price.map(m).transpose()?,
            total: Money::zero(currency),
            discount_total: Money::zero(currency),
            tax_total: Money::zero(currency),
        });
    }
    let pricing_lines: Vec<backroom_pricing::Line> = lines
        .iter()
        .map(|l| backroom_pricing::Line {
            unit_price: l.unit_price.amount(),
            quantity: l.quantity,
            tax_class: l.tax_class.clone(),
        })
        .collect();
    let quote = row.shipping_amount.map(|a| (a, row.shipping_estimated.unwrap_or(false)));
    let priced = cx.price(currency, &pricing_lines, quote, now()).map_err(|_| too_large())?;
    for (line, t) in lines.iter_mut().zip(&priced.totals.lines) {
        line.total = t.amount;
        line.discount_total = t.discount;
        line.tax_total = t.tax;
    }
    let t = &priced.totals;
    let cart = Cart {
        pricing: CartPricing {
            promotion_code: row.promotion_code.clone(),
            promotion: cx.promotion.clone(),
            promotion_problem: priced.promotion_problem.as_ref().map(ToString::to_string),
            region: cx.region.clone(),
            shipping_option: cx.option.clone(),
            country: row.country.clone(),
        },
        id: row.id.clone(),
        customer_id: row.customer_id.clone(),
        currency,
        email: None,
        shipping_address: None,
        region_id: cx.region.as_ref().map(|r| r.id.clone()),
        tax_inclusive: cx.region.as_ref().is_some_and(|r| r.tax_inclusive),
        items: lines,
        subtotal: t.subtotal,
        discount_total: t.discount_total,
        tax_total: t.tax_total,
        shipping_total: t.shipping_total,
        total: t.total,
        promotions: priced.promotions,
        shipping_method: priced.shipping_method,
        status: CartStatus::parse(&row.status).ok_or_else(|| Error::internal(format!("cart status {}", row.status)))?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    };
    Ok(Some((cart, row)))
}

/// Opens a cart's sealed e-mail and address (`None` when it has none, or its key is gone).
async fn open_personal(conn: &mut Conn<'_>, vault: &Vault, row: &CartRow) -> Result<Option<Personal>> {
    let (Some(key_id), Some(sealed)) = (&row.key_id, &row.personal) else { return Ok(None) };
    match vault.key(conn, key_id).await? {
        Some(key) => Ok(Some(key.open_json(&personal_context(&row.id), sealed)?)),
        None => Ok(None),
    }
}

/// Destroys the data keys of a customer's carts (their e-mails and addresses can no longer be
/// read) and clears the sealed values; part of erasing the customer.
pub async fn erase_customer(conn: &mut Conn<'_>, customer_id: &str) -> Result<()> {
    let keys: Vec<(String,)> =
        backroom_db::sql::query("SELECT key_id FROM carts WHERE customer_id = $1 AND key_id IS NOT NULL")
            .bind(customer_id)
            .fetch_all(conn)
            .await
            .map_err(storage)?;
    for (key,) in keys {
        Vault::destroy(conn, &key).await?;
    }
    backroom_db::sql::query("UPDATE carts SET key_id = NULL, personal = NULL WHERE customer_id = $1")
        .bind(customer_id)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(storage)
}

/// Moves a cart between states; `false` when it was not in `from`.
pub async fn transition(conn: &mut Conn<'_>, cart_id: &str, from: CartStatus, to: CartStatus) -> Result<bool> {
    let n = backroom_db::sql::query("UPDATE carts SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2")
        .bind(cart_id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(now())
        .execute(conn)
        .await
        .map_err(storage)?;
    Ok(n == 1)
}

/// Sets a line's unit price and the base price beside it (a price change confirmed at checkout).
pub async fn set_unit_price(
    conn: &mut Conn<'_>,
    item_id: &str,
    unit_price: Money,
    original_price: Option<Money>,
) -> Result<()> {
    backroom_db::sql::query("UPDATE cart_items SET unit_price = $2, original_price = $3 WHERE id = $1")
        .bind(item_id)
        .bind(unit_price.amount())
        .bind(original_price.map(|m| m.amount()))
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(storage)
}

fn check_quantity(q: i64) -> Result<()> {
    if (1..=MAX_QUANTITY).contains(&q) {
        Ok(())
    } else {
        Err(Error::field("quantity", format!("must be between 1 and {MAX_QUANTITY}")))
    }
}

fn cart_not_open(status: CartStatus) -> Error {
    match status {
        CartStatus::Completed => Error::refused(Code::CartCompleted, "this cart has been checked out"),
        _ => Error::refused(Code::CartCheckingOut, "this cart is being checked out; try again in a moment"),
    }
}

/// Whether a cart owned by `owner` is reachable by a request from `shopper`.
fn reachable(owner: Option<&str>, shopper: Option<&str>) -> bool {
    owner.is_none() || owner == shopper
}

/// The carts service.
#[derive(Debug, Clone)]
pub struct Carts {
    db: Db,
    catalog: Catalog,
    inventory: Inventory,
    vault: Vault,
}

/// The price a line is added at: the lower of the variant's base price and the customer's
/// price-list price in `member` (from [`member_prices`], empty for an anonymous cart); with the
/// base price beside it when a list price won. `None` without a price in `currency`.
pub fn line_price(
    variant: &Sellable,
    currency: Currency,
    member: &std::collections::HashMap<String, i64>,
) -> Option<(Money, Option<Money>)> {
    let base = variant.price_in(currency)?;
    Some(backroom_pricing::model::member_price(base, member.get(&variant.variant_id).copied()))
}

/// The lowest active price-list price of each variant for a cart's customer (nothing for an
/// anonymous cart, without a query).
pub async fn member_prices(
    db: &Db,
    customer_id: Option<&str>,
    currency: Currency,
    variant_ids: &[String],
) -> Result<std::collections::HashMap<String, i64>> {
    let Some(customer) = customer_id else { return Ok(Default::default()) };
    let mut r = db.read_fast().await?;
    backroom_pricing::model::member_prices(&mut r.conn(), customer, currency, variant_ids, now()).await
}

impl Carts {
    pub fn new(db: Db, vault: Vault) -> Self {
        Self { catalog: Catalog::new(db.clone()), inventory: Inventory::new(db.clone()), db, vault }
    }

    /// A new open cart; `customer_id` makes it that customer's (see [`Cart::customer_id`]).
    pub async fn create(&self, input: &NewCart, customer_id: Option<&str>) -> Result<Cart> {
        let currency = Currency::parse(&input.currency).map_err(|e| Error::field("currency", e.to_string()))?;
        let id = id::new("cart");
        let ts = now();
        let customer_id = customer_id.map(str::to_owned);
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    backroom_db::sql::query(
                        "INSERT INTO carts (id, currency, status, created_at, updated_at, customer_id) \
                         VALUES ($1, $2, 'open', $3, $3, $4)",
                    )
                    .bind(&id)
                    .bind(currency.code())
                    .bind(ts)
                    .bind(customer_id.as_deref())
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(storage)?;
                    let zero = Money::zero(currency);
                    Ok(Done::Commit(Cart {
                        pricing: CartPricing::default(),
                        id,
                        customer_id,
                        currency,
                        email: None,
                        shipping_address: None,
                        region_id: None,
                        tax_inclusive: false,
                        items: Vec::new(),
                        subtotal: zero,
                        discount_total: zero,
                        tax_total: zero,
                        shipping_total: zero,
                        total: zero,
                        promotions: Vec::new(),
                        shipping_method: None,
                        status: CartStatus::Open,
                        created_at: ts,
                        updated_at: ts,
                    }))
                })
            })
            .await
    }

    /// The cart, when `shopper` (the customer of the request's token, if any) may reach it.
    /// Its e-mail and address are opened with the vault.
    pub async fn get(&self, id: &str, shopper: Option<&str>) -> Result<Cart> {
        let mut r = self.db.read_fast().await?;
        let mut conn = r.conn();
        let (mut cart, row) = load_row(&mut conn, id)
            .await?
            .filter(|(c, _)| reachable(c.customer_id.as_deref(), shopper))
            .ok_or(Error::not_found("cart"))?;
        if let Some(p) = open_personal(&mut conn, &self.vault, &row).await? {
            cart.email = p.email;
            cart.shipping_address = p.shipping_address;
        }
        Ok(cart)
    }

    /// [`Carts::get`], refused unless the cart is `open` (a change must not touch a cart being
    /// checked out or completed).
    async fn get_open(&self, id: &str, shopper: Option<&str>) -> Result<Cart> {
        let cart = self.get(id, shopper).await?;
        if cart.status != CartStatus::Open {
            return Err(cart_not_open(cart.status));
        }
        Ok(cart)
    }

    /// `not_found` unless the cart exists and `shopper` may reach it: a customer's cart only
    /// with that customer's token, an anonymous one by its id alone. A cart's owner never
    /// changes, so this check before a write cannot go stale.
    pub async fn check_reachable(&self, id: &str, shopper: Option<&str>) -> Result<()> {
        let mut r = self.db.read_fast().await?;
        let owner: Option<(Option<String>,)> = backroom_db::sql::query("SELECT customer_id FROM carts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut r.conn())
            .await
            .map_err(storage)?;
        match owner {
            Some((owner,)) if reachable(owner.as_deref(), shopper) => Ok(()),
            _ => Err(Error::not_found("cart")),
        }
    }

    /// A published variant and its current price in `currency` for the cart's customer (with
    /// the base price when a price list gave a lower one), or the reason it can't be sold.
    async fn sellable(
        &self,
        variant_id: &str,
        currency: Currency,
        customer_id: Option<&str>,
    ) -> Result<(Sellable, Money, Option<Money>)> {
        let unknown = || Error::field("variant_id", "no variant for sale has this id");
        let variant = self.catalog.sellable(&[variant_id.to_owned()]).await?.pop().ok_or_else(unknown)?;
        if !variant.published {
            return Err(unknown());
        }
        let member = member_prices(&self.db, customer_id, currency, std::slice::from_ref(&variant.variant_id)).await?;
        let (price, original) = line_price(&variant, currency, &member)
            .ok_or_else(|| Error::refused(Code::NoPrice, format!("this variant has no price in {currency}")))?;
        Ok((variant, price, original))
    }

    /// Refuses `quantity` units of a tracked variant without backorders beyond what is available.
    async fn check_available(&self, variant: &Sellable, quantity: i64) -> Result<()> {
        if variant.allow_backorder {
            return Ok(());
        }
        let available = self.inventory.availability(std::slice::from_ref(&variant.variant_id)).await?;
        match available.get(&variant.variant_id) {
            Some(&n) if n < quantity => Err(insufficient_stock(&[Shortage {
                variant_id: variant.variant_id.clone(),
                requested: quantity,
                available: n,
            }])),
            _ => Ok(()),
        }
    }

    /// Adds a variant; one already in the cart has its quantity raised.
    #[tracing::instrument(skip(self, input))]
    pub async fn add_item(&self, cart_id: &str, shopper: Option<&str>, input: &AddItem) -> Result<Cart> {
        check_quantity(input.quantity)?;
        let cart = self.get_open(cart_id, shopper).await?;
        let (variant, price, original) =
            self.sellable(&input.variant_id, cart.currency, cart.customer_id.as_deref()).await?;
        let line = cart.items.iter().find(|i| i.variant_id == variant.variant_id);
        if line.is_none() && cart.items.len() >= MAX_LINES {
            return Err(too_many_lines());
        }
        let existing = line.map_or(0, |i| i.quantity);
        let wanted = existing + input.quantity;
        check_quantity(wanted)?;
        self.check_available(&variant, wanted).await?;
        let (job_cart, quantity) = (cart_id.to_owned(), input.quantity);
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    // Re-checked in the write transaction: the cart may have been checked out meanwhile.
                    hold_open(&mut conn, &job_cart).await?;
                    // Exact here (the cart row is held by the transition above): concurrent
                    // adds of new lines cannot pass the cap together.
                    let others: i64 = backroom_db::sql::query(
                        "SELECT COUNT(*) FROM cart_items WHERE cart_id = $1 AND variant_id <> $2",
                    )
                    .bind(&job_cart)
                    .bind(&variant.variant_id)
                    .fetch_scalar(&mut conn)
                    .await
                    .map_err(storage)?;
                    if usize::try_from(others).unwrap_or(usize::MAX) >= MAX_LINES {
                        return Err(too_many_lines());
                    }
                    backroom_db::sql::query(
                        "INSERT INTO cart_items (id, cart_id, variant_id, sku, title, quantity, unit_price, created_at, \
                         original_price) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (cart_id, variant_id) DO UPDATE SET quantity = cart_items.quantity + excluded.quantity",
                    )
                    .bind(id::new("item"))
                    .bind(&job_cart)
                    .bind(&variant.variant_id)
                    .bind(&variant.sku)
                    .bind(&variant.title)
                    .bind(quantity)
                    .bind(price.amount())
                    .bind(now())
                    .bind(original.map(|m| m.amount()))
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        if e.as_database_error().is_some_and(|d| d.is_check_violation()) {
                            Error::field("quantity", format!("a line holds at most {MAX_QUANTITY} units"))
                        } else {
                            storage(e)
                        }
                    })?;
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        // Read back after the commit, by an in-thread reader: the writer's time goes to writes.
        self.get(cart_id, shopper).await
    }

    /// Sets a line's quantity.
    #[tracing::instrument(skip(self))]
    pub async fn set_quantity(
        &self,
        cart_id: &str,
        shopper: Option<&str>,
        item_id: &str,
        quantity: i64,
    ) -> Result<Cart> {
        check_quantity(quantity)?;
        let cart = self.get_open(cart_id, shopper).await?;
        let item = cart.items.iter().find(|i| i.id == item_id).ok_or(Error::not_found("cart item"))?;
        let variant = self
            .catalog
            .sellable(std::slice::from_ref(&item.variant_id))
            .await?
            .pop()
            .ok_or(Error::not_found("variant"))?;
        self.check_available(&variant, quantity).await?;
        self.change_item(cart_id, shopper, item_id, Some(quantity)).await
    }

    /// Removes a line.
    #[tracing::instrument(skip(self))]
    pub async fn remove_item(&self, cart_id: &str, shopper: Option<&str>, item_id: &str) -> Result<Cart> {
        self.get_open(cart_id, shopper).await?;
        self.change_item(cart_id, shopper, item_id, None).await
    }

    async fn change_item(
        &self,
        cart_id: &str,
        shopper: Option<&str>,
        item_id: &str,
        quantity: Option<i64>,
    ) -> Result<Cart> {
        let (job_cart, item_id) = (cart_id.to_owned(), item_id.to_owned());
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    hold_open(&mut conn, &job_cart).await?;
                    let q = match quantity {
                        Some(q) => backroom_db::sql::query(
                            "UPDATE cart_items SET quantity = $3 WHERE id = $1 AND cart_id = $2",
                        )
                        .bind(&item_id)
                        .bind(&job_cart)
                        .bind(q),
                        None => backroom_db::sql::query("DELETE FROM cart_items WHERE id = $1 AND cart_id = $2")
                            .bind(&item_id)
                            .bind(&job_cart),
                    };
                    let n = q.execute(&mut conn).await.map_err(storage)?;
                    if n == 0 {
                        return Err(Error::not_found("cart item"));
                    }
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        self.get(cart_id, shopper).await
    }
}

/// A cart write that keeps the cart `open`: `Err(cart_not_open)` when it is not.
async fn hold_open(conn: &mut Conn<'_>, cart_id: &str) -> Result<()> {
    if transition(conn, cart_id, CartStatus::Open, CartStatus::Open).await? {
        Ok(())
    } else {
        Err(cart_not_open(CartStatus::CheckingOut))
    }
}

/// The region a cart in `currency` gets for `country` (`None` in a store without regions):
/// `422 country_not_served` for a country in no region, `422 region_currency_mismatch` for a
/// region in another currency.
pub async fn region_for(conn: &mut Conn<'_>, country: &str, currency: Currency) -> Result<Option<Region>> {
    let region = backroom_pricing::model::region_of_country(conn, country).await?;
    match region {
        None if backroom_pricing::model::has_regions(conn).await? => {
            Err(Error::refused(Code::CountryNotServed, format!("this store does not ship to {country}")))
        }
        None => Ok(None),
        Some(r) if r.currency != currency => Err(Error::refused(
            Code::RegionCurrencyMismatch,
            format!("{country} is in region {} which sells in {}, not in {currency}", r.name, r.currency),
        )),
        Some(r) => Ok(Some(r)),
    }
}

impl Carts {
    /// `PATCH /store/carts/{id}`: the e-mail, the shipping address (whose country picks the
    /// region) and the region. A change of region drops the shipping method (options belong to
    /// a region). Fields not given keep their value.
    #[tracing::instrument(skip(self, patch))]
    pub async fn update(&self, cart_id: &str, shopper: Option<&str>, patch: &CartPatch) -> Result<Cart> {
        let mut p = Problems::new();
        if let Some(email) = &patch.email {
            backroom_orders::check_email(email, "email", &mut p);
        }
        if let Some(a) = &patch.shipping_address {
            a.check("shipping_address", &mut p);
        }
        if let Some(id) = &patch.region_id
            && !backroom_kernel::id::has_prefix(id, "reg")
        {
            p.add("region_id", "no region has this id");
        }
        p.finish()?;
        let cart = self.get_open(cart_id, shopper).await?;
        let region = {
            let mut r = self.db.read_fast().await?;
            let mut conn = r.conn();
            let country = patch.shipping_address.as_ref().map(|a| a.country.clone()).or(cart.pricing.country.clone());
            let by_country = match (&country, patch.shipping_address.is_some() || patch.region_id.is_none()) {
                (Some(c), true) => Some(region_for(&mut conn, c, cart.currency).await?),
                _ => None,
            };
            match (&patch.region_id, by_country) {
                (None, Some(r)) => r,
                (None, None) => cart.pricing.region.clone(),
                (Some(id), by_country) => {
                    let named = backroom_pricing::model::region(&mut conn, id)
                        .await?
                        .ok_or_else(|| Error::field("region_id", "no region has this id"))?;
                    if named.currency != cart.currency {
                        return Err(Error::refused(
                            Code::RegionCurrencyMismatch,
                            format!("region {} sells in {}, not in {}", named.name, named.currency, cart.currency),
                        ));
                    }
                    let of_address = match by_country {
                        Some(r) => r,
                        None => match &country {
                            Some(c) => backroom_pricing::model::region_of_country(&mut conn, c).await?,
                            None => None,
                        },
                    };
                    if country.is_some() && of_address.as_ref().map(|r| &r.id) != Some(&named.id) {
                        return Err(Error::field("region_id", "is not the region of the shipping address's country"));
                    }
                    Some(named)
                }
            }
        };
        let personal_changed = patch.email.is_some() || patch.shipping_address.is_some();
        let sealed = if personal_changed {
            let personal = Personal {
                email: patch.email.as_ref().map(|e| e.trim().to_owned()).or(cart.email.clone()),
                shipping_address: patch
                    .shipping_address
                    .as_ref()
                    .map(Address::trimmed)
                    .or(cart.shipping_address.clone()),
            };
            let key = self.vault.new_key();
            let sealed = key.key.seal_json(&personal_context(cart_id), &personal)?;
            Some((key, sealed))
        } else {
            None
        };
        let region_id = region.as_ref().map(|r| r.id.clone());
        let region_changed = region_id != cart.region_id;
        let country = patch.shipping_address.as_ref().map(|a| a.country.clone());
        let job_cart = cart_id.to_owned();
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    hold_open(&mut conn, &job_cart).await?;
                    if let Some((key, sealed)) = &sealed {
                        let old: Option<(Option<String>,)> =
                            backroom_db::sql::query("SELECT key_id FROM carts WHERE id = $1")
                                .bind(&job_cart)
                                .fetch_optional(&mut conn)
                                .await
                                .map_err(storage)?;
                        key.insert(&mut conn).await?;
                        backroom_db::sql::query("UPDATE carts SET key_id = $2, personal = $3 WHERE id = $1")
                            .bind(&job_cart)
                            .bind(&key.id)
                            .bind(sealed.as_str())
                            .execute(&mut conn)
                            .await
                            .map_err(storage)?;
                        if let Some((Some(old),)) = old {
                            Vault::destroy(&mut conn, &old).await?;
                        }
                    }
                    if let Some(country) = &country {
                        backroom_db::sql::query("UPDATE carts SET country = $2 WHERE id = $1")
                            .bind(&job_cart)
                            .bind(country.as_str())
                            .execute(&mut conn)
                            .await
                            .map_err(storage)?;
                    }
                    if region_changed {
                        backroom_db::sql::query(
                            "UPDATE carts SET region_id = $2, shipping_option_id = NULL, shipping_amount = NULL, \
                             shipping_estimated = NULL WHERE id = $1",
                        )
                        .bind(&job_cart)
                        .bind(region_id.as_deref())
                        .execute(&mut conn)
                        .await
                        .map_err(storage)?;
                    }
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        self.get(cart_id, shopper).await
    }

    /// `POST /store/carts/{id}/promotions`: sets the cart's code (one per cart; a new one
    /// replaces the old) when it applies now: `422 promotion_invalid` when it is unknown, not
    /// live or not applicable, `409 promotion_exhausted` when its uses (or the shopper's) are
    /// taken. The use itself is counted at checkout, in the order's write.
    #[tracing::instrument(skip(self))]
    pub async fn apply_promotion(&self, cart_id: &str, shopper: Option<&str>, code: &str) -> Result<Cart> {
        let cart = self.get_open(cart_id, shopper).await?;
        let promotion = {
            let mut r = self.db.read_fast().await?;
            let mut conn = r.conn();
            let code = code.trim();
            if code.is_empty() || code.len() > 50 {
                return Err(backroom_pricing::cart::not_applicable("no promotion has this code"));
            }
            let promotion = backroom_pricing::model::promotion_by_code(&mut conn, code)
                .await?
                .ok_or_else(|| backroom_pricing::cart::not_applicable(format!("no promotion has the code {code}")))?;
            promotion.discount_for(cart.currency, cart.subtotal.amount(), now())?;
            let email_index = cart.email.as_deref().map(|e| self.vault.email_index(e));
            if !promotion.has_use_left(&mut conn, cart.customer_id.as_deref(), email_index.as_deref()).await? {
                return Err(backroom_pricing::cart::exhausted(&promotion.code));
            }
            promotion
        };
        self.set_code(cart_id, Some(promotion.code)).await?;
        self.get(cart_id, shopper).await
    }

    /// `DELETE /store/carts/{id}/promotions/{code}`: `404` when the cart does not have it.
    #[tracing::instrument(skip(self))]
    pub async fn remove_promotion(&self, cart_id: &str, shopper: Option<&str>, code: &str) -> Result<Cart> {
        let cart = self.get_open(cart_id, shopper).await?;
        if cart.pricing.promotion_code.as_deref().is_none_or(|c| !c.eq_ignore_ascii_case(code.trim())) {
            return Err(Error::not_found("promotion on this cart"));
        }
        self.set_code(cart_id, None).await?;
        self.get(cart_id, shopper).await
    }

    async fn set_code(&self, cart_id: &str, code: Option<String>) -> Result<()> {
        let job_cart = cart_id.to_owned();
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    hold_open(&mut conn, &job_cart).await?;
                    backroom_db::sql::query("UPDATE carts SET promotion_code = $2 WHERE id = $1")
                        .bind(&job_cart)
                        .bind(code.as_deref())
                        .execute(&mut conn)
                        .await
                        .map_err(storage)?;
                    Ok(Done::Commit(()))
                })
            })
            .await
    }

    /// The shipping options of the cart's region (none without a region).
    pub async fn shipping_options(&self, cart: &Cart) -> Result<Vec<ShippingOption>> {
        let Some(region) = &cart.region_id else { return Ok(Vec::new()) };
        let mut r = self.db.read_fast().await?;
        backroom_pricing::model::shipping_options(&mut r.conn(), region).await
    }

    /// `POST /store/carts/{id}/shipping-method`: stores the option with the price quoted for
    /// it now (`price`, before any `free_over`), which is the price charged.
    #[tracing::instrument(skip(self))]
    pub async fn choose_shipping(
        &self,
        cart_id: &str,
        shopper: Option<&str>,
        option_id: &str,
        price: Money,
        estimated: bool,
    ) -> Result<Cart> {
        let job_cart = cart_id.to_owned();
        let option_id = option_id.to_owned();
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    hold_open(&mut conn, &job_cart).await?;
                    backroom_db::sql::query(
                        "UPDATE carts SET shipping_option_id = $2, shipping_amount = $3, shipping_estimated = $4 \
                         WHERE id = $1",
                    )
                    .bind(&job_cart)
                    .bind(option_id.as_str())
                    .bind(price.amount())
                    .bind(estimated)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        self.get(cart_id, shopper).await
    }
}
