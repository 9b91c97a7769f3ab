//! Unit tests of the transfer core, one file per concern. Helpers here.

mod allow;
mod from;
mod headers;
mod hostile;
mod notify;
mod refer_to;
mod settings;

pub(super) use super::*;
pub(super) use crate::session::{Session, SessionId};

/// A live session with an E.164 caller, no contact and no ticket.
pub(super) fn session() -> Session {
    Session::new(
        SessionId::parse("3f2a9c1e").expect("valid id"),
        "org1".into(),
        "agent-7".into(),
        Some("+15551234567".into()),
        Some("Alice Caller".into()),
        "+18005550100".into(),
    )
}

/// Settings from a `[transfer]` TOML table body.
pub(super) fn settings(toml_body: &str) -> TransferSettings {
    toml::from_str(toml_body).expect("valid [transfer] TOML")
}

/// The compiled policy of a `[transfer]` TOML table body.
pub(super) fn policy(toml_body: &str) -> TransferPolicy {
    settings(toml_body)
        .compile()
        .expect("valid [transfer] settings")
}

/// A target parsed from one Refer-To value.
pub(super) fn target(value: &str) -> ReferTarget {
    parse_refer_to(&[value]).expect("parsable Refer-To")
}

/// The destination the default-ish policy (Zendesk wildcard, tel:+*, one carrier host)
/// gives a Refer-To value.
pub(super) fn dest(value: &str) -> Destination {
    policy(r#"allow = ["*.zendesk.sip.twilio.com", "tel:+*", "carrier.example.net"]"#)
        .allow
        .check(&target(value))
        .expect("allowed target")
}
