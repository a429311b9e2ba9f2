//! Orders after the sale: fulfilments and their shipments, deliveries, cancels, the review
//! of held orders (approve, reject), refunds and returns (docs/orders.md).
//!
//! Each action is one write job of the group-commit writer that first takes the order's row
//! (`UPDATE orders … RETURNING`, a row lock on PostgreSQL), checks the state with the rules
//! of [`crate::lifecycle`], changes what it changes with conditional `UPDATE`s, adds a history
//! entry and writes its event to the outbox. Money moves at the provider between two jobs:
//!
//! - a refund is reserved first (`pending`, counted in the order's `refunds_held`, only if
//!   `refunds_held + amount ≤ captured`: one conditional `UPDATE` of the order's row, so no
//!   number of concurrent requests passes the captured amount), then the provider is asked
//!   with the refund's id as its idempotency key, then a follow-up job records `succeeded`
//!   (raising `refunded_total`) or `failed` (freeing its amount). An answer that is lost
//!   leaves it `pending`; [`Oms::recover_refunds`] asks the provider again with the same key;
//! - approve captures and reject voids at the provider before the job that moves the order.

use std::collections::{BTreeMap, HashMap};

use backroom_db::outbox::{self, Event, OrderChange, OrderState};
use backroom_db::writer::Done;
use backroom_db::{Conn, Db, storage};
use backroom_inventory::reservations;
use backroom_kernel::id::{AttemptId, OrderId};
use backroom_kernel::{Code, Currency, Error, Money, Result, id, now};
use backroom_payments::{AttemptStatus, ChargeStatus, Providers, RefundRequest, RefundStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lifecycle::{self, FulfillmentStatus, PaymentStatus, Units};
use crate::{OrderStatus, history};

/// The actor of stock ledger lines written without a staff key (recovery, provider refunds).
const SYSTEM: &str = "system";

/// A line of an order and a number of its units.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemQuantity {
    /// The order line's id (`item_…`).
    pub item_id: String,
    /// 1 or more.
    #[schema(minimum = 1)]
    pub quantity: i64,
}

/// `POST /admin/orders/{id}/fulfillments`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFulfillment {
    pub items: Vec<ItemQuantity>,
    /// Take the units from this location only; from the order's allocations in location
    /// order (the default location first) when left out.
    #[serde(default)]
    pub location_id: Option<String>,
}

/// `POST /admin/orders/{id}/fulfillments/{fulfillment_id}/shipments`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShipment {
    /// 1–100 characters.
    #[schema(example = "DHL")]
    pub carrier: String,
    /// 1–100 characters.
    #[schema(example = "JD014600006281230434")]
    pub tracking_number: String,
    /// An `http` or `https` URL of at most 2000 characters.
    #[serde(default)]
    pub tracking_url: Option<String>,
}

/// `POST /admin/orders/{id}/refunds`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRefund {
    /// More than zero, in the order's currency.
    pub amount: Money,
    /// Why (1–100 characters), such as `damaged`, `goodwill`.
    #[schema(example = "goodwill")]
    pub reason: String,
    /// Up to 1000 characters, for staff.
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /admin/orders/{id}/returns`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReturn {
    pub items: Vec<ItemQuantity>,
    /// Put the units back on hand (where they were fulfilled from).
    pub restock: bool,
    /// Refund the units' share of what was paid.
    pub refund: bool,
}

/// Units of a line in a fulfilment, from one stock location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FulfillmentItem {
    pub item_id: String,
    pub variant_id: String,
    pub quantity: i64,
    /// Where the units left stock; `null` for a variant whose stock is not tracked.
    pub location_id: Option<String>,
}

/// A parcel of a fulfilment on its way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shipment {
    /// `shp_…`
    pub id: String,
    pub fulfillment_id: String,
    pub carrier: String,
    pub tracking_number: String,
    pub tracking_url: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Units of an order that left stock together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fulfillment {
    /// `ful_…`
    pub id: String,
    pub order_id: String,
    /// The location asked for, if one was.
    pub location_id: Option<String>,
    /// `fulfilled` (left stock), `shipped` (has a shipment), `delivered`.
    pub status: String,
    pub items: Vec<FulfillmentItem>,
    pub shipments: Vec<Shipment>,
    pub created_at: DateTime<Utc>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Money given back to the customer through the payment provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refund {
    /// `ref_…`: also the provider's idempotency key for it.
    pub id: String,
    pub order_id: String,
    pub amount: Money,
    /// `pending` (the provider's answer is not recorded yet; recovery asks again),
    /// `succeeded` or `failed`.
    pub status: String,
    pub reason: String,
    pub note: Option<String>,
    /// The provider's id of the refund, once known.
    pub provider_reference: Option<String>,
    /// Why the provider refused it (`failed` only).
    pub failure_reason: Option<String>,
    /// The return it pays for, if a return made it.
    pub return_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Units of a line that came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReturnItem {
    pub item_id: String,
    pub quantity: i64,
}

/// Units that came back, and the refund they got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Return {
    /// `ret_…`
    pub id: String,
    pub order_id: String,
    pub items: Vec<ReturnItem>,
    /// The units were put back on hand.
    pub restocked: bool,
    /// The refund of the units' share of what was paid; absent when none was asked, or nothing
    /// was left to refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<Refund>,
    pub created_at: DateTime<Utc>,
}

/// A refund answer: the refund, and whether it was the answer to an earlier request with the
/// same `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct RefundAnswer {
    pub refund: Refund,
    pub replayed: bool,
}

// ---------------------------------------------------------------------------------------
// Reading what happened after the sale.

struct FulfillmentRow {
    id: String,
    order_id: String,
    location_id: Option<String>,
    status: String,
    created_at: DateTime<Utc>,
    shipped_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
}

backroom_db::from_row!(FulfillmentRow { id, order_id, location_id, status, created_at, shipped_at, delivered_at });

struct FulfillmentItemRow {
    fulfillment_id: String,
    item_id: String,
    variant_id: String,
    location_id: String,
    quantity: i64,
}

backroom_db::from_row!(FulfillmentItemRow { fulfillment_id, item_id, variant_id, location_id, quantity });

backroom_db::from_row!(Shipment { id, fulfillment_id, carrier, tracking_number, tracking_url, created_at });

struct RefundRow {
    id: String,
    order_id: String,
    amount: i64,
    currency: String,
    status: String,
    reason: String,
    note: Option<String>,
    provider_reference: Option<String>,
    failure_reason: Option<String>,
    return_id: Option<String>,
    created_at: DateTime<Utc>,
}

backroom_db::from_row!(RefundRow {
    id,
    order_id,
    amount,
    currency,
    status,
    reason,
    note,
    provider_reference,
    failure_reason,
    return_id,
    created_at
});

const REFUND_COLUMNS: &str = "id, order_id, amount, currency, status, reason, note, provider_reference, \
                              failure_reason, return_id, created_at";

impl RefundRow {
    fn into_refund(self) -> Result<Refund> {
        let currency = Currency::parse(&self.currency).map_err(Error::internal)?;
        Ok(Refund {
            amount: Money::new(self.amount, currency).map_err(Error::internal)?,
            id: self.id,
            order_id: self.order_id,
            status: self.status,
            reason: self.reason,
            note: self.note,
            provider_reference: self.provider_reference,
            failure_reason: self.failure_reason,
            return_id: self.return_id,
            created_at: self.created_at,
        })
    }
}

struct ReturnRow {
    id: String,
    order_id: String,
    restocked: bool,
    refund_id: Option<String>,
    created_at: DateTime<Utc>,
}

backroom_db::from_row!(ReturnRow { id, order_id, restocked, refund_id, created_at });

