//! Checkout: the workflow that must never lie (docs/architecture.md, "Checkout").
//!
//! 1. Validate the cart and compare every line's price with the current one (P4).
//! 2. One transaction: lock the cart, reserve stock line by line (P1), create the order in
//!    `pending_payment` with a snapshot of lines and totals, record the payment attempt, link
//!    the idempotency key. Commit before any money moves (P3).
//! 3. Call the provider with the attempt id as idempotency key (P2).
//! 4. One transaction: `placed` + reservations become allocations + outbox events; or, on a
//!    decline, release everything and reopen the cart.
//! 5. [`Checkout::recover`] settles attempts whose answer was lost by asking the provider.
//!
//! Between 1 and 2 the checkout is scored (`backroom_risk`, docs/risk.md): a blocked one ends
//! there (`checkout_blocked`, nothing reserved or charged); a reviewed one is only authorised
//! and its order waits `on_hold`.

pub mod idempotency;

use idempotency::Begin;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use backroom_cart::{Cart, CartStatus};
use backroom_catalog::Catalog;
use backroom_db::writer::Done;
use backroom_db::{Conn, Db, outbox};
use backroom_inventory::Inventory;
use backroom_inventory::reservations::{self, ReserveLine, Shortage};
use backroom_kernel::id::{AttemptId, OrderId};
use backroom_kernel::{Code, Error, FieldError, Money, Result, error::Problems, now};
use backroom_orders::{Address, NewOrder, Order, OrderLine, OrderStatus};
use backroom_payments::{AttemptStatus, ChargeRequest, ChargeStatus, PaymentProvider, Providers};
use backroom_risk::{Assessment, Decision};
use backroom_vault::Vault;
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
    /// The variant's base price, when the new price is a price-list price below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_price: Option<Money>,
}

/// How a checkout ended. Stored with the idempotency key and replayed as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Paid; the order is `placed`.
    Placed {
        order: Box<Order>,
    },
    /// Held for review (risk): the payment is authorised, not captured; the order is `on_hold`.
    OnHold {
        order: Box<Order>,
    },
    /// Refused by risk scoring; nothing reserved or charged.
    CheckoutBlocked,
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
    /// Prices changed, or the checkout's address moved the cart to another region: the cart
    /// now holds the new prices (and region); nothing charged.
    PriceChanged {
        items: Vec<PriceChange>,
        /// The cart as it is now (its answer, without its personal fields).
        #[serde(default)]
        cart: Option<serde_json::Value>,
    },
    /// The cart's promotion code has no use left (for anyone, or for this shopper); nothing
    /// reserved or charged.
    PromotionExhausted {
        code: String,
    },
    /// The cart's promotion code no longer applies (expired, deleted, minimum not reached).
    PromotionInvalid {
        detail: String,
    },
    /// The cart's region has shipping options and the cart has none chosen.
    ShippingMethodRequired,
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
    /// Refunds still `pending` whose provider was asked again (`backroom_orders::oms`).
    pub refunds: usize,
}

/// Who a checkout comes from, for risk scoring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// The client's address, as the rate limits see it; `None` when not known.
    pub address: Option<IpAddr>,
    /// The client's country (ISO 3166-1 alpha-2), when the trusted header
    /// (`BACKROOM_RISK_COUNTRY_HEADER`) gave one.
    pub country: Option<String>,
}

/// The checkout service.
#[derive(Clone)]
pub struct Checkout {
    db: Db,
    catalog: Catalog,
    inventory: Inventory,
    providers: Providers,
    settings: Settings,
    vault: Vault,
    carts: backroom_cart::Carts,
    risk: Arc<backroom_risk::Settings>,
}

