//! A call's first moments: answer the caller's INVITE with 100 Trying, create the
//! session, and place the AI leg; then what the AI agent answers to it.

use super::invite::NewInvite;
use super::leg::Leg;
use super::media::{CallMedia, MediaError};
use super::pending::{CancelStep, PendingInvite};
use super::{contact_for, Call, CallStart, Phase, Side};
use crate::b2bua::policy::{self, AiOutcome, ALLOW};
use crate::b2bua::Shared;
use crate::config::Route;
use crate::e164::normalize_e164;
use crate::events::CallRecord;
use crate::events::{EndedBy, SipOutcome};
use crate::metrics::Metrics;
use crate::session::{Session, SessionId};
use crate::sip::dialog::Dialog;
use crate::sip::message::{generate_tag, Message};
use crate::sip::transaction::{TransactionSet, TxEvent, TxId};
use crate::sip::transport::{response_peer, Peer, TransportLayer};
use std::time::Instant;

pub(super) async fn start(start: Box<CallStart>, session_id: SessionId) -> Option<Box<Call>> {
    let CallStart {
        sh,
        transport,
        inbox,
        invite,
        from,
        route,
        called,
        custom_data,
        media_cidrs,
        caller_srtp,
        outbound,
    } = *start;
    let now = Instant::now();
    let mut txs = TransactionSet::new(sh.timers);
    let mut events = Vec::new();
    let reply_to = response_peer(&invite, from);
    let caller_invite_tx = txs.start_server(&invite, reply_to);
    // RFC 3261 17.2.1: 100 Trying at once, before anything that may take time (the
    // AI agent's DNS lookup and TCP connect below): sent here, not at the first flush.
    let trying = Message::response_to(&invite, 100, None);
    txs.respond(caller_invite_tx, &trying, now, &mut events);
    events.retain(|ev| match ev {
        TxEvent::Send(_, peer, bytes) => {
            if let Err(e) = transport.send(peer, bytes.clone()) {
                tracing::debug!(error = %e, peer = %peer.addr, "100 Trying not sent");
            }
            false
        }
        _ => true,
    });

    let caller = invite.from_header();
    let (caller_display, caller_phone) = match &outbound {
        // Outbound: the session's caller is the customer, the callee (the
        // transfer's From, the webhook's match); the agent's From says nothing.
        Some(o) => {
            tracing::info!(
                callee = %crate::redact::Phone(&o.admitted.callee),
                org_id = %route.org_id,
                agent_id = %o.admitted.agent_id,
                "outbound call placed"
            );
            (None, Some(o.admitted.callee.clone()))
        }
        None => {
            let caller_display = caller.as_ref().and_then(|f| f.display_name.clone());
            let caller_phone = caller
                .as_ref()
                .and_then(|f| f.uri.user.clone())
                .and_then(|u| normalize_e164(&u, sh.settings.default_country.as_deref()));
            tracing::info!(
                caller = %crate::redact::Phone(caller_phone.as_deref().unwrap_or_default()),
                called = %crate::redact::Phone(&called),
                org_id = %route.org_id,
                "call received"
            );
            (caller_display, caller_phone)
        }
    };

    let (c_host, c_port) = local_host_port(&sh, &transport, from);
    let caller_dialog = Dialog::uas(
        &invite,
        generate_tag(),
        contact_for(
            &c_host,
            c_port,
            from.transport,
            invite.request_uri().is_some_and(super::contact::is_sips),
        ),
        from,
    )?;

    // The AI leg: where it goes and over what (outbound: the callee via the carrier).
    let ai_uri = match &outbound {
        Some(o) => crate::sip::message::SipUri::parse(&super::outbound::carrier_request_uri(
            &o.carrier.uri,
            &o.admitted.callee,
        ))?,
        None => route.ai_agent_uri.clone(),
    };
    // Outbound, the carrier trunk's client certificate, never the route's.
    let identity = match &outbound {
        Some(o) => o.carrier.tls_client,
        None => route.tls_client,
    };
    let ai_targets = match transport.peer_for_as(&ai_uri, None, identity).await {
        Ok(targets) => Some(targets),
        Err(e) => {
            tracing::warn!(uri = %ai_uri, error = %e, "cannot reach the AI agent");
            None
        }
    };
    let ai_peer = ai_targets.as_ref().map(|t| t.peer());
    let placeholder = ai_peer.unwrap_or(Peer::udp(std::net::SocketAddr::from(([127, 0, 0, 1], 9))));
    let (a_host, a_port) = local_host_port(&sh, &transport, placeholder);
    // Media: ports for both legs and the caller's offer pointed at them.
    let mut media_error = None;
    let mut call_media = None;
    let mut ai_body = None;
    if let Some(shared) = sh.media.as_ref() {
        match CallMedia::start(shared, media_cidrs, caller_srtp, route.srtp).and_then(|mut m| {
            let body = m.rewrite(Side::Caller, Side::Ai, &invite)?;
            Ok((m, body))
        }) {
            Ok((m, body)) => {
                call_media = Some(Box::new(m));
                ai_body = body;
            }
            Err(e) => media_error = Some(e),
        }
    }
    let new_invite = NewInvite {
        request_uri: ai_uri.as_str(),
        from: String::new(),
        to: format!("<{}>", ai_uri.as_str()),
        transport: placeholder.transport,
        host: &a_host,
        port: a_port,
        max_forwards: 70,
        user_agent: &sh.settings.user_agent,
    };
    let (ai_invite, ai_contact) = match &outbound {
        Some(o) => super::outbound::build_carrier_invite(&invite, o, new_invite, ai_body),
        None => build_ai_invite(
            &invite,
            &route,
            &session_id,
            caller_display.as_deref(),
            caller_phone.as_deref(),
            new_invite,
            ai_body,
        ),
    };
    let ai_dialog = Dialog::uac(&ai_invite, placeholder, ai_contact)?;

    let holds = [Some(from), ai_peer]
        .iter()
        .flatten()
        .filter_map(|p| transport.hold(p))
        .collect();
    let mut session = Session::new(
        session_id.clone(),
        route.org_id.clone(),
        route.agent_id.clone(),
        caller_phone,
        caller_display,
        called,
    );
    session.custom_data = custom_data;
    let mut record = CallRecord::of(&session);
    record.outbound = outbound.is_some();
    let answer_timeout = outbound
        .as_ref()
        .map_or(sh.settings.ai_answer_timeout, |o| o.ring_timeout);
    let mut call = Box::new(Call {
        outbound: outbound.map(|o| Box::new(super::outbound::OutboundLeg::new(*o))),
        record,
        store_io: Default::default(),
        _holds: holds,
        sh: sh.clone(),
        transport,
        inbox,
        txs,
        events,
        phase: Phase::Inviting,
        legs: vec![
            Leg::new(caller_dialog, c_host, c_port),
            Leg::new(ai_dialog, a_host, a_port),
        ],
        far: Side::Ai,
        old_call_ids: Vec::new(),
        transfer: None,
        caller_invite: Some(Box::new(invite)),
        caller_peer: reply_to,
        caller_invite_tx,
        ai_invite: None,
        answered: false,
        relays: Vec::new(),
        hard_deadline: None,
        started: now,
        media: call_media,
        end_reason: None,
        lifecycle: super::lifecycle::Lifecycle {
            agent: route.agent.clone(),
            ..Default::default()
        },
    });
    if call.media.is_some() {
        Metrics::up(&sh.metrics.media_relays_active);
    }
    if let Some(e) = media_error {
        call.refuse_media(&e, now);
        return Some(call);
    }

    // What a crash-time end needs of the session's custom data (events::live).
    let live_custom = if sh.events.tracks_live() {
        session.custom_data.clone()
    } else {
        Default::default()
    };
    if let Err(e) = sh.sessions.create(session).await {
        static LOG: crate::log_limit::LogLimit = crate::log_limit::per_call();
        if let Some(left_out) = LOG.admit() {
            tracing::warn!(error = %e, left_out, "cannot create session, refusing call with 503");
        }
        call.refuse(503, now);
        return Some(call);
    }
    call.emit_started(live_custom);
    if ai_peer.is_none() {
        call.ai_leg_failed(AiOutcome::Unreachable, now);
        return Some(call);
    }
    let ai_call_id = call.legs[Side::Ai as usize].call_id().to_owned();
    sh.register_call_id(ai_call_id, call.inbox.clone());
    // The INVITE's timers and the answer deadline run from now, not from the
    // caller's INVITE: finding the AI agent (DNS, TCP connect) may have taken a while.
    let sent = Instant::now();
    let id = call.send_request(Side::Ai, ai_invite, sent);
    let wire = call.outbound.as_ref().and(call.txs.wire(id));
    call.keep_outbound_wire(wire);
    let mut pending = PendingInvite::new(id, Some(sent + answer_timeout));
    if let Some(targets) = ai_targets.filter(|t| t.remaining() > 0) {
        pending = pending.with_failover(targets, call.txs.wire(id));
    }
    call.ai_invite = Some(pending);
    Some(call)
}

