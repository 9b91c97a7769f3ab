//! A call: one tokio task owning the caller leg and the AI leg, their dialogs and
//! transactions. Everything for the call's Call-IDs arrives in its inbox, in order, so
//! a 180 is never relayed after the 200 it preceded.

mod lifecycle;
mod media;
mod relay;
mod requests;
mod setup;
mod store_io;
mod transfer;
mod transfer_outcome;

pub(super) use media::MediaShared;

use super::policy::{self, AiOutcome, ALLOW};
use super::Shared;
use crate::metrics::Metrics;
use crate::session::SessionId;
use crate::sip::dialog::Dialog;
use crate::sip::message::{Message, Method, SipUri};
use crate::sip::transaction::{TransactionSet, TxEvent, TxId};
use crate::sip::transport::{Peer, Transport, TransportLayer};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;

/// What a call's inbox carries.
#[derive(Debug)]
pub enum CallEvent {
    /// A message for one of the call's Call-IDs, and where it came from.
    Sip(Box<(Message, Peer)>),
    /// handoff is shutting down: end the call now.
    Shutdown,
    /// Where the transfer target is (a DNS lookup or TCP connect finished);
    /// `generation` names the attempt it was for.
    TargetResolved { generation: u32, peer: Option<Peer> },
}

/// The legs, by their role: the index of each in `Call::legs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Caller = 0,
    Ai = 1,
    /// The leg a REFER placed (present from the transfer INVITE on).
    Target = 2,
}

const ALL_SIDES: [Side; 3] = [Side::Caller, Side::Ai, Side::Target];

/// One leg: its dialog and what it needs to send in it.
pub(super) struct Leg {
    dialog: Dialog,
    via_host: String,
    via_port: u16,
    /// Our ACK for the last 2xx to an INVITE we sent on this leg: sent again if that
    /// 2xx is retransmitted (RFC 3261 13.2.2.4).
    ack: Option<(u32, Bytes)>,
    /// A 2xx to an INVITE we sent here awaits the originator's ACK (late offer: that
    /// ACK carries the SDP answer).
    ack_deferred: Option<u32>,
    /// A 2xx we sent on this leg, retransmitted until ACKed (RFC 3261 13.3.1.4).
    retrans: Option<Retrans2xx>,
    /// A BYE we sent on this leg is in progress.
    bye_tx: Option<TxId>,
    done: bool,
}

impl Leg {
    fn new(dialog: Dialog, via_host: String, via_port: u16) -> Leg {
        Leg {
            dialog,
            via_host,
            via_port,
            ack: None,
            ack_deferred: None,
            retrans: None,
            bye_tx: None,
            done: false,
        }
    }
}

pub(super) struct Retrans2xx {
    seq: u32,
    bytes: Bytes,
    peer: Peer,
    interval: Duration,
    next: Instant,
    give_up: Instant,
}

/// A request received on one leg and sent on as a new request on the other.
pub(super) struct Relay {
    from: Side,
    to: Side,
    server_tx: TxId,
    client_tx: TxId,
    request: Message,
    method: Method,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The caller's INVITE is pending; the AI leg is being set up.
    Inviting,
    /// A final answer went to the caller; the call is up (or ending).
    Answered,
    /// The call is over; waiting for transactions to finish before the task exits.
    Ended,
}

