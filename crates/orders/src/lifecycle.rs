//! The order's state machine after the sale, as pure rules: the order `status`, its
//! `payment_status` and its `fulfillment_status`, which operation each state allows, and the
//! arithmetic of refunds and returns. The storage code ([`crate::oms`]) applies each rule
//! inside one write job with conditional `UPDATE`s; the property test at the end drives the
//! same rules through random sequences of operations and checks that no sequence reaches an
//! invalid combination.
//!
//! | status | payment_status | what may happen next |
//! |---|---|---|
//! | `pending_payment` | `pending` | checkout or recovery settles it: `placed`, `on_hold` or `canceled` |
//! | `on_hold` | `authorized` | approve (capture: `placed`, `captured`), reject (void: `canceled`, `voided`), cancel (as reject) |
//! | `placed` | `captured`, `partially_refunded`, `refunded` | fulfil, ship, deliver, refund, return; cancel while nothing is fulfilled |
//! | `completed` | `captured`, `partially_refunded`, `refunded` | refund, return (every unit was delivered) |
//! | `canceled` | `voided`, `refunded`, `partially_refunded` (a refund still pending) | a pending refund settles; nothing else |

use serde::{Deserialize, Serialize};

use crate::OrderStatus;

/// Where the order's money stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// No answer from the provider yet.
    #[default]
    Pending,
    /// Authorised, not captured (an order held for review).
    Authorized,
    Captured,
    PartiallyRefunded,
    Refunded,
    /// Declined, voided, or never completed: no money was taken.
    Voided,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 6] = [
        PaymentStatus::Pending,
        PaymentStatus::Authorized,
        PaymentStatus::Captured,
        PaymentStatus::PartiallyRefunded,
        PaymentStatus::Refunded,
        PaymentStatus::Voided,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Captured => "captured",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Voided => "voided",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Money was captured (and may be refunded, in part or in full).
    pub fn captured(self) -> bool {
        matches!(self, PaymentStatus::Captured | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded)
    }
}

/// How far the order's units have gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FulfillmentStatus {
    #[default]
    NotFulfilled,
    PartiallyFulfilled,
    Fulfilled,
    PartiallyShipped,
    Shipped,
    Delivered,
}

