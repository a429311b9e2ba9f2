//! Checkout: the workflow that must never lie (ARCHITECTURE.md "Checkout").
//!
//! 1. Validate the cart and compare every line's price with the current one (P4).
//! 2. One transaction: lock the cart, reserve stock line by line (P1), create the order in
//!    `pending_payment` with a snapshot of lines and totals, record the payment attempt, link
//!    the idempotency key. Commit before any money moves (P3).
//! 3. Call the provider with the attempt id as idempotency key (P2).
//! 4. One transaction: `placed` + reservations become allocations + outbox events; or, on a
//!    decline, release everything and reopen the cart.
//! 5. [`Checkout::recover`] settles attempts whose answer was lost by asking the provider.

pub mod idempotency;

use std::time::Duration;

use backroom_cart::{Cart, CartStatus};
use backroom_catalog::{Catalog, ProductStatus};
use backroom_db::{Db, outbox};
use backroom_inventory::reservations::{self, ReserveLine, Shortage};
use backroom_kernel::{Error, FieldError, Money, Result, error::Problems, id, now};
use backroom_orders::{Address, NewOrder, Order, OrderLine, OrderStatus};
use backroom_payments::{AttemptStatus, ChargeRequest, ChargeStatus, PaymentProvider, Providers};
use serde::{Deserialize, Serialize};

/// The actor recorded in the stock ledger for checkout's changes.
const ACTOR: &str = "checkout";

/// `POST /store/carts/{id}/checkout`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub email: String,
    pub shipping_address: Address,
    pub payment: PaymentInput,
}

/// Which provider and the storefront's token for it (never card data).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentInput {
    #[schema(example = "test")]
    pub provider: String,
    #[schema(example = "tok_visa")]
    pub token: String,
}

/// A cart line whose price changed since it was added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PriceChange {
    pub item_id: String,
    pub variant_id: String,
    pub old_unit_price: Money,
    pub new_unit_price: Money,
}

/// How a checkout ended. Stored with the idempotency key and replayed as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Paid; the order is `placed`.
    Placed {
        order: Box<Order>,
    },
    /// The provider's answer was lost; recovery will settle the order.
    PaymentPending {
        order: Box<Order>,
    },
    /// Declined; stock released, the cart open again.
    PaymentDeclined {
        order_id: String,
        reason: String,
    },
    /// Some lines lack stock; nothing reserved.
    InsufficientStock {
        items: Vec<Shortage>,
    },
    /// Prices changed; the cart now holds the new ones; nothing charged.
    PriceChanged {
        items: Vec<PriceChange>,
    },
    /// The cart was checked out already.
    CartCompleted,
    /// Another checkout of this cart is running.
    CartCheckingOut,
    CartNotFound,
    /// The cart cannot be checked out as it is (empty, or a line no longer for sale).
    Invalid {
        errors: Vec<FieldError>,
    },
}

/// Settings of checkout and its recovery.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How often the recovery pass runs (`BACKROOM_RECOVERY_INTERVAL`).
    pub recovery_interval: Duration,
    /// A `pending` attempt older than this is considered abandoned (`BACKROOM_RECOVERY_GRACE`).
    pub recovery_grace: Duration,
    /// How long a reservation is meant to hold stock (`BACKROOM_RESERVATION_TTL`). Abandoned
    /// attempts are settled after `recovery_grace`, well within it; an attempt whose provider
    /// still cannot be asked when it runs out is reported (log and metric) but keeps its
    /// stock, since its money may have been taken.
    pub reservation_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            recovery_interval: Duration::from_secs(5),
            recovery_grace: Duration::from_secs(30),
            reservation_ttl: Duration::from_secs(15 * 60),
        }
    }
}

/// What one recovery pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub placed: usize,
    pub failed: usize,
    pub unreachable: usize,
    /// Unreachable past the reservation TTL.
    pub expired: usize,
}

/// The checkout service.
#[derive(Clone)]
pub struct Checkout {
    db: Db,
    catalog: Catalog,
    providers: Providers,
    settings: Settings,
}

