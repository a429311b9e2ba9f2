//! The event catalog (`GET /admin/event-types`): for every topic of [`TOPICS`], its version
//! and a JSON Schema (draft 2020-12) of the `data` of its webhook deliveries, generated from
//! the typed events so the published contract and what is sent cannot drift.
//!
//! What `data` is per topic is decided by [`data_schema`], which follows `Webhooks::data`:
//! the order as `GET /admin/orders/{id}` shows it for `order.*` and `return.received`, the
//! endpoint for `webhook_endpoint.disabled`, the event's own fields for the rest.
//!
//! The schemas come from `utoipa::ToSchema` (OpenAPI 3.1, whose schemas are JSON Schema
//! 2020-12 already: nullable fields are type arrays or `oneOf` with `null`); the only work
//! is to make each document self-contained, moving the referenced components into `$defs`
//! and rewriting `#/components/schemas/X` to `#/$defs/X`. That is a few lines, so no crate.

use backroom_db::outbox::TOPICS;
use backroom_db::outbox::{
    CategoryChanged, CustomerCreated, CustomerErased, PriceListChanged, ProductChanged, PromotionExhausted,
    StockChanged, WebhookEndpointDisabled,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::Endpoint;

/// One entry of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventType {
    /// The topic, such as `order.placed`.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub event_type: String,
    /// The schema version this build sends.
    pub version: u32,
    /// A JSON Schema (draft 2020-12) of the deliveries' `data`.
    #[schema(value_type = Object)]
    pub schema: Value,
}

/// Every topic with its version and schema, in the order of [`TOPICS`].
pub fn event_types() -> Vec<EventType> {
    TOPICS
        .iter()
        .map(|(topic, version)| EventType {
            event_type: (*topic).to_owned(),
            version: *version,
            schema: data_schema(topic).expect("every topic of TOPICS has a schema"),
        })
        .collect()
}

/// The JSON Schema of the `data` of a delivery of `topic`, `None` for an unknown topic.
pub fn data_schema(topic: &str) -> Option<Value> {
    Some(match topic {
        "order.placed"
        | "order.payment_failed"
        | "order.fulfilled"
        | "order.shipped"
        | "order.delivered"
        | "order.canceled"
        | "order.refunded"
        | "return.received" => document::<backroom_orders::Order>(),
        // The endpoint, or the event's own fields when the endpoint was deleted before the
        // delivery was sent.
        "webhook_endpoint.disabled" => either::<Endpoint, WebhookEndpointDisabled>(),
        "product.changed" => document::<ProductChanged>(),
        "category.changed" => document::<CategoryChanged>(),
        "stock.changed" => document::<StockChanged>(),
        "customer.created" => document::<CustomerCreated>(),
        "customer.erased" => document::<CustomerErased>(),
        "price_list.changed" => document::<PriceListChanged>(),
        "promotion.exhausted" => document::<PromotionExhausted>(),
        _ => return None,
    })
}

/// `T`'s schema as a standalone JSON Schema document.
fn document<T: ToSchema>() -> Value {
    let mut components = Vec::new();
    T::schemas(&mut components);
    let mut root = serde_json::to_value(T::schema()).expect("schemas serialise");
    let mut defs = Map::new();
    for (name, schema) in components {
        let mut schema = serde_json::to_value(schema).expect("schemas serialise");
        rewrite_refs(&mut schema);
        defs.insert(name, schema);
    }
    rewrite_refs(&mut root);
    let Value::Object(mut doc) = root else { unreachable!("a schema is an object") };
    doc.insert("$schema".into(), "https://json-schema.org/draft/2020-12/schema".into());
    doc.insert("title".into(), T::name().into_owned().into());
    if !defs.is_empty() {
        doc.insert("$defs".into(), Value::Object(defs));
    }
    Value::Object(doc)
}

