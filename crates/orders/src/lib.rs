//! Orders (OMS): the order with a snapshot of its lines, prices and totals, its state machine
//! and the history of its state changes. Owns `orders`, `order_lines`, `order_history`.
//!
//! States ([`lifecycle`] has the whole table): `pending_payment` → `placed` (payment
//! captured), `on_hold` (authorised, held for review) or `canceled` (declined, voided, or
//! refunded before it was placed); `on_hold` → `placed` (approved) or `canceled` (rejected);
//! `placed` → `completed` (every unit delivered) or `canceled`. Every transition is one
//! conditional UPDATE from the expected state, so two actors (a request and the recovery
//! worker) can never both apply one. What happens after the sale (fulfilments, shipments,
//! cancels, refunds, returns) is in [`oms`].
//!
//! Personal data (the e-mail and the shipping address) is sealed under the order's own data key
//! (`backroom_vault`), one per order, guests' included; staff find orders by e-mail through its
//! keyed hash. When the key is destroyed (the customer was erased) the order keeps its lines,
//! prices and totals and shows its personal fields as `null`.

pub mod lifecycle;
pub mod oms;

pub use lifecycle::{FulfillmentStatus, PaymentStatus};

use std::collections::HashMap;

use backroom_db::{Conn, Db, Dialect, on_conn, storage};
use backroom_kernel::id::OrderId;
use backroom_kernel::{Currency, Error, FieldError, Money, Page, PageRequest, Result, id, now};
use backroom_pricing::{AppliedPromotion, ShippingMethod};
use backroom_vault::{DataKey, NewKey, Vault};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Placed,
    /// Paid by an authorisation only, held for review (approve or reject).
    OnHold,
    /// Every unit was delivered.
    Completed,
    /// Declined, voided, rejected or canceled. Answers stored before issue 14 said
    /// `payment_failed` or `cancelled`; they read as this.
    #[serde(alias = "payment_failed", alias = "cancelled")]
    Canceled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::PendingPayment,
        OrderStatus::Placed,
        OrderStatus::OnHold,
        OrderStatus::Completed,
        OrderStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Placed => "placed",
            OrderStatus::OnHold => "on_hold",
            OrderStatus::Completed => "completed",
            OrderStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The transitions the state machine allows.
    pub fn can_become(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (PendingPayment, Placed | OnHold | Canceled) | (OnHold, Placed | Canceled) | (Placed, Completed | Canceled)
        )
    }
}

/// A shipping address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, such as `PT`.
    pub country: String,
}

impl Address {
    /// Records what is wrong with each field under `prefix` (`shipping_address`).
    pub fn check(&self, prefix: &str, p: &mut backroom_kernel::error::Problems) {
        for (field, value, max) in [
            ("name", Some(&self.name), 200),
            ("line1", Some(&self.line1), 200),
            ("line2", self.line2.as_ref(), 200),
            ("city", Some(&self.city), 100),
            ("region", self.region.as_ref(), 100),
            ("postal_code", Some(&self.postal_code), 20),
        ] {
            if let Some(v) = value {
                let v = v.trim();
                if v.is_empty() || v.chars().count() > max {
                    p.add(format!("{prefix}.{field}"), format!("must be 1–{max} characters"));
                } else if let Err(e) = backroom_kernel::check_display(v) {
                    p.add(format!("{prefix}.{field}"), e.to_string());
                }
            }
        }
        if !(self.country.len() == 2 && self.country.bytes().all(|b| b.is_ascii_uppercase())) {
            p.add(format!("{prefix}.country"), "must be an ISO 3166-1 alpha-2 code such as PT");
        }
    }

    /// The address with every field trimmed, as it is stored.
    pub fn trimmed(&self) -> Address {
        let trim = |s: &str| s.trim().to_owned();
        Address {
            name: trim(&self.name),
            line1: trim(&self.line1),
            line2: self.line2.as_deref().map(trim),
            city: trim(&self.city),
            region: self.region.as_deref().map(trim),
            postal_code: trim(&self.postal_code),
            country: self.country.clone(),
        }
    }
}

/// Records under `field` when `email` is not an e-mail address: the rule checkout has always
/// applied (trimmed, at most 254 bytes, no spaces, a local part and a dotted domain).
pub fn check_email(email: &str, field: &str, p: &mut backroom_kernel::error::Problems) {
    let email = email.trim();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        });
    if !valid {
        p.add(field, "is not an email address");
    }
}

