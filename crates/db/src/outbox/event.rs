//! What goes into the outbox: one [`Event`] enum, one variant per topic, each with typed
//! fields and a schema version.
//!
//! An event is stored as its topic and a JSON payload: the variant's fields plus `"v"`, the
//! version of that topic's schema (`{"v":1,"product_id":"prd_…","action":"updated"}`).
//! Payloads written before versions existed carry no `"v"` and read as version 1. Each topic
//! has its own version, so a change to one topic does not make older readers skip the rest.
//!
//! Changing a topic's payload in a way older readers cannot read (a field removed, renamed
//! or retyped, a new enum value) bumps its version in [`TOPICS`]; [`Event::decode`] keeps
//! reading the older versions (upcasting them), and answers [`DecodeError::NewerVersion`]
//! for versions it does not know, which readers skip with a warning. Adding an optional
//! field with a default is not a new version.

use backroom_kernel::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Every topic with the schema version this build writes (and the newest it reads).
pub const TOPICS: [(&str, u32); 16] = [
    (PRODUCT_CHANGED, 1),
    (CATEGORY_CHANGED, 1),
    (STOCK_CHANGED, 1),
    // Version 2: order states are `pending_payment`, `placed`, `on_hold`, `completed`,
    // `canceled` (version 1 also said `payment_failed` and `cancelled`; both read as `canceled`).
    (ORDER_PLACED, 2),
    (ORDER_PAYMENT_FAILED, 2),
    (CUSTOMER_CREATED, 1),
    (CUSTOMER_ERASED, 1),
    (PRICE_LIST_CHANGED, 1),
    (PROMOTION_EXHAUSTED, 1),
    (ORDER_FULFILLED, 1),
    (ORDER_SHIPPED, 1),
    (ORDER_DELIVERED, 1),
    (ORDER_CANCELED, 1),
    (ORDER_REFUNDED, 1),
    (RETURN_RECEIVED, 1),
    (WEBHOOK_ENDPOINT_DISABLED, 1),
];

const PRODUCT_CHANGED: &str = "product.changed";
const CATEGORY_CHANGED: &str = "category.changed";
const STOCK_CHANGED: &str = "stock.changed";
const ORDER_PLACED: &str = "order.placed";
const ORDER_PAYMENT_FAILED: &str = "order.payment_failed";
const CUSTOMER_CREATED: &str = "customer.created";
const CUSTOMER_ERASED: &str = "customer.erased";
const PRICE_LIST_CHANGED: &str = "price_list.changed";
const PROMOTION_EXHAUSTED: &str = "promotion.exhausted";
const ORDER_FULFILLED: &str = "order.fulfilled";
const ORDER_SHIPPED: &str = "order.shipped";
const ORDER_DELIVERED: &str = "order.delivered";
const ORDER_CANCELED: &str = "order.canceled";
const ORDER_REFUNDED: &str = "order.refunded";
const RETURN_RECEIVED: &str = "return.received";
const WEBHOOK_ENDPOINT_DISABLED: &str = "webhook_endpoint.disabled";

/// Something that happened in one module that others (search, caches, webhooks,
/// connectors) must learn about. Written with [`crate::outbox::enqueue`] in the transaction
/// of the change, read back typed by the outbox's readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `product.changed`: a product or one of its variants was created, changed or deleted.
    ProductChanged(ProductChanged),
    /// `category.changed`: a category was created, renamed, moved or deleted.
    CategoryChanged(CategoryChanged),
    /// `stock.changed`: the stock of these variants changed (an adjustment, an import, an
    /// order's allocation or release).
    StockChanged(StockChanged),
    /// `order.placed`: an order's payment went through.
    OrderPlaced(OrderOutcome),
    /// `order.payment_failed`: an order's payment was declined, refunded or voided.
    OrderPaymentFailed(OrderOutcome),
    /// `customer.created`: a shopper registered an account.
    CustomerCreated(CustomerCreated),
    /// `customer.erased`: a customer's personal data was erased (their key destroyed).
    CustomerErased(CustomerErased),
    /// `price_list.changed`: a price list was created, changed (prices, groups, schedule) or
    /// deleted; storefront views and caches reload what members see.
    PriceListChanged(PriceListChanged),
    /// `promotion.exhausted`: an order took a promotion's last use (`usage_limit` reached).
    PromotionExhausted(PromotionExhausted),
    /// `order.fulfilled`: units of an order left stock (`resource_id`: the fulfilment).
    OrderFulfilled(OrderChange),
    /// `order.shipped`: a fulfilment got a shipment (`resource_id`: the shipment).
    OrderShipped(OrderChange),
    /// `order.delivered`: a fulfilment was delivered (`resource_id`: the fulfilment).
    OrderDelivered(OrderChange),
    /// `order.canceled`: a placed or held order was canceled or rejected.
    OrderCanceled(OrderChange),
    /// `order.refunded`: a refund succeeded (`resource_id`: the refund, `amount` its amount).
    OrderRefunded(OrderChange),
    /// `return.received`: units of an order came back (`resource_id`: the return).
    ReturnReceived(OrderChange),
    /// `webhook_endpoint.disabled`: a webhook endpoint that kept failing was disabled.
    WebhookEndpointDisabled(WebhookEndpointDisabled),
}