/// The fulfilments, refunds and returns of some orders, by order id.
#[derive(Debug, Default)]
pub(crate) struct AfterSale {
    pub fulfillments: HashMap<String, Vec<Fulfillment>>,
    pub refunds: HashMap<String, Vec<Refund>>,
    pub returns: HashMap<String, Vec<Return>>,
}

impl AfterSale {
    /// Loads them for `ids` in a constant number of queries.
    pub(crate) async fn load(conn: &mut Conn<'_>, ids: &[String]) -> Result<AfterSale> {
        let mut out = AfterSale::default();
        if ids.is_empty() {
            return Ok(out);
        }
        let list = backroom_db::sql::in_list(ids.len(), 1);
        macro_rules! by_ids {
            ($sql:expr) => {
                backroom_db::sql::query($sql).bind_all(ids.iter()).fetch_all(conn).await.map_err(storage)
            };
        }
        let fulfillments: Vec<FulfillmentRow> = by_ids!(format!(
            "SELECT id, order_id, location_id, status, created_at, shipped_at, delivered_at FROM order_fulfillments \
             WHERE order_id IN {list} ORDER BY order_id, id"
        ))?;
        let items: Vec<FulfillmentItemRow> = by_ids!(format!(
            "SELECT fulfillment_id, item_id, variant_id, location_id, quantity FROM order_fulfillment_items \
             WHERE order_id IN {list} ORDER BY fulfillment_id, item_id, location_id"
        ))?;
        let shipments: Vec<Shipment> = by_ids!(format!(
            "SELECT id, fulfillment_id, carrier, tracking_number, tracking_url, created_at FROM order_shipments \
             WHERE order_id IN {list} ORDER BY fulfillment_id, id"
        ))?;
        let refunds: Vec<RefundRow> = by_ids!(format!(
            "SELECT {REFUND_COLUMNS} FROM order_refunds WHERE order_id IN {list} ORDER BY order_id, id"
        ))?;
        let returns: Vec<ReturnRow> = by_ids!(format!(
            "SELECT id, order_id, restocked, refund_id, created_at FROM order_returns WHERE order_id IN {list} \
             ORDER BY order_id, id"
        ))?;
        let return_items: Vec<(String, String, i64)> = by_ids!(format!(
            "SELECT i.return_id, i.item_id, i.quantity FROM order_return_items i JOIN order_returns r ON r.id = i.return_id \
             WHERE r.order_id IN {list} ORDER BY i.return_id, i.item_id"
        ))?;

        let mut items_by: HashMap<String, Vec<FulfillmentItem>> = HashMap::new();
        for i in items {
            items_by.entry(i.fulfillment_id).or_default().push(FulfillmentItem {
                item_id: i.item_id,
                variant_id: i.variant_id,
                quantity: i.quantity,
                location_id: (!i.location_id.is_empty()).then_some(i.location_id),
            });
        }
        let mut shipments_by: HashMap<String, Vec<Shipment>> = HashMap::new();
        for s in shipments {
            shipments_by.entry(s.fulfillment_id.clone()).or_default().push(s);
        }
        for f in fulfillments {
            out.fulfillments.entry(f.order_id.clone()).or_default().push(Fulfillment {
                items: items_by.remove(&f.id).unwrap_or_default(),
                shipments: shipments_by.remove(&f.id).unwrap_or_default(),
                id: f.id,
                order_id: f.order_id,
                location_id: f.location_id,
                status: f.status,
                created_at: f.created_at,
                shipped_at: f.shipped_at,
                delivered_at: f.delivered_at,
            });
        }
        let mut refunds_by_id: HashMap<String, Refund> = HashMap::new();
        for r in refunds {
            let refund = r.into_refund()?;
            refunds_by_id.insert(refund.id.clone(), refund.clone());
            out.refunds.entry(refund.order_id.clone()).or_default().push(refund);
        }
        let mut return_items_by: HashMap<String, Vec<ReturnItem>> = HashMap::new();
        for (return_id, item_id, quantity) in return_items {
            return_items_by.entry(return_id).or_default().push(ReturnItem { item_id, quantity });
        }
        for r in returns {
            out.returns.entry(r.order_id.clone()).or_default().push(Return {
                items: return_items_by.remove(&r.id).unwrap_or_default(),
                refund: r.refund_id.as_ref().and_then(|id| refunds_by_id.get(id).cloned()),
                id: r.id,
                order_id: r.order_id,
                restocked: r.restocked,
                created_at: r.created_at,
            });
        }
        Ok(out)
    }

    fn of(conn_result: AfterSale, order_id: &str) -> (Vec<Fulfillment>, Vec<Refund>, Vec<Return>) {
        let mut a = conn_result;
        (
            a.fulfillments.remove(order_id).unwrap_or_default(),
            a.refunds.remove(order_id).unwrap_or_default(),
            a.returns.remove(order_id).unwrap_or_default(),
        )
    }
}

// ---------------------------------------------------------------------------------------
// The order's row inside a write job.

/// The order's row as a job took it.
struct Locked {
    id: String,
    number: i64,
    status: OrderStatus,
    payment: PaymentStatus,
    fulfillment: FulfillmentStatus,
    currency: Currency,
    total: i64,
    refunds_held: i64,
    tax_inclusive: bool,
}

struct LockedRow {
    number: i64,
    status: String,
    payment_status: String,
    fulfillment_status: String,
    currency: String,
    total: i64,
    refunds_held: i64,
    tax_inclusive: bool,
}

backroom_db::from_row!(LockedRow {
    number,
    status,
    payment_status,
    fulfillment_status,
    currency,
    total,
    refunds_held,
    tax_inclusive
});

