//! The one table of problem codes: every `code` the API can answer, with its HTTP status, its
//! title and a line on when it is answered.
//!
//! A module cannot invent a code: [`crate::Error::Refused`] and the HTTP layer's problems take
//! a [`Code`], so a code missing from this table does not compile. The status lives here too
//! (a plain number; this crate knows nothing of HTTP), so a code is answered with the same
//! status however it is raised. The error list in `docs/api.md` is rendered from [`Code::ALL`]
//! and a test in `backroom-api` fails when the two drift.

use std::fmt;

/// Defines [`Code`] and its table from one list of
/// `Variant = (status, "code", "Title", "when it is answered")`.
macro_rules! codes {
    ($($variant:ident = ($status:literal, $code:literal, $title:literal, $when:literal),)+) => {
        /// A stable problem code. See the module documentation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $(
                #[doc = concat!("`", $status, " ", $code, "`: ", $when)]
                $variant,
            )+
        }

        impl Code {
            /// Every code, in the order of the documented list.
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            /// The stable snake_case code, the problem document's `code` (and the last
            /// segment of its `type`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)+
                }
            }

            /// The HTTP status every answer with this code has.
            pub const fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)+
                }
            }

            /// The problem document's `title`: one per code.
            pub const fn title(self) -> &'static str {
                match self {
                    $(Code::$variant => $title,)+
                }
            }

            /// When the code is answered, one line of Markdown for the documentation.
            pub const fn when(self) -> &'static str {
                match self {
                    $(Code::$variant => $when,)+
                }
            }
        }
    };
}