/// What happened to the thing an event names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

/// The payload of `product.changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductChanged {
    pub product_id: String,
    pub action: Action,
}

/// The payload of `category.changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CategoryChanged {
    pub category_id: String,
    pub action: Action,
}

/// The payload of `stock.changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockChanged {
    pub variant_ids: Vec<String>,
    /// The order whose allocation or release changed the stock, if an order did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

/// The payload of `order.placed` and `order.payment_failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderOutcome {
    pub order_id: String,
    /// The human order number, such as `#1001`.
    pub number: String,
    pub status: OrderState,
    pub total: Money,
    pub cart_id: String,
}

/// The payload of the events of an order after the sale (`order.fulfilled`, `order.shipped`,
/// `order.delivered`, `order.canceled`, `order.refunded`, `return.received`): the order, its
/// status after the change, and the fulfilment, shipment, refund or return it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderChange {
    pub order_id: String,
    /// The human order number, such as `#1001`.
    pub number: String,
    pub status: OrderState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
}

/// The payload of `customer.created`: ids and times only, never personal data (an event
/// outlives the erasure of the customer it names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CustomerCreated {
    pub customer_id: String,
    pub created_at: DateTime<Utc>,
}

/// The payload of `customer.erased`: ids and times only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CustomerErased {
    pub customer_id: String,
    pub erased_at: DateTime<Utc>,
}

/// The payload of `price_list.changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PriceListChanged {
    pub price_list_id: String,
    pub action: Action,
}

/// The payload of `promotion.exhausted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PromotionExhausted {
    pub promotion_id: String,
    pub code: String,
    pub usage_limit: i64,
    /// The order that took the last use.
    pub order_id: String,
}

/// The payload of `webhook_endpoint.disabled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookEndpointDisabled {
    pub endpoint_id: String,
    /// Why, for people (`failing since 2025-01-01T00:00:00Z`).
    pub reason: String,
    /// Since when every delivery attempt to it failed.
    pub failing_since: DateTime<Utc>,
    pub disabled_at: DateTime<Utc>,
}

/// An order's status as events tell it (the orders module's statuses, as a contract of
/// their own: a new status is a new event version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    PendingPayment,
    Placed,
    OnHold,
    Completed,
    /// Version 1 payloads said `payment_failed` or `cancelled`.
    #[serde(alias = "payment_failed", alias = "cancelled")]
    Canceled,
}

/// Why a stored event could not be read back. Readers skip such an event with a warning
/// (a newer build wrote it, or it is not an event at all); they never stop on one.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown outbox topic `{0}`")]
    UnknownTopic(String),
    #[error("{topic} payload version {found} is newer than this build reads (up to {known})")]
    NewerVersion { topic: String, found: u64, known: u32 },
    #[error("malformed {topic} payload: {message}")]
    Malformed { topic: String, message: String },
}

/// The schema version this build writes for `topic`, if it knows the topic.
pub fn version_of(topic: &str) -> Option<u32> {
    TOPICS.iter().find(|(t, _)| *t == topic).map(|(_, v)| *v)
}