fn dur(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

impl Checkout {
    pub fn new(db: Db, providers: Providers, settings: Settings, vault: Vault) -> Self {
        Self {
            catalog: Catalog::new(db.clone()),
            inventory: Inventory::new(db.clone()),
            carts: backroom_cart::Carts::new(db.clone(), vault.clone()),
            db,
            providers,
            settings,
            vault,
            risk: Arc::new(backroom_risk::Settings::default()),
        }
    }

    /// This checkout with these risk settings (the defaults otherwise).
    pub fn with_risk(mut self, risk: backroom_risk::Settings) -> Self {
        self.risk = Arc::new(risk);
        self
    }

    /// The risk settings.
    pub fn risk_settings(&self) -> &backroom_risk::Settings {
        &self.risk
    }

    /// The vault that seals orders' personal data.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The enabled payment providers.
    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// Checks the request's shape (email, address), then that its provider is enabled
    /// (`422 payment_provider_unavailable` otherwise); refusals here reserve nothing and are
    /// not stored under the idempotency key.
    pub fn validate(&self, req: &CheckoutRequest) -> Result<()> {
        let mut p = Problems::new();
        backroom_orders::check_email(&req.email, "email", &mut p);
        req.shipping_address.check("shipping_address", &mut p);
        if req.payment.token.is_empty() || req.payment.token.len() > 255 {
            p.add("payment.token", "must be 1–255 characters");
        }
        p.finish()?;
        self.provider(&req.payment.provider)?;
        Ok(())
    }

    /// Runs a checkout under its idempotency key: the whole request as docs/architecture.md
    /// describes it, with every write going through the group-commit writer ([`Db::write`]):
    /// one job locks the cart, reserves the stock, creates the order and the attempt and claims
    /// the key; the provider is called; one job settles. A checkout that ends without an
    /// order (sold out, price changed, …) is one small job that stores its outcome.
    ///
    /// Outcomes are stored under the key without personal data; a replay reads the order's
    /// e-mail and address from the order itself (so an erased customer's replay shows `null`).
    pub async fn run(&self, cart_id: &str, key: &str, hash: &str, req: &CheckoutRequest) -> Result<Answer> {
        self.run_from(cart_id, key, hash, req, &Client::default()).await
    }

    /// [`Checkout::run`] for a request from `client` (its address and country feed the risk
    /// rules).
    #[tracing::instrument(skip(self, hash, req, client), fields(cart_id = %cart_id))]
    pub async fn run_from(
        &self,
        cart_id: &str,
        key: &str,
        hash: &str,
        req: &CheckoutRequest,
        client: &Client,
    ) -> Result<Answer> {
        Ok(match self.run_keyed(cart_id, key, hash, req, client).await? {
            Answer::Replay(mut outcome) => {
                if let Some(order) = outcome.order_mut() {
                    let mut r = self.db.read().await?;
                    let stored =
                        backroom_orders::load(&mut r.conn(), Some(&self.vault), std::slice::from_ref(&order.id), false)
                            .await?;
                    if let Some(stored) = stored.into_iter().next() {
                        order.email = stored.email;
                        order.shipping_address = stored.shipping_address;
                    }
                }
                Answer::Replay(outcome)
            }
            other => other,
        })
    }

    async fn run_keyed(
        &self,
        cart_id: &str,
        key: &str,
        hash: &str,
        req: &CheckoutRequest,
        client: &Client,
    ) -> Result<Answer> {
        let key = Key { scope: cart_id.to_owned(), key: key.to_owned(), hash: hash.to_owned() };
        let email_index = self.vault.email_index(&req.email);
        let (cart, lines) = match self.prepare(cart_id, req, &email_index).await? {
            Prepared::Ended(outcome) => return self.end_without_order(key, outcome, None).await,
            Prepared::Ready { cart, lines } => (cart, lines),
        };
        // 1b. Risk: scored before anything is reserved or charged.
        let (risk, mut signal) = match self.score(&cart, req, &email_index, client).await? {
            Some((assessment, signal)) => (Some(assessment), Some(signal)),
            None => (None, None),
        };
        let decision = risk.as_ref().map_or(Decision::Allow, |a| a.decision);
        if decision == Decision::Block {
            return self.end_without_order(key, Outcome::CheckoutBlocked, signal).await;
        }
        let promotion = cart.pricing.promotion.clone().filter(|_| !cart.promotions.is_empty());

        // 2. Reserve, create the order and the attempt, claim the key: one job.
        let provider = self.provider(&req.payment.provider)?;
        let order_id = OrderId::generate();
        let order = new_order(order_id.as_str(), &cart, req, risk)?;
        if let Some(s) = &mut signal {
            s.order_id = Some(order_id.to_string());
        }
        // Sealed here, so the writer does no crypto.
        let personal = backroom_orders::seal(&self.vault, &order)?;
        let attempt_id = AttemptId::generate();
        let expires = now() + dur(self.settings.reservation_ttl);
        let (amount, provider_name) = (cart.total, provider.name());
        let reserved = self
            .db
            // A deadlock victim (processes racing for one hot SKU on PostgreSQL) runs again.
            .write_retrying(|| {
                let (key, job_order, job_attempt) = (key.clone(), order_id.clone(), attempt_id.clone());
                let (lines, order, personal) = (lines.clone(), order.clone(), personal.clone());
                let (promotion, email_index, signal) = (promotion.clone(), email_index.clone(), signal.clone());
                move |mut conn| {
                    Box::pin(async move {
                        if !backroom_cart::transition(&mut conn, &key.scope, CartStatus::Open, CartStatus::CheckingOut)
                            .await?
                        {
                            // Checked out meanwhile, or being checked out (maybe under this very key).
                            let status: Option<(String,)> =
                                backroom_db::sql::query("SELECT status FROM carts WHERE id = $1")
                                    .bind(&key.scope)
                                    .fetch_optional(&mut conn)
                                    .await
                                    .map_err(backroom_db::storage)?;
                            let status = status.and_then(|(s,)| CartStatus::parse(&s));
                            return Ok(Done::Rollback(Err(status_outcome(status))));
                        }
                        // The promotion's use first: an exhausted code reserves nothing (P1, and
                        // the limit is exact: the conditional UPDATE decides under any concurrency).
                        if let Some(p) = &promotion {
                            let customer = order.customer_id.as_deref();
                            let guest_email = customer.is_none().then_some(email_index.as_str());
                            if backroom_pricing::uses::claim(&mut conn, p, &order.id, customer, guest_email)
                                .await?
                                .is_err()
                            {
                                return Ok(Done::Rollback(Err(Outcome::PromotionExhausted { code: p.code.clone() })));
                            }
                        }
                        if let Err(short) = reservations::reserve(&mut conn, &job_order, &lines, expires, ACTOR).await?
                        {
                            return Ok(Done::Rollback(Err(Outcome::InsufficientStock { items: short })));
                        }
                        backroom_orders::create(&mut conn, &order, &personal).await?;
                        backroom_payments::create_attempt(&mut conn, &job_attempt, &job_order, provider_name, amount)
                            .await?;
                        if let Some(signal) = &signal {
                            backroom_risk::store::record_attempt(&mut conn, signal).await?;
                        }
                        match idempotency::claim(&mut conn, &key.scope, &key.key, &key.hash, Some(&order.id), None)
                            .await?
                        {
                            Begin::New => Ok(Done::Commit(Ok(Begin::New))),
                            // The key was used before: nothing of this job stays.
                            other => Ok(Done::Rollback(Ok(other))),
                        }
                    }) as backroom_db::writer::BoxFuture<'_, _>
                }
            })
            .await?;
        match reserved {
            Ok(Begin::New) => {}
            Ok(existing) => return Ok(Answer::from_claim(existing)),
            Err(outcome) => return self.end_without_order(key, outcome, None).await,
        }

        // 3. Money moves only now; an order held for review is only authorised.
        let answer = provider
            .authorize(ChargeRequest {
                idempotency_key: attempt_id.to_string(),
                amount,
                token: req.payment.token.clone(),
                capture: decision != Decision::Review,
                order_id: order_id.to_string(),
            })
            .await;

        // 4. Settle.
        let outcome = match answer {
            Ok(ChargeStatus::RequiresAction { reference, client_secret }) => {
                // The customer must act (3-D Secure): the order waits in `pending_payment`
                // and the answer carries what the storefront needs. The provider's webhook (or
                // recovery, asking later) settles it; the stored answer keeps `next_action`,
                // so a replay shows it too.
                self.db
                    .write_followup(move |mut conn| {
                        Box::pin(async move {
                            backroom_payments::transition(
                                &mut conn,
                                &attempt_id,
                                &[AttemptStatus::Pending],
                                AttemptStatus::Pending,
                                Some(&reference),
                                None,
                            )
                            .await?;
                            let mut order = load_order(&mut conn, order_id.as_str()).await?;
                            let outcome = match order.status {
                                OrderStatus::PendingPayment => {
                                    if let Some(p) = order.payment.as_mut() {
                                        p.next_action = Some(backroom_orders::NextAction { client_secret });
                                    }
                                    Outcome::PaymentPending { order: Box::new(order) }
                                }
                                _ => outcome_of(order),
                            };
                            idempotency::finish(&mut conn, &key.scope, &key.key, &outcome).await?;
                            Ok(Done::Commit(outcome))
                        })
                    })
                    .await?
            }
            Ok(status) => self.settle(&order_id, &attempt_id, status).await?,
            Err(e) => {
                tracing::warn!(%order_id, error = %e, "payment answer lost; recovery will settle the order");
                self.db
                    .write_followup(move |mut conn| {
                        Box::pin(async move {
                            backroom_payments::transition(
                                &mut conn,
                                &attempt_id,
                                &[AttemptStatus::Pending],
                                AttemptStatus::Unknown,
                                None,
                                None,
                            )
                            .await?;
                            let order = load_order(&mut conn, order_id.as_str()).await?;
                            let outcome = match order.status {
                                OrderStatus::PendingPayment => Outcome::PaymentPending { order: Box::new(order) },
                                _ => outcome_of(order),
                            };
                            idempotency::finish(&mut conn, &key.scope, &key.key, &outcome).await?;
                            Ok(Done::Commit(outcome))
                        })
                    })
                    .await?
            }
        };
        // The writer read the order without its personal data; the request has it.
        let mut outcome = outcome;
        if let Some(o) = outcome.order_mut().filter(|o| o.id == order.id) {
            o.email = Some(order.email);
            o.shipping_address = Some(order.shipping_address);
        }
        Ok(Answer::New(outcome))
    }

    /// Step 1: reads the cart and the current price and sellability of every line (P4); the
    /// checkout's address becomes the cart's (a new region is a changed price: the shopper
    /// sees the new totals first); the promotion, if any, must still apply and have uses left;
    /// a region with shipping options needs one chosen.
    async fn prepare(&self, cart_id: &str, req: &CheckoutRequest, email_index: &str) -> Result<Prepared> {
        let mut r = self.db.read_fast().await?;
        let cart = backroom_cart::load(&mut r.conn(), cart_id).await?;
        let Some(cart) = cart else { return Ok(Prepared::Ended(Outcome::CartNotFound)) };
        if cart.status != CartStatus::Open {
            return Ok(Prepared::Ended(status_outcome(Some(cart.status))));
        }
        if cart.items.is_empty() {
            let errors = vec![FieldError::new("items", "the cart is empty")];
            return Ok(Prepared::Ended(Outcome::Invalid { errors }));
        }
        let region = backroom_cart::region_for(&mut r.conn(), &req.shipping_address.country, cart.currency).await?;
        if region.as_ref().map(|r| &r.id) != cart.region_id.as_ref() {
            drop(r);
            let patch = backroom_cart::CartPatch {
                email: Some(req.email.clone()),
                shipping_address: Some(req.shipping_address.clone()),
                region_id: None,
            };
            let mut moved = self.carts.update(cart_id, cart.customer_id.as_deref(), &patch).await?;
            moved.email = None;
            moved.shipping_address = None;
            let cart = serde_json::to_value(&moved).map_err(Error::internal)?;
            return Ok(Prepared::Ended(Outcome::PriceChanged { items: Vec::new(), cart: Some(cart) }));
        }
        if let Some(code) = &cart.pricing.promotion_code {
            match (&cart.pricing.promotion, &cart.pricing.promotion_problem) {
                (None, _) => {
                    let detail = format!("the code {code} no longer exists; remove it from the cart");
                    return Ok(Prepared::Ended(Outcome::PromotionInvalid { detail }));
                }
                (Some(_), Some(problem)) => {
                    return Ok(Prepared::Ended(Outcome::PromotionInvalid { detail: problem.clone() }));
                }
                (Some(p), None) => {
                    let customer = cart.customer_id.as_deref();
                    let guest_email = customer.is_none().then_some(email_index);
                    if !p.has_use_left(&mut r.conn(), customer, guest_email).await? {
                        return Ok(Prepared::Ended(Outcome::PromotionExhausted { code: p.code.clone() }));
                    }
                }
            }
        }
        if let Some(region) = &cart.region_id
            && cart.shipping_method.is_none()
            && !backroom_pricing::model::shipping_options(&mut r.conn(), region).await?.is_empty()
        {
            return Ok(Prepared::Ended(Outcome::ShippingMethodRequired));
        }
        // Each read below takes its own connection: holding one while waiting for another
        // would starve a small pool under a sale.
        drop(r);
        let ids: Vec<String> = cart.items.iter().map(|i| i.variant_id.clone()).collect();
        let variants = self.catalog.sellable(&ids).await?;
        let member = backroom_cart::member_prices(&self.db, cart.customer_id.as_deref(), cart.currency, &ids).await?;
        let mut errors = Vec::new();
        let mut changes = Vec::new();
        let mut lines = Vec::new();
        for (i, item) in cart.items.iter().enumerate() {
            let Some(variant) = variants.iter().find(|v| v.variant_id == item.variant_id && v.published) else {
                errors.push(FieldError::new(format!("items[{i}]"), "this product is no longer for sale; remove it"));
                continue;
            };
            let Some((price, original)) = backroom_cart::line_price(variant, cart.currency, &member) else {
                errors.push(FieldError::new(format!("items[{i}]"), format!("no longer priced in {}", cart.currency)));
                continue;
            };
            if price != item.unit_price {
                changes.push(PriceChange {
                    item_id: item.id.clone(),
                    variant_id: item.variant_id.clone(),
                    old_unit_price: item.unit_price,
                    new_unit_price: price,
                    original_price: original,
                });
            }
            lines.push(ReserveLine {
                variant_id: item.variant_id.clone(),
                quantity: item.quantity,
                allow_backorder: variant.allow_backorder,
            });
        }
        if !errors.is_empty() {
            return Ok(Prepared::Ended(Outcome::Invalid { errors }));
        }
        if !changes.is_empty() {
            return Ok(Prepared::Ended(Outcome::PriceChanged { items: changes, cart: None }));
        }
        // Sold out already by the last committed state: answer without a reservation attempt
        // (the shopper asked at a moment the units were not there). A line that might fit goes
        // on to the conditional UPDATE, which decides (P1).
        let limited: Vec<&ReserveLine> = lines.iter().filter(|l| !l.allow_backorder).collect();
        let limited_ids: Vec<String> = limited.iter().map(|l| l.variant_id.clone()).collect();
        let available = self.inventory.availability(&limited_ids).await?;
        let short: Vec<Shortage> = limited
            .into_iter()
            .filter_map(|l| {
                let n = *available.get(&l.variant_id)?;
                (n < l.quantity).then(|| Shortage {
                    variant_id: l.variant_id.clone(),
                    requested: l.quantity,
                    available: n,
                })
            })
            .collect();
        if !short.is_empty() {
            return Ok(Prepared::Ended(Outcome::InsufficientStock { items: short }));
        }
        Ok(Prepared::Ready { cart: Box::new(cart), lines })
    }

    /// Scores the checkout (`None` with scoring off): the last hour's signals for its e-mail,
    /// client address and payment token, its total and countries.
    async fn score(
        &self,
        cart: &Cart,
        req: &CheckoutRequest,
        email_index: &str,
        client: &Client,
    ) -> Result<Option<(Assessment, backroom_risk::store::Signal)>> {
        if !self.risk.enabled {
            return Ok(None);
        }
        let signal = backroom_risk::store::Signal {
            order_id: None,
            email_index: email_index.to_owned(),
            client_index: client.address.map(|a| self.vault.keyed_hash("risk/client", &a.to_canonical().to_string())),
            token_index: self
                .vault
                .keyed_hash("risk/token", &format!("{}/{}", req.payment.provider, req.payment.token)),
            amount: cart.total,
        };
        let recent = {
            let mut r = self.db.read_fast().await?;
            backroom_risk::store::recent(&mut r.conn(), &signal, now() - backroom_risk::store::WINDOW).await?
        };
        let inputs = backroom_risk::Inputs {
            total: cart.total,
            shipping_country: req.shipping_address.country.clone(),
            client_country: client.country.clone(),
            recent,
        };
        let assessment = backroom_risk::assess(&self.risk, &inputs);
        metrics::counter!("risk_decisions_total", "decision" => assessment.decision.as_str()).increment(1);
        if assessment.decision != Decision::Allow {
            tracing::info!(cart_id = %cart.id, score = assessment.score, decision = assessment.decision.as_str(),
                reasons = ?assessment.reasons, "risk scoring did not allow a checkout outright");
        }
        Ok(Some((assessment, signal)))
    }

    /// Ends a checkout that created no order: one job claims the key with the outcome (a
    /// changed price is also written to the cart, so the shopper sees it and can confirm), and
    /// records the attempt's risk signal when it was scored (a blocked checkout).
    async fn end_without_order(
        &self,
        key: Key,
        outcome: Outcome,
        signal: Option<backroom_risk::store::Signal>,
    ) -> Result<Answer> {
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    // A changed price is written to the cart, and the answer shows the cart with
                    // it; if the key turns out to be taken, the rollback undoes both.
                    let mut outcome = outcome;
                    if let Outcome::PriceChanged { items, cart } = &mut outcome
                        && cart.is_none()
                    {
                        for c in items.iter() {
                            backroom_cart::set_unit_price(&mut conn, &c.item_id, c.new_unit_price, c.original_price)
                                .await?;
                        }
                        let now = backroom_cart::load(&mut conn, &key.scope).await?;
                        *cart = now.map(|c| serde_json::to_value(&c)).transpose().map_err(Error::internal)?;
                    }
                    match idempotency::claim(&mut conn, &key.scope, &key.key, &key.hash, None, Some(&outcome)).await? {
                        Begin::New => {
                            if let Some(signal) = &signal {
                                backroom_risk::store::record_attempt(&mut conn, signal).await?;
                            }
                            Ok(Done::Commit(Answer::New(outcome)))
                        }
                        other => Ok(Done::Rollback(Answer::from_claim(other))),
                    }
                })
            })
            .await
    }

    /// The enabled provider of this name, or `payment_provider_unavailable`.
    fn provider(&self, name: &str) -> Result<std::sync::Arc<dyn PaymentProvider>> {
        self.providers.get(name).ok_or_else(|| {
            let enabled = self.providers.names();
            Error::refused(
                Code::PaymentProviderUnavailable,
                if enabled.is_empty() {
                    "this store has no payment provider enabled (BACKROOM_PAYMENT_PROVIDERS)".into()
                } else {
                    format!("payment provider `{name}` is not enabled here; enabled: {}", enabled.join(", "))
                },
            )
        })
    }

    /// Applies a provider's answer to an order still in `pending_payment`, in one write job.
    /// Whoever comes second (request or recovery) changes nothing and gets the outcome the
    /// first one produced.
    async fn settle(&self, order_id: &OrderId, attempt_id: &AttemptId, status: ChargeStatus) -> Result<Outcome> {
        let (order_id, attempt_id) = (order_id.clone(), attempt_id.clone());
        // A follow-up: the reservation is committed, so this job is never shed by a full queue.
        // A deadlock victim runs again.
        self.db
            .write_followup_retrying(|| {
                let (order_id, attempt_id, status) = (order_id.clone(), attempt_id.clone(), status.clone());
                move |mut conn| {
                    Box::pin(
                        async move { Ok(Done::Commit(settle_in(&mut conn, &order_id, &attempt_id, status).await?)) },
                    ) as backroom_db::writer::BoxFuture<'_, _>
                }
            })
            .await
    }

    /// One recovery pass: every attempt whose answer was lost (`unknown`), or that has been
    /// `pending` longer than the grace period, is settled by asking its provider. A charge
    /// the provider never saw is voided first, so it can never land later.
    pub async fn recover(&self) -> Result<Recovered> {
        let mut done = Recovered::default();
        let cutoff = now() - dur(self.settings.recovery_grace);
        for attempt in backroom_payments::unsettled(&self.db, cutoff, 200).await? {
            let Some(provider) = self.providers.get(&attempt.provider) else {
                tracing::error!(attempt = %attempt.id, provider = attempt.provider, "attempt of an unknown provider");
                done.unreachable += 1;
                continue;
            };
            let mut status = provider.status(attempt.id.as_str()).await;
            if matches!(status, Ok(ChargeStatus::RequiresAction { .. })) {
                // The customer has not finished 3-D Secure. The order waits (the provider's
                // webhook settles it) until its reservation runs out; then the payment is
                // cancelled, so it cannot complete later, and the stock goes back.
                if attempt.created_at >= now() - dur(self.settings.reservation_ttl) {
                    continue;
                }
                status = provider.void(attempt.id.as_str()).await;
            }
            if matches!(status, Ok(ChargeStatus::NotFound)) {
                status = provider.void(attempt.id.as_str()).await;
            }
            match status {
                Ok(s) => {
                    let outcome = self.settle(&attempt.order_id, &attempt.id, s).await?;
                    tracing::info!(order_id = %attempt.order_id, outcome = ?outcome_name(&outcome), "recovered a payment attempt");
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
                        tracing::error!(attempt = %attempt.id, order_id = %attempt.order_id, error = %e,
                            "reservation expired but the provider cannot be asked; stock stays held until it answers");
                        done.expired += 1;
                    } else {
                        tracing::warn!(attempt = %attempt.id, error = %e, "provider unreachable; will ask again");
                    }
                    done.unreachable += 1;
                }
            }
        }
        // Refunds whose provider answer was lost: asked again with the same key.
        let oms = backroom_orders::oms::Oms::new(self.db.clone(), self.providers.clone());
        done.refunds = oms.recover_refunds(cutoff).await?;
        idempotency::prune(&self.db, cutoff).await?;
        backroom_risk::store::prune(&self.db).await?;
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
        Outcome::OnHold { .. } => "on_hold",
        Outcome::CheckoutBlocked => "checkout_blocked",
        Outcome::PaymentPending { .. } => "payment_pending",
        Outcome::PaymentDeclined { .. } => "payment_declined",
        Outcome::InsufficientStock { .. } => "insufficient_stock",
        Outcome::PriceChanged { .. } => "price_changed",
        Outcome::PromotionExhausted { .. } => "promotion_exhausted",
        Outcome::PromotionInvalid { .. } => "promotion_invalid",
        Outcome::ShippingMethodRequired => "shipping_method_required",
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

    /// The order this outcome answers with, if any.
    pub fn order_mut(&mut self) -> Option<&mut Order> {
        match self {
            Outcome::Placed { order } | Outcome::PaymentPending { order } | Outcome::OnHold { order } => Some(order),
            _ => None,
        }
    }

    /// This outcome with the order's personal fields left out: what is stored under the key.
    pub fn without_personal(&self) -> Outcome {
        let mut o = self.clone();
        if let Some(order) = o.order_mut() {
            order.email = None;
            order.shipping_address = None;
        }
        o
    }
}

