//! A call: one tokio task owning the caller leg and the AI leg, their dialogs and
//! transactions. Everything for the call's Call-IDs arrives in its inbox, in order, so
//! a 180 is never relayed after the 200 it preceded.

mod contact;
mod failover;
mod invite;
mod leg;
mod lifecycle;
mod media;
mod outbound;
mod pending;
mod relay;
mod requests;
mod setup;
mod store_io;
mod ticket_note;
mod transfer;
mod transfer_target;

pub(super) use media::MediaShared;

use super::inbox::Inbox;
use super::policy::{AiOutcome, ALLOW};
use super::transfer::X_OPENCX_SESSION_ID;
use super::Shared;
use crate::metrics::Metrics;
use crate::session::SessionId;
use crate::sip::message::{Message, Method};
use crate::sip::transaction::{TransactionSet, TxEvent, TxId};
use crate::sip::transport::{Peer, Targets, TransportLayer};
use bytes::Bytes;
use contact::contact_for;
use leg::{Leg, Retransmit};
use pending::PendingInvite;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    TargetResolved {
        generation: u32,
        targets: Option<Box<Targets>>,
    },
    /// The next target of an INVITE that failed (RFC 3263 4.3) is open, or none
    /// is left.
    FailedOver(FailedOver),
}

/// Where an INVITE's failover got to (see `CallEvent::FailedOver`).
#[derive(Debug)]
pub struct FailedOver(Box<(Side, Option<Peer>, pending::Failover)>);

/// The legs, by their role: the index of each in `Call::legs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Caller = 0,
    Ai = 1,
    /// The leg a REFER placed (present from the transfer INVITE on).
    Target = 2,
}

const ALL_SIDES: [Side; 3] = [Side::Caller, Side::Ai, Side::Target];

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

/// A call: the coordinator of its legs, the pending INVITE to the AI agent, the
/// relayed requests, the media and a transfer. Handlers only queue what goes
/// out (transaction events, transfer actions); `flush` sends it, once per
/// event the task takes in.
pub(super) struct Call {
    sh: Arc<Shared>,
    transport: Arc<TransportLayer>,
    /// The call's own inbox, for results of work done on other tasks.
    inbox: crate::b2bua::inbox::InboxSender<CallEvent>,
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
    /// call keeps no message it will not send again). Boxed: a `Message` is 320
    /// bytes, which every held call would carry as `None`.
    caller_invite: Option<Box<Message>>,
    caller_peer: Peer,
    caller_invite_tx: TxId,
    /// Our INVITE to the AI agent while it awaits its final answer.
    ai_invite: Option<PendingInvite>,
    /// The AI agent answered (the call was connected at some point).
    answered: bool,
    relays: Vec<Relay>,
    /// The task exits by then whatever is left (a bound on lingering).
    hard_deadline: Option<Instant>,
    started: Instant,
    /// The TCP connections the legs use stay open while the call lives.
    _holds: Vec<crate::sip::transport::ConnHold>,
    /// The call's media relay; `None` in passthrough mode.
    media: Option<Box<media::CallMedia>>,
    /// Why we ended the call, for the Reason header of our BYEs (RFC 3326).
    end_reason: Option<&'static str>,
    /// The AI agent's transfer, from its REFER until it is over.
    transfer: Option<Box<transfer::TransferRun>>,
    /// What the lifecycle events need to know.
    lifecycle: lifecycle::Lifecycle,
    /// The call's own facts for its events: parties, times, transfer attempts.
    record: crate::events::CallRecord,
    /// Session-store work the handlers asked for, done by `run` before the next message.
    store_io: store_io::StoreIo,
    /// An outbound call (the AI agent on the caller side, the callee on the far side).
    outbound: Option<Box<outbound::OutboundLeg>>,
}

