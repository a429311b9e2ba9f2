//! Rules the admin requests of regions, tax rates and promotions share.

use serde::{Deserialize, Deserializer};

/// Reads a field that may be absent (`None`: leave as is) or present, `null` included
/// (`Some(None)`: clear it). With `#[serde(default, deserialize_with = "present")]`.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A name staff give (a region's, a tax rate's): trimmed, 1–`max` characters, readable as it
/// shows ([`backroom_kernel::check_display`]).
pub fn name(s: &str, max: usize) -> Result<String, String> {
    backroom_kernel::text::label(s, max)
}

/// The longest tax class.
pub const TAX_CLASS_MAX: usize = 50;

/// A tax class: 1–50 of `a-z`, `0-9`, `_` and `-`. The same rule as a variant's `tax_class`
/// (`backroom_catalog::types::tax_class`), which names one of these classes.
pub fn tax_class(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > TAX_CLASS_MAX {
        return Err(format!("must be 1–{TAX_CLASS_MAX} characters"));
    }
    if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
        return Err("may contain only lower-case letters, digits, `_` and `-`, such as `standard` or `reduced`".into());
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tax_classes() {
        assert_eq!(name("  Portugal ", 200).unwrap(), "Portugal");
        assert!(name(" ", 200).is_err());
        assert!(name("a\nb", 200).is_err());
        assert!(name(&"x".repeat(201), 200).is_err());
        assert!(name(&"é".repeat(200), 200).is_ok());
        for good in ["standard", "reduced-1", "zero_rated", &"a".repeat(50)] {
            assert_eq!(tax_class(good).unwrap(), good);
        }
        for bad in ["", "Standard", "re duced", "réduit", &"a".repeat(51)] {
            assert!(tax_class(bad).is_err(), "{bad:?}");
        }
    }
}
