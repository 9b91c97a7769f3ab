//! The pure core of SIP transfer (issue 4): everything the call actor decides when the
//! AI agent sends REFER, as functions without sockets or state.
//!
//! - [`parse_refer_to`]: the REFER's Refer-To (RFC 3515), URI headers split off
//!   (RFC 3261 19.1.5); errors are answered with 400.
//! - [`AllowList`]: is the target one we may dial (else 403, nothing dialled), and with
//!   which codecs, credentials and transport ([`Destination`]).
//! - [`transfer_headers`], [`transfer_from`], [`CopyRule`]: what the transfer INVITE
//!   carries; every value validated, invalid optional ones left out and reported.
//! - [`contract`]: a destination's header contract: which REFER headers and
//!   custom data keys are copied, where they go (header line or URI header), and
//!   the target's rules (the `twilio` profile).
//! - [`notify`]: the NOTIFY pieces (RFC 3515, 4488, 6665).
//! - [`Credentials`]: what answers a 401/407 from the destination (the digest itself is
//!   generic SIP client auth, [`crate::sip::auth`]).
//! - [`TransferSettings`]: the `[transfer]` table, compiled once into a
//!   [`TransferPolicy`].

mod allow;
pub mod contract;
mod headers;
pub mod machine;
pub mod notify;
mod refer_to;
mod settings;

pub use allow::{AllowList, Credentials, Destination, DestinationKind, Refused};
pub use headers::{
    check_id, check_ticket_id, transfer_from, transfer_headers, CopiedHeaders, CopyRule,
    FallbackFrom, HeaderProblem, Omitted, TransferHeaders, MAX_COPIED_HEADERS, X_OPENCX_AGENT_ID,
    X_OPENCX_CONTACT_ID, X_OPENCX_SESSION_ID, X_OPENCX_TRANSFER, X_OPENCX_ZENDESK_TICKET_ID,
    X_ZENDESK_TICKET_ID,
};
pub use refer_to::{parse_refer_to, ReferTarget, ReferToError};
pub use settings::{
    DestinationConfig, TransferConfigError, TransferPolicy, TransferSettings, DEFAULT_CODECS,
    DEFAULT_FALLBACK_FROM,
};

#[cfg(test)]
mod tests;
