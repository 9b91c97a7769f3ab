//! One client INVITE in progress, to the AI agent or to a transfer target: its
//! transaction, whether a provisional response came, a CANCEL deferred until
//! one does (RFC 3261 9.1: a CANCEL before any 1xx may overtake the INVITE and
//! must not be sent), and the deadline by which it must be answered.

use crate::sip::transaction::TxId;
use crate::sip::transport::Targets;
use bytes::Bytes;
use std::time::Instant;

/// What failing over to the next target takes (RFC 3263 4.3): the targets
/// left, the INVITE as it was sent, and the deadline it keeps.
#[derive(Debug)]
pub(super) struct Failover {
    pub targets: Targets,
    pub wire: Bytes,
    pub deadline: Option<Instant>,
    /// The failure being failed over (503, 408 for no answer): it stands when
    /// no target is left.
    pub status: u16,
    /// No response came (a timeout or a transport error), rather than a 503.
    pub no_answer: bool,
}

/// RFC 3263 4.3: a transport error, a timeout or a 503 from the server tried
/// sends the request to the next one, as long as nothing came back from the
/// first that made it a dialog (a provisional response) and we are not
/// cancelling it.
pub(super) fn fails_over(status: u16, provisional: bool, cancelled: bool) -> bool {
    matches!(status, 503 | 408) && !provisional && !cancelled
}

/// What cancelling the INVITE takes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CancelStep {
    /// Send the CANCEL.
    Now,
    /// Nothing heard yet: the CANCEL goes with the first 1xx.
    Deferred,
    /// Already cancelled.
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    No,
    Deferred,
    Sent,
}

#[derive(Debug)]
pub(super) struct PendingInvite {
    tx: TxId,
    provisional: bool,
    cancel: Cancel,
    deadline: Option<Instant>,
    /// Further targets of the Request-URI (DNS SRV), and the INVITE to send them.
    failover: Option<Box<(Targets, Bytes)>>,
}

impl PendingInvite {
    pub fn new(tx: TxId, deadline: Option<Instant>) -> PendingInvite {
        PendingInvite {
            tx,
            provisional: false,
            cancel: Cancel::No,
            deadline,
            failover: None,
        }
    }

    /// Keep the targets after the one this INVITE went to, and the INVITE as
    /// sent, for a failover; nothing is kept when none is left.
    pub fn with_failover(mut self, targets: Targets, wire: Option<Bytes>) -> PendingInvite {
        if let Some(wire) = wire.filter(|_| targets.remaining() > 0) {
            self.failover = Some(Box::new((targets, wire)));
        }
        self
    }

    /// The INVITE failed with `status` (a response, or 408/503 for none): what
    /// failing over takes, when it should and a target is left.
    pub fn take_failover(&mut self, status: u16) -> Option<Failover> {
        if !fails_over(status, self.provisional, self.cancelled()) {
            return None;
        }
        let (targets, wire) = *self.failover.take()?;
        Some(Failover {
            targets,
            wire,
            deadline: self.deadline,
            status,
            no_answer: false,
        })
    }

    pub fn tx(&self) -> TxId {
        self.tx
    }

    /// A 1xx (other than 100) arrived. Returns true when a deferred CANCEL must
    /// go now (and the 1xx goes no further).
    pub fn on_provisional(&mut self) -> bool {
        self.provisional = true;
        if self.cancel == Cancel::Deferred {
            self.cancel = Cancel::Sent;
            return true;
        }
        false
    }

    /// Give up on the INVITE. The deadline stops either way.
    pub fn cancel(&mut self) -> CancelStep {
        self.deadline = None;
        match self.cancel {
            Cancel::Sent | Cancel::Deferred => CancelStep::Nothing,
            Cancel::No if self.provisional => {
                self.cancel = Cancel::Sent;
                CancelStep::Now
            }
            Cancel::No => {
                self.cancel = Cancel::Deferred;
                CancelStep::Deferred
            }
        }
    }

