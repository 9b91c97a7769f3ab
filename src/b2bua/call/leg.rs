//! One leg of a call: its dialog, where it stands (early, confirmed, ending,
//! done), and the end-to-end bookkeeping of INVITE 2xx responses that the
//! transaction layer leaves to the dialog's owner (RFC 3261 13.2.2.4, 13.3.1.4).
//! Nothing outside this file reads or writes the dialog's CSeq or tags.

use crate::sip::dialog::{Dialog, InDialogError};
use crate::sip::message::{generate_branch, Message, Method, Via};
use crate::sip::transaction::TxId;
use crate::sip::transport::Peer;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Where a leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LegState {
    /// Its INVITE has no final answer yet (ours, or the caller's).
    Early,
    /// A 2xx made it a dialog: it needs a BYE to end.
    Confirmed,
    /// Our BYE (this transaction) is under way.
    Ending(TxId),
    /// Over: hung up, refused, or never answered.
    Done,
}

/// Our ACK for a 2xx to an INVITE we sent, kept to answer that 2xx's
/// retransmissions until the INVITE's transaction ends.
#[derive(Debug)]
struct SentAck {
    seq: u32,
    invite_tx: TxId,
    bytes: Bytes,
}

/// A 2xx we sent, retransmitted until its ACK arrives.
#[derive(Debug)]
struct Retrans2xx {
    seq: u32,
    bytes: Bytes,
    peer: Peer,
    interval: Duration,
    next: Instant,
    give_up: Instant,
}

/// What a 2xx retransmission timer asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Retransmit {
    Send(Peer, Bytes),
    /// No ACK within 64*T1: the dialog is over (RFC 3261 13.3.1.4).
    GiveUp,
}

#[derive(Debug)]
pub(super) struct Leg {
    dialog: Dialog,
    via_host: String,
    via_port: u16,
    state: LegState,
    ack: Option<SentAck>,
    /// A 2xx to an INVITE we sent here awaits the originator's ACK (late offer:
    /// that ACK carries the SDP answer): its CSeq number and transaction.
    ack_deferred: Option<(u32, TxId)>,
    /// Boxed: needed only from a 2xx to its ACK, 144 bytes otherwise held as `None`.
    retrans: Option<Box<Retrans2xx>>,
}

impl Leg {
    pub fn new(dialog: Dialog, via_host: String, via_port: u16) -> Leg {
        Leg {
            dialog,
            via_host,
            via_port,
            state: LegState::Early,
            ack: None,
            ack_deferred: None,
            retrans: None,
        }
    }

    pub fn call_id(&self) -> &str {
        &self.dialog.call_id
    }

    pub fn take_call_id(self) -> String {
        self.dialog.call_id
    }

    pub fn local_tag(&self) -> &str {
        &self.dialog.local_tag
    }

    pub fn local_contact(&self) -> &str {
        &self.dialog.local_contact
    }

    /// Where this leg's requests go.
    pub fn peer(&self) -> Peer {
        self.dialog.peer
    }

    #[cfg(test)]
    pub fn state(&self) -> LegState {
        self.state
    }

    /// Over, or being hung up: nothing more to start on it.
    pub fn is_ending(&self) -> bool {
        matches!(self.state, LegState::Ending(_) | LegState::Done)
    }

    pub fn is_done(&self) -> bool {
        self.state == LegState::Done
    }

    /// A confirmed dialog no BYE has been sent in.
    pub fn is_up(&self) -> bool {
        self.state == LegState::Confirmed
    }

    /// The leg is over (BYE received, final non-2xx, no answer).
    pub fn end(&mut self) {
        self.state = LegState::Done;
        self.retrans = None;
    }

    /// A 1xx with a To tag to the INVITE we sent: the early dialog's identity.
    pub fn on_early_response(&mut self, resp: &Message) {
        if resp.to_tag().is_some() {
            self.dialog.update_from_response(resp);
        }
    }

    /// The first 2xx to the INVITE we sent (RFC 3261 12.1.2): the dialog is
    /// confirmed. Returns the CSeq number its ACK must carry.
    pub fn confirm(&mut self, resp: &Message) -> u32 {
        self.dialog.update_from_response(resp);
        self.state = LegState::Confirmed;
        resp.cseq().map_or(self.dialog.local_cseq, |c| c.seq)
    }

    /// We answered the INVITE on this leg with a 2xx.
    pub fn confirm_as_uas(&mut self) {
        if self.state == LegState::Early {
            self.state = LegState::Confirmed;
        }
    }

    /// A new request in the dialog (RFC 3261 12.2.1.1).
    pub fn request(&mut self, method: Method, user_agent: &str) -> Message {
        self.dialog
            .request(method, &self.via_host, self.via_port, user_agent)
    }

    /// Our BYE went out in `tx`.
    pub fn hanging_up(&mut self, tx: TxId) {
        self.state = LegState::Ending(tx);
        self.retrans = None;
    }

    /// A client transaction ended (answer or none): if it was our BYE, the leg
    /// is done. Returns whether it was.
    pub fn bye_finished(&mut self, tx: TxId) -> bool {
        if self.state == LegState::Ending(tx) {
            self.state = LegState::Done;
            return true;
        }
        false
    }

    /// RFC 3261 12.2.2: an in-dialog request must carry our tag and an
    /// increasing CSeq; the status to refuse it with otherwise.
    pub fn accept_request(&mut self, req: &Message) -> Result<(), u16> {
        if req.to_tag() != Some(self.dialog.local_tag.as_str()) {
            return Err(481);
        }
        self.dialog
            .accept_remote_cseq(req)
            .map_err(|e: InDialogError| match e {
                InDialogError::CSeqOutOfOrder | InDialogError::NoCSeq => 500,
            })
    }