/// One line of an order: what was bought, at what price. The product fields are a snapshot
/// taken at checkout (later changes to the product do not show here); `null` on orders placed
/// before lines kept them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    /// The line's id (`item_…`), unique within its order: fulfilments and returns name it.
    #[serde(default)]
    pub id: String,
    pub variant_id: String,
    pub sku: String,
    /// The variant's title, such as `M / White`.
    pub title: String,
    /// The variant's product at checkout.
    #[serde(default)]
    pub product_id: Option<String>,
    #[serde(default)]
    #[schema(example = "Linen shirt")]
    pub product_title: Option<String>,
    #[serde(default)]
    #[schema(example = "linen-shirt")]
    pub product_handle: Option<String>,
    /// The url of the product's first image at checkout.
    #[serde(default)]
    #[schema(example = "https://images.example.com/linen-shirt-1.jpg")]
    pub thumbnail: Option<String>,
    pub quantity: i64,
    pub unit_price: Money,
    /// The variant's base price, when a price list gave this line a lower `unit_price`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_price: Option<Money>,
    /// `unit_price × quantity`.
    pub total: Money,
    /// The line's share of the order's discounts (absent on orders stored before discounts).
    #[serde(default)]
    pub discount_total: Option<Money>,
    /// The line's tax, computed on its total after discounts.
    #[serde(default)]
    pub tax_total: Option<Money>,
    /// Units that left stock in a fulfilment.
    #[serde(default)]
    pub fulfilled_quantity: i64,
    /// Units in a fulfilment that has a shipment.
    #[serde(default)]
    pub shipped_quantity: i64,
    /// Units in a fulfilment marked delivered.
    #[serde(default)]
    pub delivered_quantity: i64,
    /// Units that came back in a return.
    #[serde(default)]
    pub returned_quantity: i64,
}

/// The payment of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentSummary {
    pub id: String,
    pub provider: String,
    /// `pending`, `unknown`, `authorized` (held for review), `captured`, `declined` or `voided`.
    pub status: String,
    /// The provider's reference for the charge, once known.
    pub reference: Option<String>,
    /// What the customer must do before the payment can complete (3-D Secure): shown while the
    /// order waits in `pending_payment` after a checkout that the provider answered so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_action: Option<NextAction>,
}

/// A step the customer takes with the provider's own client (Stripe.js `handleNextAction`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NextAction {
    /// The PaymentIntent's client secret, for the storefront's Stripe.js.
    pub client_secret: String,
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub status: String,
    pub note: String,
    pub at: DateTime<Utc>,
}

backroom_db::from_row!(HistoryEntry { status, note, at });

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub id: String,
    /// The human order number, such as `#1001`.
    pub number: String,
    pub status: OrderStatus,
    pub cart_id: String,
    /// The customer whose account placed it; `null` for a guest's order.
    #[schema(example = "cus_01JD3Q0F8Z6X7Y2M4N5P6R7S8T")]
    pub customer_id: Option<String>,
    /// `null` once the customer was erased, and for staff whose role does not read personal data.
    pub email: Option<String>,
    pub currency: Currency,
    pub items: Vec<OrderLine>,
    pub subtotal: Money,
    /// What the promotions took off the lines.
    pub discount_total: Money,
    pub tax_total: Money,
    pub shipping_total: Money,
    pub total: Money,
    /// The region the order was priced in; `null` in a store without regions.
    #[serde(default)]
    pub region_id: Option<String>,
    /// The prices include tax (the region's setting when the order was placed).
    #[serde(default)]
    pub tax_inclusive: bool,
    /// The promotion codes the order used.
    #[serde(default)]
    pub promotions: Vec<AppliedPromotion>,
    /// The shipping method, with the price charged for it.
    #[serde(default)]
    pub shipping_method: Option<ShippingMethod>,
    /// `null` once the customer was erased, and for staff whose role does not read personal data.
    pub shipping_address: Option<Address>,
    pub payment: Option<PaymentSummary>,
    /// Where the order's money stands.
    #[serde(default)]
    pub payment_status: PaymentStatus,
    /// How far its units have gone.
    #[serde(default)]
    pub fulfillment_status: FulfillmentStatus,
    /// What was given back, the refunds that succeeded (always present in answers; absent
    /// only in answers stored before refunds existed).
    #[serde(default)]
    pub refunded_total: Option<Money>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// State changes, oldest first (admin answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
    /// Fulfilments with their shipments, oldest first (admin answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfillments: Option<Vec<oms::Fulfillment>>,
    /// Refunds, oldest first (admin answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Vec<oms::Refund>>,
    /// Returns, oldest first (admin answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<Vec<oms::Return>>,
    /// The checkout's risk assessment; `null` for orders placed with scoring off (and before
    /// it existed).
    #[serde(default)]
    pub risk: Option<backroom_risk::Assessment>,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: String,
    pub cart_id: String,
    /// The owner of the cart, when a customer's.
    pub customer_id: Option<String>,
    pub email: String,
    pub currency: Currency,
    pub items: Vec<OrderLine>,
    pub subtotal: Money,
    pub discount_total: Money,
    pub tax_total: Money,
    pub shipping_total: Money,
    pub total: Money,
    pub shipping_address: Address,
    pub region_id: Option<String>,
    pub tax_inclusive: bool,
    pub promotions: Vec<AppliedPromotion>,
    pub shipping_method: Option<ShippingMethod>,
    /// The checkout's risk assessment (none with scoring off).
    pub risk: Option<backroom_risk::Assessment>,
}

