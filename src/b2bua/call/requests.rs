//! Requests from either leg: the dispatch by method, CANCEL, BYE and ACK. What
//! crosses to the other leg is in `relay`; REFER in `transfer`.

use super::policy::{self, ALLOW};
use super::{Call, Phase, Side};
use crate::metrics::Metrics;
use crate::sip::message::{Message, Method};
use crate::sip::transaction::set::cancel_for;
use crate::sip::transaction::TxId;
use crate::sip::transport::{response_peer, Peer};
use std::time::Instant;

impl Call {
    pub(super) fn on_request(&mut self, req: Message, peer: Peer, now: Instant) {
        let Some(side) = self.side_of(&req) else {
            return;
        };
        match self.txs.match_request(&req, now, &mut self.events) {
            crate::sip::transaction::RequestMatch::Absorbed => return self.flush(now),
            crate::sip::transaction::RequestMatch::New => {}
        }
        let Some(method) = req.method().cloned() else {
            return;
        };
        if method == Method::Ack {
            return self.on_ack(side, &req, now);
        }
        let tx = self.txs.start_server(&req, response_peer(&req, peer));
        if method == Method::Invite {
            // RFC 3261 17.2.1: 100 Trying at once for an INVITE.
            self.respond(tx, &req, 100, now);
        }
        if method == Method::Cancel {
            return self.on_cancel(side, tx, &req, now);
        }
        // In-dialog from here on: the To tag must be ours (RFC 3261 12.2.2).
        let ours = &self.legs[side as usize].dialog.local_tag;
        if req.to_tag() != Some(ours.as_str()) {
            return self.respond(tx, &req, 481, now);
        }
        if self.legs[side as usize]
            .dialog
            .accept_remote_cseq(&req)
            .is_err()
        {
            return self.respond(tx, &req, 500, now);
        }
        if let Some(Ok(0)) = req.max_forwards() {
            if method != Method::Bye {
                return self.respond(tx, &req, 483, now);
            }
        }
        match method {
            Method::Bye => self.on_bye(side, tx, &req, now),
            Method::Options => {
                let mut resp = self.response_for(&req, 200);
                resp.push("Allow", ALLOW);
                resp.push("Supported", policy::SUPPORTED);
                resp.push("Accept", "application/sdp");
                self.txs.respond(tx, &resp, now, &mut self.events);
                self.flush(now);
            }
            Method::Invite | Method::Update | Method::Info => {
                self.relay_request(side, tx, req, now)
            }
            Method::Refer => self.on_refer(side, tx, &req, now),
            m => match policy::method_support(&m) {
                policy::MethodSupport::NotImplemented => self.respond(tx, &req, 501, now),
                _ => self.respond(tx, &req, 405, now),
            },
        }
    }

    fn on_cancel(&mut self, side: Side, tx: TxId, cancel: &Message, now: Instant) {
        let invite_tx = self.txs.server_invite_for_cancel(cancel);
        let Some(invite_tx) = invite_tx else {
            // RFC 3261 9.2: no matching transaction.
            return self.respond(tx, cancel, 481, now);
        };
        self.respond(tx, cancel, 200, now);
        if self.txs.final_status(invite_tx).is_some() {
            return; // Too late: the INVITE has its final answer.
        }
        if side == Side::Caller && invite_tx == self.caller_invite_tx {
            tracing::info!("caller cancelled");
            self.emit_cancelled();
            self.caller_final(487, now);
            self.phase = Phase::Ended;
            self.set_hard_deadline(now);
            Metrics::inc(&self.sh.metrics.calls_failed_total);
            self.cancel_ai_invite(now);
        } else if let Some(pos) = self.relays.iter().position(|r| r.server_tx == invite_tx) {
            // A re-INVITE being cancelled: pass the CANCEL on (RFC 3261 9.1).
            let client = self.relays[pos].client_tx;
            if let Some(inv) = self.txs.request(client).cloned() {
                let req = cancel_for(&inv);
                let to = self.relays[pos].to;
                self.send_request(to, req, now);
            }
        }
    }

    /// Cancel our INVITE to the AI agent, now if it has sent a provisional response,
    /// else as soon as it does (RFC 3261 9.1).
    pub(super) fn cancel_ai_invite(&mut self, now: Instant) {
        self.ring_deadline = None;
        let Some(tx) = self.ai_invite_tx else { return };
        if self.ai_cancelled || self.answered {
            return;
        }
        if !self.ai_got_provisional {
            self.cancel_on_provisional = true;
            return;
        }
        if let Some(inv) = self.txs.request(tx).cloned() {
            self.ai_cancelled = true;
            let c = cancel_for(&inv);
            self.send_request(Side::Ai, c, now);
        }
    }

    fn on_bye(&mut self, side: Side, tx: TxId, bye: &Message, now: Instant) {
        tracing::info!(from = ?side, "BYE received");
        self.respond(tx, bye, 200, now);
        self.legs[side as usize].done = true;
        self.legs[side as usize].retrans = None;
        if side != Side::Caller && (side != self.far || self.transfer_running()) {
            // The AI agent leaving after (or during) its transfer: the caller
            // stays, with the target or with the transfer still under way.
            return self.on_far_leg_gone(side, now);
        }
        self.note_bye_from(side);
        if side == Side::Caller && self.phase == Phase::Inviting {
            // RFC 3261 15: a caller may BYE an early dialog; treat it as a cancel.
            self.emit_cancelled();
            self.caller_final(487, now);
            self.cancel_ai_invite(now);
            Metrics::inc(&self.sh.metrics.calls_failed_total);
        }
        self.end_call(now);
    }

    pub(super) fn on_ack(&mut self, side: Side, ack: &Message, now: Instant) {
        let Some(seq) = ack.cseq().map(|c| c.seq) else {
            return;
        };
        let leg = &mut self.legs[side as usize];
        if leg.retrans.as_ref().is_some_and(|r| r.seq == seq) {
            leg.retrans = None;
        }
        // The originator's ACK releases a deferred ACK on the other leg, with its SDP.
        let Some(other) = self.peer_of(side) else {
            return;
        };
        if let Some(other_seq) = self.legs[other as usize].ack_deferred.take() {
            self.send_ack(other, other_seq, Some(ack), now);
        }
    }
}
