//! The lifecycle-event outbox: events written before they are sent, removed once
//! delivered (issue 7 fills this in).

/// Tables of the outbox, created when missing.
pub const SCHEMA: &str = "";
