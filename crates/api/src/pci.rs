//! Card data never enters the system (P8): whatever a shopper's text can carry is refused when
//! it holds anything shaped like a card number, before it is parsed, logged or stored.
//!
//! Where the scan runs:
//! - every JSON body read with [`crate::extract::ApiJson`], except on the admin routes that
//!   [`crate::access`] marks as product data (catalog and stock): there a barcode such as the
//!   EAN-13 `5901234123457`, which passes the Luhn check like one real barcode in ten, is an
//!   identifier, not a card;
//! - the `Idempotency-Key` and `X-Request-Id` headers of every request ([`refuse_card_headers`]),
//!   outside the layers that log and echo the request id.
//!
//! "Shaped like a card number": a run of 13–19 digits that passes the Luhn check, the digits
//! optionally separated by single spaces, dashes or dots. A digit is ASCII or full-width
//! (U+FF10–U+FF19); a separator is also a no-break space, a Unicode dash (U+2010–U+2015), an
//! ideographic space, or a full-width dash or full stop. A longer run of digits is not a card
//! number. The scan reads UTF-8 bytes once, in linear time. Written here because the check is
//! a few dozen lines and no crate does exactly this scan over raw bytes.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The headers scanned on every request: both are logged, stored (the idempotency key) or
/// echoed (the request id).
pub const SCANNED_HEADERS: [&str; 2] = ["idempotency-key", "x-request-id"];

/// A digit at the start of `b`: its value and its length in bytes.
fn digit_at(b: &[u8]) -> Option<(u8, usize)> {
    match b {
        [d @ b'0'..=b'9', ..] => Some((d - b'0', 1)),
        // U+FF10–U+FF19 FULLWIDTH DIGIT ZERO…NINE
        [0xEF, 0xBC, d @ 0x90..=0x99, ..] => Some((d - 0x90, 3)),
        _ => None,
    }
}

/// The length in bytes of a separator at the start of `b`.
fn separator_at(b: &[u8]) -> Option<usize> {
    match b {
        [b' ' | b'-' | b'.', ..] => Some(1),
        // U+00A0 NO-BREAK SPACE
        [0xC2, 0xA0, ..] => Some(2),
        // U+2010–U+2015: hyphen, non-breaking hyphen, figure dash, en dash, em dash, bar
        [0xE2, 0x80, 0x90..=0x95, ..] => Some(3),
        // U+3000 IDEOGRAPHIC SPACE
        [0xE3, 0x80, 0x80, ..] => Some(3),
        // U+FF0D FULLWIDTH HYPHEN-MINUS, U+FF0E FULLWIDTH FULL STOP
        [0xEF, 0xBC, 0x8D | 0x8E, ..] => Some(3),
        _ => None,
    }
}

/// Whether `text` contains a card-number-shaped run of digits. Each byte is looked at a
/// bounded number of times: a run is read once and the scan goes on after it.
pub fn contains_card_number(text: &[u8]) -> bool {
    let n = text.len();
    let mut digits = [0u8; 19];
    let mut i = 0;
    while i < n {
        let Some((first, len)) = digit_at(&text[i..]) else {
            i += 1;
            continue;
        };
        digits[0] = first;
        let mut count = 1usize;
        let mut j = i + len;
        loop {
            if let Some((d, len)) = digit_at(&text[j..]) {
                if count < digits.len() {
                    digits[count] = d;
                }
                count += 1;
                j += len;
            } else if let Some(sep) = separator_at(&text[j..])
                && digit_at(&text[j + sep..]).is_some()
            {
                j += sep;
            } else {
                break;
            }
        }
        if (13..=19).contains(&count) && luhn(&digits[..count]) {
            return true;
        }
        i = j;
    }
    false
}

