//! The rules for what a customer tells us: e-mail, names, phone, addresses. Each check trims
//! the value and answers it, or the message the client is shown for the field. Every problem
//! of a request is reported at once ([`backroom_kernel::error::Problems`]).

use backroom_kernel::error::Problems;

/// The longest e-mail address (RFC 5321's path limit).
pub const EMAIL_MAX: usize = 254;
/// The longest first or last name.
pub const NAME_MAX: usize = 100;
/// The longest phone number as written, and the digits it must hold (E.164: at most 15).
pub const PHONE_MAX: usize = 32;
pub const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 4..=15;

/// A trimmed e-mail address that looks like one: `local@domain.tld`, no spaces or control
/// characters, at most 254 characters. Stricter than checkout's check (one `@`, no `..`).
pub fn email(raw: &str) -> Result<String, String> {
    let e = raw.trim();
    let ok = !e.is_empty()
        && e.chars().count() <= EMAIL_MAX
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        });
    if ok { Ok(e.to_owned()) } else { Err("is not an email address".into()) }
}

/// A trimmed display text of 1–`max` characters (see [`backroom_kernel::check_display`]).
pub fn text(raw: &str, max: usize) -> Result<String, String> {
    let t = raw.trim();
    if t.is_empty() || t.chars().count() > max {
        return Err(format!("must be 1–{max} characters"));
    }
    backroom_kernel::check_display(t).map_err(|e| e.to_string())?;
    Ok(t.to_owned())
}

/// A trimmed phone number: digits with optional `+` first, spaces, dashes, dots and
/// parentheses; 4–15 digits; at most 32 characters.
pub fn phone(raw: &str) -> Result<String, String> {
    let p = raw.trim();
    let message = || "must be a phone number such as +351 912 345 678 (4–15 digits)".to_owned();
    if p.is_empty() || p.chars().count() > PHONE_MAX {
        return Err(message());
    }
    let body = p.strip_prefix('+').unwrap_or(p);
    if !body.chars().all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')')) {
        return Err(message());
    }
    let digits = body.chars().filter(char::is_ascii_digit).count();
    if !PHONE_DIGITS.contains(&digits) {
        return Err(message());
    }
    Ok(p.to_owned())
}

/// A country: ISO 3166-1 alpha-2, upper case (`PT`).
pub fn country(raw: &str) -> Result<String, String> {
    let c = raw.trim();
    if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(c.to_owned())
    } else {
        Err("must be an ISO 3166-1 alpha-2 code such as PT".into())
    }
}

/// Records `check(value)` under `field` and answers the checked value.
pub fn field<T>(p: &mut Problems, field: &str, r: Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(m) => {
            p.add(field, m);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn emails() {
        assert_eq!(email("  Ana@Example.com ").unwrap(), "Ana@Example.com");
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "ana@.com",
            "ana@example.",
            "a b@example.com",
            "a@b@c.com",
            "ana@example..com",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
        assert!(email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(text(" Ana ", NAME_MAX).unwrap(), "Ana");
        assert!(text("   ", NAME_MAX).is_err());
        assert!(text("A\u{202E}na", NAME_MAX).is_err());
        assert!(text("A\nna", NAME_MAX).is_err());
        assert!(text(&"é".repeat(100), NAME_MAX).is_ok());
        assert!(text(&"é".repeat(101), NAME_MAX).is_err());
    }

    #[test]
    fn phones() {
        for good in ["+351 912 345 678", "(555) 123-4567", "1234", "+44.20.7946.0958"] {
            assert!(phone(good).is_ok(), "{good:?}");
        }
        for bad in ["", "123", "call me", "+", "++351 1234", "+1 2345 6789 0123 4567", "12345;drop"] {
            assert!(phone(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn countries() {
        assert_eq!(country("PT").unwrap(), "PT");
        for bad in ["pt", "PRT", "P", ""] {
            assert!(country(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn checked_values_are_trimmed_and_pass_again(s in "\\PC{0,120}") {
            for check in [email as fn(&str) -> Result<String, String>, phone, |s: &str| text(s, NAME_MAX)] {
                if let Ok(v) = check(&s) {
                    prop_assert_eq!(v.trim(), v.as_str());
                    prop_assert_eq!(check(&v), Ok(v.clone()));
                }
            }
        }
    }
}