/// What a call needs to start: boxed, so the spawned task's future stays small.
pub(super) struct CallStart {
    pub sh: Arc<Shared>,
    pub transport: Arc<TransportLayer>,
    pub inbox: crate::b2bua::inbox::InboxSender<CallEvent>,
    pub invite: Message,
    pub from: Peer,
    pub route: crate::config::Route,
    pub called: String,
    /// The INVITE's X- headers and X-OPENCX-SESSION-CUSTOM-DATA values.
    pub custom_data: std::collections::BTreeMap<String, String>,
    /// Where the caller's (trunk's) media may come from besides its SDP
    /// address; when not empty, an offer outside them gets 488. Empty: the
    /// SDP address only.
    pub media_cidrs: Arc<[ipnet::IpNet]>,
    /// SRTP on the caller leg: its trunk's `srtp`, else the route's `caller_srtp`.
    pub caller_srtp: crate::config::srtp::SrtpPolicy,
    /// An AI agent's outbound call: the far leg goes to the callee via the carrier.
    pub outbound: Option<Box<crate::b2bua::outbound::OutboundCall>>,
}

/// `trunk_slot`: the call's place in its trunk's `max_calls`, held by the task and
/// given back when it ends, whichever way.
pub(super) fn spawn(
    start: Box<CallStart>,
    rx: Inbox<CallEvent>,
    trunk_slot: Option<crate::b2bua::trunk::TrunkSlot>,
) {
    let session_id = SessionId::new_random();
    let span = tracing::info_span!("call", session_id = %session_id.as_str());
    tokio::spawn(
        async move {
            let _trunk_slot = trunk_slot;
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
    async fn run(mut self: Box<Self>, mut rx: Inbox<CallEvent>) {
        let sleep =
            tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::pin!(sleep);
        self.settle(Instant::now()).await;
        loop {
            if self.finished() {
                break;
            }
            let deadline = self.next_deadline();
            if let Some(d) = deadline {
                sleep.as_mut().reset(tokio::time::Instant::from_std(d));
            }
            let now = tokio::select! {
                ev = rx.recv() => {
                    let now = Instant::now();
                    match ev {
                        Some(CallEvent::Sip(b)) => {
                            let (msg, peer) = *b;
                            if msg.is_request() {
                                self.on_request(msg, peer, now);
                            } else {
                                self.on_response(msg, now);
                            }
                        }
                        Some(CallEvent::Shutdown) => self.shutdown(now),
                        Some(CallEvent::TargetResolved { generation, targets }) => {
                            self.on_target_resolved(generation, targets, now)
                        }
                        Some(CallEvent::FailedOver(FailedOver(b))) => {
                            let (side, peer, failover) = *b;
                            self.on_failed_over(side, peer, failover, now)
                        }
                        None => break,
                    }
                    now
                }
                ev = next_media_event(&mut self.media) => {
                    let now = Instant::now();
                    self.on_media_event(ev, now);
                    now
                }
                _ = &mut sleep, if deadline.is_some() => {
                    let now = Instant::now();
                    self.on_tick(now);
                    now
                }
            };
            self.settle(now).await;
        }
        let mut ids: Vec<String> = self.legs.iter().map(|l| l.call_id().to_owned()).collect();
        ids.append(&mut self.old_call_ids);
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        for l in self.txs.take_lingering(Instant::now()) {
            self.sh.absorber.insert(l);
        }
        if self.store_io.pending() {
            self.drive_store().await;
        }
        // However the call went, its live record does not outlive it.
        self.close_live();
        let ended = self
            .sh
            .sessions
            .mark_ended(&self.record.session_id, std::time::SystemTime::now());
        if let Err(e) = ended.await {
            static LOG: crate::log_limit::LogLimit = crate::log_limit::per_call();
            if let Some(left_out) = LOG.admit() {
                tracing::warn!(error = %e, left_out, "session not marked ended in the store");
            }
        }
        self.sh.call_finished(&ids);
        if let Some(m) = self.media.take() {
            // Boxed: `finish` takes the relay's state by value (5.4 KB of future);
            // inline, every call task would carry it from its first poll.
            let (stats, released) = Box::pin(m.finish()).await;
            for leg in &released {
                media::record_released(&self.sh.metrics, leg);
            }
            if let Some(stats) = stats {
                media::record_stats(&self.sh.metrics, &stats);
            }
            Metrics::dec(&self.sh.metrics.media_relays_active);
        }
        tracing::info!(
            duration_ms = self.started.elapsed().as_millis() as u64,
            "call finished"
        );
    }

    /// Everything an event caused: the session-store work its handlers asked
    /// for (a read feeds its handler, which may queue more), then what goes
    /// out, sent once.
    async fn settle(&mut self, now: Instant) {
        loop {
            if self.store_io.pending() {
                self.drive_store().await;
            }
            self.flush(now);
            if !self.store_io.pending() {
                break;
            }
        }
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
    }

    /// The task may exit once the call is over and nothing but absorbing
    /// retransmissions is left (the absorber takes that over).
    fn finished(&self) -> bool {
        self.phase == Phase::Ended
            && ((!self.txs.has_pending_work() && !self.legs.iter().any(Leg::retransmitting))
                || self.hard_deadline.is_some_and(|d| Instant::now() >= d))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let legs = self.legs.iter().filter_map(Leg::next_retransmit);
        [
            self.txs.next_deadline(),
            self.ai_invite.as_ref().and_then(PendingInvite::deadline),
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
        let i = self.legs.iter().position(|l| l.call_id() == cid)?;
        ALL_SIDES.get(i).copied()
    }

    fn leg(&mut self, side: Side) -> &mut Leg {
        &mut self.legs[side as usize]
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

    /// Run what the transaction layer asked for: sends, and events for us. The
    /// one place queued work goes out; handlers never call it, so nothing here
    /// runs re-entered.
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
                        for leg in &mut self.legs {
                            leg.on_invite_terminated(id);
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
    }

    /// A final response to the caller's INVITE, built by us (not relayed).
    fn caller_final(&mut self, status: u16, now: Instant) {
        if let Some(invite) = self.caller_invite.take() {
            self.respond(self.caller_invite_tx, &invite, status, now);
        }
        // A non-2xx final answer means the caller leg never became a dialog: nothing
        // to BYE there.
        self.leg(Side::Caller).end();
    }

    /// A response to `req` carrying our tag for the leg it came on.
    fn response_for(&self, req: &Message, status: u16) -> Message {
        let side = self.side_of(req).unwrap_or(Side::Caller);
        let tag = if status > 100 {
            Some(self.legs[side as usize].local_tag())
        } else {
            None
        };
        let mut resp = Message::response_to(req, status, tag);
        resp.push("Server", self.sh.settings.user_agent.clone());
        if status > 100
            && self.is_outbound()
            && self.lifecycle.started
            && side == self.roles().1
            && req.method() == Some(&Method::Invite)
        {
            // The AI agent placed the call: this is how it learns the session id
            // (for the session API and the events), as the INVITE tells it inbound;
            // once the session exists (a refusal before that names none). The id
            // is ours (hex).
            resp.push(
                X_OPENCX_SESSION_ID,
                self.record.session_id.as_str().to_owned(),
            );
        }
        resp
    }

    /// Start a client transaction on a leg (it goes out with the next flush).
    fn send_request(&mut self, side: Side, req: Message, now: Instant) -> TxId {
        let peer = self.legs[side as usize].peer();
        self.txs.start_client(req, peer, now, &mut self.events)
    }

    fn new_request(&mut self, side: Side, method: Method) -> Message {
        let ua = self.sh.settings.user_agent.clone();
        self.leg(side).request(method, &ua)
    }

    /// BYE one leg that is up, unless it is already done or being hung up.
    fn bye_leg(&mut self, side: Side, now: Instant) {
        if self.legs.get(side as usize).is_none_or(Leg::is_ending) {
            return;
        }
        let mut bye = self.new_request(side, Method::Bye);
        if let Some(reason) = self.end_reason {
            bye.push("Reason", reason);
        }
        let tx = self.send_request(side, bye, now);
        self.leg(side).hanging_up(tx);
    }

    /// ACK a 2xx to our INVITE `invite_tx` on `side` (end to end, RFC 3261
    /// 13.2.2.4), carrying the body of the originator's ACK when the offer was
    /// in the 2xx.
    fn send_ack(&mut self, side: Side, seq: u32, invite_tx: TxId, body_from: Option<&Message>) {
        let mut ack = self.legs[side as usize].ack(seq, &self.sh.settings.user_agent);
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
        let bytes = ack.to_bytes();
        let leg = self.leg(side);
        leg.remember_ack(seq, invite_tx, bytes.clone());
        let peer = leg.peer();
        self.send_raw(&peer, bytes);
    }

    // ---- responses -------------------------------------------------------------

    fn on_response(&mut self, resp: Message, now: Instant) {
        // No transaction: a 2xx retransmission after ours ended; ACK it again.
        if let Some(resp) = self.txs.on_response(resp, now, &mut self.events) {
            self.reack_2xx(&resp);
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
        match self.legs[side as usize].reack(cseq.seq) {
            Some((peer, bytes)) => {
                self.send_raw(&peer, bytes);
                true
            }
            None => false,
        }
    }

    fn on_client_response(&mut self, tx: TxId, resp: Message, now: Instant) {
        if self.reack_2xx(&resp) {
            return;
        }
        if self.ai_invite.as_ref().is_some_and(|p| p.tx() == tx) {
            return self.on_ai_invite_response(tx, resp, now);
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
            leg.bye_finished(tx);
        }
    }

    /// A client transaction ended with no response: act as if the status came.
    fn on_client_failure(&mut self, tx: TxId, status: u16, now: Instant) {
        if self.ai_invite.as_ref().is_some_and(|p| p.tx() == tx) {
            if self.try_fail_over(Side::Ai, status, true) {
                return; // The next target gets the INVITE.
            }
            self.ai_invite = None;
            self.leg(Side::Ai).end();
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
        if self.phase == Phase::Ended && self.legs.iter().all(Leg::is_ending) {
            return;
        }
        // A transfer still under way is cut short, and reported before the end.
        self.transfer_event(crate::b2bua::transfer::machine::Event::CallEnding, now);
        self.emit_ended();
        self.phase = Phase::Ended;
        if let Some(p) = self.ai_invite.as_mut() {
            p.stop_deadline();
        }
        for side in ALL_SIDES.into_iter().take(self.legs.len()) {
            let leg = self.leg(side);
            // Nothing left to confirm: stop retransmitting an unacknowledged 2xx.
            leg.stop_retransmitting();
            if !leg.is_ending() && !leg.is_up() {
                leg.end();
            }
            self.bye_leg(side, now);
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
        if self.ai_invite.as_mut().is_some_and(|p| p.take_expired(now)) {
            if self.is_outbound() {
                tracing::info!("callee did not answer in time");
            } else {
                tracing::info!("AI agent did not answer in time");
            }
            self.ai_leg_failed(AiOutcome::Timeout, now);
        }
        self.on_transfer_tick(now);
        let t2 = self.sh.settings.t2;
        for side in ALL_SIDES.into_iter().take(self.legs.len()) {
            match self.leg(side).on_retransmit_timer(now, t2) {
                None => {}
                Some(Retransmit::Send(peer, bytes)) => self.send_raw(&peer, bytes),
                Some(Retransmit::GiveUp) => {
                    // RFC 3261 13.3.1.4: no ACK in 64*T1: the dialog is over.
                    tracing::warn!(side = ?side, "no ACK for 2xx, ending the call");
                    self.end_call(now);
                }
            }
        }
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

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Memory per held call is designed, not discovered (BENCHMARKS.md: at most
    /// 6 KB, about 200 bytes to spare): what every held call carries inline may
    /// not grow unnoticed. Cold state goes behind a `Box`.
    #[test]
    fn a_held_call_stays_small() {
        assert!(
            std::mem::size_of::<Call>() <= 768,
            "Call: {}",
            std::mem::size_of::<Call>()
        );
        assert!(
            std::mem::size_of::<Leg>() <= 384,
            "Leg: {}",
            std::mem::size_of::<Leg>()
        );
        // Each inbox slot is one event: the large ones are boxed.
        assert_eq!(std::mem::size_of::<CallEvent>(), 16);
        assert!(std::mem::size_of::<PendingInvite>() <= 32);
    }
}
