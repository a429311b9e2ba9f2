//! Exact money (P6): an integer amount in the currency's minor unit plus an ISO 4217 currency.
//! Never floats. The one rounding rule (half away from zero) lives in [`Money::parse_decimal`],
//! the only place a decimal turns into minor units.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An active ISO 4217 currency that has minor units (`EUR`, `JPY`, `KWD`, …). Codes without
/// an exponent (gold, SDR, test codes) are refused: they cannot price goods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not an ISO 4217 currency code")]
    UnknownCurrency(String),
    #[error("amount must not be negative")]
    Negative,
    #[error("amount is larger than {max}", max = Money::MAX_AMOUNT)]
    TooLarge,
    #[error("`{0}` is not a decimal amount")]
    NotDecimal(String),
    #[error("{currency} has {exponent} decimal places; `{input}` has more")]
    TooPrecise { currency: Currency, exponent: u32, input: String },
}

impl Currency {
    /// Parses an upper-case three-letter code such as `EUR`.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let unknown = || MoneyError::UnknownCurrency(code.chars().take(8).collect());
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(unknown());
        }
        let c = iso_currency::Currency::from_code(code).ok_or_else(unknown)?;
        if c.exponent().is_none() || c.is_superseded().is_some() || c.is_fund() {
            return Err(unknown());
        }
        Ok(Currency(c))
    }

    /// Every currency [`Currency::parse`] accepts.
    pub fn all() -> impl Iterator<Item = Currency> {
        use iso_currency::IntoEnumIterator;
        iso_currency::Currency::iter().filter_map(|c| Currency::parse(c.code()).ok())
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Number of decimal places of the minor unit: EUR 2, JPY 0, KWD 3.
    pub fn exponent(self) -> u32 {
        u32::from(self.0.exponent().unwrap_or(0))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("ISO 4217 currency code"))
            .pattern(Some("^[A-Z]{3}$"))
            .examples([serde_json::json!("EUR")])
            .into()
    }
}

impl utoipa::ToSchema for Currency {}

/// An amount of money: integer minor units of one currency. Prices are never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub struct Money {
    /// Integer amount in the currency's minor unit (cents for EUR, yen for JPY).
    #[schema(example = 4900)]
    amount: i64,
    currency: Currency,
}

impl Money {
    /// The largest amount accepted anywhere: 10^12 minor units. Larger is a typo, not a price.
    pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

    /// A price or total: `0 ..= MAX_AMOUNT` minor units.
    pub fn new(amount: i64, currency: Currency) -> Result<Self, MoneyError> {
        if amount < 0 {
            return Err(MoneyError::Negative);
        }
        if amount > Self::MAX_AMOUNT {
            return Err(MoneyError::TooLarge);
        }
        Ok(Money { amount, currency })
    }

    pub fn zero(currency: Currency) -> Self {
        Money { amount: 0, currency }
    }