impl Locked {
    /// Locks a placed order and reads one of its fulfilments' status, for an action (`done`:
    /// "shipped", "delivered") on that fulfilment: `404` when the fulfilment is not the order's,
    /// `409` when the order is not placed.
    async fn with_fulfillment(
        conn: &mut Conn<'_>,
        order_id: &str,
        fulfillment_id: &str,
        done: &str,
    ) -> Result<(Locked, String)> {
        let o = Locked::take(&mut *conn, order_id).await?;
        let status: Option<(String,)> =
            backroom_db::sql::query("SELECT status FROM order_fulfillments WHERE id = $1 AND order_id = $2")
                .bind(fulfillment_id)
                .bind(order_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(storage)?;
        let Some((fstatus,)) = status else {
            return Err(Error::not_found("fulfillment"));
        };
        if !lifecycle::may_fulfil(o.status) {
            return Err(conflict(format!("the order is {}; only a placed order is {done}", o.status.as_str())));
        }
        Ok((o, fstatus))
    }

    /// Takes the order's row (a no-op `UPDATE`: a row lock on PostgreSQL until the batch
    /// commits, so two jobs on one order run one after the other) and reads it; `not_found`
    /// when there is no such order.
    async fn take(conn: &mut Conn<'_>, order_id: &str) -> Result<Locked> {
        let row: Option<LockedRow> = backroom_db::sql::query(
            "UPDATE orders SET updated_at = updated_at WHERE id = $1 RETURNING number, status, payment_status, \
             fulfillment_status, currency, total, refunds_held, tax_inclusive",
        )
        .bind(order_id)
        .fetch_optional(conn)
        .await
        .map_err(storage)?;
        let r = row.ok_or(Error::not_found("order"))?;
        let bad = |what: &str, v: &str| Error::internal(format!("order {order_id}: {what} {v}"));
        Ok(Locked {
            id: order_id.to_owned(),
            number: r.number,
            status: OrderStatus::parse(&r.status).ok_or_else(|| bad("status", &r.status))?,
            payment: PaymentStatus::parse(&r.payment_status).ok_or_else(|| bad("payment status", &r.payment_status))?,
            fulfillment: FulfillmentStatus::parse(&r.fulfillment_status)
                .ok_or_else(|| bad("fulfillment status", &r.fulfillment_status))?,
            currency: Currency::parse(&r.currency).map_err(Error::internal)?,
            total: r.total,
            refunds_held: r.refunds_held,
            tax_inclusive: r.tax_inclusive,
        })
    }

    fn money(&self, amount: i64) -> Result<Money> {
        Money::new(amount, self.currency).map_err(Error::internal)
    }

    /// The event payload for this order in `status`.
    fn change(&self, status: OrderStatus, resource_id: Option<&str>, amount: Option<Money>) -> OrderChange {
        OrderChange {
            order_id: self.id.clone(),
            number: format!("#{}", self.number),
            status: event_state(status),
            resource_id: resource_id.map(str::to_owned),
            amount,
        }
    }
}

/// An order status as events tell it.
pub fn event_state(status: OrderStatus) -> OrderState {
    match status {
        OrderStatus::PendingPayment => OrderState::PendingPayment,
        OrderStatus::Placed => OrderState::Placed,
        OrderStatus::OnHold => OrderState::OnHold,
        OrderStatus::Completed => OrderState::Completed,
        OrderStatus::Canceled => OrderState::Canceled,
    }
}

struct LineRow {
    id: String,
    variant_id: String,
    quantity: i64,
    fulfilled_quantity: i64,
    shipped_quantity: i64,
    delivered_quantity: i64,
    returned_quantity: i64,
    total: i64,
    discount_total: i64,
    tax_total: i64,
}

backroom_db::from_row!(LineRow {
    id,
    variant_id,
    quantity,
    fulfilled_quantity,
    shipped_quantity,
    delivered_quantity,
    returned_quantity,
    total,
    discount_total,
    tax_total
});

impl LineRow {
    fn units(&self) -> Units {
        Units {
            ordered: self.quantity,
            fulfilled: self.fulfilled_quantity,
            shipped: self.shipped_quantity,
            delivered: self.delivered_quantity,
            returned: self.returned_quantity,
        }
    }
}

async fn lines(conn: &mut Conn<'_>, order_id: &str) -> Result<Vec<LineRow>> {
    backroom_db::sql::query(
        "SELECT id, variant_id, quantity, fulfilled_quantity, shipped_quantity, delivered_quantity, returned_quantity, \
         total, discount_total, tax_total FROM order_lines WHERE order_id = $1 ORDER BY position",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await
    .map_err(storage)
}

/// Adds `delta` to one unit counter of each named line (`column` is one of the counters).
async fn count_units(conn: &mut Conn<'_>, order_id: &str, column: &str, units: &BTreeMap<String, i64>) -> Result<()> {
    for (item_id, q) in units {
        backroom_db::sql::query(format!(
            "UPDATE order_lines SET {column} = {column} + $3 WHERE order_id = $1 AND id = $2"
        ))
        .bind(order_id)
        .bind(item_id)
        .bind(*q)
        .execute(conn)
        .await
        .map_err(storage)?;
    }
    Ok(())
}

/// Recomputes the order's `fulfillment_status` from its lines, and `completed` when every
/// unit was delivered. Answers the status the order has then.
async fn refresh_fulfillment(conn: &mut Conn<'_>, o: &Locked) -> Result<OrderStatus> {
    let units: Vec<Units> = lines(conn, &o.id).await?.iter().map(LineRow::units).collect();
    let fs = lifecycle::fulfillment_status(&units);
    let status = lifecycle::status_after_fulfillment(o.status, fs);
    backroom_db::sql::query("UPDATE orders SET fulfillment_status = $2, status = $3, updated_at = $4 WHERE id = $1")
        .bind(&o.id)
        .bind(fs.as_str())
        .bind(status.as_str())
        .bind(now())
        .execute(conn)
        .await
        .map_err(storage)?;
    if status != o.status {
        history(conn, &o.id, status, "every unit was delivered: completed", now()).await?;
    }
    Ok(status)
}

fn conflict(message: impl Into<String>) -> Error {
    Error::refused(Code::OrderStateConflict, message)
}

fn stock_changed(order_id: &str, variant_ids: Vec<String>) -> Option<Event> {
    (!variant_ids.is_empty())
        .then(|| Event::StockChanged(outbox::StockChanged { variant_ids, order_id: Some(order_id.to_owned()) }))
}

/// Checks a list of lines and quantities against the order's lines: every `item_id` one of
/// them, once, and every quantity at least 1 and at most `room(line)`. Field paths name the
/// entry (`items[1].quantity`).
fn check_items(
    items: &[ItemQuantity],
    lines: &[LineRow],
    room: impl Fn(&LineRow) -> i64,
    what: &str,
) -> Result<BTreeMap<String, i64>> {
    let mut p = backroom_kernel::error::Problems::new();
    let mut out = BTreeMap::new();
    if items.is_empty() {
        p.add("items", "must name at least one line");
    }
    for (i, it) in items.iter().enumerate() {
        let Some(line) = lines.iter().find(|l| l.id == it.item_id) else {
            p.add(format!("items[{i}].item_id"), "is not a line of this order");
            continue;
        };
        if out.contains_key(&it.item_id) {
            p.add(format!("items[{i}].item_id"), "appears twice");
            continue;
        }
        if it.quantity < 1 {
            p.add(format!("items[{i}].quantity"), "must be at least 1");
            continue;
        }
        let left = room(line);
        if it.quantity > left {
            p.add(format!("items[{i}].quantity"), format!("only {left} units of this line are left {what}"));
            continue;
        }
        out.insert(it.item_id.clone(), it.quantity);
    }
    p.finish()?;
    Ok(out)
}

/// Text a staff member typed: trimmed, `min`–`max` characters, displayable.
fn check_text(p: &mut backroom_kernel::error::Problems, field: &str, v: &str, max: usize) {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > max {
        p.add(field, format!("must be 1–{max} characters"));
    } else if let Err(e) = backroom_kernel::check_display(v) {
        p.add(field, e.to_string());
    }
}

// ---------------------------------------------------------------------------------------
// The service.

/// The actions after the sale.
#[derive(Clone)]
pub struct Oms {
    db: Db,
    providers: Providers,
}

/// What the first job of a refund found.
enum Reserved {
    /// A new refund, `pending`: ask the provider.
    New(String),
    /// The key was used before with this body: the refund it made.
    Existing(String),
}

impl Oms {
    pub fn new(db: Db, providers: Providers) -> Self {
        Self { db, providers }
    }

    /// One order's fulfilments, refunds and returns.
    async fn after_sale(&self, order_id: &str) -> Result<(Vec<Fulfillment>, Vec<Refund>, Vec<Return>)> {
        let mut r = self.db.read().await?;
        let a = AfterSale::load(&mut r.conn(), &[order_id.to_owned()]).await?;
        Ok(AfterSale::of(a, order_id))
    }

    async fn fulfillment(&self, order_id: &str, fulfillment_id: &str) -> Result<Fulfillment> {
        let (f, _, _) = self.after_sale(order_id).await?;
        f.into_iter().find(|f| f.id == fulfillment_id).ok_or(Error::not_found("fulfillment"))
    }

    async fn refund_by_id(&self, order_id: &str, refund_id: &str) -> Result<Refund> {
        let (_, r, _) = self.after_sale(order_id).await?;
        r.into_iter().find(|r| r.id == refund_id).ok_or(Error::not_found("refund"))
    }

    /// Units leave stock: `on_hand` and `allocated` go down where they were allocated (or at
    /// `location_id`), a ledger line each; the lines count them as fulfilled.
    #[tracing::instrument(skip(self, input))]
    pub async fn fulfil(&self, order_id: &str, input: &NewFulfillment, actor: &str) -> Result<Fulfillment> {
        let (order_id, input, actor) = (order_id.to_owned(), input.clone(), actor.to_owned());
        let fid = id::new("ful");
        let job_fid = fid.clone();
        let oid = order_id.clone();
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    let o = Locked::take(&mut conn, &order_id).await?;
                    if !lifecycle::may_fulfil(o.status) {
                        return Err(conflict(format!(
                            "the order is {}; only a placed order is fulfilled",
                            o.status.as_str()
                        )));
                    }
                    let lines = lines(&mut conn, &order_id).await?;
                    let wanted = check_items(&input.items, &lines, |l| l.quantity - l.fulfilled_quantity, "to fulfil")?;
                    let ts = now();
                    backroom_db::sql::query(
                        "INSERT INTO order_fulfillments (id, order_id, location_id, status, created_at) \
                         VALUES ($1, $2, $3, 'fulfilled', $4)",
                    )
                    .bind(&job_fid)
                    .bind(&order_id)
                    .bind(input.location_id.as_deref())
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    // Variant order: the global lock order of stock rows.
                    let mut by_variant: Vec<(&LineRow, i64)> =
                        lines.iter().filter_map(|l| wanted.get(&l.id).map(|q| (l, *q))).collect();
                    by_variant.sort_by(|a, b| a.0.variant_id.cmp(&b.0.variant_id));
                    let mut changed = Vec::new();
                    let reason = format!("fulfilled for {order_id} ({job_fid})");
                    for (line, q) in by_variant {
                        let parts = reservations::fulfil(
                            &mut conn,
                            &order_id,
                            &line.variant_id,
                            q,
                            input.location_id.as_deref(),
                            &reason,
                            &actor,
                        )
                        .await?;
                        let Some(mut parts) = parts else {
                            return Err(Error::field(
                                "location_id",
                                "the order has fewer units of a line allocated at this location than asked",
                            ));
                        };
                        if parts.is_empty() {
                            parts.push((String::new(), q)); // not tracked: no stock moved
                        } else if changed.last() != Some(&line.variant_id) {
                            changed.push(line.variant_id.clone());
                        }
                        for (location_id, units) in parts {
                            backroom_db::sql::query(
                                "INSERT INTO order_fulfillment_items (fulfillment_id, order_id, item_id, variant_id, \
                                 location_id, quantity) VALUES ($1, $2, $3, $4, $5, $6)",
                            )
                            .bind(&job_fid)
                            .bind(&order_id)
                            .bind(&line.id)
                            .bind(&line.variant_id)
                            .bind(location_id)
                            .bind(units)
                            .execute(&mut conn)
                            .await
                            .map_err(storage)?;
                        }
                        // Conditional: never more units than the line has.
                        let n = backroom_db::sql::query(
                            "UPDATE order_lines SET fulfilled_quantity = fulfilled_quantity + $3 \
                             WHERE order_id = $1 AND id = $2 AND fulfilled_quantity + $3 <= quantity",
                        )
                        .bind(&order_id)
                        .bind(&line.id)
                        .bind(q)
                        .execute(&mut conn)
                        .await
                        .map_err(storage)?;
                        if n != 1 {
                            return Err(Error::internal("a line's units changed under its fulfilment"));
                        }
                    }
                    let status = refresh_fulfillment(&mut conn, &o).await?;
                    let units: i64 = wanted.values().sum();
                    history(&mut conn, &order_id, status, &format!("{units} units fulfilled ({job_fid})"), ts).await?;
                    outbox::enqueue(&mut conn, &Event::OrderFulfilled(o.change(status, Some(&job_fid), None))).await?;
                    if let Some(e) = stock_changed(&order_id, changed) {
                        outbox::enqueue(&mut conn, &e).await?;
                    }
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        self.fulfillment(&oid, &fid).await
    }

    /// A fulfilment gets a shipment; the first makes it `shipped` and counts its units as
    /// shipped.
    #[tracing::instrument(skip(self, input))]
    pub async fn ship(&self, order_id: &str, fulfillment_id: &str, input: &NewShipment) -> Result<Shipment> {
        let mut p = backroom_kernel::error::Problems::new();
        check_text(&mut p, "carrier", &input.carrier, 100);
        check_text(&mut p, "tracking_number", &input.tracking_number, 100);
        if let Some(url) = &input.tracking_url {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.len() <= 2000
                && !url.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                p.add("tracking_url", "must be an http or https URL of at most 2000 characters");
            }
        }
        p.finish()?;
        let (order_id, fulfillment_id, input) = (order_id.to_owned(), fulfillment_id.to_owned(), input.clone());
        let sid = id::new("shp");
        let job_sid = sid.clone();
        let (oid, fid) = (order_id.clone(), fulfillment_id.clone());
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    let (o, fstatus) = Locked::with_fulfillment(&mut conn, &order_id, &fulfillment_id, "shipped").await?;
                    if fstatus == "delivered" {
                        return Err(conflict("the fulfilment was delivered already"));
                    }
                    let ts = now();
                    backroom_db::sql::query(
                        "INSERT INTO order_shipments (id, fulfillment_id, order_id, carrier, tracking_number, tracking_url, \
                         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&job_sid)
                    .bind(&fulfillment_id)
                    .bind(&order_id)
                    .bind(input.carrier.trim())
                    .bind(input.tracking_number.trim())
                    .bind(input.tracking_url.as_deref())
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    let first = backroom_db::sql::query(
                        "UPDATE order_fulfillments SET status = 'shipped', shipped_at = $2 WHERE id = $1 AND status = 'fulfilled'",
                    )
                    .bind(&fulfillment_id)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    let mut status = o.status;
                    if first == 1 {
                        let units = fulfillment_units(&mut conn, &fulfillment_id).await?;
                        count_units(&mut conn, &order_id, "shipped_quantity", &units).await?;
                        status = refresh_fulfillment(&mut conn, &o).await?;
                    }
                    history(&mut conn, &order_id, status, &format!("shipped ({fulfillment_id}, {job_sid})"), ts).await?;
                    outbox::enqueue(&mut conn, &Event::OrderShipped(o.change(status, Some(&job_sid), None))).await?;
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        let f = self.fulfillment(&oid, &fid).await?;
        f.shipments.into_iter().find(|s| s.id == sid).ok_or(Error::not_found("shipment"))
    }

    /// A shipped fulfilment arrived; an order whose every unit arrived is `completed`.
    #[tracing::instrument(skip(self))]
    pub async fn deliver(&self, order_id: &str, fulfillment_id: &str) -> Result<Fulfillment> {
        let (oid, fid) = (order_id.to_owned(), fulfillment_id.to_owned());
        let (order_id, fulfillment_id) = (order_id.to_owned(), fulfillment_id.to_owned());
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    let (o, fstatus) =
                        Locked::with_fulfillment(&mut conn, &order_id, &fulfillment_id, "delivered").await?;
                    match fstatus.as_str() {
                        "shipped" => {}
                        "delivered" => return Err(conflict("the fulfilment was delivered already")),
                        _ => return Err(conflict("the fulfilment has no shipment yet")),
                    }
                    let ts = now();
                    backroom_db::sql::query(
                        "UPDATE order_fulfillments SET status = 'delivered', delivered_at = $2 WHERE id = $1 AND status = 'shipped'",
                    )
                    .bind(&fulfillment_id)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    let units = fulfillment_units(&mut conn, &fulfillment_id).await?;
                    count_units(&mut conn, &order_id, "delivered_quantity", &units).await?;
                    history(&mut conn, &order_id, o.status, &format!("delivered ({fulfillment_id})"), ts).await?;
                    let status = refresh_fulfillment(&mut conn, &o).await?;
                    outbox::enqueue(&mut conn, &Event::OrderDelivered(o.change(status, Some(&fulfillment_id), None)))
                        .await?;
                    Ok(Done::Commit(()))
                })
            })
            .await?;
        self.fulfillment(&oid, &fid).await
    }

    /// Cancels a `placed` order with nothing fulfilled: its allocated stock is released and
    /// what was captured and not yet refunded is refunded (a refund like any other). A held
    /// order is rejected instead. Anything else is `order_not_cancelable`.
    #[tracing::instrument(skip(self))]
    pub async fn cancel(&self, order_id: &str, actor: &str) -> Result<()> {
        let status = {
            let mut r = self.db.read().await?;
            let s: Option<(String,)> = backroom_db::sql::query("SELECT status FROM orders WHERE id = $1")
                .bind(order_id)
                .fetch_optional(&mut r.conn())
                .await
                .map_err(storage)?;
            s.ok_or(Error::not_found("order"))?.0
        };
        if status == OrderStatus::OnHold.as_str() {
            return self.reject_with(order_id, actor, Code::OrderNotCancelable).await;
        }
        let (order_id, actor) = (order_id.to_owned(), actor.to_owned());
        let refund = self
            .db
            .write(move |mut conn| {
                Box::pin(async move {
                    let o = Locked::take(&mut conn, &order_id).await?;
                    if o.status == OrderStatus::OnHold || !lifecycle::may_cancel(o.status, o.fulfillment) {
                        let why = if o.fulfillment != FulfillmentStatus::NotFulfilled {
                            "the order has a fulfilment".to_owned()
                        } else {
                            format!("the order is {}", o.status.as_str())
                        };
                        return Err(Error::refused(Code::OrderNotCancelable, format!("{why}; it cannot be canceled")));
                    }
                    let ts = now();
                    // Conditional on the row's own state: a fulfilment committed meanwhile wins.
                    let n = backroom_db::sql::query(
                        "UPDATE orders SET status = 'canceled', updated_at = $2 \
                         WHERE id = $1 AND status = 'placed' AND fulfillment_status = 'not_fulfilled'",
                    )
                    .bind(&order_id)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    if n != 1 {
                        return Err(Error::refused(
                            Code::OrderNotCancelable,
                            "the order changed; it cannot be canceled",
                        ));
                    }
                    let reason = format!("released from {order_id} (canceled)");
                    let oid = OrderId::from_stored(order_id.clone());
                    let mut changed = reservations::release_allocation(&mut conn, &order_id, &reason, &actor).await?;
                    for v in reservations::release(&mut conn, &oid, &actor).await? {
                        if !changed.contains(&v) {
                            changed.push(v);
                        }
                    }
                    history(&mut conn, &order_id, OrderStatus::Canceled, "canceled by staff", ts).await?;
                    // A canceled order is no sale: its promotion use goes back (docs/pricing.md).
                    backroom_pricing::uses::release(&mut conn, &order_id).await?;
                    let mut refund = None;
                    if o.payment.captured() {
                        let rest = o.total - o.refunds_held;
                        if rest > 0 {
                            refund = Some(
                                reserve_refund(&mut conn, &o, rest, "order canceled", None, None, None)
                                    .await?
                                    .map_err(|_| {
                                        Error::internal("the rest of a canceled order did not fit its captured amount")
                                    })?,
                            );
                        }
                    } else {
                        set_payment_status(&mut conn, &order_id, PaymentStatus::Voided).await?;
                    }
                    outbox::enqueue(&mut conn, &Event::OrderCanceled(o.change(OrderStatus::Canceled, None, None)))
                        .await?;
                    if let Some(e) = stock_changed(&order_id, changed) {
                        outbox::enqueue(&mut conn, &e).await?;
                    }
                    Ok(Done::Commit(refund))
                })
            })
            .await?;
        if let Some(refund_id) = refund {
            self.send_refund(&refund_id).await?;
        }
        Ok(())
    }

    /// Approves a held order: its authorisation is captured at the provider, then the order
    /// is `placed` with its payment `captured` (and `order.placed` is sent).
    #[tracing::instrument(skip(self))]
    pub async fn approve(&self, order_id: &str) -> Result<()> {
        let attempt = self.held_attempt(order_id).await?;
        let provider = self.provider(&attempt.provider)?;
        let answer =
            provider.capture(attempt.id.as_str()).await.map_err(|e| Error::Unavailable(e.to_string().into()))?;
        let reference = match answer {
            ChargeStatus::Captured { reference } => reference,
            other => return Err(conflict(format!("the provider did not capture the payment: {other:?}"))),
        };
        let (order_id, attempt_id) = (order_id.to_owned(), attempt.id.clone());
        self.db
            .write_followup(move |mut conn| {
                Box::pin(async move {
                    let o = Locked::take(&mut conn, &order_id).await?;
                    let n = backroom_db::sql::query(
                        "UPDATE orders SET status = 'placed', payment_status = 'captured', updated_at = $2 \
                         WHERE id = $1 AND status = 'on_hold'",
                    )
                    .bind(&order_id)
                    .bind(now())
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    if n != 1 {
                        return Err(conflict(format!(
                            "the order is {}; only a held order is approved",
                            o.status.as_str()
                        )));
                    }
                    approve_attempt(&mut conn, &attempt_id, &reference).await?;
                    let oid = OrderId::from_stored(order_id.clone());
                    let changed = reservations::allocate(&mut conn, &oid, SYSTEM).await?;
                    history(&mut conn, &order_id, OrderStatus::Placed, "approved; payment captured", now()).await?;
                    let summary = outbox::OrderOutcome {
                        order_id: order_id.clone(),
                        number: format!("#{}", o.number),
                        status: OrderState::Placed,
                        total: o.money(o.total)?,
                        cart_id: String::new(),
                    };
                    outbox::enqueue(&mut conn, &Event::OrderPlaced(summary)).await?;
                    if let Some(e) = stock_changed(&order_id, changed) {
                        outbox::enqueue(&mut conn, &e).await?;
                    }
                    Ok(Done::Commit(()))
                })
            })
            .await
    }

    /// Rejects a held order: its authorisation is voided at the provider, its stock released,
    /// its promotion use given back; the order is `canceled`, its payment `voided`.
    #[tracing::instrument(skip(self))]
    pub async fn reject(&self, order_id: &str, actor: &str) -> Result<()> {
        self.reject_with(order_id, actor, Code::OrderStateConflict).await
    }

    async fn reject_with(&self, order_id: &str, actor: &str, refusal: Code) -> Result<()> {
        let attempt = match self.held_attempt(order_id).await {
            Err(Error::Refused { message, .. }) => return Err(Error::refused(refusal, message)),
            other => other?,
        };
        let provider = self.provider(&attempt.provider)?;
        let answer = provider.void(attempt.id.as_str()).await.map_err(|e| Error::Unavailable(e.to_string().into()))?;
        if !matches!(answer, ChargeStatus::Voided | ChargeStatus::NotFound) {
            return Err(Error::refused(refusal, format!("the provider did not void the payment: {answer:?}")));
        }
        let (order_id, attempt_id, actor) = (order_id.to_owned(), attempt.id.clone(), actor.to_owned());
        self.db
            .write_followup(move |mut conn| {
                Box::pin(async move {
                    let o = Locked::take(&mut conn, &order_id).await?;
                    let ts = now();
                    let n = backroom_db::sql::query(
                        "UPDATE orders SET status = 'canceled', payment_status = 'voided', updated_at = $2 \
                         WHERE id = $1 AND status = 'on_hold'",
                    )
                    .bind(&order_id)
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    if n != 1 {
                        return Err(Error::refused(refusal, format!("the order is {}", o.status.as_str())));
                    }
                    backroom_payments::transition(
                        &mut conn,
                        &attempt_id,
                        &[AttemptStatus::Pending, AttemptStatus::Unknown, AttemptStatus::Captured],
                        AttemptStatus::Voided,
                        None,
                        Some("rejected"),
                    )
                    .await?;
                    let oid = OrderId::from_stored(order_id.clone());
                    let mut changed = reservations::release(&mut conn, &oid, &actor).await?;
                    let reason = format!("released from {order_id} (rejected)");
                    for v in reservations::release_allocation(&mut conn, &order_id, &reason, &actor).await? {
                        if !changed.contains(&v) {
                            changed.push(v);
                        }
                    }
                    // Never paid: the promotion's use goes back, as for a declined payment.
                    backroom_pricing::uses::release(&mut conn, &order_id).await?;
                    history(&mut conn, &order_id, OrderStatus::Canceled, "rejected; payment voided", ts).await?;
                    outbox::enqueue(&mut conn, &Event::OrderCanceled(o.change(OrderStatus::Canceled, None, None)))
                        .await?;
                    if let Some(e) = stock_changed(&order_id, changed) {
                        outbox::enqueue(&mut conn, &e).await?;
                    }
                    Ok(Done::Commit(()))
                })
            })
            .await
    }

    /// The payment attempt of a held order; `order_state_conflict` when the order is not held.
    async fn held_attempt(&self, order_id: &str) -> Result<backroom_payments::Attempt> {
        let mut r = self.db.read().await?;
        let s: Option<(String,)> = backroom_db::sql::query("SELECT status FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_optional(&mut r.conn())
            .await
            .map_err(storage)?;
        let status = s.ok_or(Error::not_found("order"))?.0;
        if status != OrderStatus::OnHold.as_str() {
            return Err(conflict(format!(
                "the order is {status}; only a held order (on_hold) is approved or rejected"
            )));
        }
        backroom_payments::attempt_for_order(&mut r.conn(), &OrderId::from_stored(order_id.to_owned()))
            .await?
            .ok_or_else(|| Error::internal("a held order without a payment attempt"))
    }

    fn provider(&self, name: &str) -> Result<std::sync::Arc<dyn backroom_payments::PaymentProvider>> {
        self.providers.get(name).ok_or_else(|| {
            Error::refused(
                Code::PaymentProviderUnavailable,
                format!("the order's payment provider `{name}` is not enabled here"),
            )
        })
    }

    /// Refunds `input.amount` of a placed or completed order's captured payment, under the
    /// request's `Idempotency-Key` (`key`, with `hash` the request's hash): the same key and
    /// body answer the refund the first request made (asking the provider again, with the
    /// same key, while it is still `pending`); another body is `idempotency_key_reused`.
    #[tracing::instrument(skip(self, hash, input))]
    pub async fn refund(&self, order_id: &str, key: &str, hash: &str, input: &NewRefund) -> Result<RefundAnswer> {
        let mut p = backroom_kernel::error::Problems::new();
        check_text(&mut p, "reason", &input.reason, 100);
        if let Some(note) = &input.note
            && (note.chars().count() > 1000 || backroom_kernel::check_display(note).is_err())
        {
            p.add("note", "must be at most 1000 displayable characters");
        }
        if input.amount.amount() <= 0 {
            p.add("amount.amount", "must be more than zero");
        }
        p.finish()?;
        let (order_id, key, hash, input) = (order_id.to_owned(), key.to_owned(), hash.to_owned(), input.clone());
        let oid = order_id.clone();
        let reserved = self
            .db
            .write(move |mut conn| {
                Box::pin(async move {
                    let existing: Option<(String, Option<String>)> = backroom_db::sql::query(
                        "SELECT id, request_hash FROM order_refunds WHERE order_id = $1 AND idempotency_key = $2",
                    )
                    .bind(&order_id)
                    .bind(&key)
                    .fetch_optional(&mut conn)
                    .await
                    .map_err(storage)?;
                    if let Some((id, stored)) = existing {
                        if stored.as_deref() != Some(hash.as_str()) {
                            return Err(Error::refused(
                                Code::IdempotencyKeyReused,
                                "this Idempotency-Key was used with a different request body",
                            ));
                        }
                        return Ok(Done::Commit(Reserved::Existing(id)));
                    }
                    let o = Locked::take(&mut conn, &order_id).await?;
                    if input.amount.currency() != o.currency {
                        return Err(Error::field(
                            "amount.currency",
                            format!("must be the order's currency, {}", o.currency.code()),
                        ));
                    }
                    if !lifecycle::may_refund(o.status, o.payment) {
                        return Err(conflict(format!(
                            "the order is {} with its payment {}; only a captured payment is refunded",
                            o.status.as_str(),
                            o.payment.as_str()
                        )));
                    }
                    let note = input.note.as_deref().map(str::trim);
                    let reason = input.reason.trim().to_owned();
                    match reserve_refund(&mut conn, &o, input.amount.amount(), &reason, note, Some((&key, &hash)), None)
                        .await?
                    {
                        Ok(id) => Ok(Done::Commit(Reserved::New(id))),
                        Err(refundable) => Err(Error::refused_with(
                            Code::RefundExceedsCaptured,
                            format!(
                                "refunds would pass the captured amount; {} {} is left to refund",
                                refundable,
                                o.currency.code()
                            ),
                            serde_json::json!({ "refundable": o.money(refundable)? }),
                        )),
                    }
                })
            })
            .await?;
        let (refund_id, replayed) = match reserved {
            Reserved::New(id) => (id, false),
            Reserved::Existing(id) => (id, true),
        };
        self.send_refund(&refund_id).await?;
        Ok(RefundAnswer { refund: self.refund_by_id(&oid, &refund_id).await?, replayed })
    }

    /// Asks the provider to make a `pending` refund (with the refund's id as its idempotency
    /// key, so asking again never refunds twice) and records its answer. A refund no longer
    /// pending is left as it is. A lost answer leaves it `pending`, for recovery.
    async fn send_refund(&self, refund_id: &str) -> Result<()> {
        let row: Option<(String, String, i64, String, String)> = {
            let mut r = self.db.read().await?;
            backroom_db::sql::query(
                "SELECT r.status, r.attempt_id, r.amount, r.currency, a.provider FROM order_refunds r \
                 JOIN payment_attempts a ON a.id = r.attempt_id WHERE r.id = $1",
            )
            .bind(refund_id)
            .fetch_optional(&mut r.conn())
            .await
            .map_err(storage)?
        };
        let Some((status, attempt_id, amount, currency, provider)) = row else {
            return Err(Error::not_found("refund"));
        };
        if status != "pending" {
            return Ok(());
        }
        let provider = self.provider(&provider)?;
        let amount =
            Money::new(amount, Currency::parse(&currency).map_err(Error::internal)?).map_err(Error::internal)?;
        let req = RefundRequest { idempotency_key: refund_id.to_owned(), charge_key: attempt_id, amount };
        match provider.refund(&req).await {
            Ok(answer) => {
                let refund_id = refund_id.to_owned();
                self.db
                    .write_followup_retrying(|| {
                        let (refund_id, answer) = (refund_id.clone(), answer.clone());
                        move |mut conn| {
                            Box::pin(async move {
                                settle_refund(&mut conn, &refund_id, &answer).await?;
                                Ok(Done::Commit(()))
                            }) as backroom_db::writer::BoxFuture<'_, _>
                        }
                    })
                    .await
            }
            Err(e) => {
                tracing::warn!(refund_id, error = %e, "refund answer lost; recovery will ask the provider again");
                Ok(())
            }
        }
    }

    /// Units come back: counted as returned on their lines, put back on hand with `restock`,
    /// and with `refund` their share of what was paid is refunded (never more than is left to
    /// refund). Only units in a shipped or delivered fulfilment can be returned.
    #[tracing::instrument(skip(self, input))]
    pub async fn create_return(&self, order_id: &str, input: &NewReturn, actor: &str) -> Result<Return> {
        let (order_id, input, actor) = (order_id.to_owned(), input.clone(), actor.to_owned());
        let rid = id::new("ret");
        let (oid, job_rid) = (order_id.clone(), rid.clone());
        let refund = self
            .db
            .write(move |mut conn| {
                Box::pin(async move {
                    let o = Locked::take(&mut conn, &order_id).await?;
                    if !matches!(o.status, OrderStatus::Placed | OrderStatus::Completed) {
                        return Err(conflict(format!(
                            "the order is {}; only a placed or completed order takes returns",
                            o.status.as_str()
                        )));
                    }
                    let lines = lines(&mut conn, &order_id).await?;
                    let wanted = check_items(
                        &input.items,
                        &lines,
                        |l| l.shipped_quantity - l.returned_quantity,
                        "to return (shipped and not returned)",
                    )?;
                    let ts = now();
                    let mut share = 0i64;
                    let mut changed = Vec::new();
                    let mut by_variant: Vec<(&LineRow, i64)> =
                        lines.iter().filter_map(|l| wanted.get(&l.id).map(|q| (l, *q))).collect();
                    by_variant.sort_by(|a, b| a.0.variant_id.cmp(&b.0.variant_id));
                    for (line, q) in by_variant {
                        let paid = lifecycle::line_paid(line.total, line.discount_total, line.tax_total, o.tax_inclusive);
                        share += lifecycle::return_share(paid, line.quantity, line.returned_quantity, q);
                        let n = backroom_db::sql::query(
                            "UPDATE order_lines SET returned_quantity = returned_quantity + $3 \
                             WHERE order_id = $1 AND id = $2 AND returned_quantity + $3 <= shipped_quantity",
                        )
                        .bind(&order_id)
                        .bind(&line.id)
                        .bind(q)
                        .execute(&mut conn)
                        .await
                        .map_err(storage)?;
                        if n != 1 {
                            return Err(Error::internal("a line's units changed under its return"));
                        }
                        if input.restock {
                            let reason = format!("returned from {order_id} ({job_rid})");
                            if reservations::restock(&mut conn, &order_id, &line.variant_id, q, &reason, &actor).await? {
                                changed.push(line.variant_id.clone());
                            }
                        }
                    }
                    let mut refund = None;
                    if input.refund && o.payment.captured() {
                        let amount = share.min(o.total - o.refunds_held);
                        if amount > 0 {
                            refund = reserve_refund(&mut conn, &o, amount, "return", None, None, Some(&job_rid))
                                .await?
                                .ok();
                        }
                    }
                    backroom_db::sql::query(
                        "INSERT INTO order_returns (id, order_id, restocked, refund_id, created_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&job_rid)
                    .bind(&order_id)
                    .bind(input.restock)
                    .bind(refund.as_deref())
                    .bind(ts)
                    .execute(&mut conn)
                    .await
                    .map_err(storage)?;
                    for (item_id, q) in &wanted {
                        backroom_db::sql::query(
                            "INSERT INTO order_return_items (return_id, item_id, quantity) VALUES ($1, $2, $3)",
                        )
                        .bind(&job_rid)
                        .bind(item_id)
                        .bind(*q)
                        .execute(&mut conn)
                        .await
                        .map_err(storage)?;
                    }
                    let units: i64 = wanted.values().sum();
                    history(&mut conn, &order_id, o.status, &format!("{units} units returned ({job_rid})"), ts).await?;
                    outbox::enqueue(&mut conn, &Event::ReturnReceived(o.change(o.status, Some(&job_rid), None))).await?;
                    if let Some(e) = stock_changed(&order_id, changed) {
                        outbox::enqueue(&mut conn, &e).await?;
                    }
                    Ok(Done::Commit(refund))
                })
            })
            .await?;
        if let Some(refund_id) = refund {
            self.send_refund(&refund_id).await?;
        }
        let (_, _, returns) = self.after_sale(&oid).await?;
        returns.into_iter().find(|r| r.id == rid).ok_or(Error::not_found("return"))
    }

    /// One recovery pass over refunds still `pending` since before `before` (their answer
    /// was lost, or their request died): the provider is asked again with the same key, and
    /// its answer recorded. Answers how many were asked.
    pub async fn recover_refunds(&self, before: DateTime<Utc>) -> Result<usize> {
        let ids: Vec<(String,)> = {
            let mut r = self.db.read().await?;
            backroom_db::sql::query(
                "SELECT id FROM order_refunds WHERE status = 'pending' AND created_at < $1 ORDER BY created_at LIMIT 200",
            )
            .bind(before)
            .fetch_all(&mut r.conn())
            .await
            .map_err(storage)?
        };
        let mut asked = 0;
        for (id,) in ids {
            match self.send_refund(&id).await {
                Ok(()) => asked += 1,
                Err(e) => tracing::warn!(refund_id = id, error = %e, "could not recover a refund; will ask again"),
            }
        }
        Ok(asked)
    }
}

/// The units of each line in a fulfilment.
async fn fulfillment_units(conn: &mut Conn<'_>, fulfillment_id: &str) -> Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        backroom_db::sql::query("SELECT item_id, quantity FROM order_fulfillment_items WHERE fulfillment_id = $1")
            .bind(fulfillment_id)
            .fetch_all(conn)
            .await
            .map_err(storage)?;
    let mut out = BTreeMap::new();
    for (item, q) in rows {
        *out.entry(item).or_insert(0) += q;
    }
    Ok(out)
}

/// Sets the order's `payment_status` (and `updated_at`) inside the caller's write job.
pub async fn set_payment_status(conn: &mut Conn<'_>, order_id: &str, status: PaymentStatus) -> Result<()> {
    backroom_db::sql::query("UPDATE orders SET payment_status = $2, updated_at = $3 WHERE id = $1")
        .bind(order_id)
        .bind(status.as_str())
        .bind(now())
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(storage)
}

/// The payment of an approved order is captured.
async fn approve_attempt(conn: &mut Conn<'_>, attempt_id: &AttemptId, reference: &str) -> Result<()> {
    backroom_payments::transition(
        conn,
        attempt_id,
        &[AttemptStatus::Pending, AttemptStatus::Unknown, AttemptStatus::Captured],
        AttemptStatus::Captured,
        Some(reference),
        None,
    )
    .await
    .map(|_| ())
}

/// Reserves a refund of `amount` of order `o` (already taken by the job): one conditional
/// `UPDATE` raises the order's `refunds_held` only while `refunds_held + amount ≤ captured`,
/// then the refund is recorded `pending`. `Err(refundable)` (what is left) when it does not
/// fit; nothing is written then.
async fn reserve_refund(
    conn: &mut Conn<'_>,
    o: &Locked,
    amount: i64,
    reason: &str,
    note: Option<&str>,
    key: Option<(&str, &str)>,
    return_id: Option<&str>,
) -> Result<std::result::Result<String, i64>> {
    if !lifecycle::refund_fits(o.refunds_held, amount, o.total) {
        return Ok(Err((o.total - o.refunds_held).max(0)));
    }
    let held: Option<(i64,)> = backroom_db::sql::query(
        "UPDATE orders SET refunds_held = refunds_held + $2, updated_at = $3 WHERE id = $1 AND refunds_held + $2 <= total \
         RETURNING refunds_held",
    )
    .bind(&o.id)
    .bind(amount)
    .bind(now())
    .fetch_optional(conn)
    .await
    .map_err(storage)?;
    if held.is_none() {
        return Ok(Err((o.total - o.refunds_held).max(0)));
    }
    let attempt = backroom_payments::attempt_for_order(conn, &OrderId::from_stored(o.id.clone()))
        .await?
        .ok_or_else(|| Error::internal("a captured order without a payment attempt"))?;
    let refund_id = id::new("ref");
    let ts = now();
    backroom_db::sql::query(
        "INSERT INTO order_refunds (id, order_id, attempt_id, amount, currency, status, reason, note, idempotency_key, \
         request_hash, return_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $11)",
    )
    .bind(&refund_id)
    .bind(&o.id)
    .bind(attempt.id.as_str())
    .bind(amount)
    .bind(o.currency.code())
    .bind(reason)
    .bind(note)
    .bind(key.map(|k| k.0))
    .bind(key.map(|k| k.1))
    .bind(return_id)
    .bind(ts)
    .execute(conn)
    .await
    .map_err(storage)?;
    Ok(Ok(refund_id))
}

/// Records a provider's answer about a `pending` refund, inside a write job: `succeeded`
/// raises the order's `refunded_total` and moves its `payment_status` (`order.refunded`);
/// `failed` frees the refund's amount; `pending` keeps it pending with the provider's
/// reference. A refund no longer pending is left as it is.
async fn settle_refund(conn: &mut Conn<'_>, refund_id: &str, answer: &RefundStatus) -> Result<()> {
    let ts = now();
    match answer {
        RefundStatus::Succeeded { reference } => {
            let done: Option<(String, i64)> = backroom_db::sql::query(
                "UPDATE order_refunds SET status = 'succeeded', provider_reference = $2, updated_at = $3 \
                 WHERE id = $1 AND status = 'pending' RETURNING order_id, amount",
            )
            .bind(refund_id)
            .bind(reference)
            .bind(ts)
            .fetch_optional(conn)
            .await
            .map_err(storage)?;
            if let Some((order_id, amount)) = done {
                refunded(conn, &order_id, amount, refund_id, false).await?;
            }
        }
        RefundStatus::Failed { reason } => {
            let done: Option<(String, i64)> = backroom_db::sql::query(
                "UPDATE order_refunds SET status = 'failed', failure_reason = $2, updated_at = $3 \
                 WHERE id = $1 AND status = 'pending' RETURNING order_id, amount",
            )
            .bind(refund_id)
            .bind(reason)
            .bind(ts)
            .fetch_optional(conn)
            .await
            .map_err(storage)?;
            if let Some((order_id, amount)) = done {
                let o = Locked::take(conn, &order_id).await?;
                backroom_db::sql::query(
                    "UPDATE orders SET refunds_held = refunds_held - $2, updated_at = $3 WHERE id = $1",
                )
                .bind(&order_id)
                .bind(amount)
                .bind(ts)
                .execute(conn)
                .await
                .map_err(storage)?;
                history(conn, &order_id, o.status, &format!("refund {refund_id} failed: {reason}"), ts).await?;
            }
        }
        RefundStatus::Pending { reference } => {
            backroom_db::sql::query(
                "UPDATE order_refunds SET provider_reference = $2, updated_at = $3 WHERE id = $1 AND status = 'pending'",
            )
            .bind(refund_id)
            .bind(reference)
            .bind(ts)
            .execute(conn)
            .await
            .map_err(storage)?;
        }
    }
    Ok(())
}

/// `amount` of an order was given back: `refunded_total` (and, for a refund the store did not
/// start, `refunds_held`) go up, the payment status follows, history and `order.refunded`.
async fn refunded(conn: &mut Conn<'_>, order_id: &str, amount: i64, refund_id: &str, also_held: bool) -> Result<()> {
    let o = Locked::take(conn, order_id).await?;
    let sql = if also_held {
        "UPDATE orders SET refunded_total = refunded_total + $2, refunds_held = refunds_held + $2, updated_at = $3 \
         WHERE id = $1 RETURNING refunded_total"
    } else {
        "UPDATE orders SET refunded_total = refunded_total + $2, updated_at = $3 WHERE id = $1 RETURNING refunded_total"
    };
    let (total_refunded,): (i64,) =
        backroom_db::sql::query(sql).bind(order_id).bind(amount).bind(now()).fetch_one(conn).await.map_err(storage)?;
    set_payment_status(conn, order_id, lifecycle::payment_status_after_refunds(o.total, total_refunded)).await?;
    let note = format!("refunded {amount} {} ({refund_id})", o.currency.code());
    history(conn, order_id, o.status, &note, now()).await?;
    outbox::enqueue(conn, &Event::OrderRefunded(o.change(o.status, Some(refund_id), Some(o.money(amount)?)))).await?;
    Ok(())
}

/// Records a refund the provider made that Backroom did not start (one made in the
/// provider's own dashboard, reported by its webhook): `succeeded` at once, raising the
/// order's `refunded_total` and moving its `payment_status`, with history and
/// `order.refunded`. Idempotent by the provider's reference: reporting the same refund again
/// answers the refund recorded the first time, and so does a refund Backroom made itself.
pub async fn record_provider_refund(
    db: &Db,
    attempt_id: &str,
    provider_refund_reference: &str,
    amount: Money,
) -> Result<Refund> {
    if amount.amount() <= 0 {
        return Err(Error::field("amount", "must be more than zero"));
    }
    let (attempt_id, reference) = (attempt_id.to_owned(), provider_refund_reference.to_owned());
    let (order_id, refund_id) = db
        .write_followup_retrying(|| {
            let (attempt_id, reference) = (attempt_id.clone(), reference.clone());
            move |mut conn| {
                Box::pin(async move {
                    let found = record_provider_refund_in(&mut conn, &attempt_id, &reference, amount).await?;
                    Ok(Done::Commit(found))
                }) as backroom_db::writer::BoxFuture<'_, _>
            }
        })
        .await?;
    let mut r = db.read().await?;
    let a = AfterSale::load(&mut r.conn(), std::slice::from_ref(&order_id)).await?;
    let (_, refunds, _) = AfterSale::of(a, &order_id);
    refunds.into_iter().find(|r| r.id == refund_id).ok_or(Error::not_found("refund"))
}

/// Whether `refund_id` is one of Backroom's own refunds of the payment attempt (a provider
/// names it in its refund's metadata); such a refund is settled by its follow-up or by
/// recovery, never recorded again from a provider's report.
pub async fn is_refund_of(conn: &mut Conn<'_>, attempt_id: &str, refund_id: &str) -> Result<bool> {
    let found: Option<(String,)> =
        backroom_db::sql::query("SELECT id FROM order_refunds WHERE id = $1 AND attempt_id = $2")
            .bind(refund_id)
            .bind(attempt_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(storage)?;
    Ok(found.is_some())
}

/// [`record_provider_refund`] inside the caller's write job (a provider's webhook records its
/// event id in the same job): answers `(order id, refund id)`.
pub async fn record_provider_refund_in(
    conn: &mut Conn<'_>,
    attempt_id: &str,
    reference: &str,
    amount: Money,
) -> Result<(String, String)> {
    if amount.amount() <= 0 {
        return Err(Error::field("amount", "must be more than zero"));
    }
    let existing: Option<(String, String)> = backroom_db::sql::query(
        "SELECT order_id, id FROM order_refunds WHERE attempt_id = $1 AND provider_reference = $2",
    )
    .bind(attempt_id)
    .bind(reference)
    .fetch_optional(&mut *conn)
    .await
    .map_err(storage)?;
    if let Some(found) = existing {
        return Ok(found);
    }
    let order: Option<(String,)> = backroom_db::sql::query("SELECT order_id FROM payment_attempts WHERE id = $1")
        .bind(attempt_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(storage)?;
    let (order_id,) = order.ok_or(Error::not_found("payment attempt"))?;
    let o = Locked::take(&mut *conn, &order_id).await?;
    if amount.currency() != o.currency {
        return Err(Error::field("amount.currency", "is not the order's currency"));
    }
    let refund_id = id::new("ref");
    let ts = now();
    backroom_db::sql::query(
        "INSERT INTO order_refunds (id, order_id, attempt_id, amount, currency, status, reason, \
         provider_reference, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'succeeded', 'provider', $6, $7, $7)",
    )
    .bind(&refund_id)
    .bind(&order_id)
    .bind(attempt_id)
    .bind(amount.amount())
    .bind(o.currency.code())
    .bind(reference)
    .bind(ts)
    .execute(&mut *conn)
    .await
    .map_err(storage)?;
    refunded(&mut *conn, &order_id, amount.amount(), &refund_id, true).await?;
    Ok((order_id, refund_id))
}
