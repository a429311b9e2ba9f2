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
    /// Where a product image is served from: an absolute `https://` or `http://` URL with a
    /// host, at most 2,048 characters, without whitespace or control characters. Kept as
    /// given (not normalised): the store shows it, it never fetches it.
    ImageUrl
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

impl ImageUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(s: &str) -> Result<Self, String> {
        use backroom_kernel::text::{is_bidi_control, is_invisible};
        let not_absolute = || "must be an absolute https:// or http:// URL".to_owned();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control() || is_bidi_control(c) || is_invisible(c)) {
            return Err("must not contain whitespace, control or invisible characters".into());
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(not_absolute)?;
        if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
            return Err(not_absolute());
        }
        // The host: the authority without user information and port.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or_default();
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        if host.is_empty() {
            return Err("must name a host, as in https://images.example.com/shirt.jpg".into());
        }
        Ok(ImageUrl(s.to_owned()))
    }
}

/// Checks an image's alternative text: trimmed, 0–500 characters; when not empty, readable
/// as it shows ([`backroom_kernel::check_display`]).
pub fn alt_text(s: &str) -> Result<String, String> {
    const MAX: usize = 500;
    let t = s.trim();
    if t.chars().count() > MAX {
        return Err(format!("must be at most {MAX} characters"));
    }
    if !t.is_empty() {
        backroom_kernel::check_display(t).map_err(|e| e.to_string())?;
    }
    Ok(t.to_owned())
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
    backroom_kernel::text::label(s, max)
}

/// The heaviest variant, in grams (10 tonnes: a typo beyond that, not a parcel).
pub const MAX_WEIGHT_G: i64 = 10_000_000;

/// Checks a shipping weight in grams: 0–[`MAX_WEIGHT_G`].
pub fn weight_g(g: i64) -> Result<i64, String> {
    if (0..=MAX_WEIGHT_G).contains(&g) { Ok(g) } else { Err(format!("must be 0–{MAX_WEIGHT_G} grams")) }
}

/// The tax class a variant has unless given one.
pub const STANDARD_TAX_CLASS: &str = "standard";

/// Checks a tax class: 1–50 of `a-z`, `0-9`, `_` and `-`. The rule of the pricing module's
/// tax rates (`backroom_pricing::check::tax_class`), whose classes these name.
pub fn tax_class(s: &str) -> Result<String, String> {
    const MAX: usize = 50;
    if s.is_empty() || s.len() > MAX {
        return Err(format!("must be 1–{MAX} characters"));
    }
    if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
        return Err("may contain only lower-case letters, digits, `_` and `-`, such as `standard` or `reduced`".into());
    }
    Ok(s.to_owned())
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

    #[test]
    fn weights_and_tax_classes() {
        assert_eq!(weight_g(0), Ok(0));
        assert_eq!(weight_g(MAX_WEIGHT_G), Ok(MAX_WEIGHT_G));
        assert!(weight_g(-1).is_err());
        assert!(weight_g(MAX_WEIGHT_G + 1).is_err());
        assert_eq!(tax_class("reduced_1-a").unwrap(), "reduced_1-a");
        for bad in ["", "Reduced", "a b", &"a".repeat(51)] {
            assert!(tax_class(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn image_urls() {
        for good in [
            "https://images.example.com/shirt-1.jpg",
            "http://cdn.example.com:8080/a/b.png?w=200#x",
            "HTTPS://images.example.com/Shirt.JPG",
            "https://[2001:db8::1]/i.png",
            "https://images.example.com",
        ] {
            assert_eq!(ImageUrl::parse(good).unwrap().as_str(), good);
        }
        let long = format!("https://images.example.com/{}", "a".repeat(2048));
        for bad in [
            "",
            "images.example.com/shirt.jpg",
            "/shirt.jpg",
            "ftp://images.example.com/shirt.jpg",
            "javascript://alert(1)",
            "data:image/png;base64,AAAA",
            "https:///shirt.jpg",
            "https://:443/shirt.jpg",
            "https://user@/shirt.jpg",
            "https://images.example.com/a shirt.jpg",
            "https://images.example.com/\u{0}.jpg",
            "https://images.example.com/\u{202E}gpj.exe",
            "https://images.example.com/\u{200B}.jpg",
            &long,
        ] {
            assert!(ImageUrl::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ImageUrl::parse(&format!("https://i.example.com/{}", "a".repeat(2048 - 22))).is_ok());
    }

    #[test]
    fn alt_texts() {
        assert_eq!(alt_text("").unwrap(), "");
        assert_eq!(alt_text("  ").unwrap(), "");
        assert_eq!(alt_text(" White linen shirt, front ").unwrap(), "White linen shirt, front");
        assert!(alt_text(&"x".repeat(500)).is_ok());
        assert!(alt_text(&"x".repeat(501)).is_err());
        assert!(alt_text("a\u{7}b").is_err());
        assert!(alt_text("Shirt\u{202E}txt").is_err());
        assert!(alt_text("\u{200B}").is_err());
    }
}
