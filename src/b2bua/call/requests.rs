//! Requests from either leg: the dispatch by method, CANCEL, BYE and ACK. What
//! crosses to the other leg is in `relay`; REFER in `transfer`.

use super::{Call, Phase, Side};
use crate::b2bua::policy::{self, ALLOW};
use crate::metrics::Metrics;
use crate::sip::message::{Message, Method};
use crate::sip::transaction::TxId;
use crate::sip::transport::{response_peer, Peer};
use std::time::Instant;

impl Call {
    pub(super) fn on_request(&mut self, req: Message, peer: Peer, now: Instant) {
        let Some(side) = self.side_of(&req) else {
            return;
        };
        match self.txs.match_request(&req, now, &mut self.events) {
            crate::sip::transaction::RequestMatch::Absorbed => return,
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
        // In-dialog from here on: our To tag, a rising CSeq (RFC 3261 12.2.2).
        if let Err(status) = self.leg(side).accept_request(&req) {
            return self.respond(tx, &req, status, now);
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
            let (client, to) = (self.relays[pos].client_tx, self.relays[pos].to);
            self.send_cancel(to, client, now);
        }
    }

    fn on_bye(&mut self, side: Side, tx: TxId, bye: &Message, now: Instant) {
        tracing::info!(from = ?side, "BYE received");
        self.respond(tx, bye, 200, now);
        self.leg(side).end();
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

    pub(super) fn on_ack(&mut self, side: Side, ack: &Message, _now: Instant) {
        let Some(seq) = ack.cseq().map(|c| c.seq) else {
            return;
        };
        self.leg(side).on_ack(seq);
        // The originator's ACK releases a deferred ACK on the other leg, with its SDP.
        let Some(other) = self.peer_of(side) else {
            return;
        };
        if let Some((other_seq, tx)) = self.leg(other).take_deferred_ack() {
            self.send_ack(other, other_seq, tx, Some(ack));
        }
    }
}