/// Our address for messages to `peer`: the listener of that transport and family, or
/// the configured advertised host.
pub(super) fn local_host_port(
    sh: &Shared,
    transport: &TransportLayer,
    peer: Peer,
) -> (String, u16) {
    let local = transport.local_addr_for(peer.transport, peer.addr);
    let port = local.map_or(5060, |a| a.port());
    let host = match &sh.settings.advertised_host {
        Some(h) => h.clone(),
        None => local.map_or_else(|| "127.0.0.1".to_owned(), |a| a.ip().to_string()),
    };
    (host, port)
}

/// The INVITE to the AI agent: the caller's identity in From, the session headers, the
/// caller's SDP (pointed at the relay, or as is in passthrough mode), our own dialog
/// identity; and our Contact for that dialog.
fn build_ai_invite(
    caller_invite: &Message,
    route: &Route,
    session_id: &SessionId,
    caller_display: Option<&str>,
    caller_phone: Option<&str>,
    mut new: NewInvite<'_>,
    relayed_sdp: Option<bytes::Bytes>,
) -> (Message, String) {
    // RFC 3261 16.6 step 3: one hop fewer than the caller's request allowed.
    new.max_forwards = match caller_invite.max_forwards() {
        Some(Ok(n)) => n.saturating_sub(1).min(70),
        _ => 70,
    };
    new.from = policy::ai_leg_from(
        caller_display,
        caller_phone,
        &crate::sip::message::bracket_v6(new.host),
        &generate_tag(),
    );
    let (mut m, contact) = new.build();
    // Both values were checked: the session id is hex, the agent id a config token.
    m.push("X-OPENCX-SESSION-ID", session_id.as_str().to_owned());
    m.push("X-OPENCX-AGENT-ID", route.agent_id.clone());
    // The trunk's own X- headers go on to the AI agent (X-OPENCX-* were stripped).
    for h in caller_invite.headers() {
        if h.name().as_str().len() > 2 && h.name().as_str()[..2].eq_ignore_ascii_case("X-") {
            let _ = m.push_checked(h.name().as_str(), h.value());
        }
    }
    if let Some(sdp) = relayed_sdp {
        m.push("Content-Type", "application/sdp");
        m.set_body(sdp);
    } else if !caller_invite.body().is_empty() {
        if let Some(ct) = caller_invite.header("Content-Type") {
            m.push("Content-Type", ct.to_owned());
        }
        m.set_body(caller_invite.body().clone());
    }
    (m, contact)
}