fn dur(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

impl Checkout {
    pub fn new(db: Db, providers: Providers, settings: Settings) -> Self {
        Self { catalog: Catalog::new(db.clone()), db, providers, settings }
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Checks the request's shape (email, address, provider); refusals here are not stored
    /// under the idempotency key.
    pub fn validate(&self, req: &CheckoutRequest) -> Result<()> {
        let mut p = Problems::new();
        let email = req.email.trim();
        let valid_email = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
            });
        if !valid_email {
            p.add("email", "is not an email address");
        }
        let a = &req.shipping_address;
        for (field, value, max) in [
            ("name", Some(&a.name), 200),
            ("line1", Some(&a.line1), 200),
            ("line2", a.line2.as_ref(), 200),
            ("city", Some(&a.city), 100),
            ("region", a.region.as_ref(), 100),
            ("postal_code", Some(&a.postal_code), 20),
        ] {
            if let Some(v) = value {
                let v = v.trim();
                if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
                    p.add(format!("shipping_address.{field}"), format!("must be 1–{max} characters"));
                }
            }
        }
        if !(a.country.len() == 2 && a.country.bytes().all(|b| b.is_ascii_uppercase())) {
            p.add("shipping_address.country", "must be an ISO 3166-1 alpha-2 code such as PT");
        }
        if self.providers.get(&req.payment.provider).is_none() {
            p.add("payment.provider", format!("must be one of: {}", self.providers.names().join(", ")));
        }
        if req.payment.token.is_empty() || req.payment.token.len() > 255 {
            p.add("payment.token", "must be 1–255 characters");
        }
        p.finish()
    }

    /// Runs a checkout that owns its idempotency key, and returns its outcome. The caller
    /// stores the outcome under the key.
    #[tracing::instrument(skip(self, req), fields(cart_id = %cart_id))]
    pub async fn run(&self, cart_id: &str, key: &str, req: &CheckoutRequest) -> Result<Outcome> {
        let cart = {
            let mut r = self.db.read().await?;
            backroom_cart::load(&mut r.conn(), cart_id).await?
        };
        let Some(cart) = cart else { return Ok(Outcome::CartNotFound) };
        match cart.status {
            CartStatus::Completed => return Ok(Outcome::CartCompleted),
            CartStatus::CheckingOut => return Ok(Outcome::CartCheckingOut),
            CartStatus::Open => {}
        }
        if cart.items.is_empty() {
            return Ok(Outcome::Invalid { errors: vec![FieldError::new("items", "the cart is empty")] });
        }

        // 1. Current prices and sellability of every line.
        let ids: Vec<String> = cart.items.iter().map(|i| i.variant_id.clone()).collect();
        let variants = self.catalog.variants(&ids).await?;
        let mut errors = Vec::new();
        let mut changes = Vec::new();
        let mut lines = Vec::new();
        for (i, item) in cart.items.iter().enumerate() {
            let variant = variants.iter().find(|v| v.id == item.variant_id);
            let published = match variant {
                Some(v) => {
                    self.catalog.product(&v.product_id).await.is_ok_and(|p| p.status == ProductStatus::Published)
                }
                None => false,
            };
            let (Some(variant), true) = (variant, published) else {
                errors.push(FieldError::new(format!("items[{i}]"), "this product is no longer for sale; remove it"));
                continue;
            };
            let Some(price) = variant.price_in(cart.currency) else {
                errors.push(FieldError::new(format!("items[{i}]"), format!("no longer priced in {}", cart.currency)));
                continue;
            };
            if price != item.unit_price {
                changes.push(PriceChange {
                    item_id: item.id.clone(),
                    variant_id: item.variant_id.clone(),
                    old_unit_price: item.unit_price,
                    new_unit_price: price,
                });
            }
            lines.push(ReserveLine {
                variant_id: item.variant_id.clone(),
                quantity: item.quantity,
                allow_backorder: variant.allow_backorder,
            });
        }
        if !errors.is_empty() {
            return Ok(Outcome::Invalid { errors });
        }
        if !changes.is_empty() {
            // The cart takes the new prices, so the shopper sees them and can confirm.
            let mut tx = self.db.begin().await?;
            for c in &changes {
                backroom_cart::set_unit_price(&mut tx.conn(), &c.item_id, c.new_unit_price).await?;
            }
            tx.commit().await?;
            return Ok(Outcome::PriceChanged { items: changes });
        }

        // 2. Reserve, create the order and the attempt: one transaction.
        let order_id = id::new("ord");
        let attempt_id = id::new("pay");
        let mut tx = self.db.begin().await?;
        if !backroom_cart::transition(&mut tx.conn(), cart_id, CartStatus::Open, CartStatus::CheckingOut).await? {
            let mut r = self.db.read().await?;
            return Ok(match backroom_cart::load(&mut r.conn(), cart_id).await?.map(|c| c.status) {
                Some(CartStatus::Completed) => Outcome::CartCompleted,
                Some(_) => Outcome::CartCheckingOut,
                None => Outcome::CartNotFound,
            });
        }
        let expires = now() + dur(self.settings.reservation_ttl);
        if let Err(short) = reservations::reserve(&mut tx.conn(), &order_id, &lines, expires, ACTOR).await? {
            // Dropping the transaction rolls back the reservations made so far and the lock.
            return Ok(Outcome::InsufficientStock { items: short });
        }
        backroom_orders::create(&mut tx.conn(), &new_order(&order_id, &cart, req)?).await?;
        let provider = self.provider(&req.payment.provider)?;
        backroom_payments::create_attempt(&mut tx.conn(), &attempt_id, &order_id, provider.name(), cart.total).await?;
        idempotency::link_order(&mut tx.conn(), cart_id, key, &order_id).await?;
        tx.commit().await?;

        // 3. Money moves only now.
        let answer = provider
            .authorize(ChargeRequest {
                idempotency_key: attempt_id.clone(),
                amount: cart.total,
                token: req.payment.token.clone(),
                capture: true,
            })
            .await;

        // 4. Settle.
        match answer {
            Ok(status) => self.settle(&order_id, &attempt_id, status).await,
            Err(e) => {
                tracing::warn!(order_id, error = %e, "payment answer lost; recovery will settle the order");
                let mut tx = self.db.begin().await?;
                backroom_payments::transition(
                    &mut tx.conn(),
                    &attempt_id,
                    &[AttemptStatus::Pending],
                    AttemptStatus::Unknown,
                    None,
                    None,
                )
                .await?;
                tx.commit().await?;
                let order = self.order(&order_id).await?;
                Ok(match order.status {
                    OrderStatus::PendingPayment => Outcome::PaymentPending { order: Box::new(order) },
                    _ => self.outcome_of(order),
                })
            }
        }
    }

    fn provider(&self, name: &str) -> Result<std::sync::Arc<dyn PaymentProvider>> {
        self.providers.get(name).ok_or_else(|| Error::internal(format!("payment provider {name} is not configured")))
    }

    async fn order(&self, id: &str) -> Result<Order> {
        let mut r = self.db.read().await?;
        backroom_orders::load(&mut r.conn(), &[id.to_owned()], false).await?.pop().ok_or(Error::not_found("order"))
    }

    /// The outcome an order in its current state stands for.
    fn outcome_of(&self, order: Order) -> Outcome {
        match order.status {
            OrderStatus::Placed => Outcome::Placed { order: Box::new(order) },
            OrderStatus::PendingPayment => Outcome::PaymentPending { order: Box::new(order) },
            OrderStatus::PaymentFailed | OrderStatus::Cancelled => Outcome::PaymentDeclined {
                reason: if order.status == OrderStatus::Cancelled { "voided".into() } else { "declined".into() },
                order_id: order.id,
            },
        }
    }

    /// Applies a provider's answer to an order still in `pending_payment`, in one
    /// transaction. Whoever comes second (request or recovery) changes nothing and gets the
    /// outcome the first one produced.
    async fn settle(&self, order_id: &str, attempt_id: &str, status: ChargeStatus) -> Result<Outcome> {
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let (outcome_status, note) = match &status {
            ChargeStatus::Captured { .. } | ChargeStatus::Authorized { .. } | ChargeStatus::Refunded { .. } => {
                (OrderStatus::Placed, "payment captured".to_owned())
            }
            ChargeStatus::Declined { reason } => (OrderStatus::PaymentFailed, format!("payment declined: {reason}")),
            ChargeStatus::Voided | ChargeStatus::NotFound => {
                (OrderStatus::Cancelled, "payment never completed; voided".to_owned())
            }
        };
        let moved =
            backroom_orders::transition(&mut conn, order_id, OrderStatus::PendingPayment, outcome_status, &note)
                .await?;
        if moved {
            let cart_id = {
                let o = backroom_orders::load(&mut conn, &[order_id.to_owned()], false).await?;
                o.first().map(|o| o.cart_id.clone()).ok_or(Error::not_found("order"))?
            };
            let from = [AttemptStatus::Pending, AttemptStatus::Unknown];
            let changed = match &status {
                ChargeStatus::Captured { reference }
                | ChargeStatus::Authorized { reference }
                | ChargeStatus::Refunded { reference } => {
                    backroom_payments::transition(
                        &mut conn,
                        attempt_id,
                        &from,
                        AttemptStatus::Captured,
                        Some(reference),
                        None,
                    )
                    .await?;
                    backroom_cart::transition(&mut conn, &cart_id, CartStatus::CheckingOut, CartStatus::Completed)
                        .await?;
                    reservations::allocate(&mut conn, order_id, ACTOR).await?
                }
                ChargeStatus::Declined { reason } => {
                    backroom_payments::transition(
                        &mut conn,
                        attempt_id,
                        &from,
                        AttemptStatus::Declined,
                        None,
                        Some(reason),
                    )
                    .await?;
                    backroom_cart::transition(&mut conn, &cart_id, CartStatus::CheckingOut, CartStatus::Open).await?;
                    reservations::release(&mut conn, order_id, ACTOR).await?
                }
                ChargeStatus::Voided | ChargeStatus::NotFound => {
                    backroom_payments::transition(
                        &mut conn,
                        attempt_id,
                        &from,
                        AttemptStatus::Voided,
                        None,
                        Some("voided"),
                    )
                    .await?;
                    backroom_cart::transition(&mut conn, &cart_id, CartStatus::CheckingOut, CartStatus::Open).await?;
                    reservations::release(&mut conn, order_id, ACTOR).await?
                }
            };
            let order = backroom_orders::load(&mut conn, &[order_id.to_owned()], false)
                .await?
                .pop()
                .ok_or(Error::not_found("order"))?;
            let topic = if order.status == OrderStatus::Placed { "order.placed" } else { "order.payment_failed" };
            outbox::enqueue(
                &mut conn,
                topic,
                &serde_json::json!({
                    "order_id": order.id, "number": order.number, "status": order.status, "total": order.total,
                    "cart_id": order.cart_id,
                }),
            )
            .await?;
            if !changed.is_empty() {
                outbox::enqueue(
                    &mut conn,
                    "stock.changed",
                    &serde_json::json!({"variant_ids": changed, "order_id": order.id}),
                )
                .await?;
            }
            let outcome = match (&status, order.status) {
                (ChargeStatus::Declined { reason }, _) => {
                    Outcome::PaymentDeclined { order_id: order.id.clone(), reason: reason.clone() }
                }
                _ => self.outcome_of(order),
            };
            idempotency::finish_for_order(&mut conn, order_id, &outcome).await?;
            tx.commit().await?;
            return Ok(outcome);
        }
        drop(tx);
        Ok(self.outcome_of(self.order(order_id).await?))
    }

    /// One recovery pass: every attempt whose answer was lost (`unknown`), or that has been
    /// `pending` longer than the grace period, is settled by asking its provider. A charge
    /// the provider never saw is voided first, so it can never land later.
    pub async fn recover(&self) -> Result<Recovered> {
        let mut done = Recovered::default();
        let cutoff = now() - dur(self.settings.recovery_grace);
        for attempt in backroom_payments::unsettled(&self.db, cutoff, 200).await? {
            let Some(provider) = self.providers.get(&attempt.provider) else {
                tracing::error!(attempt = attempt.id, provider = attempt.provider, "attempt of an unknown provider");
                done.unreachable += 1;
                continue;
            };
            let mut status = provider.status(&attempt.id).await;
            if matches!(status, Ok(ChargeStatus::NotFound)) {
                status = provider.void(&attempt.id).await;
            }
            match status {
                Ok(s) => {
                    let outcome = self.settle(&attempt.order_id, &attempt.id, s).await?;
                    tracing::info!(order_id = attempt.order_id, outcome = ?outcome_name(&outcome), "recovered a payment attempt");
                    if matches!(outcome, Outcome::Placed { .. }) {
                        done.placed += 1;
                    } else {
                        done.failed += 1;
                    }
                }
                Err(e) => {
                    // The money's fate is unknown, so the stock stays reserved (releasing it
                    // could sell units a captured order owns). Past the reservation TTL this
                    // needs a person: say so loudly.
                    if attempt.created_at < now() - dur(self.settings.reservation_ttl) {
                        tracing::error!(attempt = attempt.id, order_id = attempt.order_id, error = %e,
                            "reservation expired but the provider cannot be asked; stock stays held until it answers");
                        done.expired += 1;
                    } else {
                        tracing::warn!(attempt = attempt.id, error = %e, "provider unreachable; will ask again");
                    }
                    done.unreachable += 1;
                }
            }
        }
        idempotency::prune(&self.db, cutoff).await?;
        Ok(done)
    }

    /// Runs [`Checkout::recover`] every interval until `stop` resolves.
    pub async fn run_recovery(self, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.settings.recovery_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    match self.recover().await {
                        Ok(r) => {
                            metrics::counter!("recovery_settled_total", "result" => "placed").increment(r.placed as u64);
                            metrics::counter!("recovery_settled_total", "result" => "failed").increment(r.failed as u64);
                            metrics::gauge!("recovery_unreachable_attempts").set(r.unreachable as f64);
                            metrics::gauge!("recovery_expired_attempts").set(r.expired as f64);
                        }
                        Err(e) => tracing::error!(error = %e, "recovery pass failed"),
                    }
                }
            }
        }
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Placed { .. } => "placed",
        Outcome::PaymentPending { .. } => "payment_pending",
        Outcome::PaymentDeclined { .. } => "payment_declined",
        Outcome::InsufficientStock { .. } => "insufficient_stock",
        Outcome::PriceChanged { .. } => "price_changed",
        Outcome::CartCompleted => "cart_completed",
        Outcome::CartCheckingOut => "cart_checking_out",
        Outcome::CartNotFound => "cart_not_found",
        Outcome::Invalid { .. } => "invalid",
    }
}

impl Outcome {
    /// A short name for metrics and logs.
    pub fn name(&self) -> &'static str {
        outcome_name(self)
    }
}

fn new_order(order_id: &str, cart: &Cart, req: &CheckoutRequest) -> Result<NewOrder> {
    let trim = |s: &str| s.trim().to_owned();
    let a = &req.shipping_address;
    Ok(NewOrder {
        id: order_id.to_owned(),
        cart_id: cart.id.clone(),
        email: req.email.trim().to_owned(),
        currency: cart.currency,
        items: cart
            .items
            .iter()
            .map(|i| OrderLine {
                variant_id: i.variant_id.clone(),
                sku: i.sku.clone(),
                title: i.title.clone(),
                quantity: i.quantity,
                unit_price: i.unit_price,
                total: i.total,
            })
            .collect(),
        subtotal: cart.subtotal,
        tax_total: cart.tax_total,
        shipping_total: cart.shipping_total,
        total: cart.total,
        shipping_address: Address {
            name: trim(&a.name),
            line1: trim(&a.line1),
            line2: a.line2.as_deref().map(trim),
            city: trim(&a.city),
            region: a.region.as_deref().map(trim),
            postal_code: trim(&a.postal_code),
            country: a.country.clone(),
        },
    })
}