fn new_order(order_id: &str, cart: &Cart, req: &CheckoutRequest, risk: Option<Assessment>) -> Result<NewOrder> {
    Ok(NewOrder {
        id: order_id.to_owned(),
        cart_id: cart.id.clone(),
        customer_id: cart.customer_id.clone(),
        email: req.email.trim().to_owned(),
        currency: cart.currency,
        items: cart
            .items
            .iter()
            .map(|i| OrderLine {
                // A new id is made when the order is created.
                id: String::new(),
                fulfilled_quantity: 0,
                shipped_quantity: 0,
                delivered_quantity: 0,
                returned_quantity: 0,
                variant_id: i.variant_id.clone(),
                sku: i.sku.clone(),
                title: i.title.clone(),
                // The product as the cart showed it at checkout: the order keeps this snapshot.
                product_id: i.product_id.clone(),
                product_title: i.product_title.clone(),
                product_handle: i.product_handle.clone(),
                thumbnail: i.thumbnail.clone(),
                quantity: i.quantity,
                unit_price: i.unit_price,
                original_price: i.original_price,
                total: i.total,
                discount_total: Some(i.discount_total),
                tax_total: Some(i.tax_total),
            })
            .collect(),
        subtotal: cart.subtotal,
        discount_total: cart.discount_total,
        tax_total: cart.tax_total,
        shipping_total: cart.shipping_total,
        total: cart.total,
        shipping_address: req.shipping_address.trimmed(),
        region_id: cart.region_id.clone(),
        tax_inclusive: cart.tax_inclusive,
        promotions: cart.promotions.clone(),
        shipping_method: cart.shipping_method.clone(),
        risk,
    })
}