impl Call {
    /// The caller's offer cannot be relayed (bad SDP, not SDP, no ports):
    /// refuse the call with the status that says why.
    fn refuse_media(&mut self, e: &MediaError, now: Instant) {
        if matches!(e, MediaError::Ports(_)) {
            Metrics::inc(&self.sh.metrics.media_ports_exhausted_total);
            tracing::warn!(error = %e, "no media ports, refusing call with 503");
        } else {
            tracing::info!(error = %e, status = e.status(), "caller's offer refused");
        }
        if let Some(invite) = self.caller_invite.take() {
            let tx = self.caller_invite_tx;
            self.respond_media_error(tx, &invite, e, now);
        }
        Metrics::inc(&self.sh.metrics.calls_failed_total);
        self.phase = Phase::Ended;
        self.leg(Side::Caller).end();
        self.leg(Side::Ai).end();
        self.set_hard_deadline(now);
    }

    /// Refuse the caller before any AI leg exists.
    fn refuse(&mut self, status: u16, now: Instant) {
        self.caller_final(status, now);
        Metrics::inc(&self.sh.metrics.calls_failed_total);
        self.phase = Phase::Ended;
        self.leg(Side::Caller).end();
        self.leg(Side::Ai).end();
        self.set_hard_deadline(now);
    }

