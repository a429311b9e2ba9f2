//! Opaque ids with a type prefix (`prod_…`, `var_…`). The part after the prefix is a
//! lower-case ULID, so ids sort by creation time, which keyset pagination relies on.

/// A new id such as `prod_01jd…`. Ids made by one process increase strictly, also within one
/// millisecond (a monotonic ULID generator: the random part of the previous id plus one), so
/// rows ordered by id (an order's history, say) keep the order in which they were written.
pub fn new(prefix: &str) -> String {
    static GENERATOR: std::sync::Mutex<ulid::Generator> = std::sync::Mutex::new(ulid::Generator::new());
    let next = GENERATOR.lock().map(|mut g| g.generate().ok()).ok().flatten();
    // `None` only after 2^80 ids in one millisecond (or a poisoned lock): a plain ULID then.
    // (Not `unwrap_or_default`: a default ULID is all zeroes.)
    let id = match next {
        Some(id) => id,
        None => ulid::Ulid::new(),
    };
    format!("{prefix}_{}", id.to_string().to_lowercase())
}

/// Whether `id` looks like an id of this kind: the prefix, an underscore, then 1–64
/// ASCII letters, digits or underscores. Used to answer a malformed id with a 404 cheaply.
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('_')).is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// Declares an id type: a `String` that only this kind of id can be, so that two ids cannot be
/// swapped where a function takes both (`settle(&OrderId, &AttemptId)`). It serialises, binds
/// and reads back from either database as its plain string.
macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(serde::Serialize, serde::Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        #[schema(value_type = String)]
        pub struct $name(String);

        impl $name {
            /// The prefix of every id of this kind.
            pub const PREFIX: &'static str = $prefix;

            /// A new id.
            pub fn generate() -> Self {
                Self(new($prefix))
            }

            /// `s` as an id of this kind, when it is shaped like one ([`has_prefix`]).
            pub fn parse(s: &str) -> Option<Self> {
                has_prefix(s, $prefix).then(|| Self(s.to_owned()))
            }

            /// An id read back from storage, where only ids of this kind were written.
            pub fn from_stored(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

typed_id!(
    /// An order (`ord_…`). It cannot stand where another kind of id is asked for:
    ///
    /// ```compile_fail
    /// use backroom_kernel::id::{AttemptId, OrderId};
    /// fn settle(_order: &OrderId, _attempt: &AttemptId) {}
    /// let (order, attempt) = (OrderId::generate(), AttemptId::generate());
    /// settle(&attempt, &order); // swapped: refused by the compiler
    /// ```
    OrderId,
    "ord"
);
typed_id!(
    /// A payment attempt (`pay_…`): one charge of one order at one provider.
    AttemptId,
    "pay"
);
typed_id!(
    /// A customer's account (`cus_…`).
    CustomerId,
    "cus"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_sort_by_time() {
        let a = new("prod");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new("prod");
        assert!(has_prefix(&a, "prod"));
        assert!(!has_prefix(&a, "var"));
        assert!(a < b, "{a} should sort before {b}");
        assert!(!has_prefix("prod_", "prod"));
        assert!(!has_prefix("prod_x;drop", "prod"));
    }

    #[test]
    fn ids_made_in_one_millisecond_keep_their_order() {
        // Thousands of ids in a few milliseconds: with plain ULIDs about half of the pairs made
        // within one millisecond would sort backwards.
        let ids: Vec<String> = (0..5_000).map(|_| new("hist")).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} should sort before {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn typed_ids_parse_only_their_kind_and_serialise_as_strings() {
        let order = OrderId::generate();
        assert!(order.as_str().starts_with("ord_"));
        assert_eq!(OrderId::parse(order.as_str()), Some(order.clone()));
        assert_eq!(AttemptId::parse(order.as_str()), None);
        assert_eq!(OrderId::parse("ord_"), None);
        assert_eq!(serde_json::to_string(&order).unwrap(), format!("\"{order}\""));
        let back: OrderId = serde_json::from_str(&format!("\"{order}\"")).unwrap();
        assert_eq!(back, order);
    }
}
