//! The contact store: Zendesk users resolved to handoff's own stable contact ids
//! (issue 6 fills this in).

/// Tables of the contact store, created when missing.
pub const SCHEMA: &str = "";