/// The answer a checkout request gets.
#[derive(Debug)]
pub enum Answer {
    /// This request ran the checkout; its outcome is stored under the key.
    New(Outcome),
    /// The key has an answer already: replay it.
    Replay(Outcome),
    /// The first request with this key is still running.
    InUse,
    /// The key was used with a different request body.
    Reused,
}

impl Answer {
    fn from_claim(existing: Begin) -> Answer {
        match existing {
            Begin::Replay(o) => Answer::Replay(*o),
            Begin::InUse | Begin::New => Answer::InUse,
            Begin::Reused => Answer::Reused,
        }
    }
}

/// An idempotency key in its scope (the cart), with the request's hash.
#[derive(Debug, Clone)]
struct Key {
    scope: String,
    key: String,
    hash: String,
}

/// What step 1 found.
enum Prepared {
    /// The checkout ends here, without an order.
    Ended(Outcome),
    /// Every line is for sale at the price in the cart.
    Ready { cart: Box<Cart>, lines: Vec<ReserveLine> },
}

/// The outcome of finding a cart that is not open (or gone).
fn status_outcome(status: Option<CartStatus>) -> Outcome {
    match status {
        Some(CartStatus::Completed) => Outcome::CartCompleted,
        Some(_) => Outcome::CartCheckingOut,
        None => Outcome::CartNotFound,
    }
}