/// Whether a JSON body holds a card number: in its bytes as sent, or once its `\u` escapes
/// are decoded (`"\u0034\u0031…"` spells digits without writing one).
pub fn json_contains_card_number(body: &[u8]) -> bool {
    if contains_card_number(body) {
        return true;
    }
    if !body.windows(2).any(|w| w == br"\u") {
        return false;
    }
    // Re-serialised, every string holds its characters as themselves (only quotes,
    // backslashes and control characters stay escaped). A body that is not JSON is refused
    // as such by the parser after this.
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok())
        .is_some_and(|decoded| contains_card_number(&decoded))
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

/// Counts a refusal (the number itself is never logged).
pub fn refused() -> ApiError {
    metrics::counter!("card_data_refused_total").increment(1);
    ApiError::CardDataRefused
}

/// The middleware, outside the request-id and trace layers: a request whose `Idempotency-Key`
/// or `X-Request-Id` is shaped like a card number is `422 card_data_refused`, before anything
/// logs, stores or echoes the header.
pub async fn refuse_card_headers(req: Request, next: Next) -> Response {
    let carries_card = SCANNED_HEADERS
        .iter()
        .any(|name| req.headers().get_all(*name).iter().any(|v| contains_card_number(v.as_bytes())));
    if carries_card {
        return refused().into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(s: &str) -> bool {
        contains_card_number(s.as_bytes())
    }

    #[test]
    fn finds_card_numbers_in_any_shape() {
        for body in [
            r#"{"token": "4111111111111111"}"#,
            r#"{"note": "card 4111 1111 1111 1111 thanks"}"#,
            r#"{"n": 4111111111111111}"#,
            r#"{"x": "5500-0000-0000-0004"}"#,
            r#"{"amex": "378282246310005"}"#,
            "4242424242424242",
            "4111.1111.1111.1111",
            "4111 1111-1111.1111",
            "４１１１１１１１１１１１１１１１",
            "４１１１　１１１１　１１１１　１１１１",
            "４１１１－１１１１－１１１１－１１１１",
            "４１１１．１１１１．１１１１．１１１１",
            "4111\u{a0}1111\u{a0}1111\u{a0}1111",
            "4111\u{2013}1111\u{2013}1111\u{2013}1111",
            "４１１１1111１１１１1111",
            "the number is 4111111111111111.",
            // 13 digits that pass Luhn: shaped like a card number, wherever a shopper writes it.
            "5901234123457",
        ] {
            assert!(card(body), "{body}");
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
            "4111  1111  1111  1111",
            "4111--1111--1111--1111",
            "4111,1111,1111,1111",
            "４１１１１１１１１１１１１１１２",
            "1.5",
            "",
            "-",
            "4",
        ] {
            assert!(!card(body), "{body}");
        }
    }

    #[test]
    fn barcodes_pass_luhn_so_product_data_must_not_be_scanned() {
        // Valid EAN-13, ISBN-13 and GTIN-14 codes whose digits also pass the Luhn check: the
        // reason admin catalog and stock bodies are not scanned (see `access`).
        for code in ["5901234123457", "5449000000996", "9780306406065", "15901234123539"] {
            let digits: Vec<u8> = code.bytes().map(|b| b - b'0').collect();
            assert!(luhn(&digits), "{code} passes Luhn");
            assert!(card(code), "{code}");
        }
        // Barcodes that fail Luhn are never refused.
        for code in ["4006381333931", "9780306406157", "3017620422003"] {
            assert!(!card(code), "{code}");
        }
    }

    #[test]
    fn escaped_digits_are_found_in_json() {
        let escaped = r#"{"note": "\u0034\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031"}"#;
        assert!(!contains_card_number(escaped.as_bytes()));
        assert!(json_contains_card_number(escaped.as_bytes()));
        assert!(json_contains_card_number(r#"{"note": "4111\u00201111\u00201111\u00201111"}"#.as_bytes()));
        assert!(json_contains_card_number(r#"{"note": "\uff14111111111111111"}"#.as_bytes()));
        assert!(!json_contains_card_number(r#"{"note": "caf\u00e9 4111"}"#.as_bytes()));
        assert!(!json_contains_card_number(br#"{"broken": "\u0034"#));
    }
}