pub(super) struct Call {
    sh: Arc<Shared>,
    transport: Arc<TransportLayer>,
    session_id: SessionId,
    txs: TransactionSet,
    events: Vec<TxEvent>,
    phase: Phase,
    /// Indexed by `Side`: the caller and the AI agent always, the transfer target
    /// once a REFER placed it.
    legs: Vec<Leg>,
    /// The leg bridged to the caller: the AI agent, then the transfer target.
    far: Side,
    /// Call-IDs of earlier transfer legs, still routed here until the call ends.
    old_call_ids: Vec<String>,
    /// The caller's INVITE while it awaits its final response (dropped then: a held
    /// call keeps no message it will not send again).
    caller_invite: Option<Message>,
    caller_peer: Peer,
    caller_invite_tx: TxId,
    /// Our INVITE to the AI agent and its transaction.
    ai_invite_tx: Option<TxId>,
    ai_got_provisional: bool,
    /// The caller cancelled before the AI agent sent anything: CANCEL on its first 1xx.
    cancel_on_provisional: bool,
    ai_cancelled: bool,
    answered: bool,
    relays: Vec<Relay>,
    ring_deadline: Option<Instant>,
    /// The task exits by then whatever is left (a bound on lingering).
    hard_deadline: Option<Instant>,
    started: Instant,
    /// The TCP connections the legs use stay open while the call lives.
    _holds: Vec<crate::sip::transport::ConnHold>,
    /// The call's media relay; `None` in passthrough mode.
    media: Option<Box<media::CallMedia>>,
    /// Why we ended the call, for the Reason header of our BYEs (RFC 3326).
    end_reason: Option<&'static str>,
    /// The AI agent's transfer, from its REFER until the target answers or fails.
    transfer: Option<Box<transfer::Transfer>>,
    /// Headers from the Refer-To URI copied onto the transfer INVITE.
    refer_headers: Vec<(String, String)>,
    /// What the lifecycle events need to know.
    lifecycle: lifecycle::Lifecycle,
    /// The call's own facts for its events: parties, times, transfer attempts.
    record: crate::events::CallRecord,
    /// Session-store work the handlers asked for, done by `run` before the next message.
    store_io: store_io::StoreIo,
}

/// What a call needs to start: boxed, so the spawned task's future stays small.
pub(super) struct CallStart {
    pub sh: Arc<Shared>,
    pub transport: Arc<TransportLayer>,
    pub invite: Message,
    pub from: Peer,
    pub route: crate::config::Route,
    pub called: String,
    /// The INVITE's X- headers and X-OPENCX-SESSION-CUSTOM-DATA values.
    pub custom_data: std::collections::BTreeMap<String, String>,
}

pub(super) fn spawn(start: Box<CallStart>, rx: mpsc::Receiver<CallEvent>) {
    let session_id = SessionId::new_random();
    let span = tracing::info_span!("call", session_id = %session_id.as_str());
    tokio::spawn(
        async move {
            let sh = start.sh.clone();
            let a_call_id = start.invite.call_id().unwrap_or_default().to_owned();
            // Boxed: the set-up future is large and needed once; the task keeps only
            // pointers to the running call.
            // The call comes back boxed: a `Call` bound in this future across the
            // await below would make every task 1.6 KB bigger.
            let Some(call) = Box::pin(setup::start(start, session_id)).await else {
                return sh.call_finished(&[&a_call_id]);
            };
            call.run(rx).await;
        }
        .instrument(span),
    );
}