impl FulfillmentStatus {
    pub const ALL: [FulfillmentStatus; 6] = [
        FulfillmentStatus::NotFulfilled,
        FulfillmentStatus::PartiallyFulfilled,
        FulfillmentStatus::Fulfilled,
        FulfillmentStatus::PartiallyShipped,
        FulfillmentStatus::Shipped,
        FulfillmentStatus::Delivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FulfillmentStatus::NotFulfilled => "not_fulfilled",
            FulfillmentStatus::PartiallyFulfilled => "partially_fulfilled",
            FulfillmentStatus::Fulfilled => "fulfilled",
            FulfillmentStatus::PartiallyShipped => "partially_shipped",
            FulfillmentStatus::Shipped => "shipped",
            FulfillmentStatus::Delivered => "delivered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The unit counters of one order line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Units {
    pub ordered: i64,
    /// Left stock in a fulfilment.
    pub fulfilled: i64,
    /// In a fulfilment that has a shipment.
    pub shipped: i64,
    /// In a fulfilment marked delivered.
    pub delivered: i64,
    /// Came back in a return.
    pub returned: i64,
}

/// The order's `fulfillment_status` from its lines' counters: `delivered` when every unit was
/// delivered; `shipped` when every unit was shipped; `partially_shipped` when some were;
/// `fulfilled` when every unit left stock; `partially_fulfilled` when some did;
/// `not_fulfilled` otherwise.
pub fn fulfillment_status(lines: &[Units]) -> FulfillmentStatus {
    let sum = |f: fn(&Units) -> i64| lines.iter().map(f).sum::<i64>();
    let (ordered, fulfilled, shipped, delivered) =
        (sum(|u| u.ordered), sum(|u| u.fulfilled), sum(|u| u.shipped), sum(|u| u.delivered));
    if ordered > 0 && delivered == ordered {
        FulfillmentStatus::Delivered
    } else if ordered > 0 && shipped == ordered {
        FulfillmentStatus::Shipped
    } else if shipped > 0 {
        FulfillmentStatus::PartiallyShipped
    } else if ordered > 0 && fulfilled == ordered {
        FulfillmentStatus::Fulfilled
    } else if fulfilled > 0 {
        FulfillmentStatus::PartiallyFulfilled
    } else {
        FulfillmentStatus::NotFulfilled
    }
}

/// The order's status once its units moved: a `placed` order whose every unit was delivered
/// is `completed`; any other stays as it is.
pub fn status_after_fulfillment(status: OrderStatus, fs: FulfillmentStatus) -> OrderStatus {
    if status == OrderStatus::Placed && fs == FulfillmentStatus::Delivered { OrderStatus::Completed } else { status }
}

/// Units can leave stock only for a `placed` order.
pub fn may_fulfil(status: OrderStatus) -> bool {
    status == OrderStatus::Placed
}

/// An order can be canceled while `placed` with nothing fulfilled, or `on_hold`.
pub fn may_cancel(status: OrderStatus, fs: FulfillmentStatus) -> bool {
    match status {
        OrderStatus::Placed => fs == FulfillmentStatus::NotFulfilled,
        OrderStatus::OnHold => true,
        _ => false,
    }
}

/// Refunds and returns are for orders whose money was captured, `placed` or `completed`
/// (a cancel refunds by itself).
pub fn may_refund(status: OrderStatus, payment: PaymentStatus) -> bool {
    matches!(status, OrderStatus::Placed | OrderStatus::Completed) && payment.captured()
}

/// Whether a new refund of `amount` fits: the refunds not failed (`held`) plus it never pass
/// what was captured.
pub fn refund_fits(held: i64, amount: i64, captured: i64) -> bool {
    amount > 0 && held.checked_add(amount).is_some_and(|t| t <= captured)
}

/// The payment status once `refunded` of `captured` was given back.
pub fn payment_status_after_refunds(captured: i64, refunded: i64) -> PaymentStatus {
    if refunded <= 0 {
        PaymentStatus::Captured
    } else if refunded >= captured {
        PaymentStatus::Refunded
    } else {
        PaymentStatus::PartiallyRefunded
    }
}

/// What the customer paid for a whole line: its total after its discount, with its tax
/// added where prices exclude tax (where they include it, the total holds it already).
pub fn line_paid(total: i64, discount: i64, tax: i64, tax_inclusive: bool) -> i64 {
    total - discount + if tax_inclusive { 0 } else { tax }
}

/// The share of a line's `paid` amount that `returning` units of its `ordered` get back,
/// when `returned_before` units came back already: `round(paid × (before + returning) /
/// ordered) − round(paid × before / ordered)`, each rounded half to even (the pricing
/// module's one rule). Summed over every return of a line it is exactly `paid`: no cent is
/// lost or made by splitting a line over several returns.
pub fn return_share(paid: i64, ordered: i64, returned_before: i64, returning: i64) -> i64 {
    use backroom_pricing::rate::div_round_half_even;
    if ordered <= 0 {
        return 0;
    }
    let at = |units: i64| div_round_half_even(i128::from(paid) * i128::from(units), i128::from(ordered));
    i64::try_from(at(returned_before + returning) - at(returned_before)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_fulfillment_status_follows_the_units() {
        let u = |ordered, fulfilled, shipped, delivered| Units { ordered, fulfilled, shipped, delivered, returned: 0 };
        use FulfillmentStatus::*;
        assert_eq!(fulfillment_status(&[u(2, 0, 0, 0)]), NotFulfilled);
        assert_eq!(fulfillment_status(&[u(2, 1, 0, 0)]), PartiallyFulfilled);
        assert_eq!(fulfillment_status(&[u(2, 2, 0, 0), u(1, 1, 0, 0)]), Fulfilled);
        assert_eq!(fulfillment_status(&[u(2, 2, 1, 0), u(1, 0, 0, 0)]), PartiallyShipped);
        assert_eq!(fulfillment_status(&[u(2, 2, 2, 1), u(1, 1, 1, 1)]), Shipped);
        assert_eq!(fulfillment_status(&[u(2, 2, 2, 2), u(1, 1, 1, 1)]), Delivered);
    }

    #[test]
    fn shares_of_a_line_add_up_to_what_was_paid() {
        // 1000 over 3 units: 333, 334 (half to even of 666.67 → 667, minus 333), 333.
        assert_eq!(return_share(1000, 3, 0, 1), 333);
        assert_eq!(return_share(1000, 3, 1, 1), 334);
        assert_eq!(return_share(1000, 3, 2, 1), 333);
        assert_eq!(return_share(1000, 3, 0, 3), 1000);
        // Half to even: 5 over 2 units is 2 then 3.
        assert_eq!(return_share(5, 2, 0, 1), 2);
        assert_eq!(return_share(5, 2, 1, 1), 3);
        assert_eq!(line_paid(9800, 980, 2028, false), 10848);
        assert_eq!(line_paid(9800, 980, 1649, true), 8820);
    }

    /// One operation on an order, as staff, checkout and the provider may send them.
    #[derive(Debug, Clone)]
    enum Op {
        Settle(bool),
        Hold,
        Approve,
        Reject,
        Fulfil(usize, i64),
        Ship,
        Deliver,
        Cancel,
        Refund(i64),
        RefundAnswer(usize, bool),
        Return(usize, i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(Op::Settle),
            Just(Op::Hold),
            Just(Op::Approve),
            Just(Op::Reject),
            (0usize..3, -1i64..4).prop_map(|(l, q)| Op::Fulfil(l, q)),
            Just(Op::Ship),
            Just(Op::Deliver),
            Just(Op::Cancel),
            (-10i64..1200).prop_map(Op::Refund),
            (0usize..8, any::<bool>()).prop_map(|(i, ok)| Op::RefundAnswer(i, ok)),
            (0usize..3, -1i64..4).prop_map(|(l, q)| Op::Return(l, q)),
        ]
    }

    /// The order as the storage code keeps it, driven only through the rules above.
    #[derive(Debug)]
    struct Model {
        status: OrderStatus,
        payment: PaymentStatus,
        captured: i64,
        held: i64,
        refunded: i64,
        lines: Vec<Units>,
        paid: Vec<i64>,
        refunds: Vec<(i64, Option<bool>)>,
        fulfilments: usize,
        pending_shipment: Vec<(usize, i64)>,
        in_transit: Vec<(usize, i64)>,
    }

    impl Model {
        fn new() -> Self {
            Model {
                status: OrderStatus::PendingPayment,
                payment: PaymentStatus::Pending,
                captured: 0,
                held: 0,
                refunded: 0,
                lines: vec![
                    Units { ordered: 2, ..Default::default() },
                    Units { ordered: 1, ..Default::default() },
                    Units { ordered: 3, ..Default::default() },
                ],
                paid: vec![400, 150, 450],
                refunds: Vec::new(),
                fulfilments: 0,
                pending_shipment: Vec::new(),
                in_transit: Vec::new(),
            }
        }

        fn total(&self) -> i64 {
            self.paid.iter().sum()
        }

        fn fs(&self) -> FulfillmentStatus {
            fulfillment_status(&self.lines)
        }

        fn reserve_refund(&mut self, amount: i64) -> bool {
            if !refund_fits(self.held, amount, self.captured) {
                return false;
            }
            self.held += amount;
            self.refunds.push((amount, None));
            true
        }

        fn apply(&mut self, op: Op) {
            use OrderStatus::*;
            match op {
                Op::Settle(ok) if self.status == PendingPayment => {
                    if ok {
                        self.status = Placed;
                        self.payment = PaymentStatus::Captured;
                        self.captured = self.total();
                    } else {
                        self.status = Canceled;
                        self.payment = PaymentStatus::Voided;
                    }
                }
                Op::Hold if self.status == PendingPayment => {
                    self.status = OnHold;
                    self.payment = PaymentStatus::Authorized;
                }
                Op::Approve if self.status == OnHold => {
                    self.status = Placed;
                    self.payment = PaymentStatus::Captured;
                    self.captured = self.total();
                }
                Op::Reject if self.status == OnHold => {
                    self.status = Canceled;
                    self.payment = PaymentStatus::Voided;
                }
                Op::Fulfil(l, q) if may_fulfil(self.status) => {
                    let line = &mut self.lines[l];
                    if q > 0 && line.fulfilled + q <= line.ordered {
                        line.fulfilled += q;
                        self.fulfilments += 1;
                        self.pending_shipment.push((l, q));
                        self.status = status_after_fulfillment(self.status, self.fs());
                    }
                }
                Op::Ship if may_fulfil(self.status) => {
                    if let Some((l, q)) = self.pending_shipment.pop() {
                        self.lines[l].shipped += q;
                        self.in_transit.push((l, q));
                    }
                }
                Op::Deliver if may_fulfil(self.status) => {
                    if let Some((l, q)) = self.in_transit.pop() {
                        self.lines[l].delivered += q;
                        self.status = status_after_fulfillment(self.status, self.fs());
                    }
                }
                Op::Cancel if may_cancel(self.status, self.fs()) => {
                    if self.payment.captured() {
                        let rest = self.captured - self.held;
                        if rest > 0 {
                            assert!(self.reserve_refund(rest));
                        }
                    } else {
                        self.payment = PaymentStatus::Voided;
                    }
                    self.status = Canceled;
                }
                Op::Refund(amount) if may_refund(self.status, self.payment) => {
                    self.reserve_refund(amount);
                }
                Op::RefundAnswer(i, ok) => {
                    if let Some(r) = self.refunds.get_mut(i).filter(|r| r.1.is_none()) {
                        r.1 = Some(ok);
                        if ok {
                            self.refunded += r.0;
                            self.payment = payment_status_after_refunds(self.captured, self.refunded);
                        } else {
                            self.held -= r.0;
                        }
                    }
                }
                Op::Return(l, q) if may_refund(self.status, self.payment) => {
                    let line = self.lines[l];
                    if q > 0 && line.returned + q <= line.shipped {
                        let share = return_share(self.paid[l], line.ordered, line.returned, q);
                        self.lines[l].returned += q;
                        let amount = share.min(self.captured - self.held);
                        if amount > 0 {
                            assert!(self.reserve_refund(amount));
                        }
                    }
                }
                _ => {}
            }
        }

        fn check(&self) -> Result<(), TestCaseError> {
            prop_assert!(self.refunded <= self.held, "{self:?}");
            prop_assert!(self.held <= self.captured, "{self:?}");
            prop_assert!(self.refunded >= 0 && self.held >= 0);
            prop_assert!(!(self.status == OrderStatus::Canceled && self.fulfilments > 0), "{self:?}");
            prop_assert_eq!(self.payment.captured(), self.captured > 0);
            if self.payment.captured() {
                prop_assert_eq!(self.payment, payment_status_after_refunds(self.captured, self.refunded));
            }
            for u in &self.lines {
                prop_assert!(u.returned <= u.shipped && u.delivered <= u.shipped);
                prop_assert!(u.shipped <= u.fulfilled && u.fulfilled <= u.ordered, "{u:?}");
            }
            if self.status == OrderStatus::Completed {
                prop_assert_eq!(self.fs(), FulfillmentStatus::Delivered);
            }
            if self.fulfilments > 0 {
                prop_assert!(matches!(self.status, OrderStatus::Placed | OrderStatus::Completed));
            }
            Ok(())
        }
    }

    proptest! {
        /// No sequence of operations reaches an invalid combination: refunds never pass what
        /// was captured, a canceled order has no fulfilment, a completed one had every unit
        /// delivered, units move only forward, and the payment status matches the money.
        #[test]
        fn no_sequence_reaches_an_invalid_state(ops in proptest::collection::vec(op(), 0..60)) {
            let mut m = Model::new();
            for op in ops {
                m.apply(op);
                m.check()?;
            }
        }

        /// Whatever the split of a line into returns, the shares add up to what was paid.
        #[test]
        fn return_shares_add_up(paid in 0i64..1_000_000, splits in proptest::collection::vec(1i64..5, 1..8)) {
            let ordered: i64 = splits.iter().sum();
            let mut before = 0;
            let mut sum = 0;
            for q in splits {
                sum += return_share(paid, ordered, before, q);
                before += q;
            }
            prop_assert_eq!(sum, paid);
        }
    }
}