    /// What the AI agent answered to our INVITE `tx`.
    pub(super) fn on_ai_invite_response(&mut self, tx: TxId, resp: Message, now: Instant) {
        let Some(status) = resp.status() else { return };
        match status {
            100 => {}
            101..=199 => {
                self.leg(Side::Ai).on_early_response(&resp);
                if self
                    .ai_invite
                    .as_mut()
                    .is_some_and(PendingInvite::on_provisional)
                {
                    // The caller left before anything came: the deferred CANCEL.
                    return self.send_cancel(Side::Ai, tx, now);
                }
                if let Some(invite) = self
                    .caller_invite
                    .as_ref()
                    .filter(|_| self.phase == Phase::Inviting)
                {
                    let mut out = self.relayed_response(invite, &resp);
                    out.push("Contact", self.legs[0].local_contact().to_owned());
                    if let Err(e) = self.apply_media(Side::Ai, Side::Caller, &resp, &mut out) {
                        // Early media we cannot relay: the ringing still goes on.
                        tracing::warn!(error = %e, "AI agent's early SDP dropped");
                        out.remove("Content-Type");
                        out.set_body(bytes::Bytes::new());
                    }
                    self.txs
                        .respond(self.caller_invite_tx, &out, now, &mut self.events);
                }
            }
            200..=299 => {
                self.ai_invite = None;
                self.on_ai_answered(tx, resp, now)
            }
            _ => {
                if matches!(status, 401 | 407)
                    && self.is_outbound()
                    && self.retry_carrier_with_credentials(&resp, status, now)
                {
                    return; // The INVITE went again with credentials.
                }
                if self.try_fail_over(Side::Ai, status, false) {
                    return; // The next target gets the INVITE.
                }
                let cancelled = self.ai_invite.take().is_some_and(|p| p.cancelled());
                self.leg(Side::Ai).end();
                if !cancelled {
                    self.ai_leg_failed(AiOutcome::Status(status), now);
                }
            }
        }
    }

