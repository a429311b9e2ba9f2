//! Integration tests: the real HTTP app over SQLite and over PostgreSQL (see `support.rs`).
//! One test binary keeps link times down.

mod support;

mod access_matrix;
mod audit;
mod auth;
mod carts;
mod catalog;
mod checkout;
mod customers;
mod edge;
mod errors;
mod events;
mod images;
mod integrations;
mod locations;
mod oms;
mod ops;
mod order_search;
mod overload;
mod personal_data;
mod price_lists;
mod pricing;
mod pricing_admin;
mod providers;
mod rate_limits;
mod risk;
mod roles;
mod search;
mod shipping_admin;
mod stock;
mod stock_batch;
mod stripe;
mod webhooks;
