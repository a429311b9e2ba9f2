//! The one computation of every amount a cart, a checkout and an order show: line amounts,
//! discounts, taxes, shipping and totals, by the rules below (also in docs/pricing.md).
//!
//! - A line's amount is `unit_price × quantity`; the subtotal is their sum.
//! - A **percentage** discount is computed per line (`amount × percent / 100`, rounded half to
//!   even). A **fixed** discount (at most the subtotal) is spread over the lines in proportion
//!   to their amounts, each share rounded down and the cents left over given one each to the
//!   lines with the largest remainders (the earlier line on a tie): the shares add up to the
//!   discount exactly and never take a line below zero. **Free shipping** makes shipping zero.
//! - Tax is computed per line on its amount after discounts, rounded half to even to the
//!   minor unit; exclusive prices: `tax = round(net × rate / 100)`, inclusive prices:
//!   `tax = round(gross × rate / (100 + rate))`. Shipping is taxed the same way at the
//!   region's `standard` rate.
//! - `tax_total` is the lines' taxes plus the shipping's; `total = subtotal − discount_total +
//!   shipping_total + tax_total` with exclusive prices, `subtotal − discount_total +
//!   shipping_total` with inclusive ones (the tax is inside the prices).

use backroom_kernel::{Currency, Money};

use crate::rate::{Rate, div_round_half_even};

/// A discount to apply to the whole cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discount {
    Percentage(Rate),
    /// An amount in the cart's currency's minor units.
    Fixed(i64),
    FreeShipping,
}

/// One line to price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineInput {
    pub unit_price: i64,
    pub quantity: i64,
    /// The rate of the line's tax class in the cart's region (zero without a region).
    pub tax_rate: Rate,
}

/// Everything the computation needs; no storage, no clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub currency: Currency,
    /// Prices include tax (the region's setting).
    pub tax_inclusive: bool,
    pub lines: Vec<LineInput>,
    pub discount: Option<Discount>,
    /// The shipping method's price before any free-shipping discount.
    pub shipping: i64,
    /// The region's `standard` rate, which shipping is taxed at.
    pub shipping_tax_rate: Rate,
}

/// A line's computed amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTotals {
    /// `unit_price × quantity`.
    pub amount: Money,
    pub discount: Money,
    pub tax: Money,
}

/// The computed amounts of a cart or an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    pub lines: Vec<LineTotals>,
    pub subtotal: Money,
    pub discount_total: Money,
    pub shipping_total: Money,
    /// The part of `tax_total` that is shipping's.
    pub shipping_tax: Money,
    pub tax_total: Money,
    pub total: Money,
}

/// Some amount is beyond [`Money::MAX_AMOUNT`] (or an input is negative): no order may hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an amount is beyond what one order may hold")]
pub struct TooLarge;

fn money(amount: i128, currency: Currency) -> Result<Money, TooLarge> {
    i64::try_from(amount).ok().and_then(|a| Money::new(a, currency).ok()).ok_or(TooLarge)
}

/// Splits `discount` (`0 ..= Σ amounts`) over `amounts` in proportion, by largest remainder.
/// The shares sum to `discount` and none exceeds its amount.
pub fn spread(discount: i128, amounts: &[i128]) -> Vec<i128> {
    let sum: i128 = amounts.iter().sum();
    if sum <= 0 || discount <= 0 {
        return vec![0; amounts.len()];
    }
    let discount = discount.min(sum);
    let mut shares: Vec<i128> = amounts.iter().map(|a| discount * a / sum).collect();
    let mut left = discount - shares.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..amounts.len()).collect();
    // Largest remainder first; the earlier line on a tie (a stable sort keeps index order).
    order.sort_by_key(|&i| std::cmp::Reverse(discount * amounts[i] % sum));
    for i in order {
        if left == 0 {
            break;
        }
        if discount * amounts[i] % sum != 0 {
            shares[i] += 1;
            left -= 1;
        }
    }
    shares
}