codes! {
    MalformedJson = (400, "malformed_json", "Malformed JSON",
        "the body is not valid JSON (syntax)"),
    IdempotencyKeyRequired = (400, "idempotency_key_required", "Idempotency key required",
        "checkout without an `Idempotency-Key` of 1–255 printable ASCII characters"),
    InvalidSignature = (400, "invalid_signature", "Invalid signature",
        "a `POST /webhooks/stripe` whose `Stripe-Signature` is missing, malformed, older or newer than 5 minutes, or matches no `v1` HMAC-SHA256 of the body with the webhook secret (or no secret is set); nothing is done"),
    Unauthenticated = (401, "unauthenticated", "Unauthenticated",
        "`/admin/*` without a valid `Authorization: Bearer` key, or a customer's route without a live customer token (none, unknown, signed out, expired, or of an erased customer); the answer has `WWW-Authenticate: Bearer`"),
    InvalidCredentials = (401, "invalid_credentials", "Invalid credentials",
        "signing in with a wrong password or an e-mail no customer has (the same answer for both)"),
    PaymentDeclined = (402, "payment_declined", "Payment declined",
        "the provider declined; the problem has `reason` and `order_id`"),
    Forbidden = (403, "forbidden", "Forbidden",
        "the key's role lacks the permission"),
    CheckoutBlocked = (403, "checkout_blocked", "Checkout blocked",
        "risk scoring refused the checkout (too many declined payments for the e-mail or from the client address within an hour, or a score at `BACKROOM_RISK_BLOCK_SCORE`; see docs/risk.md); nothing reserved or charged, the cart stays open"),
    NotFound = (404, "not_found", "Not found",
        "unknown id, handle or route"),
    MethodNotAllowed = (405, "method_not_allowed", "Method not allowed",
        "the route exists but not with this method (`Allow` lists the methods)"),
    Conflict = (409, "conflict", "Conflict",
        "duplicate handle, SKU, category handle, location name, promotion code or tax class of a region; a country another region holds"),
    CategoryHasChildren = (409, "category_has_children", "Category has children",
        "deleting a category that still has sub-categories"),
    StockBelowCommitted = (409, "stock_below_committed", "Stock below committed",
        "setting `on_hand` below units already reserved or allocated (unless the variant allows backorders)"),
    InsufficientStock = (409, "insufficient_stock", "Insufficient stock",
        "adding to a cart or checking out more than is available; `items: [{variant_id, requested, available}]`"),
    PriceChanged = (409, "price_changed", "Price changed",
        "a line's price changed since it was added (`items: [{item_id, variant_id, old_unit_price, new_unit_price}]`), or the checkout's address moved the cart to another region (`items: []` and `cart`, the cart as it is now)"),
    CartCompleted = (409, "cart_completed", "Cart completed",
        "the cart was checked out already (changing it, or checking out under another key)"),
    CartCheckingOut = (409, "cart_checking_out", "Checkout in progress",
        "another checkout of the cart is running (changing it, or checking out under another key)"),
    IdempotencyKeyInUse = (409, "idempotency_key_in_use", "Idempotency key in use",
        "the first request with this key is still running"),
    EmailTaken = (409, "email_taken", "E-mail taken",
        "registering with an e-mail a customer already has (compared trimmed and case-insensitively)"),
    PromotionExhausted = (409, "promotion_exhausted", "Promotion exhausted",
        "applying or checking out with a code whose `usage_limit` (or the shopper's `per_customer_limit`) is used up; at checkout nothing is reserved or charged"),
    OrderStateConflict = (409, "order_state_conflict", "Order state conflict",
        "an action the order's state does not allow: fulfilling, shipping or delivering an order that is not `placed`, approving or rejecting one not `on_hold`, refunding or returning one whose payment was not captured, marking delivered a fulfilment not shipped"),
    OrderNotCancelable = (409, "order_not_cancelable", "Order not cancelable",
        "canceling an order that has a fulfilment, is already canceled or completed, or whose payment is still pending"),
    PayloadTooLarge = (413, "payload_too_large", "Payload too large",
        "body over 1 MiB"),
    UriTooLong = (414, "uri_too_long", "URI too long",
        "a URI over 8 KiB"),
    UnsupportedMediaType = (415, "unsupported_media_type", "Unsupported media type",
        "a body that is not `application/json`"),
    ValidationFailed = (422, "validation_failed", "Validation failed",
        "a field breaks a rule, a field is unknown or of the wrong type; `errors` lists each with its path (`variants[0].prices[1].currency`)"),
    IdempotencyKeyReused = (422, "idempotency_key_reused", "Idempotency key reused",
        "the key was used with a different body"),
    NoPrice = (422, "no_price", "No price",
        "the variant has no price in the cart's currency"),
    CardDataRefused = (422, "card_data_refused", "Card data refused",
        "a shopper's body, or any request's `Idempotency-Key` or `X-Request-Id`, holds a card number (see \"The HTTP edge\"); nothing is parsed, logged, stored or echoed"),
    CartTooManyLines = (422, "cart_too_many_lines", "Too many lines",
        "adding a 101st line (a variant not yet in the cart); nothing is written"),
    CartTotalTooLarge = (422, "cart_total_too_large", "Cart total too large",
        "a cart total beyond what one order may hold"),
    PaymentProviderUnavailable = (422, "payment_provider_unavailable", "Payment provider unavailable",
        "checkout names a payment provider that is not enabled (`BACKROOM_PAYMENT_PROVIDERS`); nothing is reserved or stored, the key stays unused"),
    CountryNotServed = (422, "country_not_served", "Country not served",
        "a cart's shipping country is in no region"),
    RegionCurrencyMismatch = (422, "region_currency_mismatch", "Region currency mismatch",
        "the region of a cart's shipping country has another currency than the cart"),
    PromotionInvalid = (422, "promotion_invalid", "Promotion invalid",
        "applying a code that is unknown, not yet or no longer valid, or not applicable to the cart (currency, minimum subtotal)"),
    ShippingMethodRequired = (422, "shipping_method_required", "Shipping method required",
        "checking out a cart in a region with shipping options before choosing one"),
    RefundExceedsCaptured = (422, "refund_exceeds_captured", "Refund exceeds captured",
        "a refund that, with the refunds not failed, would give back more than was captured; `refundable` says what is left"),
    WebhookUrlForbidden = (422, "webhook_url_forbidden", "Webhook URL forbidden",
        "a webhook URL whose host is, or resolves to, a loopback, private, link-local, unspecified, shared or multicast address (IPv4-mapped forms included) while `BACKROOM_WEBHOOKS_ALLOW_PRIVATE` is off, or a cloud metadata address (`169.254.169.254`, `fd00:ec2::254`) whatever the setting"),
    RateLimited = (429, "rate_limited", "Too many requests",
        "a client sent more store requests than its rate limit allows (see \"Rate limits\"), or too many failed logins; retry after `Retry-After` seconds"),
    RequestHeaderFieldsTooLarge = (431, "request_header_fields_too_large", "Request header fields too large",
        "headers over 16 KiB together, one header line over 8 KiB, or more than 100 header lines"),
    Internal = (500, "internal", "Internal error",
        "a bug; the cause is logged, never sent"),
    Unavailable = (503, "unavailable", "Service unavailable",
        "the database cannot be reached, or a write was cancelled at its deadline"),
    Overloaded = (503, "overloaded", "Overloaded",
        "the store shed the request before doing any of it: the writer's queue is full, a write waited past its deadline, or every connection slot is busy; retry after `Retry-After`"),
    RequestTimeout = (503, "request_timeout", "Request timeout",
        "the request was not answered within `BACKROOM_REQUEST_TIMEOUT` (a body that trickles in, say)"),
    SearchUnavailable = (503, "search_unavailable", "Search unavailable",
        "a search that needs the index (filters, prices, stock) while it is being built"),
}

impl Code {
    /// The code named `s`, if the table has it.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn codes_are_unique_snake_case_errors_with_a_title_and_a_line() {
        let mut seen = std::collections::HashSet::new();
        for &code in Code::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} appears twice");
            assert!(
                s.starts_with(|c: char| c.is_ascii_lowercase())
                    && !s.ends_with('_')
                    && !s.contains("__")
                    && s.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{s} is not snake_case"
            );
            assert!((400..600).contains(&code.status()), "{s}: status {}", code.status());
            assert!(!code.title().is_empty(), "{s}: no title");
            let when = code.when();
            assert!(!when.is_empty() && !when.contains(['|', '\n']), "{s}: `when` must be one table cell: {when}");
            assert_eq!(Code::parse(s), Some(code));
        }
        assert_eq!(Code::parse("no_such_code"), None);
    }

    #[test]
    fn the_list_is_ordered_by_status() {
        assert!(Code::ALL.is_sorted_by_key(|c| c.status()), "keep the table grouped by status");
    }
}
