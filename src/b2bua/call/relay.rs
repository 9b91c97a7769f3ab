//! re-INVITE, UPDATE and INFO in a confirmed call: received on one leg, sent on as a
//! new request in the other leg's dialog, and the answer carried back.

use super::{Call, Leg, Phase, Relay, Side};
use crate::metrics::Metrics;
use crate::sip::message::{Message, Method};
use crate::sip::transaction::TxId;
use std::time::Instant;

/// Headers that describe a body or an INFO package and go along with it.
const CARRIED: &[&str] = &[
    "Content-Type",
    "Content-Disposition",
    "Info-Package",
    "Recv-Info",
];

impl Call {
    pub(super) fn relay_request(&mut self, side: Side, tx: TxId, req: Message, now: Instant) {
        let method = req.method().cloned().unwrap_or(Method::Info);
        let Some(other) = self.peer_of(side) else {
            // A leg bridged to nobody (the AI agent once the caller has moved on).
            return self.respond(tx, &req, 481, now);
        };
        if self.phase != Phase::Answered
            || self.legs[other as usize].is_done()
            || self.legs[side as usize].is_done()
        {
            return self.respond(tx, &req, 481, now);
        }
        if method == Method::Invite {
            // RFC 3261 14.1/14.2: one INVITE at a time in a dialog.
            let pending = self.relays.iter().any(|r| r.method == Method::Invite)
                || self.legs.iter().any(Leg::invite_unfinished);
            if pending {
                return self.respond(tx, &req, 491, now);
            }
        }
        if matches!(method, Method::Invite | Method::Update) {
            self.leg(side).refresh_target(&req);
        }
        let mut out = self.new_request(other, method.clone());
        if let Some(Ok(mf)) = req.max_forwards() {
            out.set("Max-Forwards", mf.saturating_sub(1).min(70).to_string());
        }
        for name in CARRIED {
            if let Some(v) = req.header(name) {
                let _ = out.push_checked(name, v);
            }
        }
        out.set_body(req.body().clone());
        if matches!(method, Method::Invite | Method::Update) {
            if let Err(e) = self.apply_media(side, other, &req, &mut out) {
                tracing::info!(error = %e, ?method, "offer refused");
                return self.respond_media_error(tx, &req, &e, now);
            }
        }
        let client_tx = self.send_request(other, out, now);
        self.relays.push(Relay {
            from: side,
            to: other,
            server_tx: tx,
            client_tx,
            request: req,
            method,
        });
    }

    pub(super) fn relay_response(&mut self, pos: usize, resp: Message, now: Instant) {
        let Some(status) = resp.status() else { return };
        if status == 100 {
            return;
        }
        let (from, to, server_tx, client_tx) = {
            let r = &self.relays[pos];
            (r.from, r.to, r.server_tx, r.client_tx)
        };
        let request = self.relays[pos].request.clone();
        let method = self.relays[pos].method.clone();
        let success = (200..300).contains(&status);
        if success && matches!(method, Method::Invite | Method::Update) {
            self.leg(to).refresh_target(&resp);
        }
        let mut out = self.relayed_response(&request, &resp);
        if matches!(method, Method::Invite | Method::Update) {
            if let Err(e) = self.apply_media(to, from, &resp, &mut out) {
                // Nothing to refuse it on: the far side has answered. The
                // unusable SDP is left out and the call goes on.
                tracing::warn!(error = %e, status, "SDP in response not relayed");
                Metrics::inc(&self.sh.metrics.sdp_rejected_total);
                out.remove("Content-Type");
                out.set_body(bytes::Bytes::new());
            }
        }
        if success && matches!(method, Method::Invite | Method::Update) {
            out.push(
                "Contact",
                self.legs[from as usize].local_contact().to_owned(),
            );
        }
        let bytes = self.txs.respond(server_tx, &out, now, &mut self.events);
        if status < 200 {
            return;
        }
        self.relays.remove(pos);
        if success && method == Method::Invite {
            // The 2xx answers the request we sent: its CSeq is that request's.
            let seq = resp.cseq().map_or(0, |c| c.seq);
            if request.body().is_empty() && !resp.body().is_empty() {
                self.leg(to).defer_ack(seq, client_tx);
            } else {
                self.send_ack(to, seq, client_tx, None);
            }
            let their_seq = request.cseq().map_or(0, |c| c.seq);
            let peer = self
                .txs
                .peer(server_tx)
                .unwrap_or(self.legs[from as usize].peer());
            let t1 = self.sh.settings.t1;
            self.leg(from)
                .retransmit_2xx(their_seq, bytes, peer, t1, now);
        }
        if status == 481 || status == 408 {
            // RFC 3261 12.2.1.2: the other dialog is gone; end the call.
            self.end_call(now);
        }
    }

    pub(super) fn relay_failure(&mut self, pos: usize, status: u16, now: Instant) {
        let r = self.relays.remove(pos);
        let out = self.response_for(&r.request, status);
        self.txs.respond(r.server_tx, &out, now, &mut self.events);
        if status == 408 {
            self.end_call(now);
        }
    }
}
