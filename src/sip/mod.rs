//! The SIP stack, bottom up: transport, message, transaction, dialog.

pub mod dialog;
pub mod message;
pub mod transaction;
pub mod transport;