    fn on_ai_answered(&mut self, tx: TxId, resp: Message, now: Instant) {
        if std::mem::replace(&mut self.answered, true) {
            return; // Another 2xx: re-ACKed by the leg, if it was ours.
        }
        let seq = self.leg(Side::Ai).confirm(&resp);
        let invite = match self.caller_invite.take() {
            Some(invite) if self.phase == Phase::Inviting => invite,
            _ => {
                // The caller gave up meanwhile (CANCEL crossed the 200): ACK, then BYE.
                self.send_ack(Side::Ai, seq, tx, None);
                return self.end_call(now);
            }
        };
        // Late offer (no SDP in the caller's INVITE): the 2xx carries the offer and the
        // caller's ACK the answer, so our ACK waits for it.
        if invite.body().is_empty() && !resp.body().is_empty() {
            self.leg(Side::Ai).defer_ack(seq, tx);
        } else {
            self.send_ack(Side::Ai, seq, tx, None);
        }
        let mut ok = self.relayed_response(&invite, &resp);
        ok.push("Contact", self.legs[0].local_contact().to_owned());
        ok.push("Allow", ALLOW);
        if let Err(e) = self.apply_media(Side::Ai, Side::Caller, &resp, &mut ok) {
            // The AI agent answered with SDP we cannot relay: hang it up and tell
            // the caller the far side failed.
            tracing::warn!(error = %e, "AI agent's SDP refused, ending the call with 502");
            let by = Some(crate::events::EndedBy::System);
            self.emit_failed(crate::events::SipOutcome::Local(502), by);
            Metrics::inc(&self.sh.metrics.sdp_rejected_total);
            if let Some((seq, tx)) = self.leg(Side::Ai).take_deferred_ack() {
                self.send_ack(Side::Ai, seq, tx, None);
            }
            self.respond(self.caller_invite_tx, &invite, 502, now);
            self.leg(Side::Caller).end();
            Metrics::inc(&self.sh.metrics.calls_failed_total);
            return self.end_call(now);
        }
        if let Some(m) = self.media.as_mut() {
            m.answered();
        }
        let bytes = self
            .txs
            .respond(self.caller_invite_tx, &ok, now, &mut self.events);
        let caller_seq = invite.cseq().map_or(1, |c| c.seq);
        let (peer, t1) = (self.caller_peer, self.sh.settings.t1);
        let caller = self.leg(Side::Caller);
        caller.confirm_as_uas();
        caller.retransmit_2xx(caller_seq, bytes, peer, t1, now);
        self.phase = Phase::Answered;
        let at = std::time::SystemTime::now();
        self.record.answered_at = Some(at);
        self.store_io.write_answered(at);
        self.emit_answered();
        Metrics::inc(&self.sh.metrics.calls_answered_total);
        tracing::info!("AI agent answered");
    }

    /// Cancel our INVITE to the AI agent, now if it has sent a provisional response,
    /// else as soon as it does (RFC 3261 9.1).
    pub(super) fn cancel_ai_invite(&mut self, now: Instant) {
        let Some(p) = self.ai_invite.as_mut() else {
            return;
        };
        let tx = p.tx();
        if p.cancel() == CancelStep::Now {
            self.send_cancel(Side::Ai, tx, now);
        }
    }

    /// The AI leg ended without an answer: the caller hears a fitting final response.
    pub(super) fn ai_leg_failed(&mut self, outcome: AiOutcome, now: Instant) {
        if outcome == AiOutcome::Timeout {
            self.cancel_ai_invite(now);
        }
        if self.phase == Phase::Inviting {
            let status = policy::caller_status_for_ai_failure(outcome);
            tracing::info!(?outcome, status, "AI leg failed");
            let (sip, by) = match outcome {
                AiOutcome::Status(s) => (SipOutcome::Status(s), EndedBy::Agent),
                AiOutcome::Timeout => (SipOutcome::Timeout, EndedBy::System),
                AiOutcome::Unreachable => (SipOutcome::TransportFailure, EndedBy::System),
            };
            // An outbound call the callee never answered: nobody hung up (null).
            let by = (!self.is_outbound()).then_some(by);
            self.emit_failed(sip, by);
            self.refuse(status, now);
        }
    }

    /// A response on one leg re-made for the request it answers on the other: same
    /// status and reason, the body and its type.
    pub(super) fn relayed_response(&self, req: &Message, resp: &Message) -> Message {
        let status = resp.status().unwrap_or(500);
        let mut out = self.response_for(req, status);
        if let Some(reason) = resp.reason().filter(|r| !r.is_empty()) {
            out.set_reason(reason.to_owned());
        }
        if !resp.body().is_empty() {
            if let Some(ct) = resp.header("Content-Type") {
                out.push("Content-Type", ct.to_owned());
            }
            out.set_body(resp.body().clone());
        }
        out
    }
}
