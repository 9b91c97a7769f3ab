//! RFC 3261 section 17 transaction state machines, with RFC 6026's Accepted
//! state, as pure sans-IO code.
//!
//! Each machine takes one event (a response, a request retransmission, an
//! ACK, a timer firing, a transport error) and returns the [`Action`]s the
//! async shell must execute, in order. The machines own no sockets, clocks or
//! messages: the shell stores the request/response bytes and the timers.
//!
//! Conventions every machine follows, so the shell can rely on them:
//! - Within one list: messages on the wire first, then what the TU is told,
//!   then timer bookkeeping, then [`Action::Terminated`] last.
//! - `CancelTimer` is only emitted for a timer that may be armed; retransmit
//!   timers (A, E, G) are never armed on a reliable transport.
//! - No `CancelTimer` precedes `Terminated`: terminating means the shell drops
//!   the transaction together with every timer it still has armed.
//! - A timer that fires in a state where it means nothing (stale) produces no
//!   actions, and every event after Terminated produces no actions.
//! - Status codes outside 100..=699 are not SIP responses and are ignored.

pub mod timers;

mod invite_client;
mod invite_server;
mod non_invite_client;
mod non_invite_server;

#[cfg(test)]
mod sim;

pub use invite_client::{InviteClient, InviteClientState};
pub use invite_server::{InviteServer, InviteServerState};
pub use non_invite_client::{NonInviteClient, NonInviteClientState};
pub use non_invite_server::{NonInviteServer, NonInviteServerState};
pub use timers::{Timer, TimerConfig};

pub mod absorber;
pub mod set;
pub use absorber::{Absorb, Absorber, Lingering};
pub use set::{RequestMatch, TransactionSet, TxEvent, TxId};

/// What the shell must do after feeding an event. Order matters: execute in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// (Re)transmit the request this client transaction carries.
    TransmitRequest,
    /// Client INVITE: send the hop-by-hop ACK for the non-2xx final response just received (17.1.1.3).
    TransmitAck,
    /// Server: (re)transmit the most recent response the TU passed to this transaction.
    TransmitResponse,
    /// Deliver the message that caused this event (response for clients; for servers a
    /// retransmitted ACK of a 2xx in Accepted state per RFC 6026, see below) to the TU.
    PassToTu,
    /// Arm (or re-arm, replacing any earlier instance) the named timer to fire after the duration.
    StartTimer(Timer, std::time::Duration),
    /// Disarm the named timer if armed.
    CancelTimer(Timer),
    /// Tell the TU the transaction timed out (B, F, H) -- for clients the TU synthesises a 408.
    Timeout,
    /// Tell the TU a transport error occurred (17.1.4 / 17.2.4).
    TransportError,
    /// The transaction is Terminated; the shell removes it.
    Terminated,
}

/// The response classes the state machines distinguish (RFC 3261 7.2, 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusClass {
    /// 100-199.
    Provisional,
    /// 200-299: for INVITE it is acknowledged end to end, outside the
    /// transaction (RFC 3261 13.2.2.4, RFC 6026).
    Success,
    /// 300-699: for INVITE it is acknowledged hop by hop inside the
    /// transaction (RFC 3261 17.1.1.3).
    Failure,
}

/// Classify a status code; `None` for anything outside 100..=699 so a
/// garbage value can never drive a transition.
fn classify(status: u16) -> Option<StatusClass> {
    match status {
        100..=199 => Some(StatusClass::Provisional),
        200..=299 => Some(StatusClass::Success),
        300..=699 => Some(StatusClass::Failure),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_classify_at_class_boundaries() {
        assert_eq!(classify(100), Some(StatusClass::Provisional));
        assert_eq!(classify(199), Some(StatusClass::Provisional));
        assert_eq!(classify(200), Some(StatusClass::Success));
        assert_eq!(classify(299), Some(StatusClass::Success));
        assert_eq!(classify(300), Some(StatusClass::Failure));
        assert_eq!(classify(699), Some(StatusClass::Failure));
    }

    #[test]
    fn status_codes_outside_sip_range_are_unclassified() {
        for status in [0, 1, 99, 700, 999, u16::MAX] {
            assert_eq!(classify(status), None, "status {status}");
        }
    }
}
