//! Exact percentages and the one rounding rule.
//!
//! A [`Rate`] is a percent with at most four decimals (`"23"`, `"5.5"`, `"8.875"`), held as an
//! integer count of ten-thousandths of a percent. Every computation with it is integer
//! arithmetic on `i128` ending in one division rounded by [`div_round_half_even`], so a tax or
//! a discount is the exact rational result rounded once. A general decimal crate would work
//! too, but its division is itself rounded to 28 digits before our rounding; this type is the
//! whole of what pricing needs and has no such second rounding.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Ten-thousandths of a percent in one percent.
const E4: i64 = 10_000;
/// `100 %` in ten-thousandths of a percent: the denominator of every rate.
pub const HUNDRED_PERCENT_E4: i64 = 100 * E4;

/// A percentage with up to four decimals, exact (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Rate(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("must be a decimal number of percent such as \"23\" or \"5.5\"")]
    NotDecimal,
    #[error("has more than 4 decimals")]
    TooPrecise,
    #[error("must be between 0 and {max}")]
    OutOfRange { max: i64 },
}

impl Rate {
    pub const ZERO: Rate = Rate(0);
    pub const HUNDRED: Rate = Rate(HUNDRED_PERCENT_E4);

    /// A rate of `e4` ten-thousandths of a percent (`230_000` is 23 %).
    pub const fn from_e4(e4: i64) -> Rate {
        Rate(e4)
    }

    /// Ten-thousandths of a percent.
    pub const fn e4(self) -> i64 {
        self.0
    }

    /// Parses a plain decimal (`"23"`, `"5.5"`, `"0.0001"`; no sign, exponent or spaces),
    /// between 0 and `max_percent` inclusive.
    pub fn parse(s: &str, max_percent: i64) -> Result<Rate, RateError> {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || (s.contains('.') && !digits(frac)) || int.len() > 12 {
            return Err(RateError::NotDecimal);
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 4 {
            return Err(RateError::TooPrecise);
        }
        let int: i64 = int.parse().map_err(|_| RateError::NotDecimal)?;
        let frac_e4: i64 =
            if frac.is_empty() { 0 } else { format!("{frac:0<4}").parse().map_err(|_| RateError::NotDecimal)? };
        let e4 = int.checked_mul(E4).and_then(|i| i.checked_add(frac_e4)).ok_or(RateError::NotDecimal)?;
        if e4 > max_percent.saturating_mul(E4) {
            return Err(RateError::OutOfRange { max: max_percent });
        }
        Ok(Rate(e4))
    }

    /// `amount × rate / 100`, rounded half to even: a tax on a net amount, or a percentage
    /// discount.
    pub fn of(self, amount: i64) -> i64 {
        narrow(div_round_half_even(i128::from(amount) * i128::from(self.0), i128::from(HUNDRED_PERCENT_E4)))
    }

    /// `gross × rate / (100 + rate)`, rounded half to even: the tax contained in a gross amount.
    pub fn within(self, gross: i64) -> i64 {
        narrow(div_round_half_even(
            i128::from(gross) * i128::from(self.0),
            i128::from(HUNDRED_PERCENT_E4) + i128::from(self.0),
        ))
    }
}

/// Results are never larger than their (i64) input amount, since rates are at most 100 %.
fn narrow(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// `num / den` rounded to the nearest integer, a tie to the even one (banker's rounding), for
/// `den > 0`. **The** rounding rule of every computed amount (API: "rounded half to even to
/// the currency's minor unit").
pub fn div_round_half_even(num: i128, den: i128) -> i128 {
    debug_assert!(den > 0);
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den); // 0 <= r < den
    match (2 * r).cmp(&den) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

impl fmt::Display for Rate {
    /// The shortest decimal: `23`, `5.5`, `0.0001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / E4, self.0 % E4);
        if frac == 0 {
            write!(f, "{int}")
        } else {
            let frac = format!("{frac:04}");
            write!(f, "{int}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl FromStr for Rate {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rate::parse(s, 100)
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Rate {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A percentage as a decimal string, at most 4 decimals"))
            .pattern(Some(r"^[0-9]{1,3}(\.[0-9]{1,4})?$"))
            .examples([serde_json::json!("23")])
            .into()
    }
}

impl utoipa::ToSchema for Rate {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print_as_plain_decimals() {
        for (s, e4, shown) in [
            ("23", 230_000, "23"),
            ("5.5", 55_000, "5.5"),
            ("0.0001", 1, "0.0001"),
            ("8.8750", 88_750, "8.875"),
            ("100", 1_000_000, "100"),
            ("0", 0, "0"),
        ] {
            let r: Rate = s.parse().unwrap();
            assert_eq!(r.e4(), e4, "{s}");
            assert_eq!(r.to_string(), shown);
        }
        for bad in ["", ".", "5.", ".5", "-1", "+1", "1e2", "23 ", "0.00001", "100.0001", "abc", "1,5"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn half_goes_to_the_even_neighbour() {
        assert_eq!(div_round_half_even(5, 2), 2);
        assert_eq!(div_round_half_even(7, 2), 4);
        assert_eq!(div_round_half_even(-5, 2), -2);
        assert_eq!(div_round_half_even(-7, 2), -4);
        assert_eq!(div_round_half_even(14, 10), 1);
        assert_eq!(div_round_half_even(16, 10), 2);
        assert_eq!(div_round_half_even(0, 7), 0);
    }

    #[test]
    fn worked_examples_of_the_formulas() {
        let iva: Rate = "23".parse().unwrap();
        // Inclusive: 49.00 € contains 49.00 × 23 / 123 = 9.1626… → 9.16 € of tax.
        assert_eq!(iva.within(4900), 916);
        // Exclusive: 10.05 $ at 8.875 % is 0.8919… → 0.89 $.
        assert_eq!("8.875".parse::<Rate>().unwrap().of(1005), 89);
        // A tie: 0.50 at 5 % is 0.025 → 0.02 (2 is even).
        assert_eq!("5".parse::<Rate>().unwrap().of(50), 2);
        assert_eq!("5".parse::<Rate>().unwrap().of(70), 4); // 0.035 → 0.04
    }
}
