//! Opaque ids with a type prefix (`prod_…`, `var_…`). The part after the prefix is a
//! lower-case ULID, so ids sort by creation time, which keyset pagination relies on.

/// A new id such as `prod_01jd…`.
pub fn new(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Whether `id` looks like an id of this kind: the prefix, an underscore, then 1–64
/// ASCII letters, digits or underscores. Used to answer a malformed id with a 404 cheaply.
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('_')).is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

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
}