struct OrderRow {
    id: String,
    number: i64,
    status: String,
    cart_id: String,
    customer_id: Option<String>,
    key_id: Option<String>,
    personal: Option<String>,
    currency: String,
    subtotal: i64,
    tax_total: i64,
    shipping_total: i64,
    total: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    discount_total: i64,
    region_id: Option<String>,
    tax_inclusive: bool,
    promotions: Option<String>,
    shipping_method: Option<String>,
    payment_status: String,
    fulfillment_status: String,
    refunded_total: i64,
    risk: Option<String>,
}

backroom_db::from_row!(OrderRow {
    id,
    number,
    status,
    cart_id,
    customer_id,
    key_id,
    personal,
    currency,
    subtotal,
    tax_total,
    shipping_total,
    total,
    created_at,
    updated_at,
    discount_total,
    region_id,
    tax_inclusive,
    promotions,
    shipping_method,
    payment_status,
    fulfillment_status,
    refunded_total,
    risk
});

/// The personal part of an order, sealed as one value under the order's data key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Personal {
    pub email: String,
    pub shipping_address: Address,
}

impl Personal {
    /// The associated data that binds a sealed value to its order.
    fn context(order_id: &str) -> String {
        format!("{order_id}/personal")
    }

    /// Seals these fields for `order_id` under `key`.
    pub fn seal(&self, order_id: &str, key: &DataKey) -> Result<String> {
        key.seal_json(&Self::context(order_id), self)
    }
}

/// An order's personal data, sealed and ready to store: made by [`seal`] before the write, so
/// the writer does no crypto.
#[derive(Debug, Clone)]
pub struct SealedPersonal {
    key: NewKey,
    email_index: String,
    sealed: String,
}

/// Makes the order's data key and seals its e-mail and address under it.
pub fn seal(vault: &Vault, o: &NewOrder) -> Result<SealedPersonal> {
    Personal { email: o.email.clone(), shipping_address: o.shipping_address.clone() }.seal_new(vault, &o.id)
}

impl Personal {
    /// These fields of order `order_id` under a new data key, with the e-mail's keyed hash.
    fn seal_new(&self, vault: &Vault, order_id: &str) -> Result<SealedPersonal> {
        let key = vault.new_key();
        let sealed = self.seal(order_id, &key.key)?;
        Ok(SealedPersonal { email_index: vault.email_index(&self.email), sealed, key })
    }
}

struct LineRow {
    id: String,
    order_id: String,
    variant_id: String,
    sku: String,
    title: String,
    product_id: Option<String>,
    product_title: Option<String>,
    product_handle: Option<String>,
    thumbnail: Option<String>,
    quantity: i64,
    unit_price: i64,
    total: i64,
    original_price: Option<i64>,
    discount_total: i64,
    tax_total: i64,
    fulfilled_quantity: i64,
    shipped_quantity: i64,
    delivered_quantity: i64,
    returned_quantity: i64,
}

backroom_db::from_row!(LineRow {
    id,
    order_id,
    variant_id,
    sku,
    title,
    product_id,
    product_title,
    product_handle,
    thumbnail,
    quantity,
    unit_price,
    total,
    original_price,
    discount_total,
    tax_total,
    fulfilled_quantity,
    shipped_quantity,
    delivered_quantity,
    returned_quantity
});

const ORDER_COLUMNS: &str = "id, number, status, cart_id, customer_id, key_id, personal, currency, subtotal, tax_total, \
                             shipping_total, total, created_at, updated_at, discount_total, region_id, tax_inclusive, \
                             promotions, shipping_method, payment_status, fulfillment_status, refunded_total, risk";