    /// A CANCEL was sent, or is waiting for the first 1xx.
    pub fn cancelled(&self) -> bool {
        self.cancel != Cancel::No
    }

    /// The INVITE no longer has to be answered in time (the call is ending).
    pub fn stop_deadline(&mut self) {
        self.deadline = None;
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The deadline passed (checked once: it clears).
    pub fn take_expired(&mut self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tx() -> TxId {
        1
    }

    #[test]
    fn cancel_after_a_provisional_goes_at_once_and_only_once() {
        let mut p = PendingInvite::new(tx(), None);
        assert!(!p.on_provisional());
        assert_eq!(p.cancel(), CancelStep::Now);
        assert!(p.cancelled());
        assert_eq!(p.cancel(), CancelStep::Nothing);
        assert!(!p.on_provisional(), "a later 1xx sends nothing more");
    }

    #[test]
    fn cancel_before_any_provisional_waits_for_the_first() {
        let mut p = PendingInvite::new(tx(), None);
        assert_eq!(p.cancel(), CancelStep::Deferred);
        assert!(p.cancelled());
        assert_eq!(p.cancel(), CancelStep::Nothing);
        assert!(p.on_provisional(), "the first 1xx releases the CANCEL");
        assert!(!p.on_provisional());
    }

    #[test]
    fn fails_over_on_503_and_no_answer_only_before_a_provisional_and_a_cancel() {
        assert!(fails_over(503, false, false));
        assert!(fails_over(408, false, false), "timeout or transport error");
        for status in [480, 486, 500, 502, 504, 600, 603] {
            assert!(!fails_over(status, false, false), "{status}");
        }
        assert!(
            !fails_over(503, true, false),
            "a 1xx came: the server is alive"
        );
        assert!(!fails_over(503, false, true), "we are cancelling");
    }

    #[test]
    fn nothing_to_fail_over_to_keeps_nothing() {
        let mut p = PendingInvite::new(tx(), None);
        assert!(p.take_failover(503).is_none());
    }

    #[test]
    fn a_503_before_any_provisional_hands_over_the_next_targets_once() {
        use crate::sip::transport::{Peer, Target, Transport};
        let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let next = Target {
            transport: Transport::Udp,
            addr: addr(5071),
        };
        let targets = Targets::new(Peer::udp(addr(5070)), vec![next]);
        let deadline = Some(Instant::now());
        let mut p = PendingInvite::new(tx(), deadline)
            .with_failover(targets, Some(Bytes::from_static(b"INVITE")));
        assert!(p.take_failover(486).is_none(), "not a reason to fail over");
        let f = p.take_failover(503).expect("a target is left");
        assert_eq!((f.status, f.deadline), (503, deadline));
        assert_eq!(f.targets.remaining(), 1);
        assert_eq!(&f.wire[..], b"INVITE");
        assert!(p.take_failover(503).is_none(), "handed over once");
    }

    #[test]
    fn no_target_left_keeps_no_copy_of_the_invite() {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 5070));
        let targets = Targets::new(crate::sip::transport::Peer::udp(addr), Vec::new());
        let mut p =
            PendingInvite::new(tx(), None).with_failover(targets, Some(Bytes::from_static(b"I")));
        assert!(p.take_failover(503).is_none());
    }

    #[test]
    fn deadline_fires_once_and_a_cancel_stops_it() {
        let now = Instant::now();
        let mut p = PendingInvite::new(tx(), Some(now + Duration::from_secs(5)));
        assert!(!p.take_expired(now));
        assert!(p.take_expired(now + Duration::from_secs(5)));
        assert!(!p.take_expired(now + Duration::from_secs(6)));
        let mut p = PendingInvite::new(tx(), Some(now + Duration::from_secs(5)));
        p.cancel();
        assert_eq!(p.deadline(), None);
        assert!(!p.take_expired(now + Duration::from_secs(9)));
    }
}