    /// RFC 3261 12.2: a target refresh (re-INVITE, UPDATE, their 2xx).
    pub fn refresh_target(&mut self, msg: &Message) {
        self.dialog.refresh_target(msg);
    }

    // ---- our ACK for their 2xx ------------------------------------------------

    /// The ACK for a 2xx to our INVITE `seq` (RFC 3261 13.2.2.4).
    pub fn ack(&self, seq: u32, user_agent: &str) -> Message {
        self.dialog
            .ack(seq, &self.via_host, self.via_port, user_agent)
    }

    /// Keep the ACK just sent for the 2xx's retransmissions.
    pub fn remember_ack(&mut self, seq: u32, invite_tx: TxId, bytes: Bytes) {
        self.ack = Some(SentAck {
            seq,
            invite_tx,
            bytes,
        });
    }

    /// A retransmitted 2xx to our INVITE `seq`: the same ACK again, if it is
    /// the one we acknowledged.
    pub fn reack(&self, seq: u32) -> Option<(Peer, Bytes)> {
        let ack = self.ack.as_ref().filter(|a| a.seq == seq)?;
        Some((self.dialog.peer, ack.bytes.clone()))
    }

    /// A client INVITE transaction ended: 64*T1 after its 2xx no retransmission
    /// can come (RFC 3261 13.2.2.4), so its ACK can go.
    pub fn on_invite_terminated(&mut self, tx: TxId) {
        if self.ack.as_ref().is_some_and(|a| a.invite_tx == tx) {
            self.ack = None;
        }
    }

    /// Hold our ACK for a 2xx until the other side's ACK brings the SDP answer.
    pub fn defer_ack(&mut self, seq: u32, invite_tx: TxId) {
        self.ack_deferred = Some((seq, invite_tx));
    }

    pub fn take_deferred_ack(&mut self) -> Option<(u32, TxId)> {
        self.ack_deferred.take()
    }

    /// An INVITE on this leg is not finished end to end: a 2xx awaiting our
    /// ACK or theirs (RFC 3261 14.1: no second INVITE meanwhile).
    pub fn invite_unfinished(&self) -> bool {
        self.ack_deferred.is_some() || self.retrans.is_some()
    }

    // ---- their ACK for our 2xx ------------------------------------------------

    /// Retransmit our 2xx to their INVITE `seq` until it is ACKed, T1 doubling
    /// to T2 (RFC 3261 13.3.1.4); a reliable transport delivers it once, and
    /// then only the give-up timer runs.
    pub fn retransmit_2xx(
        &mut self,
        seq: u32,
        bytes: Bytes,
        peer: Peer,
        t1: Duration,
        now: Instant,
    ) {
        let first = if peer.transport.is_reliable() {
            t1 * 64
        } else {
            t1
        };
        self.retrans = Some(Box::new(Retrans2xx {
            seq,
            bytes,
            peer,
            interval: t1,
            next: now + first,
            give_up: now + t1 * 64,
        }));
    }

    /// Their ACK arrived: stop retransmitting the 2xx it acknowledges.
    pub fn on_ack(&mut self, seq: u32) {
        if self.retrans.as_ref().is_some_and(|r| r.seq == seq) {
            self.retrans = None;
        }
    }

    pub fn stop_retransmitting(&mut self) {
        self.retrans = None;
    }

    pub fn retransmitting(&self) -> bool {
        self.retrans.is_some()
    }

    pub fn next_retransmit(&self) -> Option<Instant> {
        self.retrans.as_ref().map(|r| r.next)
    }

    /// The retransmission timer at `now`: send again, give up, or nothing yet.
    pub fn on_retransmit_timer(&mut self, now: Instant, t2: Duration) -> Option<Retransmit> {
        let r = self.retrans.as_mut()?;
        if now < r.next {
            return None;
        }
        if now >= r.give_up {
            self.retrans = None;
            return Some(Retransmit::GiveUp);
        }
        r.interval = (r.interval * 2).min(t2);
        r.next = now + r.interval;
        Some(Retransmit::Send(r.peer, r.bytes.clone()))
    }

    // ---- our INVITE again -----------------------------------------------------

    /// Our Via for a new transaction on this leg: a fresh branch.
    fn new_via(&self) -> String {
        Via::ours(
            self.dialog.peer.transport.via_name(),
            &self.via_host,
            self.via_port,
            &generate_branch(),
        )
    }

    /// The INVITE we sent, to the next target of its Request-URI (RFC 3263
    /// 4.3): the same request on a new transaction (a new branch); the dialog
    /// now talks to `peer`.
    pub fn retarget(&mut self, mut invite: Message, peer: Peer) -> Message {
        self.dialog.peer = peer;
        invite.set("Via", self.new_via());
        self.state = LegState::Early;
        invite
    }

    /// The INVITE we sent, again with credentials (RFC 3261 22.2): a new branch
    /// and the next CSeq, no remote tag; the leg is early again.
    pub fn retry_invite(
        &mut self,
        mut invite: Message,
        header: &'static str,
        value: String,
    ) -> Message {
        self.dialog.local_cseq = self.dialog.local_cseq.wrapping_add(1);
        invite.set("Via", self.new_via());
        invite.set("CSeq", format!("{} INVITE", self.dialog.local_cseq));
        invite.push(header, value);
        self.dialog.remote_tag = None;
        self.state = LegState::Early;
        invite
    }
}

#[cfg(test)]
#[path = "tests/leg.rs"]
mod tests;