impl Event {
    /// The topic this event is stored under.
    pub fn topic(&self) -> &'static str {
        match self {
            Event::ProductChanged(_) => PRODUCT_CHANGED,
            Event::CategoryChanged(_) => CATEGORY_CHANGED,
            Event::StockChanged(_) => STOCK_CHANGED,
            Event::OrderPlaced(_) => ORDER_PLACED,
            Event::OrderPaymentFailed(_) => ORDER_PAYMENT_FAILED,
            Event::CustomerCreated(_) => CUSTOMER_CREATED,
            Event::CustomerErased(_) => CUSTOMER_ERASED,
            Event::PriceListChanged(_) => PRICE_LIST_CHANGED,
            Event::PromotionExhausted(_) => PROMOTION_EXHAUSTED,
            Event::OrderFulfilled(_) => ORDER_FULFILLED,
            Event::OrderShipped(_) => ORDER_SHIPPED,
            Event::OrderDelivered(_) => ORDER_DELIVERED,
            Event::OrderCanceled(_) => ORDER_CANCELED,
            Event::OrderRefunded(_) => ORDER_REFUNDED,
            Event::ReturnReceived(_) => RETURN_RECEIVED,
            Event::WebhookEndpointDisabled(_) => WEBHOOK_ENDPOINT_DISABLED,
        }
    }

    /// The schema version this build writes for the event's topic.
    pub fn version(&self) -> u32 {
        version_of(self.topic()).expect("every variant's topic is in TOPICS")
    }

    /// The stored JSON payload: the variant's fields and `"v"`.
    pub fn encode(&self) -> String {
        #[derive(Serialize)]
        struct Versioned<'a, T> {
            v: u32,
            #[serde(flatten)]
            body: &'a T,
        }
        fn to_json<T: Serialize>(v: u32, body: &T) -> String {
            serde_json::to_string(&Versioned { v, body })
                .expect("event payloads are plain structs and always serialise")
        }
        let v = self.version();
        match self {
            Event::ProductChanged(p) => to_json(v, p),
            Event::CategoryChanged(p) => to_json(v, p),
            Event::StockChanged(p) => to_json(v, p),
            Event::OrderPlaced(p) | Event::OrderPaymentFailed(p) => to_json(v, p),
            Event::CustomerCreated(p) => to_json(v, p),
            Event::CustomerErased(p) => to_json(v, p),
            Event::PriceListChanged(p) => to_json(v, p),
            Event::PromotionExhausted(p) => to_json(v, p),
            Event::OrderFulfilled(p)
            | Event::OrderShipped(p)
            | Event::OrderDelivered(p)
            | Event::OrderCanceled(p)
            | Event::OrderRefunded(p)
            | Event::ReturnReceived(p) => to_json(v, p),
            Event::WebhookEndpointDisabled(p) => to_json(v, p),
        }
    }

    /// Reads a stored event back. A payload without `"v"` is version 1.
    pub fn decode(topic: &str, payload: &str) -> Result<Event, DecodeError> {
        let known = version_of(topic).ok_or_else(|| DecodeError::UnknownTopic(topic.to_owned()))?;
        let malformed = |message: String| DecodeError::Malformed { topic: topic.to_owned(), message };
        let value: serde_json::Value = serde_json::from_str(payload).map_err(|e| malformed(e.to_string()))?;
        let found = match value.get("v") {
            None => 1,
            Some(v) => {
                v.as_u64().filter(|v| *v >= 1).ok_or_else(|| malformed(format!("version {v} is not a number")))?
            }
        };
        if found > u64::from(known) {
            return Err(DecodeError::NewerVersion { topic: topic.to_owned(), found, known });
        }
        // An older version is upcast here, matched on `(topic, found)`. Version 1 of
        // `order.placed` and `order.payment_failed` reads as version 2 (its old states are
        // aliases of `canceled`).
        fn body<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
            serde_json::from_value(value).map_err(|e| e.to_string())
        }
        Ok(match topic {
            PRODUCT_CHANGED => Event::ProductChanged(body(value).map_err(malformed)?),
            CATEGORY_CHANGED => Event::CategoryChanged(body(value).map_err(malformed)?),
            STOCK_CHANGED => Event::StockChanged(body(value).map_err(malformed)?),
            ORDER_PLACED => Event::OrderPlaced(body(value).map_err(malformed)?),
            ORDER_PAYMENT_FAILED => Event::OrderPaymentFailed(body(value).map_err(malformed)?),
            CUSTOMER_CREATED => Event::CustomerCreated(body(value).map_err(malformed)?),
            CUSTOMER_ERASED => Event::CustomerErased(body(value).map_err(malformed)?),
            PRICE_LIST_CHANGED => Event::PriceListChanged(body(value).map_err(malformed)?),
            PROMOTION_EXHAUSTED => Event::PromotionExhausted(body(value).map_err(malformed)?),
            ORDER_FULFILLED => Event::OrderFulfilled(body(value).map_err(malformed)?),
            ORDER_SHIPPED => Event::OrderShipped(body(value).map_err(malformed)?),
            ORDER_DELIVERED => Event::OrderDelivered(body(value).map_err(malformed)?),
            ORDER_CANCELED => Event::OrderCanceled(body(value).map_err(malformed)?),
            ORDER_REFUNDED => Event::OrderRefunded(body(value).map_err(malformed)?),
            RETURN_RECEIVED => Event::ReturnReceived(body(value).map_err(malformed)?),
            WEBHOOK_ENDPOINT_DISABLED => Event::WebhookEndpointDisabled(body(value).map_err(malformed)?),
            _ => return Err(DecodeError::UnknownTopic(topic.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use backroom_kernel::Currency;
    use proptest::prelude::*;

    use super::*;

    fn id(prefix: &'static str) -> impl Strategy<Value = String> {
        "[0-9A-Za-z_\"\\\\ é]{0,30}".prop_map(move |s| format!("{prefix}_{s}"))
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![Just(Action::Created), Just(Action::Updated), Just(Action::Deleted)]
    }

    fn order() -> impl Strategy<Value = OrderOutcome> {
        let state = prop_oneof![
            Just(OrderState::PendingPayment),
            Just(OrderState::Placed),
            Just(OrderState::OnHold),
            Just(OrderState::Completed),
            Just(OrderState::Canceled)
        ];
        let currency = prop::sample::select(vec!["EUR", "JPY", "KWD", "USD"]).prop_map(|c| Currency::parse(c).unwrap());
        let total = (0..=Money::MAX_AMOUNT, currency).prop_map(|(a, c)| Money::new(a, c).unwrap());
        (id("ord"), "#[0-9]{1,8}", state, total, id("crt")).prop_map(|(order_id, number, status, total, cart_id)| {
            OrderOutcome { order_id, number, status, total, cart_id }
        })
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (id("prd"), action())
                .prop_map(|(product_id, action)| Event::ProductChanged(ProductChanged { product_id, action })),
            (id("cat"), action())
                .prop_map(|(category_id, action)| Event::CategoryChanged(CategoryChanged { category_id, action })),
            (prop::collection::vec(id("var"), 0..20), prop::option::of(id("ord")))
                .prop_map(|(variant_ids, order_id)| Event::StockChanged(StockChanged { variant_ids, order_id })),
            order().prop_map(Event::OrderPlaced),
            order().prop_map(Event::OrderPaymentFailed),
            (order(), prop::option::of(id("ful")), prop::option::of(0..=Money::MAX_AMOUNT)).prop_map(
                |(o, resource_id, amount)| {
                    let amount = amount.map(|a| Money::new(a, o.total.currency()).unwrap());
                    let change =
                        OrderChange { order_id: o.order_id, number: o.number, status: o.status, resource_id, amount };
                    match o.total.amount() % 6 {
                        0 => Event::OrderFulfilled(change),
                        1 => Event::OrderShipped(change),
                        2 => Event::OrderDelivered(change),
                        3 => Event::OrderCanceled(change),
                        4 => Event::OrderRefunded(change),
                        _ => Event::ReturnReceived(change),
                    }
                }
            ),
            (id("cus"), 0i64..4_000_000_000_000_000).prop_map(|(customer_id, micros)| {
                let created_at = DateTime::from_timestamp_micros(micros).unwrap();
                Event::CustomerCreated(CustomerCreated { customer_id, created_at })
            }),
            (id("cus"), 0i64..4_000_000_000_000_000).prop_map(|(customer_id, micros)| {
                let erased_at = DateTime::from_timestamp_micros(micros).unwrap();
                Event::CustomerErased(CustomerErased { customer_id, erased_at })
            }),
            (id("plist"), action()).prop_map(|(price_list_id, action)| Event::PriceListChanged(PriceListChanged {
                price_list_id,
                action
            })),
            (id("wh"), "[a-z0-9 :]{0,40}", 0i64..4_000_000_000_000_000).prop_map(|(endpoint_id, reason, micros)| {
                let at = DateTime::from_timestamp_micros(micros).unwrap();
                Event::WebhookEndpointDisabled(WebhookEndpointDisabled {
                    endpoint_id,
                    reason,
                    failing_since: at,
                    disabled_at: at,
                })
            }),
            (id("promo"), "[A-Z0-9]{1,20}", 0i64..1_000_000, id("ord")).prop_map(
                |(promotion_id, code, usage_limit, order_id)| {
                    Event::PromotionExhausted(PromotionExhausted { promotion_id, code, usage_limit, order_id })
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn every_event_reads_back_as_written(e in event()) {
            let payload = e.encode();
            let stored: serde_json::Value = serde_json::from_str(&payload).unwrap();
            prop_assert_eq!(stored["v"].as_u64(), Some(u64::from(e.version())));
            prop_assert_eq!(Event::decode(e.topic(), &payload).unwrap(), e);
        }
    }

    #[test]
    fn every_topic_is_listed_once() {
        let mut topics: Vec<&str> = TOPICS.iter().map(|(t, _)| *t).collect();
        topics.sort();
        topics.dedup();
        assert_eq!(topics.len(), TOPICS.len());
    }

    #[test]
    fn payloads_read_as_stored_fields() {
        let e = Event::OrderPlaced(OrderOutcome {
            order_id: "ord_1".into(),
            number: "#1001".into(),
            status: OrderState::Placed,
            total: Money::new(4900, Currency::parse("EUR").unwrap()).unwrap(),
            cart_id: "crt_1".into(),
        });
        let stored: serde_json::Value = serde_json::from_str(&e.encode()).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({
                "v": 2, "order_id": "ord_1", "number": "#1001", "status": "placed",
                "total": {"amount": 4900, "currency": "EUR"}, "cart_id": "crt_1",
            })
        );
        let stock = Event::StockChanged(StockChanged { variant_ids: vec!["var_1".into()], order_id: None });
        assert_eq!(stock.encode(), r#"{"v":1,"variant_ids":["var_1"]}"#);
    }

    /// Payloads as the store wrote them before events had versions (old databases hold them).
    #[test]
    fn unversioned_payloads_read_as_version_1() {
        let old = [
            ("product.changed", r#"{"action":"deleted","product_id":"prd_1"}"#),
            ("category.changed", r#"{"action":"created","category_id":"cat_1"}"#),
            ("stock.changed", r#"{"variant_ids":["var_1","var_2"]}"#),
            ("stock.changed", r#"{"order_id":"ord_1","variant_ids":["var_1"]}"#),
            (
                "order.placed",
                r##"{"cart_id":"crt_1","number":"#1001","order_id":"ord_1","status":"placed","total":{"amount":4900,"currency":"EUR"}}"##,
            ),
            (
                "order.payment_failed",
                r##"{"cart_id":"crt_1","number":"#1002","order_id":"ord_2","status":"cancelled","total":{"amount":0,"currency":"JPY"}}"##,
            ),
        ];
        for (topic, payload) in old {
            let e = Event::decode(topic, payload).unwrap_or_else(|e| panic!("{topic} {payload}: {e}"));
            assert_eq!(e.topic(), topic);
            let reread = Event::decode(topic, &e.encode()).unwrap();
            assert_eq!(reread, e);
        }
        assert_eq!(
            Event::decode("stock.changed", r#"{"order_id":"ord_1","variant_ids":["var_1"]}"#).unwrap(),
            Event::StockChanged(StockChanged { variant_ids: vec!["var_1".into()], order_id: Some("ord_1".into()) })
        );
    }

    #[test]
    fn unknown_topics_newer_versions_and_bad_payloads_are_errors() {
        assert!(
            matches!(Event::decode("order.teleported", "{}"), Err(DecodeError::UnknownTopic(t)) if t == "order.teleported")
        );
        assert!(matches!(
            Event::decode("product.changed", r#"{"v":2,"product_id":"prd_1","action":"updated"}"#),
            Err(DecodeError::NewerVersion { found: 2, known: 1, .. })
        ));
        for bad in [
            "not json",
            r#"{"v":"1","product_id":"prd_1","action":"updated"}"#,
            r#"{"v":0,"product_id":"prd_1","action":"updated"}"#,
            r#"{"product_id":"prd_1","action":"archived"}"#,
            r#"{"action":"updated"}"#,
        ] {
            assert!(matches!(Event::decode("product.changed", bad), Err(DecodeError::Malformed { .. })), "{bad}");
        }
        // A total that is no valid amount of money is refused, not carried along.
        assert!(matches!(
            Event::decode(
                "order.placed",
                r##"{"cart_id":"c","number":"#1","order_id":"o","status":"placed","total":{"amount":-1,"currency":"EUR"}}"##
            ),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