impl Call {
    async fn run(mut self: Box<Self>, mut rx: mpsc::Receiver<CallEvent>) {
        let sleep =
            tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::pin!(sleep);
        loop {
            // What the last handler (or the set-up) asked of the session store.
            if self.store_io.pending() {
                self.drive_store().await;
            }
            if self.finished() {
                break;
            }
            let deadline = self.next_deadline();
            if let Some(d) = deadline {
                sleep.as_mut().reset(tokio::time::Instant::from_std(d));
            }
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(CallEvent::Sip(b)) => {
                        let (msg, peer) = *b;
                        let now = Instant::now();
                        if msg.is_request() {
                            self.on_request(msg, peer, now);
                        } else {
                            self.on_response(msg, now);
                        }
                    }
                    Some(CallEvent::Shutdown) => self.shutdown(Instant::now()),
                    Some(CallEvent::TargetResolved { generation, peer }) => {
                        self.on_target_resolved(generation, peer, Instant::now())
                    }
                    None => break,
                },
                ev = next_media_event(&mut self.media) => self.on_media_event(ev, Instant::now()),
                _ = &mut sleep, if deadline.is_some() => self.on_tick(Instant::now()),
            }
        }
        let mut ids: Vec<String> = self.legs.iter().map(|l| l.dialog.call_id.clone()).collect();
        ids.append(&mut self.old_call_ids);
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        for l in self.txs.take_lingering(Instant::now()) {
            self.sh.absorber.insert(l);
        }
        if self.store_io.pending() {
            self.drive_store().await;
        }
        let ended = self
            .sh
            .sessions
            .mark_ended(&self.session_id, std::time::SystemTime::now());
        if let Err(e) = ended.await {
            tracing::warn!(error = %e, "session not marked ended in the store");
        }
        self.sh.call_finished(&ids);
        if let Some(m) = self.media.take() {
            if let Some(stats) = m.finish().await {
                media::record_stats(&self.sh.metrics, &stats);
            }
            Metrics::dec(&self.sh.metrics.media_relays_active);
        }
        tracing::info!(
            duration_ms = self.started.elapsed().as_millis() as u64,
            "call finished"
        );
    }

    fn on_media_event(&mut self, ev: crate::media::relay::MediaEvent, now: Instant) {
        use crate::media::relay::MediaEvent;
        match ev {
            MediaEvent::Timeout { side } => {
                Metrics::inc(&self.sh.metrics.media_timeouts_total);
                tracing::info!(?side, "no RTP within the media timeout, ending the call");
                self.note_ended_by(crate::events::EndedBy::System);
                self.end_reason = Some("SIP;cause=408;text=\"media timeout\"");
                self.end_call(now);
            }
            MediaEvent::Stopped { .. } => {
                if self.phase != Phase::Ended {
                    // The relay failed on its own (socket error): no media, no call.
                    tracing::warn!("media relay stopped, ending the call");
                    self.end_reason = Some("SIP;cause=500;text=\"media relay failed\"");
                    self.end_call(now);
                }
            }
        }
    }

    /// The body of `src` (received on `from`) as `out` (going to `to`) must
    /// carry it: SDP rewritten to the relay's ports. Nothing to do in
    /// passthrough mode, where `out` already carries `src`'s body.
    fn apply_media(
        &mut self,
        from: Side,
        to: Side,
        src: &Message,
        out: &mut Message,
    ) -> Result<(), media::MediaError> {
        let Some(m) = self.media.as_mut() else {
            return Ok(());
        };
        if let Some(body) = m.rewrite(from, to, src)? {
            out.set("Content-Type", "application/sdp");
            out.set_body(body);
        }
        Ok(())
    }

    /// A media error answered on a server transaction: the status, and a
    /// Warning (RFC 3261 20.43) or Accept saying why.
    fn respond_media_error(
        &mut self,
        tx: TxId,
        req: &Message,
        e: &media::MediaError,
        now: Instant,
    ) {
        Metrics::inc(&self.sh.metrics.sdp_rejected_total);
        let mut resp = self.response_for(req, e.status());
        media::describe_error(e, &mut resp, &self.sh.settings.user_agent);
        self.txs.respond(tx, &resp, now, &mut self.events);
        self.flush(now);
    }

    /// The task may exit once the call is over and nothing but absorbing
    /// retransmissions is left (the absorber takes that over).
    fn finished(&self) -> bool {
        self.phase == Phase::Ended
            && ((!self.txs.has_pending_work() && self.legs.iter().all(|l| l.retrans.is_none()))
                || self.hard_deadline.is_some_and(|d| Instant::now() >= d))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let legs = self
            .legs
            .iter()
            .filter_map(|l| l.retrans.as_ref().map(|r| r.next));
        [
            self.txs.next_deadline(),
            self.ring_deadline,
            self.hard_deadline,
            self.transfer_deadline(),
        ]
        .into_iter()
        .flatten()
        .chain(legs)
        .min()
    }

    fn side_of(&self, msg: &Message) -> Option<Side> {
        let cid = msg.call_id()?;
        let i = self.legs.iter().position(|l| l.dialog.call_id == cid)?;
        ALL_SIDES.get(i).copied()
    }

    /// The leg a leg is bridged to: the caller and the far leg face each other;
    /// any other leg (the AI agent after a transfer, a target still ringing)
    /// relays to nobody.
    fn peer_of(&self, side: Side) -> Option<Side> {
        if side == Side::Caller {
            Some(self.far)
        } else if side == self.far {
            Some(Side::Caller)
        } else {
            None
        }
    }

    // ---- sending -------------------------------------------------------------

    /// Run what the transaction layer asked for: sends, and events for us.
    fn flush(&mut self, now: Instant) {
        while !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            for ev in events {
                match ev {
                    TxEvent::Send(id, peer, bytes) => {
                        if let Err(e) = self.transport.send(&peer, bytes) {
                            tracing::debug!(error = %e, peer = %peer.addr, "send failed");
                            self.txs.on_transport_error(id, now, &mut self.events);
                        }
                    }
                    TxEvent::Response(id, msg) => self.on_client_response(id, msg, now),
                    TxEvent::Timeout(id) => {
                        Metrics::inc(&self.sh.metrics.transaction_timeouts_total);
                        self.on_client_failure(id, 408, now);
                    }
                    TxEvent::TransportError(id) => self.on_client_failure(id, 503, now),
                    TxEvent::AckOf2xx(_, msg) => {
                        if let Some(side) = self.side_of(&msg) {
                            self.on_ack(side, &msg, now);
                        }
                    }
                    TxEvent::Terminated(id) => {
                        if Some(id) == self.ai_invite_tx {
                            // RFC 3261 13.2.2.4: 64*T1 after the 2xx no retransmission of
                            // it can come; our copy of the ACK can go.
                            self.legs[Side::Ai as usize].ack = None;
                        }
                    }
                }
            }
        }
    }

    /// Send outside any transaction (ACK for 2xx, 2xx retransmissions).
    fn send_raw(&self, peer: &Peer, bytes: Bytes) {
        if let Err(e) = self.transport.send(peer, bytes) {
            tracing::debug!(error = %e, peer = %peer.addr, "send failed");
        }
    }

    /// Answer a server transaction.
    fn respond(&mut self, tx: TxId, req: &Message, status: u16, now: Instant) {
        let mut resp = self.response_for(req, status);
        if status == 405 || status == 501 {
            resp.push("Allow", ALLOW);
        }
        self.txs.respond(tx, &resp, now, &mut self.events);
        self.flush(now);
    }

    /// A final response to the caller's INVITE, built by us (not relayed).
    fn caller_final(&mut self, status: u16, now: Instant) {
        if let Some(invite) = self.caller_invite.take() {
            self.respond(self.caller_invite_tx, &invite, status, now);
        }
        // A non-2xx final answer means the caller leg never became a dialog: nothing
        // to BYE there.
        self.legs[Side::Caller as usize].done = true;
    }

    /// A response to `req` carrying our tag for the leg it came on.
    fn response_for(&self, req: &Message, status: u16) -> Message {
        let side = self.side_of(req).unwrap_or(Side::Caller);
        let tag = if status > 100 {
            Some(self.legs[side as usize].dialog.local_tag.as_str())
        } else {
            None
        };
        let mut resp = Message::response_to(req, status, tag);
        resp.push("Server", self.sh.settings.user_agent.clone());
        resp
    }

    /// Start a client transaction on a leg.
    fn send_request(&mut self, side: Side, req: Message, now: Instant) -> TxId {
        let peer = self.legs[side as usize].dialog.peer;
        let id = self.txs.start_client(req, peer, now, &mut self.events);
        self.flush(now);
        id
    }

    fn new_request(&mut self, side: Side, method: Method) -> Message {
        let ua = self.sh.settings.user_agent.clone();
        let leg = &mut self.legs[side as usize];
        leg.dialog.request(method, &leg.via_host, leg.via_port, &ua)
    }

    /// ACK a 2xx on `side` (end to end, RFC 3261 13.2.2.4), carrying the body of the
    /// originator's ACK when the offer was in the 2xx.
    fn send_ack(&mut self, side: Side, seq: u32, body_from: Option<&Message>, _now: Instant) {
        let ua = self.sh.settings.user_agent.clone();
        let leg = &mut self.legs[side as usize];
        let mut ack = leg.dialog.ack(seq, &leg.via_host, leg.via_port, &ua);
        if let Some(src) = body_from.filter(|m| !m.body().is_empty()) {
            if let Some(ct) = src.header("Content-Type") {
                ack.push("Content-Type", ct.to_owned());
            }
            ack.set_body(src.body().clone());
            // The answer in an ACK cannot be refused (RFC 3261 13.2.2.4 leaves
            // no transaction to answer on): a bad one is logged and goes on as is.
            let from = self.peer_of(side).unwrap_or(Side::Caller);
            if let Err(e) = self.apply_media(from, side, src, &mut ack) {
                tracing::warn!(error = %e, "SDP answer in ACK not rewritten");
            }
        }
        let leg = &mut self.legs[side as usize];
        let bytes = ack.to_bytes();
        leg.ack = Some((seq, bytes.clone()));
        let peer = leg.dialog.peer;
        self.send_raw(&peer, bytes);
    }

    // ---- responses -------------------------------------------------------------

    fn on_response(&mut self, resp: Message, now: Instant) {
        match self.txs.on_response(resp, now, &mut self.events) {
            // No transaction: a 2xx retransmission after ours ended; ACK it again.
            Some(resp) => {
                self.reack_2xx(&resp);
            }
            None => self.flush(now),
        }
    }

    /// RFC 3261 13.2.2.4: a retransmitted 2xx to an INVITE we already ACKed gets the
    /// same ACK again. Returns whether it was one.
    fn reack_2xx(&mut self, resp: &Message) -> bool {
        let Some(side) = self.side_of(resp) else {
            return false;
        };
        let Some(cseq) = resp.cseq() else {
            return false;
        };
        if cseq.method != Method::Invite || !resp.status().is_some_and(|s| (200..300).contains(&s))
        {
            return false;
        }
        let leg = &self.legs[side as usize];
        match &leg.ack {
            Some((seq, bytes)) if *seq == cseq.seq => {
                let (peer, bytes) = (leg.dialog.peer, bytes.clone());
                self.send_raw(&peer, bytes);
                true
            }
            _ => false,
        }
    }

    fn on_client_response(&mut self, tx: TxId, resp: Message, now: Instant) {
        if self.reack_2xx(&resp) {
            return;
        }
        if Some(tx) == self.ai_invite_tx {
            return self.on_ai_invite_response(resp, now);
        }
        if self.on_transfer_client_response(tx, &resp, now) {
            return;
        }
        if let Some(pos) = self.relays.iter().position(|r| r.client_tx == tx) {
            return self.relay_response(pos, resp, now);
        }
        if resp.status().is_some_and(|s| s >= 200) {
            self.bye_finished(tx);
        }
    }

    /// A BYE we sent has its final answer (or none will come): that leg is done.
    fn bye_finished(&mut self, tx: TxId) {
        for leg in &mut self.legs {
            if leg.bye_tx == Some(tx) {
                leg.bye_tx = None;
                leg.done = true;
            }
        }
    }

    /// A client transaction ended with no response: act as if the status came.
    fn on_client_failure(&mut self, tx: TxId, status: u16, now: Instant) {
        if Some(tx) == self.ai_invite_tx {
            let outcome = if status == 408 {
                AiOutcome::Timeout
            } else {
                AiOutcome::Unreachable
            };
            return self.ai_leg_failed(outcome, now);
        }
        if self.on_transfer_client_failure(tx, status, now) {
            return;
        }
        if let Some(pos) = self.relays.iter().position(|r| r.client_tx == tx) {
            return self.relay_failure(pos, status, now);
        }
        self.bye_finished(tx);
    }

    // ---- ending ----------------------------------------------------------------

    /// One side hung up (or we decided to): BYE every leg that is still up.
    fn end_call(&mut self, now: Instant) {
        if self.phase == Phase::Ended && self.legs.iter().all(|l| l.done || l.bye_tx.is_some()) {
            return;
        }
        self.emit_ended();
        self.phase = Phase::Ended;
        self.ring_deadline = None;
        for leg in &mut self.legs {
            // Nothing left to confirm: stop retransmitting an unacknowledged 2xx.
            leg.retrans = None;
        }
        self.cancel_transfer(now);
        for side in ALL_SIDES.into_iter().take(self.legs.len()) {
            let leg = &self.legs[side as usize];
            if leg.done || leg.bye_tx.is_some() {
                continue;
            }
            if !self.leg_confirmed(side) {
                self.legs[side as usize].done = true;
                continue;
            }
            let mut bye = self.new_request(side, Method::Bye);
            if let Some(reason) = self.end_reason {
                bye.push("Reason", reason);
            }
            let tx = self.send_request(side, bye, now);
            self.legs[side as usize].bye_tx = Some(tx);
        }
        self.set_hard_deadline(now);
    }

    fn set_hard_deadline(&mut self, now: Instant) {
        // The call is over: its media ports go back to the pool now, not when
        // the last transaction has run out.
        if let Some(m) = &self.media {
            m.halt();
        }
        // Long enough for every transaction to run its course (64*T1 plus Timer D/K).
        let bound = self.sh.settings.t1 * 64 + Duration::from_secs(33);
        self.hard_deadline.get_or_insert(now + bound);
    }

    /// handoff is shutting down: answer or hang up everything now.
    fn shutdown(&mut self, now: Instant) {
        tracing::info!("ending call for shutdown");
        self.note_shutdown(self.phase == Phase::Inviting);
        if self.phase == Phase::Inviting {
            self.caller_final(503, now);
            Metrics::inc(&self.sh.metrics.calls_failed_total);
            self.cancel_ai_invite(now);
            self.phase = Phase::Ended;
            self.set_hard_deadline(now);
        } else {
            self.end_call(now);
        }
    }

    fn on_tick(&mut self, now: Instant) {
        self.txs.on_tick(now, &mut self.events);
        self.flush(now);
        if self.ring_deadline.is_some_and(|d| now >= d) {
            self.ring_deadline = None;
            tracing::info!("AI agent did not answer in time");
            self.ai_leg_failed(AiOutcome::Timeout, now);
        }
        self.on_transfer_tick(now);
        for side in ALL_SIDES.into_iter().take(self.legs.len()) {
            let t2 = self.sh.settings.t2;
            let Some(r) = self.legs[side as usize].retrans.as_mut() else {
                continue;
            };
            if now < r.next {
                continue;
            }
            if now >= r.give_up {
                // RFC 3261 13.3.1.4: no ACK in 64*T1: the dialog is over.
                tracing::warn!(side = ?side, "no ACK for 2xx, ending the call");
                self.legs[side as usize].retrans = None;
                self.end_call(now);
                continue;
            }
            r.interval = (r.interval * 2).min(t2);
            r.next = now + r.interval;
            let (peer, bytes) = (r.peer, r.bytes.clone());
            self.send_raw(&peer, bytes);
        }
    }

    /// Start retransmitting a 2xx we sent on `side` until its ACK arrives. Reliable
    /// transports deliver it once; there we only keep the give-up timer.
    fn retransmit_2xx(&mut self, side: Side, seq: u32, bytes: Bytes, peer: Peer, now: Instant) {
        let t1 = self.sh.settings.t1;
        let reliable = peer.transport == Transport::Tcp;
        self.legs[side as usize].retrans = Some(Retrans2xx {
            seq,
            bytes,
            peer,
            interval: t1,
            next: if reliable { now + t1 * 64 } else { now + t1 },
            give_up: now + t1 * 64,
        });
    }
}

/// The call's next media event; never, without a relay.
async fn next_media_event(
    media: &mut Option<Box<media::CallMedia>>,
) -> crate::media::relay::MediaEvent {
    match media {
        Some(m) => m.next_event().await,
        None => std::future::pending().await,
    }
}

/// Our Contact for a leg: where the peer sends its in-dialog requests.
fn contact_for(host: &str, port: u16, transport: Transport) -> String {
    let host = crate::sip::message::bracket_v6(host);
    match transport {
        Transport::Udp => format!("<sip:handoff@{host}:{port}>"),
        Transport::Tcp => format!("<sip:handoff@{host}:{port};transport=tcp>"),
    }
}

/// The address a URI names (IP literal, or a DNS lookup of the host).
async fn resolve(uri: &SipUri) -> Option<std::net::SocketAddr> {
    let port = uri.port.unwrap_or(5060);
    if let Ok(ip) = uri.host.parse::<std::net::IpAddr>() {
        return Some(std::net::SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((uri.host.as_str(), port))
        .await
        .ok()?
        .next()
}