/// Creates an order in `pending_payment` inside the caller's transaction, with its data key
/// and its personal data as [`seal`] made them. The clear `email` and `shipping_address`
/// columns of older releases are written empty.
pub async fn create(conn: &mut Conn<'_>, o: &NewOrder, personal: &SealedPersonal) -> Result<()> {
    personal.key.insert(conn).await?;
    let ts = now();
    // The next human number, in the INSERT itself (one statement): a sequence on PostgreSQL;
    // on SQLite the single writer makes MAX + 1 safe.
    let number = match conn.dialect() {
        Dialect::Postgres => "nextval('order_numbers')",
        Dialect::Sqlite => "(SELECT COALESCE(MAX(number), 1000) + 1 FROM orders)",
    };
    let sql = format!(
        "INSERT INTO orders (id, number, status, cart_id, email, currency, subtotal, tax_total, shipping_total, total, \
         shipping_address, created_at, updated_at, customer_id, key_id, email_index, personal, discount_total, \
         region_id, tax_inclusive, promotions, shipping_method, risk) \
         VALUES ($1, {number}, 'pending_payment', $2, '', $3, $4, $5, $6, $7, '', $8, $8, $9, $10, $11, $12, $13, $14, \
         $15, $16, $17, $18)"
    );
    backroom_db::sql::query(sql.as_str())
        .bind(&o.id)
        .bind(&o.cart_id)
        .bind(o.currency.code())
        .bind(o.subtotal.amount())
        .bind(o.tax_total.amount())
        .bind(o.shipping_total.amount())
        .bind(o.total.amount())
        .bind(ts)
        .bind(o.customer_id.as_deref())
        .bind(&personal.key.id)
        .bind(&personal.email_index)
        .bind(&personal.sealed)
        .bind(o.discount_total.amount())
        .bind(o.region_id.as_deref())
        .bind(o.tax_inclusive)
        .bind((!o.promotions.is_empty()).then(|| json(&o.promotions)))
        .bind(o.shipping_method.as_ref().map(json))
        .bind(o.risk.as_ref().map(json))
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(storage)?;
    // Every line in one statement.
    if !o.items.is_empty() {
        let sql = format!(
            "INSERT INTO order_lines (order_id, position, variant_id, sku, title, product_id, product_title, \
             product_handle, thumbnail, quantity, unit_price, total, original_price, discount_total, tax_total, id) VALUES {}",
            backroom_db::sql::values_list(o.items.len(), 16, 1)
        );
        let mut q = backroom_db::sql::query(sql);
        for (i, l) in o.items.iter().enumerate() {
            q = q
                .bind(o.id.as_str())
                .bind(i as i64)
                .bind(l.variant_id.as_str())
                .bind(l.sku.as_str())
                .bind(l.title.as_str())
                .bind(l.product_id.as_deref())
                .bind(l.product_title.as_deref())
                .bind(l.product_handle.as_deref())
                .bind(l.thumbnail.as_deref())
                .bind(l.quantity)
                .bind(l.unit_price.amount())
                .bind(l.total.amount())
                .bind(l.original_price.map(|m| m.amount()))
                .bind(l.discount_total.map_or(0, |m| m.amount()))
                .bind(l.tax_total.map_or(0, |m| m.amount()))
                .bind(if l.id.is_empty() { id::new("item") } else { l.id.clone() });
        }
        q.execute(conn).await.map_err(storage)?;
    }
    history(conn, &o.id, OrderStatus::PendingPayment, "order created; waiting for payment", ts).await
}

