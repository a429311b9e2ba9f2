//! Card data never enters the system (P8): a request body that carries anything shaped like a
//! card number is refused before it is parsed, logged or stored.
//!
//! "Shaped like a card number": a run of 13–19 digits, optionally grouped by single spaces or
//! dashes, that passes the Luhn check. A longer run of digits is not a card number. Written
//! here because the check is a dozen lines and no crate does exactly this scan over raw bytes.

/// Whether `body` contains a card-number-shaped run of digits.
pub fn contains_card_number(body: &[u8]) -> bool {
    let mut i = 0;
    let n = body.len();
    let mut digits: Vec<u8> = Vec::with_capacity(24);
    while i < n {
        if !body[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        digits.clear();
        let mut j = i;
        while j < n {
            let b = body[j];
            if b.is_ascii_digit() {
                digits.push(b - b'0');
                j += 1;
            } else if (b == b' ' || b == b'-') && j + 1 < n && body[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        if (13..=19).contains(&digits.len()) && luhn(&digits) {
            return true;
        }
        i = j;
    }
    false
}

/// The Luhn checksum over decimal digits (most significant first).
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_card_numbers_in_any_shape() {
        for body in [
            r#"{"token": "4111111111111111"}"#,
            r#"{"note": "card 4111 1111 1111 1111 thanks"}"#,
            r#"{"n": 4111111111111111}"#,
            r#"{"x": "5500-0000-0000-0004"}"#,
            r#"{"amex": "378282246310005"}"#,
            "4242424242424242",
        ] {
            assert!(contains_card_number(body.as_bytes()), "{body}");
        }
    }

    #[test]
    fn leaves_ordinary_numbers_alone() {
        for body in [
            r#"{"amount": 4900, "currency": "EUR"}"#,
            r#"{"amount": 1000000000000}"#,
            r#"{"token": "4111111111111112"}"#,
            r#"{"phone": "+351 912 345 678"}"#,
            r#"{"ref": "41111111111111111111111"}"#,
            r#"{"a": [4111, 1111, 1111, 1111]}"#,
            r#"{"postal_code": "1100-048"}"#,
        ] {
            assert!(!contains_card_number(body.as_bytes()), "{body}");
        }
    }
}
