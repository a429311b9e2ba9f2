pub mod admin;
pub mod checkout;
pub mod ops;
pub mod store;