/// A document that is `A` or `B` (`anyOf`), both in `$defs`.
fn either<A: ToSchema, B: ToSchema>() -> Value {
    let (a, b) = (document::<A>(), document::<B>());
    let mut defs = Map::new();
    for (doc, name) in [(a, A::name()), (b, B::name())] {
        let Value::Object(mut doc) = doc else { unreachable!("a schema is an object") };
        if let Some(Value::Object(d)) = doc.remove("$defs") {
            defs.extend(d);
        }
        doc.remove("$schema");
        doc.remove("title");
        defs.insert(name.into_owned(), Value::Object(doc));
    }
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("{} or {}", A::name(), B::name()),
        "anyOf": [{"$ref": format!("#/$defs/{}", A::name())}, {"$ref": format!("#/$defs/{}", B::name())}],
        "$defs": defs,
    })
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                match v {
                    Value::String(s) if k == "$ref" => {
                        if let Some(name) = s.strip_prefix("#/components/schemas/") {
                            *s = format!("#/$defs/{name}");
                        }
                    }
                    _ => rewrite_refs(v),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    match v {
                        Value::String(s) if k == "$ref" => out.push(s.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_topic_has_a_self_contained_schema() {
        let types = event_types();
        assert_eq!(types.len(), TOPICS.len());
        for t in &types {
            let mut found = Vec::new();
            refs(&t.schema, &mut found);
            for r in found {
                let name = r.strip_prefix("#/$defs/").unwrap_or_else(|| panic!("{}: {r}", t.event_type));
                assert!(t.schema["$defs"].get(name).is_some(), "{}: {r} is not in $defs", t.event_type);
            }
            jsonschema::validator_for(&t.schema).unwrap_or_else(|e| panic!("{}: {e}", t.event_type));
        }
    }

    /// A payload missing a required field is refused by its topic's schema (and accepted
    /// with it). The order and endpoint topics are checked with real deliveries in the API
    /// tests (`crates/backroom/tests/api/events.rs`).
    #[test]
    fn schemas_refuse_a_payload_missing_a_required_field() {
        use backroom_db::outbox::Action;
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let examples = [
            ("product.changed", json(ProductChanged { product_id: "prd_1".into(), action: Action::Updated })),
            ("category.changed", json(CategoryChanged { category_id: "cat_1".into(), action: Action::Created })),
            ("stock.changed", json(StockChanged { variant_ids: vec!["var_1".into()], order_id: Some("ord_1".into()) })),
            ("customer.created", json(CustomerCreated { customer_id: "cus_1".into(), created_at: at })),
            ("customer.erased", json(CustomerErased { customer_id: "cus_1".into(), erased_at: at })),
            ("price_list.changed", json(PriceListChanged { price_list_id: "pl_1".into(), action: Action::Deleted })),
            (
                "promotion.exhausted",
                json(PromotionExhausted {
                    promotion_id: "promo_1".into(),
                    code: "SPRING".into(),
                    usage_limit: 100,
                    order_id: "ord_1".into(),
                }),
            ),
        ];
        for (topic, example) in examples {
            let schema = data_schema(topic).unwrap();
            let validator = jsonschema::validator_for(&schema).unwrap();
            assert!(validator.is_valid(&example), "{topic}: {example}");
            let required = schema["required"].as_array().unwrap_or_else(|| panic!("{topic} requires nothing"));
            assert!(!required.is_empty(), "{topic}");
            for field in required {
                let mut missing = example.clone();
                missing.as_object_mut().unwrap().remove(field.as_str().unwrap());
                assert!(!validator.is_valid(&missing), "{topic} accepts a payload without {field}");
            }
            let mut wrong = example.clone();
            wrong[required[0].as_str().unwrap()] = Value::Bool(true);
            assert!(!validator.is_valid(&wrong), "{topic} accepts a mistyped {}", required[0]);
        }
    }

    /// The examples of docs/events.md (the JSON block under each `### \`topic\`` heading)
    /// validate against their topic's schema, and every topic not about an order has one.
    #[test]
    fn the_documented_examples_validate() {
        let doc = include_str!("../../../docs/events.md");
        let mut checked = Vec::new();
        for section in doc.split("\n### `").skip(1) {
            let topic = section.split('`').next().unwrap();
            let block = section.split("```json\n").nth(1).unwrap_or_else(|| panic!("{topic} has no example"));
            let example: Value = serde_json::from_str(block.split("```").next().unwrap())
                .unwrap_or_else(|e| panic!("{topic}'s example: {e}"));
            let schema = data_schema(topic).unwrap_or_else(|| panic!("{topic} is no topic"));
            let validator = jsonschema::validator_for(&schema).unwrap();
            assert!(validator.is_valid(&example), "{topic}: {example}");
            checked.push(topic);
        }
        for (topic, version) in TOPICS {
            assert!(doc.contains(&format!("`{topic}`")), "docs/events.md lacks {topic}");
            if !topic.starts_with("order.") && topic != "return.received" {
                assert!(checked.contains(&topic), "docs/events.md has no example of {topic}");
                assert!(doc.contains(&format!("### `{topic}` (version {version})")), "{topic}'s version");
            } else {
                assert!(doc.contains(&format!("| `{topic}` | {version} |")), "{topic}'s version");
            }
        }
    }

    fn json(v: impl Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }
}