/// The outcome an order in its current state stands for.
fn outcome_of(order: Order) -> Outcome {
    match order.status {
        OrderStatus::Placed => Outcome::Placed { order: Box::new(order) },
        OrderStatus::OnHold => Outcome::OnHold { order: Box::new(order) },
        OrderStatus::PendingPayment => Outcome::PaymentPending { order: Box::new(order) },
        OrderStatus::Completed => Outcome::Placed { order: Box::new(order) },
        OrderStatus::Canceled => Outcome::PaymentDeclined { reason: "voided".into(), order_id: order.id },
    }
}

/// An order as a write job reads it: without its personal data (no crypto in the writer).
async fn load_order(conn: &mut Conn<'_>, id: &str) -> Result<Order> {
    backroom_orders::load(conn, None, &[id.to_owned()], false).await?.pop().ok_or(Error::not_found("order"))
}

/// Step 4 inside a write job: `placed` with allocations (payment `captured`), `on_hold` with
/// allocations when the payment is only authorised (risk review), or `canceled` with the stock
/// released (payment `voided`; a decline is a risk signal); the cart, the attempt, the outbox
/// and the idempotency key follow. An order no longer in `pending_payment` is left as it is,
/// and so is one whose customer must still act (3-D Secure).
async fn settle_in(
    conn: &mut Conn<'_>,
    order_id: &OrderId,
    attempt_id: &AttemptId,
    status: ChargeStatus,
) -> Result<Outcome> {
    let (outcome_status, note) = match &status {
        ChargeStatus::Captured { .. } => (OrderStatus::Placed, "payment captured".to_owned()),
        // Only authorised: the checkout asked so because risk scoring sent it to review.
        ChargeStatus::Authorized { .. } => {
            (OrderStatus::OnHold, "payment authorised, not captured; held for review".to_owned())
        }
        // The money went back before the order was placed (a refund in the provider's own
        // dashboard, say): no paid order, so the stock goes back too.
        ChargeStatus::Refunded { .. } => {
            (OrderStatus::Canceled, "payment refunded before the order was placed".to_owned())
        }
        ChargeStatus::Declined { reason } => (OrderStatus::Canceled, format!("payment declined: {reason}")),
        ChargeStatus::Voided | ChargeStatus::NotFound => {
            (OrderStatus::Canceled, "payment never completed; voided".to_owned())
        }
        ChargeStatus::RequiresAction { .. } => return Ok(outcome_of(load_order(conn, order_id.as_str()).await?)),
    };
    if !backroom_orders::transition(conn, order_id, OrderStatus::PendingPayment, outcome_status, &note).await? {
        return Ok(outcome_of(load_order(conn, order_id.as_str()).await?));
    }
    let from = [AttemptStatus::Pending, AttemptStatus::Unknown];
    let (attempt, reference, reason, cart_to) = match &status {
        ChargeStatus::Captured { reference } => {
            (AttemptStatus::Captured, Some(reference.as_str()), None, CartStatus::Completed)
        }
        ChargeStatus::Authorized { reference } => {
            (AttemptStatus::Authorized, Some(reference.as_str()), None, CartStatus::Completed)
        }
        ChargeStatus::Refunded { reference } => {
            (AttemptStatus::Refunded, Some(reference.as_str()), Some("refunded"), CartStatus::Open)
        }
        ChargeStatus::Declined { reason } => (AttemptStatus::Declined, None, Some(reason.as_str()), CartStatus::Open),
        ChargeStatus::Voided | ChargeStatus::NotFound | ChargeStatus::RequiresAction { .. } => {
            (AttemptStatus::Voided, None, Some("voided"), CartStatus::Open)
        }
    };
    backroom_payments::transition(conn, attempt_id, &from, attempt, reference, reason).await?;
    // The order's payment: captured, authorised (held), or no money taken.
    let payment_status = match outcome_status {
        OrderStatus::Placed => backroom_orders::PaymentStatus::Captured,
        OrderStatus::OnHold => backroom_orders::PaymentStatus::Authorized,
        _ => backroom_orders::PaymentStatus::Voided,
    };
    backroom_orders::oms::set_payment_status(conn, order_id.as_str(), payment_status).await?;
    if matches!(status, ChargeStatus::Declined { .. }) {
        backroom_risk::store::record_decline(conn, order_id.as_str()).await?;
    }
    let changed = if matches!(outcome_status, OrderStatus::Placed | OrderStatus::OnHold) {
        reservations::allocate(conn, order_id, ACTOR).await?
    } else {
        // No order was placed: its promotion use goes back too.
        backroom_pricing::uses::release(conn, order_id.as_str()).await?;
        reservations::release(conn, order_id, ACTOR).await?
    };
    let order = load_order(conn, order_id.as_str()).await?;
    backroom_cart::transition(conn, &order.cart_id, CartStatus::CheckingOut, cart_to).await?;
    // An order held for review raises no order event until a person decides on it.
    if order.status != OrderStatus::OnHold {
        let summary = outbox::OrderOutcome {
            order_id: order.id.clone(),
            number: order.number.clone(),
            status: backroom_orders::oms::event_state(order.status),
            total: order.total,
            cart_id: order.cart_id.clone(),
        };
        let event = if order.status == OrderStatus::Placed {
            outbox::Event::OrderPlaced(summary)
        } else {
            outbox::Event::OrderPaymentFailed(summary)
        };
        outbox::enqueue(conn, &event).await?;
    }
    if !changed.is_empty() {
        let stock = outbox::StockChanged { variant_ids: changed, order_id: Some(order.id.clone()) };
        outbox::enqueue(conn, &outbox::Event::StockChanged(stock)).await?;
    }
    let outcome = match &status {
        ChargeStatus::Declined { reason } => {
            Outcome::PaymentDeclined { order_id: order.id.clone(), reason: reason.clone() }
        }
        ChargeStatus::Refunded { .. } => {
            Outcome::PaymentDeclined { order_id: order.id.clone(), reason: "refunded".into() }
        }
        _ => outcome_of(order),
    };
    idempotency::finish_for_order(conn, order_id.as_str(), &outcome).await?;
    Ok(outcome)
}

