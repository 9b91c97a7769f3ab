//! One client INVITE in progress, to the AI agent or to a transfer target: its
//! transaction, whether a provisional response came, a CANCEL deferred until
//! one does (RFC 3261 9.1: a CANCEL before any 1xx may overtake the INVITE and
//! must not be sent), and the deadline by which it must be answered.

use crate::sip::transaction::TxId;
use std::time::Instant;

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
}

impl PendingInvite {
    pub fn new(tx: TxId, deadline: Option<Instant>) -> PendingInvite {
        PendingInvite {
            tx,
            provisional: false,
            cancel: Cancel::No,
            deadline,
        }
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
