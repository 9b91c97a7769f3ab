//! The SIP stack, bottom up: transport, message, transaction, dialog; and client
//! authentication.

pub mod auth;
pub mod dialog;
pub mod message;
pub mod register;
pub mod transaction;
pub mod transport;
