//! The shared kernel of Backroom: small types every module uses and that depend on nothing
//! else of ours. Money and currencies, typed id generation, pages, the domain error and the one
//! table of its codes ([`code`]), the clock, the rule for names and address lines ([`text`]), and which addresses outbound
//! requests may reach ([`net`]).

pub mod code;
pub mod error;
pub mod id;
pub mod money;
pub mod net;
pub mod page;
pub mod text;

pub use code::Code;
pub use error::{Error, FieldError, Result};
pub use money::{Currency, Money, MoneyError};
pub use page::{Cursor, Page, PageRequest};
pub use text::{TextError, check_display};

/// The current time, truncated to whole microseconds so that a value read back from either
/// database (both keep microseconds) compares equal to the value that was written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    chrono::Utc::now().duration_trunc(TimeDelta::microseconds(1)).expect("truncating to microseconds cannot overflow")
}
