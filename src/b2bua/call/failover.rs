//! Failing an INVITE over to the next target of its Request-URI (RFC 3263
//! 4.3): a 503, a timeout or a transport error from the server tried, before
//! any provisional response, sends the same request to the next server DNS
//! gave, for the AI leg and the transfer target alike. Opening the next peer
//! (a TCP connect) is done on a task; its result comes back through the inbox.

use super::pending::{Failover, PendingInvite};
use super::{Call, CallEvent, FailedOver, Phase, Side};
use crate::b2bua::policy::AiOutcome;
use crate::b2bua::transfer::machine::{Event, State};
use crate::sip::transport::Peer;
use std::time::Instant;

impl Call {
    /// The INVITE on `side` failed with `status`: fail over when its pending
    /// INVITE says so. Returns whether it does (the failure waits for it).
    pub(super) fn try_fail_over(&mut self, side: Side, status: u16, no_answer: bool) -> bool {
        let pending = match side {
            Side::Ai => self.ai_invite.as_mut(),
            Side::Target => self.transfer.as_mut().and_then(|t| t.invite.as_mut()),
            Side::Caller => None,
        };
        let Some(mut failover) = pending.and_then(|p| p.take_failover(status)) else {
            return false;
        };
        failover.no_answer = no_answer;
        tracing::info!(
            ?side,
            status,
            left = failover.targets.remaining(),
            "failing over to the next target"
        );
        let (layer, inbox) = (self.transport.clone(), self.inbox.clone());
        tokio::spawn(async move {
            let peer = failover.targets.next(&layer).await;
            let _ = inbox
                .send(CallEvent::FailedOver(FailedOver(Box::new((
                    side, peer, failover,
                )))))
                .await;
        });
        true
    }

    /// The next target is open (`peer`), or none is left: send the INVITE
    /// again there, or let the failure stand.
    pub(super) fn on_failed_over(
        &mut self,
        side: Side,
        peer: Option<Peer>,
        f: Failover,
        now: Instant,
    ) {
        // Only while the INVITE is still wanted (no CANCEL, no end meanwhile).
        let wanted = match side {
            Side::Ai => self.phase == Phase::Inviting && self.ai_invite.is_some(),
            Side::Target => self
                .transfer
                .as_ref()
                .is_some_and(|t| t.machine.state() == State::Inviting && t.invite.is_some()),
            Side::Caller => false,
        };
        if !wanted {
            return;
        }
        let invite = peer.zip(crate::sip::message::parse(f.wire).ok());
        let Some((peer, invite)) = invite else {
            tracing::info!(?side, "no target left to fail over to");
            return self.invite_failed(side, f.status, f.no_answer, now);
        };
        if let Some(hold) = self.transport.hold(&peer) {
            self._holds.push(hold);
        }
        let invite = self.leg(side).retarget(invite, peer);
        let tx = self.send_request(side, invite, now);
        let wire = self.txs.wire(tx);
        let pending = PendingInvite::new(tx, f.deadline).with_failover(f.targets, wire);
        match side {
            Side::Ai => self.ai_invite = Some(pending),
            _ => {
                if let Some(t) = self.transfer.as_mut() {
                    if t.wire.is_some() {
                        t.wire = self.txs.wire(tx);
                    }
                    t.invite = Some(pending);
                }
            }
        }
    }

    /// The INVITE on `side` has failed for good with `status`.
    fn invite_failed(&mut self, side: Side, status: u16, no_answer: bool, now: Instant) {
        self.leg(side).end();
        match side {
            Side::Ai => {
                self.ai_invite = None;
                let outcome = match (no_answer, status) {
                    (true, 408) => AiOutcome::Timeout,
                    (true, _) => AiOutcome::Unreachable,
                    (false, s) => AiOutcome::Status(s),
                };
                self.ai_leg_failed(outcome, now);
            }
            _ => {
                if let Some(t) = self.transfer.as_mut() {
                    t.invite = None;
                }
                self.transfer_event(Event::Rejected { status, reason: "" }, now);
            }
        }
    }
}