/// What a Stripe webhook event did ([`Checkout::stripe_payment_event`],
/// [`Checkout::stripe_refund_event`]).
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEffect {
    /// The event id was seen before: nothing done.
    Duplicate,
    /// Not about a payment of this store (no such attempt, or not a Stripe one): the event is
    /// recorded as seen, nothing else changes.
    Unmatched,
    /// Applied to the attempt's order; its outcome now (unchanged if it was settled already).
    Settled(Box<Outcome>),
    /// Refunds made at Stripe were handed to [`stripe_refunds_seen`].
    Refunds,
}

impl WebhookEffect {
    /// A short name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            WebhookEffect::Duplicate => "duplicate",
            WebhookEffect::Unmatched => "unmatched",
            WebhookEffect::Settled(_) => "applied",
            WebhookEffect::Refunds => "refunds",
        }
    }
}

impl Checkout {
    /// A PaymentIntent event from Stripe (`payment_intent.succeeded`,
    /// `payment_intent.payment_failed`): settles the pending order of `attempt_id` with
    /// `status` through the same path as the checkout request and recovery. One write job
    /// records the event id (insert-if-absent) and applies the effect, so a redelivery, or two
    /// deliveries at once, change the order once.
    pub async fn stripe_payment_event(
        &self,
        event_id: &str,
        kind: &str,
        attempt_id: &str,
        status: ChargeStatus,
    ) -> Result<WebhookEffect> {
        let (event_id, kind, attempt_id) = (event_id.to_owned(), kind.to_owned(), attempt_id.to_owned());
        self.db
            .write_retrying(|| {
                let (event_id, kind, attempt_id, status) =
                    (event_id.clone(), kind.clone(), attempt_id.clone(), status.clone());
                move |mut conn| {
                    Box::pin(async move {
                        if !backroom_payments::stripe::record_event(&mut conn, &event_id, &kind).await? {
                            return Ok(Done::Rollback(WebhookEffect::Duplicate));
                        }
                        let attempt = backroom_payments::attempt(&mut conn, &attempt_id).await?;
                        let Some(attempt) = attempt.filter(|a| a.provider == "stripe") else {
                            return Ok(Done::Commit(WebhookEffect::Unmatched));
                        };
                        let outcome = settle_in(&mut conn, &attempt.order_id, &attempt.id, status).await?;
                        Ok(Done::Commit(WebhookEffect::Settled(Box::new(outcome))))
                    }) as backroom_db::writer::BoxFuture<'_, _>
                }
            })
            .await
    }