    pub fn amount(self) -> i64 {
        self.amount
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    /// Parses a decimal amount in major units (`"49.90"`, `"1200"`) for `currency`. More
    /// decimal places than the currency has are refused rather than rounded: a price typed
    /// as `9.999 EUR` is a mistake to report, not to guess at.
    pub fn parse_decimal(input: &str, currency: Currency) -> Result<Self, MoneyError> {
        let not_decimal = || MoneyError::NotDecimal(input.chars().take(32).collect());
        let s = input.trim();
        if s.starts_with('-') {
            return Err(MoneyError::Negative);
        }
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
            return Err(not_decimal());
        }
        let exp = currency.exponent();
        let frac = frac.trim_end_matches('0');
        if frac.len() > exp as usize {
            return Err(MoneyError::TooPrecise { currency, exponent: exp, input: s.to_owned() });
        }
        let whole = whole.trim_start_matches('0');
        if whole.len() > 13 {
            return Err(MoneyError::TooLarge);
        }
        let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| not_decimal())? };
        let mut frac_minor: i64 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| not_decimal())? };
        for _ in frac.len()..exp as usize {
            frac_minor *= 10;
        }
        let amount =
            whole.checked_mul(10_i64.pow(exp)).and_then(|w| w.checked_add(frac_minor)).ok_or(MoneyError::TooLarge)?;
        Money::new(amount, currency)
    }

    /// The amount in major units with exactly the currency's decimal places: `49.90`.
    pub fn to_decimal_string(self) -> String {
        let exp = self.currency.exponent();
        if exp == 0 {
            return self.amount.to_string();
        }
        let unit = 10_i64.pow(exp);
        format!("{}.{:0width$}", self.amount / unit, self.amount % unit, width = exp as usize)
    }

    /// `self + other`, refusing mixed currencies and amounts beyond the limit.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Money::new(self.amount.checked_add(other.amount)?, self.currency).ok()
    }

    /// `self × quantity`.
    pub fn checked_mul(self, quantity: i64) -> Option<Money> {
        Money::new(self.amount.checked_mul(quantity)?, self.currency).ok()
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            amount: i64,
            currency: Currency,
        }
        let raw = Raw::deserialize(d)?;
        Money::new(raw.amount, raw.currency).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(Currency::parse("EUR").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
        for bad in ["eur", "EURO", "XXX", "ABC", "", "XAU", "E1R"] {
            assert!(Currency::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn decimal_parsing_examples() {
        let jpy = Currency::parse("JPY").unwrap();
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(Money::parse_decimal("49.90", eur()).unwrap().amount(), 4990);
        assert_eq!(Money::parse_decimal("49.9", eur()).unwrap().amount(), 4990);
        assert_eq!(Money::parse_decimal("0.01", eur()).unwrap().amount(), 1);
        assert_eq!(Money::parse_decimal("1200", jpy).unwrap().amount(), 1200);
        assert_eq!(Money::parse_decimal("1.234", kwd).unwrap().amount(), 1234);
        assert!(matches!(Money::parse_decimal("1.5", jpy), Err(MoneyError::TooPrecise { .. })));
        assert!(matches!(Money::parse_decimal("9.999", eur()), Err(MoneyError::TooPrecise { .. })));
        assert_eq!(Money::parse_decimal("-1", eur()), Err(MoneyError::Negative));
        for bad in ["", ".5", "5.", "1,00", "1e3", "abc", " 1 2"] {
            assert!(Money::parse_decimal(bad, eur()).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(Money::parse_decimal("10000000000.01", eur()), Err(MoneyError::TooLarge));
        assert_eq!(Money::parse_decimal("99999999999999999999999", eur()), Err(MoneyError::TooLarge));
    }

    #[test]
    fn limits() {
        assert!(Money::new(Money::MAX_AMOUNT, eur()).is_ok());
        assert_eq!(Money::new(Money::MAX_AMOUNT + 1, eur()), Err(MoneyError::TooLarge));
        assert_eq!(Money::new(-1, eur()), Err(MoneyError::Negative));
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(Money::zero(eur()).checked_add(Money::zero(usd)), None);
    }

    #[test]
    fn serialises_as_amount_and_code() {
        let m = Money::new(1999, eur()).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"amount":1999,"currency":"EUR"}"#);
        assert_eq!(m.to_string(), "19.99 EUR");
    }

    fn any_currency() -> impl Strategy<Value = Currency> {
        prop::sample::select(vec!["EUR", "USD", "JPY", "KWD", "BHD", "GBP", "CHF", "ISK", "CLP"])
            .prop_map(|c| Currency::parse(c).unwrap())
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(amount in 0..=Money::MAX_AMOUNT, c in any_currency()) {
            let m = Money::new(amount, c).unwrap();
            let back = Money::parse_decimal(&m.to_decimal_string(), c).unwrap();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn formatted_amount_has_exactly_the_currency_places(amount in 0..=Money::MAX_AMOUNT, c in any_currency()) {
            let s = Money::new(amount, c).unwrap().to_decimal_string();
            let places = s.split_once('.').map_or(0, |(_, f)| f.len());
            prop_assert_eq!(places as u32, c.exponent());
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}", c in any_currency()) {
            let _ = Money::parse_decimal(&s, c);
        }

        #[test]
        fn trailing_zeros_do_not_change_value(whole in 0i64..1_000_000, c in any_currency(), zeros in 0usize..6) {
            let plain = Money::parse_decimal(&whole.to_string(), c).unwrap();
            let padded = format!("{whole}.{}", "0".repeat(zeros.max(1)));
            prop_assert_eq!(Money::parse_decimal(&padded, c).unwrap(), plain);
        }

        #[test]
        fn addition_is_exact(a in 0..=Money::MAX_AMOUNT / 2, b in 0..=Money::MAX_AMOUNT / 2, c in any_currency()) {
            let sum = Money::new(a, c).unwrap().checked_add(Money::new(b, c).unwrap()).unwrap();
            prop_assert_eq!(sum.amount(), a + b);
        }
    }
}
