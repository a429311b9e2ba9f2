//! What the customers module takes and answers.

use backroom_kernel::id::CustomerId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// Reads a field that may be absent (leave as is), `null` (clear) or a value (set).
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A `Debug` that prints the type's name only: the value holds personal data, which no log
/// line may carry.
macro_rules! redacted_debug {
    ($($t:ident),+) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), " { .. }"))
            }
        }
    )+};
}

redacted_debug!(Registration, Credentials, ProfilePatch, NewCustomerAddress, CustomerAddressPatch);

/// `POST /store/customers`.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    #[schema(example = "ana@example.com", max_length = 254)]
    pub email: String,
    /// 10–256 characters. Never stored or shown: only its argon2id hash is kept.
    #[schema(min_length = 10, max_length = 256, format = Password)]
    pub password: String,
    /// 1–100 characters.
    #[schema(example = "Ana", min_length = 1, max_length = 100)]
    pub first_name: String,
    /// 1–100 characters.
    #[schema(example = "Silva", min_length = 1, max_length = 100)]
    pub last_name: String,
    /// Digits with an optional leading `+`, spaces, dashes, dots or parentheses; 4–15 digits.
    #[schema(example = "+351 912 345 678", max_length = 32)]
    #[serde(default)]
    pub phone: Option<String>,
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Registered {
    #[schema(value_type = String, example = "cus_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: CustomerId,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub created_at: DateTime<Utc>,
}

/// `POST /store/auth/token`.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[schema(example = "ana@example.com")]
    pub email: String,
    #[schema(format = Password)]
    pub password: String,
}

/// A new session: its token is shown only here.
#[derive(Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Session {
    /// Send as `Authorization: Bearer <token>`. Only its hash is stored.
    #[schema(example = "cst_7d3f…")]
    pub token: String,
    pub expires_at: DateTime<Utc>,
    #[schema(value_type = String)]
    pub customer_id: CustomerId,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("customer_id", &self.customer_id).field("expires_at", &self.expires_at).finish()
    }
}

/// A customer as they see themselves (`GET /store/customers/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Profile {
    #[schema(value_type = String)]
    pub id: CustomerId,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `PATCH /store/customers/me`: the fields to change; `"phone": null` removes the phone.
#[derive(Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    #[schema(min_length = 1, max_length = 100)]
    pub first_name: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    pub last_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable, max_length = 32)]
    pub phone: Option<Option<String>>,
}

/// An address of a customer's address book: the shape of an order's shipping address, plus
/// an optional phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CustomerAddress {
    #[schema(example = "addr_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, such as `PT`.
    pub country: String,
    pub phone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /store/customers/me/addresses`.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomerAddress {
    /// 1–200 characters.
    #[schema(example = "Ana Silva")]
    pub name: String,
    /// 1–200 characters.
    #[schema(example = "Rua Augusta 1")]
    pub line1: String,
    #[serde(default)]
    pub line2: Option<String>,
    /// 1–100 characters.
    #[schema(example = "Lisboa")]
    pub city: String,
    #[serde(default)]
    pub region: Option<String>,
    /// 1–20 characters.
    #[schema(example = "1100-048")]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(example = "PT", pattern = "^[A-Z]{2}$")]
    pub country: String,
    #[serde(default)]
    pub phone: Option<String>,
}

/// `PATCH /store/customers/me/addresses/{id}`: the fields to change; `null` removes an
/// optional one (`line2`, `region`, `phone`).
#[derive(Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerAddressPatch {
    pub name: Option<String>,
    pub line1: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable)]
    pub line2: Option<Option<String>>,
    pub city: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable)]
    pub region: Option<Option<String>>,
    pub postal_code: Option<String>,
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable)]
    pub phone: Option<Option<String>>,
}

/// A customer as staff see them. Every personal field is `null` once the customer is erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AdminCustomer {
    #[schema(value_type = String)]
    pub id: CustomerId,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    /// Whether the customer's personal data was erased.
    pub erased: bool,
    pub erased_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A group a customer belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GroupRef {
    #[schema(example = "cgrp_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    pub name: String,
}

backroom_db::from_row!(GroupRef { id, name });

/// One customer with their address book, groups and number of orders
/// (`GET /admin/customers/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CustomerDetail {
    #[serde(flatten)]
    pub customer: AdminCustomer,
    pub addresses: Vec<CustomerAddress>,
    pub groups: Vec<GroupRef>,
    /// Orders placed while signed in as this customer.
    pub order_count: i64,
}

/// A customer group (`cgrp_…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CustomerGroup {
    #[schema(example = "cgrp_01jd8x6v3y0m4c4b9ks2t5f7qe")]
    pub id: String,
    #[schema(example = "Wholesale")]
    pub name: String,
    /// Customers in the group.
    pub customer_count: i64,
    pub created_at: DateTime<Utc>,
}

backroom_db::from_row!(CustomerGroup { id, name, customer_count, created_at });

/// `POST /admin/customer-groups`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// 1–100 characters, unique.
    #[schema(example = "Wholesale", min_length = 1, max_length = 100)]
    pub name: String,
}

/// `POST /admin/customer-groups/{id}/customers`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupMembers {
    /// 1–1000 customer ids; ones already in the group are left as they are.
    #[schema(min_items = 1, max_items = 1000)]
    pub customer_ids: Vec<String>,
}

/// Every personal field the store holds of a customer (`GET /admin/customers/{id}/export`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CustomerExport {
    pub customer: AdminCustomer,
    pub addresses: Vec<CustomerAddress>,
    pub groups: Vec<GroupRef>,
    /// The orders of the customer's account, newest first, with their e-mail and address.
    pub orders: Vec<backroom_orders::Order>,
}

/// The answer to an erasure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Erasure {
    #[schema(value_type = String)]
    pub id: CustomerId,
    /// Always `true`.
    pub erased: bool,
    /// When the customer was erased (the first erasure's time, when erased before).
    pub erased_at: DateTime<Utc>,
}
