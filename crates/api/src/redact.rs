//! Personal data on answers to staff whose role may not see it ([`Permission::PersonalDataRead`]):
//! `editor` and `viewer` read orders with these fields `null`.
//!
//! The list is the one place that says which fields of an order are personal; the OpenAPI
//! document marks each of them nullable from it ([`nullable_in_schema`]).

use backroom_auth::{Permission, Principal};
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;

/// The fields of an order (top level) that hold personal data: names, e-mail, phone,
/// addresses. A field not on an order is skipped, so the list may name fields before the
/// order carries them.
pub const ORDER_PERSONAL_FIELDS: &[&str] =
    &["email", "phone", "name", "first_name", "last_name", "shipping_address", "billing_address"];

/// `value` as JSON, with the personal fields of an order `null` unless `staff` may read them.
pub fn order<T: Serialize>(staff: &Principal, value: &T) -> Result<Value, ApiError> {
    let mut json = serde_json::to_value(value).map_err(|e| ApiError::Domain(backroom_kernel::Error::internal(e)))?;
    if !staff.may(Permission::PersonalDataRead) {
        blank(&mut json);
    }
    Ok(json)
}

/// A page of orders (`{"items": [...], …}`) like [`order`].
pub fn order_page<T: Serialize>(staff: &Principal, page: &T) -> Result<Value, ApiError> {
    let mut json = serde_json::to_value(page).map_err(|e| ApiError::Domain(backroom_kernel::Error::internal(e)))?;
    if !staff.may(Permission::PersonalDataRead)
        && let Some(items) = json.get_mut("items").and_then(Value::as_array_mut)
    {
        items.iter_mut().for_each(blank);
    }
    Ok(json)
}

fn blank(order: &mut Value) {
    if let Some(fields) = order.as_object_mut() {
        for name in ORDER_PERSONAL_FIELDS {
            if let Some(v) = fields.get_mut(*name) {
                *v = Value::Null;
            }
        }
    }
}

/// Marks the personal fields of the `Order` schema nullable, since a role without
/// [`Permission::PersonalDataRead`] reads them as `null`.
pub fn nullable_in_schema(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
    use utoipa::openapi::{Ref, RefOr};
    let Some(RefOr::T(Schema::Object(order))) = doc.components.as_mut().and_then(|c| c.schemas.get_mut("Order")) else {
        return;
    };
    for name in ORDER_PERSONAL_FIELDS {
        let Some(prop) = order.properties.get_mut(*name) else { continue };
        let nullable = match std::mem::replace(prop, RefOr::Ref(Ref::new(""))) {
            RefOr::T(Schema::Object(mut o)) => {
                o.schema_type = match o.schema_type {
                    SchemaType::Type(t) if t != Type::Null => SchemaType::from_iter([t, Type::Null]),
                    other => other,
                };
                RefOr::T(Schema::Object(o))
            }
            RefOr::Ref(r) => RefOr::T(Schema::OneOf(
                OneOfBuilder::new().item(RefOr::Ref(r)).item(ObjectBuilder::new().schema_type(Type::Null)).build(),
            )),
            other => other,
        };
        *prop = nullable;
    }
}

#[cfg(test)]
mod tests {
    use backroom_auth::{Actor, Role};
    use serde_json::json;

    use super::*;

    fn as_role(role: Role) -> Principal {
        Principal { actor: Actor::ApiKey("key_x".into()), role }
    }

    #[test]
    fn roles_without_personal_data_read_nulls() {
        let o = json!({"id": "ord_1", "email": "ana@example.com", "shipping_address": {"name": "Ana"},
                       "items": [{"sku": "A"}], "total": {"amount": 1, "currency": "EUR"}});
        for role in Role::ALL {
            let out = order(&as_role(role), &o).unwrap();
            if role.allows(Permission::PersonalDataRead) {
                assert_eq!(out, o, "{role}");
            } else {
                assert_eq!(out["email"], Value::Null, "{role}");
                assert_eq!(out["shipping_address"], Value::Null, "{role}");
                assert_eq!(out["items"], o["items"]);
                assert!(out.get("phone").is_none(), "a field the order lacks is not added");
            }
        }
        let page = json!({"items": [o.clone(), o], "next_cursor": null});
        let out = order_page(&as_role(Role::Viewer), &page).unwrap();
        assert!(!out.to_string().contains("ana@example.com"));
        assert_eq!(order_page(&as_role(Role::Support), &page).unwrap(), page);
    }

    #[test]
    fn the_order_schema_allows_null_personal_fields() {
        let doc: Value = serde_json::from_str(&crate::openapi::json()).unwrap();
        let order = &doc["components"]["schemas"]["Order"]["properties"];
        assert_eq!(order["email"]["type"], json!(["string", "null"]), "{}", order["email"]);
        let address = order["shipping_address"].to_string();
        assert!(address.contains("\"null\""), "{address}");
    }
}