/// Adds an entry to the order's history (its status at that moment and what happened).
pub(crate) async fn history(
    conn: &mut Conn<'_>,
    order_id: &str,
    status: OrderStatus,
    note: &str,
    ts: DateTime<Utc>,
) -> Result<()> {
    backroom_db::sql::query(
        "INSERT INTO order_history (id, order_id, status, note, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id::new("ohist"))
    .bind(order_id)
    .bind(status.as_str())
    .bind(note)
    .bind(ts)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(storage)
}

/// Moves an order from `from` to `to` with a note; `false` if it was not in `from`.
pub async fn transition(
    conn: &mut Conn<'_>,
    order_id: &OrderId,
    from: OrderStatus,
    to: OrderStatus,
    note: &str,
) -> Result<bool> {
    if !from.can_become(to) {
        return Err(Error::internal(format!("order transition {} -> {} is not allowed", from.as_str(), to.as_str())));
    }
    let ts = now();
    let n = backroom_db::sql::query("UPDATE orders SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2")
        .bind(order_id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(ts)
        .execute(conn)
        .await
        .map_err(storage)?;
    if n == 1 {
        history(conn, order_id.as_str(), to, note, ts).await?;
    }
    Ok(n == 1)
}

/// Loads orders by id, in the order given, with lines and payment, their personal data opened
/// with `vault` (`null` where the key was destroyed, and everywhere without a vault: the
/// writer's jobs read orders that way); `with_history` adds the state changes. A constant
/// number of queries for any number of orders.
pub async fn load(
    conn: &mut Conn<'_>,
    vault: Option<&Vault>,
    ids: &[String],
    with_history: bool,
) -> Result<Vec<Order>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = backroom_db::sql::in_list(ids.len(), 1);
    macro_rules! by_ids {
        ($sql:expr, $tail:expr) => {
            backroom_db::sql::query(format!("{}{list}{}", $sql, $tail))
                .bind_all(ids.iter())
                .fetch_all(conn)
                .await
                .map_err(storage)
        };
    }
    let rows: Vec<OrderRow> = by_ids!(format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id IN "), "")?;
    let lines: Vec<LineRow> = by_ids!(
        "SELECT id, order_id, variant_id, sku, title, product_id, product_title, product_handle, thumbnail, quantity, \
         unit_price, total, original_price, discount_total, tax_total, fulfilled_quantity, shipped_quantity, \
         delivered_quantity, returned_quantity FROM order_lines WHERE order_id IN ",
        " ORDER BY order_id, position"
    )?;
    let hist: Vec<(String, String, String, DateTime<Utc>)> = if with_history {
        by_ids!(
            "SELECT order_id, status, note, created_at FROM order_history WHERE order_id IN ",
            " ORDER BY order_id, id"
        )?
    } else {
        Vec::new()
    };
    let attempts = backroom_payments::attempts_for_orders(conn, ids).await?;
    let keys = match vault {
        Some(vault) => {
            let key_ids: Vec<String> = rows.iter().filter_map(|r| r.key_id.clone()).collect();
            vault.keys(conn, &key_ids).await?
        }
        None => HashMap::new(),
    };

    let mut lines_by: HashMap<String, Vec<LineRow>> = HashMap::new();
    for l in lines {
        lines_by.entry(l.order_id.clone()).or_default().push(l);
    }
    let mut hist_by: HashMap<String, Vec<HistoryEntry>> = HashMap::new();
    for (order_id, status, note, at) in hist {
        hist_by.entry(order_id).or_default().push(HistoryEntry { status, note, at });
    }
    let mut pay_by: HashMap<String, PaymentSummary> = attempts
        .into_iter()
        .map(|a| {
            (
                a.order_id.into_string(),
                PaymentSummary {
                    id: a.id.into_string(),
                    provider: a.provider,
                    status: a.status,
                    reference: a.reference,
                    next_action: None,
                },
            )
        })
        .collect();
    // What happened after the sale: with the history only (admin answers).
    let mut after = if with_history { Some(oms::AfterSale::load(conn, ids).await?) } else { None };
    let mut by_id = HashMap::new();
    for r in rows {
        let currency = Currency::parse(&r.currency).map_err(Error::internal)?;
        let m = |amount: i64| Money::new(amount, currency).map_err(Error::internal);
        let items = lines_by
            .remove(&r.id)
            .unwrap_or_default()
            .into_iter()
            .map(|l| {
                Ok(OrderLine {
                    id: l.id,
                    fulfilled_quantity: l.fulfilled_quantity,
                    shipped_quantity: l.shipped_quantity,
                    delivered_quantity: l.delivered_quantity,
                    returned_quantity: l.returned_quantity,
                    variant_id: l.variant_id,
                    sku: l.sku,
                    title: l.title,
                    product_id: l.product_id,
                    product_title: l.product_title,
                    product_handle: l.product_handle,
                    thumbnail: l.thumbnail,
                    quantity: l.quantity,
                    unit_price: m(l.unit_price)?,
                    original_price: l.original_price.map(m).transpose()?,
                    total: m(l.total)?,
                    discount_total: Some(m(l.discount_total)?),
                    tax_total: Some(m(l.tax_total)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let personal = match (&r.key_id, &r.personal) {
            (Some(key_id), Some(sealed)) => match keys.get(key_id) {
                Some(key) => Some(key.open_json::<Personal>(&Personal::context(&r.id), sealed)?),
                None => None,
            },
            _ => None,
        };
        let (email, shipping_address) = personal.map(|p| (p.email, p.shipping_address)).unzip();
        let order = Order {
            number: format!("#{}", r.number),
            status: OrderStatus::parse(&r.status)
                .ok_or_else(|| Error::internal(format!("order status {}", r.status)))?,
            items,
            subtotal: m(r.subtotal)?,
            discount_total: m(r.discount_total)?,
            region_id: r.region_id,
            tax_inclusive: r.tax_inclusive,
            promotions: r.promotions.as_deref().map(unjson).transpose()?.unwrap_or_default(),
            shipping_method: r.shipping_method.as_deref().map(unjson).transpose()?,
            risk: r.risk.as_deref().map(unjson).transpose()?,
            tax_total: m(r.tax_total)?,
            shipping_total: m(r.shipping_total)?,
            total: m(r.total)?,
            payment: pay_by.remove(&r.id),
            payment_status: PaymentStatus::parse(&r.payment_status)
                .ok_or_else(|| Error::internal(format!("payment status {}", r.payment_status)))?,
            fulfillment_status: FulfillmentStatus::parse(&r.fulfillment_status)
                .ok_or_else(|| Error::internal(format!("fulfillment status {}", r.fulfillment_status)))?,
            refunded_total: Some(m(r.refunded_total)?),
            history: if with_history { Some(hist_by.remove(&r.id).unwrap_or_default()) } else { None },
            fulfillments: after.as_mut().map(|a| a.fulfillments.remove(&r.id).unwrap_or_default()),
            refunds: after.as_mut().map(|a| a.refunds.remove(&r.id).unwrap_or_default()),
            returns: after.as_mut().map(|a| a.returns.remove(&r.id).unwrap_or_default()),
            currency,
            cart_id: r.cart_id,
            customer_id: r.customer_id,
            email,
            shipping_address,
            created_at: r.created_at,
            updated_at: r.updated_at,
            id: r.id.clone(),
        };
        by_id.insert(r.id, order);
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// Which orders a list shows; build it with [`OrderFilter::parse`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    status: Option<OrderStatus>,
    email: Option<String>,
    number: Option<i64>,
    customer_id: Option<String>,
    updated_since: Option<DateTime<Utc>>,
}

impl OrderFilter {
    /// The longest e-mail address searched for (as checkout accepts).
    pub const MAX_EMAIL: usize = 254;

    /// Checks the filters of `GET /admin/orders`: `email` (trimmed, matched whole and
    /// case-insensitively) must look like an address, `number` is the order number with or
    /// without its `#` (`1001`, `#1001`). Every refusal is named by its parameter.
    pub fn parse(status: Option<OrderStatus>, email: Option<&str>, number: Option<&str>) -> Result<Self> {
        let mut p = backroom_kernel::error::Problems::new();
        let email = email.map(str::trim).and_then(|e| {
            if e.is_empty() {
                p.add("email", "must not be empty");
            } else if e.len() > Self::MAX_EMAIL {
                p.add("email", format!("must be at most {} characters", Self::MAX_EMAIL));
            } else if e.chars().any(|c| c.is_whitespace() || c.is_control()) || !e.contains('@') {
                p.add("email", "is not an email address");
            } else {
                return Some(e.to_owned());
            }
            None
        });
        let number = number.and_then(|n| {
            let digits = n.trim().strip_prefix('#').unwrap_or(n.trim());
            match digits.parse::<i64>() {
                Ok(v) if v > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Some(v),
                _ => {
                    p.add("number", "must be an order number such as 1001 or #1001");
                    None
                }
            }
        });
        p.finish()?;
        Ok(OrderFilter { status, email, number, customer_id: None, updated_since: None })
    }

    /// Only orders whose `updated_at` is at or after `since`, listed oldest change first by
    /// `(updated_at, id)` (the order pollers page in; see docs/integrations.md).
    pub fn updated_since(mut self, since: DateTime<Utc>) -> Self {
        self.updated_since = Some(since);
        self
    }

    /// Only the orders of this customer's account.
    pub fn customer(customer_id: &str) -> Self {
        OrderFilter { customer_id: Some(customer_id.to_owned()), ..Default::default() }
    }
}

/// The `(updated_at, id)` of a cursor given out by an `updated_since` listing:
/// `<microseconds since 1970>_<order id>`.
fn change_cursor(key: &str) -> Option<(DateTime<Utc>, String)> {
    let (micros, id) = key.split_once('_')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    (!id.is_empty()).then(|| (at, id.to_owned()))
}

/// The orders service (reads).
#[derive(Debug, Clone)]
pub struct Orders {
    db: Db,
    vault: Vault,
}

impl Orders {
    pub fn new(db: Db, vault: Vault) -> Self {
        Self { db, vault }
    }

    /// One order with its history.
    pub async fn get(&self, id: &str) -> Result<Order> {
        let mut r = self.db.read().await?;
        load(&mut r.conn(), Some(&self.vault), &[id.to_owned()], true).await?.pop().ok_or(Error::not_found("order"))
    }

    /// One order of this customer's account (without its history); another's, or none, is
    /// `not_found` alike.
    pub async fn get_for_customer(&self, customer_id: &str, id: &str) -> Result<Order> {
        let mut r = self.db.read().await?;
        let order = load(&mut r.conn(), Some(&self.vault), &[id.to_owned()], false).await?.pop();
        order.filter(|o| o.customer_id.as_deref() == Some(customer_id)).ok_or(Error::not_found("order"))
    }

    /// The orders of this customer's account, newest first.
    pub async fn list_for_customer(&self, customer_id: &str, page: &PageRequest) -> Result<Page<Order>> {
        self.list(&OrderFilter::customer(customer_id), page).await
    }

    /// Newest first, narrowed by `filter`; with [`OrderFilter::updated_since`], by
    /// `(updated_at, id)` ascending instead, the cursor holding both (an order changed while a
    /// poller pages moves past the cursor and shows up again later, never skipped).
    pub async fn list(&self, filter: &OrderFilter, page: &PageRequest) -> Result<Page<Order>> {
        let mut r = self.db.read().await?;
        let email_index = filter.email.as_deref().map(|e| self.vault.email_index(e));
        let since = match (filter.updated_since, &page.after) {
            (None, _) => None,
            (Some(since), None) => Some((since, None)),
            (Some(_), Some(after)) => {
                let (at, id) = change_cursor(&after.0).ok_or_else(|| {
                    Error::validation(vec![FieldError::new("cursor", "is not a cursor this API gave out")])
                })?;
                Some((at, Some(id)))
            }
        };
        let ids: Vec<String> = on_conn!(&mut r.conn(), c, DB => {
            let mut qb = sqlx::QueryBuilder::<DB>::new("SELECT id FROM orders WHERE 1 = 1");
            if let Some(status) = filter.status {
                qb.push(" AND status = ");
                qb.push_bind(status.as_str());
            }
            if let Some(index) = &email_index {
                // The keyed hash of the trimmed, lower-cased address (`orders_email_index`).
                qb.push(" AND email_index = ");
                qb.push_bind(index.as_str());
            }
            if let Some(customer) = &filter.customer_id {
                qb.push(" AND customer_id = ");
                qb.push_bind(customer.as_str());
            }
            if let Some(number) = filter.number {
                qb.push(" AND number = ");
                qb.push_bind(number);
            }
            match &since {
                None => {
                    if let Some(after) = &page.after {
                        qb.push(" AND id < ");
                        qb.push_bind(after.0.as_str());
                    }
                    qb.push(" ORDER BY id DESC LIMIT ");
                }
                Some((at, None)) => {
                    qb.push(" AND updated_at >= ");
                    qb.push_bind(*at);
                    qb.push(" ORDER BY updated_at, id LIMIT ");
                }
                Some((at, Some(id))) => {
                    qb.push(" AND (updated_at > ");
                    qb.push_bind(*at);
                    qb.push(" OR (updated_at = ");
                    qb.push_bind(*at);
                    qb.push(" AND id > ");
                    qb.push_bind(id.as_str());
                    qb.push(")) ORDER BY updated_at, id LIMIT ");
                }
            }
            qb.push_bind(i64::from(page.limit) + 1);
            qb.build_query_scalar().fetch_all(&mut *c).await.map_err(storage)?
        });
        let orders = load(&mut r.conn(), Some(&self.vault), &ids, false).await?;
        if since.is_some() {
            return Ok(page.finish(orders, |o| format!("{}_{}", o.updated_at.timestamp_micros(), o.id)));
        }
        Ok(page.finish(orders, |o| o.id.clone()))
    }

    /// How many orders this customer's account has.
    pub async fn count_for_customer(&self, customer_id: &str) -> Result<i64> {
        let mut r = self.db.read().await?;
        backroom_db::sql::query("SELECT COUNT(*) FROM orders WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_scalar(&mut r.conn())
            .await
            .map_err(storage)
    }

    /// Counts by status (tests and monitoring).
    pub async fn count_by_status(&self) -> Result<HashMap<String, i64>> {
        let mut r = self.db.read().await?;
        let rows: Vec<(String, i64)> = backroom_db::sql::query("SELECT status, COUNT(*) FROM orders GROUP BY status")
            .fetch_all(&mut r.conn())
            .await
            .map_err(storage)?;
        Ok(rows.into_iter().collect())
    }

    /// Seals the personal data of orders written by releases that kept it in clear, and empties
    /// the clear columns; a batch per transaction. Run at start (the application builder).
    /// `updated_at` is left as it is: the order reads the same through the API afterwards, and
    /// pollers (`updated_since`) would otherwise fetch every old order again.
    pub async fn seal_legacy(&self) -> Result<u64> {
        let mut sealed = 0;
        loop {
            let mut tx = self.db.begin().await?;
            let rows: Vec<(String, String, String)> = backroom_db::sql::query(
                "SELECT id, email, shipping_address FROM orders WHERE personal IS NULL AND email <> '' \
                 ORDER BY id LIMIT 200",
            )
            .fetch_all(&mut tx.conn())
            .await
            .map_err(storage)?;
            if rows.is_empty() {
                return Ok(sealed);
            }
            for (id, email, address) in rows {
                let shipping_address: Address = serde_json::from_str(&address).map_err(Error::internal)?;
                let personal = Personal { email, shipping_address }.seal_new(&self.vault, &id)?;
                personal.key.insert(&mut tx.conn()).await?;
                backroom_db::sql::query(
                    "UPDATE orders SET key_id = $2, email_index = $3, personal = $4, email = '', shipping_address = '' \
                     WHERE id = $1",
                )
                .bind(&id)
                .bind(&personal.key.id)
                .bind(&personal.email_index)
                .bind(&personal.sealed)
                .execute(&mut tx.conn())
                .await
                .map_err(storage)?;
                sealed += 1;
            }
            tx.commit().await?;
        }
    }
}

/// Destroys the data keys of every order of this customer's account, in the caller's
/// transaction (erasure): their personal fields read as `null` from then on; lines, prices and
/// totals stay. Returns how many keys were destroyed.
pub async fn erase_customer(conn: &mut Conn<'_>, customer_id: &str) -> Result<u64> {
    let keys: Vec<(String,)> =
        backroom_db::sql::query("SELECT key_id FROM orders WHERE customer_id = $1 AND key_id IS NOT NULL")
            .bind(customer_id)
            .fetch_all(conn)
            .await
            .map_err(storage)?;
    let mut n = 0;
    for (k,) in keys {
        n += u64::from(Vault::destroy(conn, &k).await?);
    }
    Ok(n)
}

/// A snapshot stored as JSON text (the order's promotions and shipping method).
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("promotions and shipping methods are plain structs")
}

fn unjson<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(Error::internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever transitions are attempted, in whatever order (a request and the recovery
        /// worker racing), an order leaves `pending_payment` at most once and never returns.
        #[test]
        fn an_order_settles_at_most_once(attempts in proptest::collection::vec(0usize..5, 0..20)) {
            let mut state = OrderStatus::PendingPayment;
            let mut moves = 0;
            for a in attempts {
                let a = a % OrderStatus::ALL.len();
                let to = OrderStatus::ALL[a];
                // The conditional UPDATE: applies only from the expected state.
                if state == OrderStatus::PendingPayment && state.can_become(to) {
                    state = to;
                    moves += 1;
                }
            }
            prop_assert!(moves <= 1);
            prop_assert!(moves == 0 || state != OrderStatus::PendingPayment);
        }
    }

    fn refused_fields(r: Result<OrderFilter>) -> Vec<String> {
        match r {
            Err(Error::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn order_filters() {
        let f = OrderFilter::parse(Some(OrderStatus::Placed), Some(" Ana@Example.com "), Some("#1001")).unwrap();
        assert_eq!(
            f,
            OrderFilter {
                status: Some(OrderStatus::Placed),
                email: Some("Ana@Example.com".into()),
                customer_id: None,
                number: Some(1001),
                updated_since: None
            }
        );
        assert_eq!(OrderFilter::parse(None, None, Some("1002")).unwrap().number, Some(1002));
        assert_eq!(OrderFilter::parse(None, None, None).unwrap(), OrderFilter::default());
        for email in
            ["", "  ", "ana", "ana @example.com", "a\u{7}@example.com", &format!("{}@example.com", "a".repeat(250))]
        {
            assert_eq!(refused_fields(OrderFilter::parse(None, Some(email), None)), ["email"], "{email:?}");
        }
        for number in ["", "#", "abc", "10x", "-1", "+5", "0", "1.5", "99999999999999999999", "##1"] {
            assert_eq!(refused_fields(OrderFilter::parse(None, None, Some(number))), ["number"], "{number:?}");
        }
        assert_eq!(refused_fields(OrderFilter::parse(None, Some(""), Some("x"))), ["email", "number"]);
    }

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        use OrderStatus::*;
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let allowed = match from {
                    PendingPayment => to != PendingPayment && to != Completed,
                    OnHold => matches!(to, Placed | Canceled),
                    Placed => matches!(to, Completed | Canceled),
                    Completed | Canceled => false,
                };
                assert_eq!(from.can_become(to), allowed, "{from:?} -> {to:?}");
            }
        }
        // Answers stored before issue 14 read with the new names.
        assert_eq!(serde_json::from_str::<OrderStatus>("\"cancelled\"").unwrap(), Canceled);
        assert_eq!(serde_json::from_str::<OrderStatus>("\"payment_failed\"").unwrap(), Canceled);
    }
}