    /// A `charge.refunded` event from Stripe: records the event id and hands the refunds to
    /// [`stripe_refunds_seen`], in one write job.
    pub async fn stripe_refund_event(
        &self,
        event_id: &str,
        kind: &str,
        refunds: backroom_payments::stripe::ChargeRefunds,
    ) -> Result<WebhookEffect> {
        let (event_id, kind) = (event_id.to_owned(), kind.to_owned());
        self.db
            .write_retrying(|| {
                let (event_id, kind, refunds) = (event_id.clone(), kind.clone(), refunds.clone());
                move |mut conn| {
                    Box::pin(async move {
                        if !backroom_payments::stripe::record_event(&mut conn, &event_id, &kind).await? {
                            return Ok(Done::Rollback(WebhookEffect::Duplicate));
                        }
                        stripe_refunds_seen(&mut conn, &refunds).await?;
                        Ok(Done::Commit(WebhookEffect::Refunds))
                    }) as backroom_db::writer::BoxFuture<'_, _>
                }
            })
            .await
    }
}

/// Refunds made at Stripe (its dashboard, or Backroom's own refunds coming back as events),
/// inside the write job that records the event: each refund id Backroom does not know yet is
/// recorded on the order as a `succeeded` refund (`refunded_total`, `payment_status`,
/// `order.refunded`); a refund Backroom made itself carries the same id and is not counted
/// twice. A charge no order of this store paid, or in another currency, is logged and left.
pub async fn stripe_refunds_seen(
    conn: &mut Conn<'_>,
    refunds: &backroom_payments::stripe::ChargeRefunds,
) -> Result<()> {
    metrics::counter!("stripe_refunds_seen_total").increment(refunds.refunds.len() as u64);
    let attempt = match (&refunds.attempt_id, &refunds.payment_intent) {
        (Some(a), _) => Some(a.clone()),
        (None, Some(intent)) => {
            backroom_payments::attempt_by_reference(conn, "stripe", intent).await?.map(|a| a.id.to_string())
        }
        (None, None) => None,
    };
    let currency = backroom_kernel::Currency::parse(&refunds.currency.to_ascii_uppercase()).ok();
    let (Some(attempt), Some(currency)) = (attempt, currency) else {
        tracing::warn!(charge = refunds.charge_id, "Stripe reports refunds of a charge no order of this store paid");
        return Ok(());
    };
    for (refund_id, amount) in &refunds.refunds {
        let Ok(amount) = Money::new(*amount, currency) else { continue };
        // One Backroom asked for (its id in the refund's metadata): its own follow-up, or the
        // recovery pass, records Stripe's answer; counting it here too could count it twice
        // when this event overtakes that answer.
        if let Some(own) = refunds.requested.get(refund_id)
            && backroom_orders::oms::is_refund_of(conn, &attempt, own).await?
        {
            continue;
        }
        match backroom_orders::oms::record_provider_refund_in(conn, &attempt, refund_id, amount).await {
            Ok(_) => {}
            Err(e @ (Error::NotFound { .. } | Error::Validation(_))) => {
                tracing::warn!(charge = refunds.charge_id, refund = refund_id, error = %e, "a Stripe refund not recorded");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
