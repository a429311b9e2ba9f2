//! Carts: a shopper's lines with the unit price taken from the catalog when each line was
//! added, and totals as Money. Owns `carts`, `cart_items`.
//!
//! A cart is `open`, `checking_out` while a checkout holds it (no changes then, and no second
//! checkout), or `completed` once its order is placed. Tax and shipping are real fields of
//! the totals, zero until the pricing module computes them.

use backroom_catalog::{Catalog, Sellable};
use backroom_db::writer::Done;
use backroom_db::{Conn, Db, storage};
use backroom_inventory::Inventory;
use backroom_inventory::reservations::{Shortage, insufficient_stock};
use backroom_kernel::{Code, Currency, Error, Money, Result, id, now};
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

    fn parse(s: &str) -> Option<Self> {
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
    /// The price when the line was added (or last confirmed at checkout).
    pub unit_price: Money,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Cart {
    pub id: String,
    /// The customer whose token created the cart; only that token reaches it then. `null` for
    /// an anonymous cart, which its id alone reaches.
    pub customer_id: Option<String>,
    pub currency: Currency,
    pub items: Vec<CartItem>,
    pub subtotal: Money,
    pub tax_total: Money,
    pub shipping_total: Money,
    pub total: Money,
    pub status: CartStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
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
}

backroom_db::from_row!(CartRow { id, currency, status, created_at, updated_at, customer_id });

struct ItemRow {
    id: String,
    variant_id: String,
    sku: String,
    title: String,
    quantity: i64,
    unit_price: i64,
}

backroom_db::from_row!(ItemRow { id, variant_id, sku, title, quantity, unit_price });

fn too_large() -> Error {
    Error::refused(Code::CartTotalTooLarge, "the cart's total is beyond what one order may hold")
}

/// Loads a cart with its lines and totals, each line with its product as the catalog shows
/// it now (one more query for all lines).
pub async fn load(conn: &mut Conn<'_>, cart_id: &str) -> Result<Option<Cart>> {
    let row: Option<CartRow> = backroom_db::sql::query(
        "SELECT id, currency, status, created_at, updated_at, customer_id FROM carts WHERE id = $1",
    )
    .bind(cart_id)
    .fetch_optional(conn)
    .await
    .map_err(storage)?;
    let Some(row) = row else { return Ok(None) };
    let items: Vec<ItemRow> = backroom_db::sql::query(
        "SELECT id, variant_id, sku, title, quantity, unit_price FROM cart_items WHERE cart_id = $1 ORDER BY created_at, id",
    )
    .bind(cart_id)
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    let variant_ids: Vec<String> = items.iter().map(|i| i.variant_id.clone()).collect();
    let mut products = backroom_catalog::line_products(conn, &variant_ids).await?;
    let currency = Currency::parse(&row.currency).map_err(Error::internal)?;
    let mut subtotal = Money::zero(currency);
    let mut lines = Vec::with_capacity(items.len());
    for i in items {
        let unit_price = Money::new(i.unit_price, currency).map_err(Error::internal)?;
        let total = unit_price.checked_mul(i.quantity).ok_or_else(too_large)?;
        subtotal = subtotal.checked_add(total).ok_or_else(too_large)?;
        let product = products.remove(&i.variant_id);
        lines.push(CartItem {
            product_id: product.as_ref().map(|p| p.product_id.clone()),
            product_title: product.as_ref().map(|p| p.title.clone()),
            product_handle: product.as_ref().map(|p| p.handle.clone()),
            thumbnail: product.and_then(|p| p.thumbnail),
            id: i.id,
            variant_id: i.variant_id,
            sku: i.sku,
            title: i.title,
            quantity: i.quantity,
            unit_price,
            total,
        });
    }
    let zero = Money::zero(currency);
    Ok(Some(Cart {
        id: row.id,
        customer_id: row.customer_id,
        currency,
        items: lines,
        subtotal,
        tax_total: zero,
        shipping_total: zero,
        total: subtotal,
        status: CartStatus::parse(&row.status).ok_or_else(|| Error::internal(format!("cart status {}", row.status)))?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }))
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

/// Sets a line's unit price (a price change confirmed at checkout).
pub async fn set_unit_price(conn: &mut Conn<'_>, item_id: &str, unit_price: Money) -> Result<()> {
    backroom_db::sql::query("UPDATE cart_items SET unit_price = $2 WHERE id = $1")
        .bind(item_id)
        .bind(unit_price.amount())
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
}

impl Carts {
    pub fn new(db: Db) -> Self {
        Self { catalog: Catalog::new(db.clone()), inventory: Inventory::new(db.clone()), db }
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
                        id,
                        customer_id,
                        currency,
                        items: Vec::new(),
                        subtotal: zero,
                        tax_total: zero,
                        shipping_total: zero,
                        total: zero,
                        status: CartStatus::Open,
                        created_at: ts,
                        updated_at: ts,
                    }))
                })
            })
            .await
    }

    /// The cart, when `shopper` (the customer of the request's token, if any) may reach it.
    pub async fn get(&self, id: &str, shopper: Option<&str>) -> Result<Cart> {
        let mut r = self.db.read_fast().await?;
        load(&mut r.conn(), id)
            .await?
            .filter(|c| reachable(c.customer_id.as_deref(), shopper))
            .ok_or(Error::not_found("cart"))
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

    /// A published variant and its current price in `currency`, or the reason it can't be sold.
    async fn sellable(&self, variant_id: &str, currency: Currency) -> Result<(Sellable, Money)> {
        let unknown = || Error::field("variant_id", "no variant for sale has this id");
        let variant = self.catalog.sellable(&[variant_id.to_owned()]).await?.pop().ok_or_else(unknown)?;
        if !variant.published {
            return Err(unknown());
        }
        let price = variant
            .price_in(currency)
            .ok_or_else(|| Error::refused(Code::NoPrice, format!("this variant has no price in {currency}")))?;
        Ok((variant, price))
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
        let cart = self.get(cart_id, shopper).await?;
        if cart.status != CartStatus::Open {
            return Err(cart_not_open(cart.status));
        }
        let (variant, price) = self.sellable(&input.variant_id, cart.currency).await?;
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
                    if !transition(&mut conn, &job_cart, CartStatus::Open, CartStatus::Open).await? {
                        return Err(cart_not_open(CartStatus::CheckingOut));
                    }
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
                        "INSERT INTO cart_items (id, cart_id, variant_id, sku, title, quantity, unit_price, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
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
        let cart = self.get(cart_id, shopper).await?;
        if cart.status != CartStatus::Open {
            return Err(cart_not_open(cart.status));
        }
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
        let cart = self.get(cart_id, shopper).await?;
        if cart.status != CartStatus::Open {
            return Err(cart_not_open(cart.status));
        }
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
                    if !transition(&mut conn, &job_cart, CartStatus::Open, CartStatus::Open).await? {
                        return Err(cart_not_open(CartStatus::CheckingOut));
                    }
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
