//! Domain types of the catalog that cannot hold bad values: construct them with `parse`.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// A URL handle: 1–100 lower-case ASCII letters, digits and hyphens.
    Handle
);
string_newtype!(
    /// A stock keeping unit: 1–64 ASCII letters, digits and `-_./`.
    Sku
);
string_newtype!(
    /// A title shown to shoppers: 1–255 characters after trimming, readable as it shows
    /// ([`backroom_kernel::check_display`]: no control characters, no bidi overrides, not
    /// invisible).
    Title
);

impl Handle {
    pub const MAX_LEN: usize = 100;

    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err("may contain only lower-case letters, digits and hyphens".into());
        }
        Ok(Handle(s.to_owned()))
    }

    /// A handle derived from a title: `"Linen Shirt (M)"` → `linen-shirt-m`.
    pub fn from_title(title: &str) -> Option<Self> {
        let mut out = String::new();
        for c in title.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
            if out.len() >= Self::MAX_LEN {
                break;
            }
        }
        let trimmed = out.trim_end_matches('-');
        Handle::parse(trimmed).ok()
    }
}

impl Sku {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b)) {
            return Err("may contain only ASCII letters, digits and - _ . /".into());
        }
        Ok(Sku(s.to_owned()))
    }
}

impl Title {
    pub const MAX_LEN: usize = 255;

    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("must not be empty".into());
        }
        if t.chars().count() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        backroom_kernel::check_display(t).map_err(|e| e.to_string())?;
        Ok(Title(t.to_owned()))
    }
}

/// Checks a free-text label (option name or value, attribute key or value): trimmed, 1–`max`
/// characters, readable as it shows ([`backroom_kernel::check_display`]).
pub fn label(s: &str, max: usize) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("must not be empty".into());
    }
    if t.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    backroom_kernel::check_display(t).map_err(|e| e.to_string())?;
    Ok(t.to_owned())
}

/// Where a product is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    /// Not visible to shoppers yet.
    #[default]
    Draft,
    /// Visible in the storefront.
    Published,
    /// Withdrawn; kept for orders and history.
    Archived,
}

impl ProductStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProductStatus::Draft => "draft",
            ProductStatus::Published => "published",
            ProductStatus::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(ProductStatus::Draft),
            "published" => Some(ProductStatus::Published),
            "archived" => Some(ProductStatus::Archived),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles() {
        assert!(Handle::parse("linen-shirt-2").is_ok());
        for bad in ["", "Linen", "linen shirt", "linen_shirt", "ü", &"a".repeat(101)] {
            assert!(Handle::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Handle::parse(&"a".repeat(100)).is_ok());
        assert_eq!(Handle::from_title("Linen Shirt (M)").unwrap().as_str(), "linen-shirt-m");
        assert_eq!(Handle::from_title("¡¡!!"), None);
    }

    #[test]
    fn skus_and_titles() {
        assert!(Sku::parse("LS-M/WHITE_1.0").is_ok());
        assert!(Sku::parse("has space").is_err());
        assert!(Sku::parse("").is_err());
        assert_eq!(Title::parse("  Shirt ").unwrap().as_str(), "Shirt");
        assert!(Title::parse("   ").is_err());
        assert!(Title::parse(&"x".repeat(256)).is_err());
        assert!(Title::parse("a\u{0}b").is_err());
        assert!(Title::parse("\u{200B}\u{FEFF}").is_err());
        assert!(Title::parse("Shirt\u{202E}txt.exe").is_err());
        assert!(label("\u{2060}", 100).is_err());
        assert!(label("a\u{2066}b", 100).is_err());
        assert_eq!(label(" 5901234123457 ", 100).unwrap(), "5901234123457");
    }
}