/// Computes every amount of `input` (see the module documentation for the rules).
pub fn compute(input: &Input) -> Result<Totals, TooLarge> {
    let c = input.currency;
    let mut amounts = Vec::with_capacity(input.lines.len());
    for l in &input.lines {
        if l.unit_price < 0 || l.quantity < 0 {
            return Err(TooLarge);
        }
        amounts.push(i128::from(l.unit_price) * i128::from(l.quantity));
    }
    let subtotal: i128 = amounts.iter().sum();
    let discounts: Vec<i128> = match input.discount {
        Some(Discount::Percentage(p)) => amounts
            .iter()
            .map(|a| div_round_half_even(a * i128::from(p.e4()), i128::from(crate::rate::HUNDRED_PERCENT_E4)).min(*a))
            .collect(),
        Some(Discount::Fixed(d)) => spread(i128::from(d.max(0)), &amounts),
        Some(Discount::FreeShipping) | None => vec![0; amounts.len()],
    };
    let shipping: i128 =
        if matches!(input.discount, Some(Discount::FreeShipping)) { 0 } else { i128::from(input.shipping.max(0)) };
    let tax = |net: i128, rate: Rate| {
        let r = i128::from(rate.e4());
        let hundred = i128::from(crate::rate::HUNDRED_PERCENT_E4);
        if input.tax_inclusive {
            div_round_half_even(net * r, hundred + r)
        } else {
            div_round_half_even(net * r, hundred)
        }
    };
    let mut lines = Vec::with_capacity(amounts.len());
    let mut line_tax_sum = 0i128;
    for ((a, d), l) in amounts.iter().zip(&discounts).zip(&input.lines) {
        let t = tax(a - d, l.tax_rate);
        line_tax_sum += t;
        lines.push(LineTotals { amount: money(*a, c)?, discount: money(*d, c)?, tax: money(t, c)? });
    }
    let discount_total: i128 = discounts.iter().sum();
    let shipping_tax = tax(shipping, input.shipping_tax_rate);
    let tax_total = line_tax_sum + shipping_tax;
    let total = subtotal - discount_total + shipping + if input.tax_inclusive { 0 } else { tax_total };
    Ok(Totals {
        lines,
        subtotal: money(subtotal, c)?,
        discount_total: money(discount_total, c)?,
        shipping_total: money(shipping, c)?,
        shipping_tax: money(shipping_tax, c)?,
        tax_total: money(tax_total, c)?,
        total: money(total, c)?,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn worked_example_inclusive_eur() {
        // Two shirts at 49.00 € and a cap at 15.00 €, 23 % IVA included, 10 % off, 5.00 € shipping.
        let input = Input {
            currency: cur("EUR"),
            tax_inclusive: true,
            lines: vec![
                LineInput { unit_price: 4900, quantity: 2, tax_rate: rate("23") },
                LineInput { unit_price: 1500, quantity: 1, tax_rate: rate("23") },
            ],
            discount: Some(Discount::Percentage(rate("10"))),
            shipping: 500,
            shipping_tax_rate: rate("23"),
        };
        let t = compute(&input).unwrap();
        assert_eq!(t.subtotal.amount(), 11300);
        assert_eq!(t.lines[0].discount.amount(), 980);
        assert_eq!(t.lines[1].discount.amount(), 150);
        // (9800 − 980) × 23 / 123 = 1649.26… → 1649; (1500 − 150) × 23 / 123 = 252.43… → 252;
        // 500 × 23 / 123 = 93.49… → 93.
        assert_eq!(t.lines[0].tax.amount(), 1649);
        assert_eq!(t.lines[1].tax.amount(), 252);
        assert_eq!(t.shipping_tax.amount(), 93);
        assert_eq!(t.tax_total.amount(), 1994);
        assert_eq!(t.total.amount(), 11300 - 1130 + 500);
    }

    #[test]
    fn worked_example_exclusive_usd_with_a_fixed_discount() {
        let input = Input {
            currency: cur("USD"),
            tax_inclusive: false,
            lines: vec![
                LineInput { unit_price: 1000, quantity: 1, tax_rate: rate("8.875") },
                LineInput { unit_price: 2000, quantity: 1, tax_rate: rate("8.875") },
            ],
            discount: Some(Discount::Fixed(1000)),
            shipping: 0,
            shipping_tax_rate: rate("8.875"),
        };
        let t = compute(&input).unwrap();
        // 10.00 $ over 10 $ and 20 $: 3.333… and 6.666… → 3 and 6, the cent left to the larger remainder.
        assert_eq!(t.lines[0].discount.amount(), 333);
        assert_eq!(t.lines[1].discount.amount(), 667);
        assert_eq!(t.lines[0].tax.amount(), 59); // 667 × 8.875 % = 59.19…
        assert_eq!(t.lines[1].tax.amount(), 118); // 1333 × 8.875 % = 118.30…
        assert_eq!(t.total.amount(), 3000 - 1000 + 59 + 118);
    }

    #[test]
    fn a_fixed_discount_above_the_subtotal_stops_at_zero_and_free_shipping_zeroes_shipping() {
        let line = LineInput { unit_price: 300, quantity: 1, tax_rate: Rate::ZERO };
        let mut input = Input {
            currency: cur("EUR"),
            tax_inclusive: false,
            lines: vec![line],
            discount: Some(Discount::Fixed(1000)),
            shipping: 450,
            shipping_tax_rate: Rate::ZERO,
        };
        let t = compute(&input).unwrap();
        assert_eq!((t.discount_total.amount(), t.total.amount()), (300, 450));
        input.discount = Some(Discount::FreeShipping);
        let t = compute(&input).unwrap();
        assert_eq!((t.shipping_total.amount(), t.total.amount()), (0, 300));
    }

    #[test]
    fn amounts_past_the_limit_are_refused_not_wrapped() {
        let input = Input {
            currency: cur("EUR"),
            tax_inclusive: false,
            lines: vec![LineInput { unit_price: Money::MAX_AMOUNT, quantity: 1000, tax_rate: Rate::ZERO }],
            discount: None,
            shipping: 0,
            shipping_tax_rate: Rate::ZERO,
        };
        assert_eq!(compute(&input), Err(TooLarge));
    }

    fn currency() -> impl Strategy<Value = Currency> {
        prop::sample::select(vec!["JPY", "EUR", "USD", "KWD", "BHD"]).prop_map(cur)
    }

    fn any_rate() -> impl Strategy<Value = Rate> {
        prop_oneof![
            Just(Rate::ZERO),
            (0i64..=1_000_000).prop_map(Rate::from_e4),
            (0i64..=30).prop_map(|p| Rate::from_e4(p * 10_000))
        ]
    }

    fn discount() -> impl Strategy<Value = Option<Discount>> {
        prop_oneof![
            Just(None),
            any_rate().prop_map(|r| Some(Discount::Percentage(r))),
            (0i64..5_000_000).prop_map(|d| Some(Discount::Fixed(d))),
            Just(Some(Discount::FreeShipping)),
        ]
    }

    fn input() -> impl Strategy<Value = Input> {
        let line = (0i64..2_000_000, 1i64..=1000, any_rate()).prop_map(|(unit_price, quantity, tax_rate)| LineInput {
            unit_price,
            quantity,
            tax_rate,
        });
        (currency(), any::<bool>(), prop::collection::vec(line, 0..12), discount(), 0i64..100_000, any_rate()).prop_map(
            |(currency, tax_inclusive, lines, discount, shipping, shipping_tax_rate)| Input {
                currency,
                tax_inclusive,
                lines,
                discount,
                shipping,
                shipping_tax_rate,
            },
        )
    }

    /// `round(num / den)` half to even, computed independently of the code under test:
    /// through exact comparison of `2 × remainder` with `den`, on unsigned values.
    fn oracle_round(num: u128, den: u128) -> u128 {
        let (q, r) = (num / den, num % den);
        if 2 * r > den || (2 * r == den && q % 2 == 1) { q + 1 } else { q }
    }

    proptest! {
        #[test]
        fn totals_are_the_sum_of_their_lines(input in input()) {
            let t = compute(&input).unwrap();
            let sum = |f: fn(&LineTotals) -> Money| t.lines.iter().map(|l| f(l).amount()).sum::<i64>();
            prop_assert_eq!(t.subtotal.amount(), sum(|l| l.amount));
            prop_assert_eq!(t.discount_total.amount(), sum(|l| l.discount));
            prop_assert_eq!(t.tax_total.amount(), sum(|l| l.tax) + t.shipping_tax.amount());
            let expected = t.subtotal.amount() - t.discount_total.amount() + t.shipping_total.amount()
                + if input.tax_inclusive { 0 } else { t.tax_total.amount() };
            prop_assert_eq!(t.total.amount(), expected);
            for (l, i) in t.lines.iter().zip(&input.lines) {
                prop_assert_eq!(l.amount.amount(), i.unit_price * i.quantity);
                prop_assert!(l.discount.amount() <= l.amount.amount(), "a discount took a line below zero");
            }
            for m in [t.subtotal, t.discount_total, t.shipping_total, t.tax_total, t.total] {
                prop_assert_eq!(m.currency(), input.currency);
            }
        }

        #[test]
        fn a_fixed_discount_loses_and_invents_no_cent(amounts in prop::collection::vec(0i128..10_000_000, 1..20), d in 0i128..100_000_000) {
            let shares = spread(d, &amounts);
            let sum: i128 = amounts.iter().sum();
            prop_assert_eq!(shares.iter().sum::<i128>(), d.min(sum));
            for (s, a) in shares.iter().zip(&amounts) {
                prop_assert!(*s >= 0 && s <= a);
                // Each share is its exact proportion, rounded down or up by less than a cent.
                if sum > 0 {
                    let exact_times_sum = d.min(sum) * a;
                    prop_assert!(s * sum <= exact_times_sum + sum && s * sum + sum >= exact_times_sum);
                }
            }
        }

        #[test]
        fn taxes_follow_the_published_formulas(input in input()) {
            let t = compute(&input).unwrap();
            let hundred = 1_000_000u128;
            for (l, i) in t.lines.iter().zip(&input.lines) {
                let net = (l.amount.amount() - l.discount.amount()) as u128;
                let r = i.tax_rate.e4() as u128;
                let expected = if input.tax_inclusive { oracle_round(net * r, hundred + r) } else { oracle_round(net * r, hundred) };
                prop_assert_eq!(l.tax.amount() as u128, expected);
            }
            let r = input.shipping_tax_rate.e4() as u128;
            let s = t.shipping_total.amount() as u128;
            let expected = if input.tax_inclusive { oracle_round(s * r, hundred + r) } else { oracle_round(s * r, hundred) };
            prop_assert_eq!(t.shipping_tax.amount() as u128, expected);
            if let Some(Discount::Percentage(p)) = input.discount {
                for l in &t.lines {
                    let expected = oracle_round(l.amount.amount() as u128 * p.e4() as u128, hundred);
                    prop_assert_eq!(l.discount.amount() as u128, expected);
                }
            }
        }
    }
}
