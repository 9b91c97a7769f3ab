//! The call's side of a transfer (RFC 3515): the AI agent's REFER, the INVITE to the
//! target, the NOTIFYs back to the AI agent, the media switch and the release of the
//! AI leg. What goes into the INVITE and who may be dialled is decided by the pure
//! functions of `b2bua::transfer`; this is the state machine around them.

use super::setup::local_host_port;
use super::{contact_for, resolve, Call, CallEvent, Leg, Phase, Side};
use crate::b2bua::policy::ALLOW;
use crate::b2bua::transfer::{
    digest, notify, parse_refer_to, transfer_from, transfer_headers, Destination, DestinationKind,
};
use crate::metrics::Metrics;
use crate::session::TransferRecord;
use crate::sip::dialog::Dialog;
use crate::sip::message::{generate_branch, generate_tag, Message, Method, NameAddr, SipUri, Via};
use crate::sip::transaction::set::cancel_for;
use crate::sip::transaction::TxId;
use crate::sip::transport::{Peer, Transport};
use rand::Rng;
use std::time::{Instant, SystemTime};

/// How long the implicit subscription of a REFER lasts (RFC 3515 2.4.6): the
/// final NOTIFY ends it long before.
const SUBSCRIPTION_SECS: u32 = 120;

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The target's address is being looked up (DNS, TCP connect).
    Resolving,
    /// Our INVITE to the target is pending.
    Inviting,
    /// The target answered; the caller is with it.
    Answered,
    /// The transfer failed or was abandoned and the AI agent has been told (or
    /// is gone); our INVITE may still await its final answer after a CANCEL.
    Abandoned,
}

/// One transfer in progress.
pub(super) struct Transfer {
    state: State,
    /// CSeq number of the REFER: the `id` of the `Event: refer` of its NOTIFYs.
    refer_cseq: u32,
    /// NOTIFYs are sent (no `Refer-Sub: false`, and the AI leg is still there).
    notify: bool,
    dest: Destination,
    /// Bumped on every new attempt, so a late lookup result for an old one is ignored.
    generation: u32,
    invite_tx: Option<TxId>,
    /// Our last INVITE to the target, for a retry with credentials (its
    /// transaction may be gone by the time the 401 is handled: TCP has no Timer D).
    invite: Option<Message>,
    got_provisional: bool,
    /// CANCEL as soon as the target sends a provisional response.
    cancel_on_provisional: bool,
    cancelled: bool,
    redirects: u32,
    auth_tried: bool,
    ring_deadline: Option<Instant>,
    /// The final NOTIFY (after a 2xx) and when the AI leg goes regardless.
    final_notify_tx: Option<TxId>,
    release_ai_at: Option<Instant>,
    refer_at: Instant,
    /// The index of this attempt in the session's transfer records.
    record: usize,
}

impl Call {
    /// A REFER on one of the call's legs.
    pub(super) fn on_refer(&mut self, side: Side, tx: TxId, req: &Message, now: Instant) {
        Metrics::inc(&self.sh.metrics.refers_received_total);
        if side != Side::Ai || self.far != Side::Ai || self.phase != Phase::Answered {
            // Only the AI agent hands calls off, once, in a confirmed call.
            tracing::info!(from = ?side, "REFER refused: not from the AI agent of a live call");
            return self.refuse_refer(tx, req, 403, "Transfer not allowed on this leg", now);
        }
        if self.transfer.is_some() {
            return self.refuse_refer(tx, req, 491, "", now);
        }
        if self.media.is_none() {
            // Without the relay the caller's media cannot be moved without a
            // re-INVITE to the caller, which handoff does not do.
            return self.refuse_refer(tx, req, 501, "Transfer needs media relay mode", now);
        }
        let values: Vec<&str> = req.header_values("Refer-To").collect();
        let target = match parse_refer_to(&values) {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(error = %e, "REFER refused: bad Refer-To");
                return self.refuse_refer(tx, req, 400, e.reason(), now);
            }
        };
        let sh = self.sh.clone();
        let policy = &sh.transfer;
        let dest = match policy.allow.check(&target) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(target = %target.uri, error = %e, "REFER refused: target not allowed");
                return self.refuse_refer(tx, req, 403, "Transfer target not allowed", now);
            }
        };
        let notify = !notify::refer_sub_disabled(req.header("Refer-Sub"));
        let mut accepted = self.response_for(req, 202);
        if !notify {
            // RFC 4488 4: we agree to do without the subscription.
            accepted.push("Refer-Sub", "false");
        }
        self.txs.respond(tx, &accepted, now, &mut self.events);
        self.flush(now);
        Metrics::inc(&self.sh.metrics.transfers_total);
        tracing::info!(target = %dest.uri, destination = dest.name.as_deref().unwrap_or(""), "transfer accepted");

        let record = self.record_transfer(TransferRecord {
            target: dest.uri.as_str().to_owned(),
            destination: dest.name.clone(),
            status: None,
            requested_at: SystemTime::now(),
            invite_sent_at: None,
            completed_at: None,
        });
        let copied = policy.copy.copy(&target);
        for o in &copied.omitted {
            tracing::warn!(header = %o.name, problem = ?o.problem, "Refer-To header not copied");
        }
        self.refer_headers = copied.headers;
        self.transfer = Some(Box::new(Transfer {
            state: State::Resolving,
            refer_cseq: req.cseq().map_or(0, |c| c.seq),
            notify,
            dest,
            generation: 0,
            invite_tx: None,
            invite: None,
            got_provisional: false,
            cancel_on_provisional: false,
            cancelled: false,
            redirects: 0,
            auth_tried: false,
            ring_deadline: None,
            final_notify_tx: None,
            release_ai_at: None,
            refer_at: now,
            record,
        }));
        // The INVITE first, then the first NOTIFY (RFC 3515 2.4.4): building and
        // sending the NOTIFY before it added to the REFER-to-INVITE time. The
        // target's answer is handled by this task only after both are out, so the
        // AI agent still hears 100 Trying first. A transfer that failed at once
        // has sent its final NOTIFY already, and then no 100 follows.
        self.dial_target(now);
        self.send_notify(100, "", false, now);
    }

    fn refuse_refer(&mut self, tx: TxId, req: &Message, status: u16, reason: &str, now: Instant) {
        Metrics::inc(&self.sh.metrics.refers_refused_total);
        let mut resp = self.response_for(req, status);
        if !reason.is_empty() {
            resp.set_reason(reason.to_owned());
        }
        self.txs.respond(tx, &resp, now, &mut self.events);
        self.flush(now);
    }

    /// Find where the transfer's target is, then invite it. An IP literal over
    /// UDP goes at once; a name (DNS) or TCP (connect) is done on a task whose
    /// result comes back through the call's inbox.
    fn dial_target(&mut self, now: Instant) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        t.generation = t.generation.wrapping_add(1);
        t.state = State::Resolving;
        let generation = t.generation;
        let dest = t.dest.clone();
        let Some((uri, transport)) = self.request_target(&dest) else {
            tracing::warn!("tel: transfer target but no [transfer] pstn_gateway");
            return self.transfer_failed(503, "No PSTN gateway", now);
        };
        if transport == Transport::Udp {
            if let Ok(ip) = uri
                .host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
            {
                let peer = Peer::udp(std::net::SocketAddr::new(ip, uri.port.unwrap_or(5060)));
                return self.send_transfer_invite(peer, now);
            }
        }
        let Some(inbox) = self.inbox() else { return };
        let layer = self.transport.clone();
        tokio::spawn(async move {
            let peer = match resolve(&uri).await {
                None => None,
                Some(addr) if transport == Transport::Udp => Some(Peer::udp(addr)),
                Some(addr) => layer.connect_tcp(addr).await.ok(),
            };
            let _ = inbox
                .send(CallEvent::TargetResolved { generation, peer })
                .await;
        });
    }

    /// The Request-URI and transport of the INVITE for a destination: its own
    /// URI, or for a telephone number the PSTN gateway with that number.
    fn request_target(&self, dest: &Destination) -> Option<(SipUri, Transport)> {
        let uri = if dest.kind == DestinationKind::Tel {
            let gw = self.sh.transfer.pstn_gateway.as_ref()?;
            let number = dest.uri.user.clone().unwrap_or_default();
            let text = format!(
                "sip:{number}@{}{};user=phone",
                gw.host,
                gw.port.map(|p| format!(":{p}")).unwrap_or_default()
            );
            let mut uri = SipUri::parse(&text)?;
            if let Some(t) = gw.transport() {
                uri = SipUri::parse(&format!("{text};transport={t}"))?;
            }
            uri
        } else {
            dest.uri.clone()
        };
        let transport = dest
            .transport
            .or_else(|| uri.transport().and_then(|t| Transport::from_name(&t)))
            .unwrap_or(Transport::Udp);
        Some((uri, transport))
    }

    /// The target's address is known (or could not be found).
    pub(super) fn on_target_resolved(&mut self, generation: u32, peer: Option<Peer>, now: Instant) {
        let current = self
            .transfer
            .as_ref()
            .is_some_and(|t| t.generation == generation && t.state == State::Resolving);
        if !current {
            return;
        }
        match peer {
            Some(peer) => self.send_transfer_invite(peer, now),
            None => {
                tracing::warn!("transfer target unreachable (DNS or connection)");
                self.transfer_failed(503, "Service Unavailable", now);
            }
        }
    }

    /// Build the target leg and its INVITE, and send it.
    fn send_transfer_invite(&mut self, peer: Peer, now: Instant) {
        let Some(t) = self.transfer.as_ref() else {
            return;
        };
        let dest = t.dest.clone();
        let Some((uri, _)) = self.request_target(&dest) else {
            return self.transfer_failed(503, "No PSTN gateway", now);
        };
        // The session as it is now: a ticket stamped a moment ago goes out.
        let Some(session) = self.sh.sessions.get(&self.session_id) else {
            return self.transfer_failed(500, "Session gone", now);
        };
        let sh = self.sh.clone();
        let policy = &sh.transfer;
        let sdp = match self.media.as_mut().map(|m| {
            m.offer_for_new_leg(
                &sh.media.as_ref().expect("media mode has a pool").pool,
                Side::Target,
                &dest.codecs,
            )
        }) {
            Some(Ok(sdp)) => sdp,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "no SDP offer for the transfer target");
                return self.transfer_failed(e.status(), "Cannot offer media", now);
            }
            None => return self.transfer_failed(501, "Not Implemented", now),
        };

        let (host, port) = local_host_port(&self.sh, &self.transport, peer);
        let contact = contact_for(&host, port, peer.transport);
        let mut m = Message::request(Method::Invite, uri.as_str());
        m.push(
            "Via",
            Via::ours(peer.transport.via_name(), &host, port, &generate_branch()),
        );
        m.push("Max-Forwards", "70");
        m.push(
            "From",
            transfer_from(&session, &host, &generate_tag(), &policy.fallback_from),
        );
        m.push("To", NameAddr::format(None, uri.as_str(), None));
        let n: u128 = rand::thread_rng().gen();
        m.push("Call-ID", format!("{n:032x}"));
        m.push("CSeq", "1 INVITE");
        m.push("Contact", contact.clone());
        m.push("Allow", ALLOW);
        m.push("User-Agent", self.sh.settings.user_agent.clone());
        let headers = transfer_headers(&session, &dest, &policy.settings);
        for o in &headers.omitted {
            tracing::warn!(header = %o.name, problem = ?o.problem, "transfer header left out");
        }
        for (name, value) in headers.headers {
            m.push(name, value);
        }
        for (name, value) in &self.refer_headers {
            let _ = m.push_checked(name, value);
        }
        m.push("Content-Type", "application/sdp");
        m.set_body(sdp);

        let Some(dialog) = Dialog::uac(&m, peer, contact) else {
            return self.transfer_failed(500, "Server Internal Error", now);
        };
        let call_id = dialog.call_id.clone();
        let leg = Leg::new(dialog, host, port);
        if self.legs.len() > Side::Target as usize {
            let old = std::mem::replace(&mut self.legs[Side::Target as usize], leg);
            self.old_call_ids.push(old.dialog.call_id);
        } else {
            self.legs.push(leg);
        }
        if let Some(inbox) = self.inbox() {
            self.sh.register_call_id(call_id, inbox);
        }
        if let Some(hold) = self.transport.hold(&peer) {
            self._holds.push(hold);
        }
        let copy = m.clone();
        let id = self.send_request(Side::Target, m, now);
        let ring = self.sh.transfer.settings.ring_timeout();
        let latency = now.elapsed() + now.saturating_duration_since(self.transfer_refer_at());
        if let Some(t) = self.transfer.as_mut() {
            t.invite_tx = Some(id);
            t.invite = Some(copy);
            t.state = State::Inviting;
            t.got_provisional = false;
            t.cancel_on_provisional = false;
            t.cancelled = false;
            t.ring_deadline.get_or_insert(now + ring);
            let record = t.record;
            let first = t.redirects == 0 && !t.auth_tried;
            if first {
                self.sh
                    .metrics
                    .transfer_setup_seconds
                    .observe(latency.as_secs_f64());
            }
            self.update_record(record, |r| {
                r.invite_sent_at.get_or_insert(SystemTime::now());
            });
        }
        tracing::info!(
            latency_us = latency.as_micros() as u64,
            "transfer INVITE sent"
        );
    }

    fn transfer_refer_at(&self) -> Instant {
        self.transfer
            .as_ref()
            .map_or_else(Instant::now, |t| t.refer_at)
    }

    /// The call's own inbox, for results of work done on other tasks.
    fn inbox(&self) -> Option<tokio::sync::mpsc::Sender<CallEvent>> {
        self.sh
            .calls
            .get(self.legs[Side::Caller as usize].dialog.call_id.as_str())
            .map(|e| e.value().clone())
    }

    /// Whether `tx` is the transfer's INVITE or its final NOTIFY, and if so handle
    /// the response. Returns whether it was.
    pub(super) fn on_transfer_client_response(
        &mut self,
        tx: TxId,
        resp: &Message,
        now: Instant,
    ) -> bool {
        let Some(t) = self.transfer.as_ref() else {
            return false;
        };
        if t.invite_tx == Some(tx) {
            self.on_target_response(resp, now);
            return true;
        }
        if t.final_notify_tx == Some(tx) {
            if resp.status().is_some_and(|s| s >= 200) {
                self.release_ai_leg(now);
            }
            return true;
        }
        false
    }

    /// A transaction of the transfer ended without a response (`status`: 408 for a
    /// timeout, 503 for a transport error). Returns whether it was one.
    pub(super) fn on_transfer_client_failure(
        &mut self,
        tx: TxId,
        status: u16,
        now: Instant,
    ) -> bool {
        let Some(t) = self.transfer.as_ref() else {
            return false;
        };
        if t.invite_tx == Some(tx) {
            if let Some(t) = self.transfer.as_mut() {
                t.invite_tx = None;
            }
            if self
                .transfer
                .as_ref()
                .is_some_and(|t| t.state == State::Abandoned)
            {
                self.transfer = None;
            } else {
                self.transfer_failed(status, "", now);
            }
            return true;
        }
        if t.final_notify_tx == Some(tx) {
            self.release_ai_leg(now);
            return true;
        }
        false
    }

    fn on_target_response(&mut self, resp: &Message, now: Instant) {
        let Some(status) = resp.status() else { return };
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        match status {
            100 => {}
            101..=199 => {
                t.got_provisional = true;
                if resp.to_tag().is_some() {
                    self.legs[Side::Target as usize]
                        .dialog
                        .update_from_response(resp);
                }
                if t.cancel_on_provisional {
                    self.cancel_target(now);
                }
            }
            200..=299 => self.on_target_answered(resp, now),
            300..=399 if t.state == State::Inviting => self.on_target_redirect(resp, status, now),
            401 | 407 if t.state == State::Inviting && !t.auth_tried => {
                self.on_target_challenge(resp, status, now)
            }
            _ => {
                // The INVITE has its final answer: nothing more will come of it.
                t.invite_tx = None;
                self.legs[Side::Target as usize].done = true;
                if t.state == State::Abandoned {
                    self.transfer = None;
                    if let Some(m) = self.media.as_mut() {
                        m.drop_new_leg(Side::Target);
                    }
                } else {
                    let reason = resp.reason().unwrap_or("").to_owned();
                    self.transfer_failed(status, &reason, now);
                }
            }
        }
    }

    fn on_target_answered(&mut self, resp: &Message, now: Instant) {
        let seq = resp.cseq().map_or(1, |c| c.seq);
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if t.state == State::Answered {
            return; // A retransmission: reack_2xx already sent the ACK again.
        }
        let abandoned = t.state == State::Abandoned;
        let target = &mut self.legs[Side::Target as usize];
        target.dialog.update_from_response(resp);
        target.done = false;
        self.send_ack(Side::Target, seq, None, now);
        if abandoned || self.legs[Side::Caller as usize].done {
            // The answer crossed our CANCEL, or the caller is gone: hang it up.
            tracing::info!("transfer target answered after the transfer was abandoned");
            self.transfer = None;
            return self.bye_leg(Side::Target, now);
        }
        let switched = self.media.as_mut().map(|m| {
            m.learn_answer(Side::Target, resp)
                .map(|()| m.switch_to(Side::Target).is_some())
        });
        match switched {
            Some(Ok(true)) => {}
            Some(Ok(false)) | None => {
                self.bye_leg(Side::Target, now);
                return self.transfer_failed(500, "Media switch failed", now);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "transfer target's SDP answer refused");
                Metrics::inc(&self.sh.metrics.sdp_rejected_total);
                self.bye_leg(Side::Target, now);
                return self.transfer_failed(488, "Not Acceptable Here", now);
            }
        }
        self.far = Side::Target;
        let notify_timeout = self.sh.transfer.settings.notify_timeout();
        let (record, refer_at) = match self.transfer.as_mut() {
            Some(t) => {
                t.state = State::Answered;
                t.ring_deadline = None;
                (t.record, t.refer_at)
            }
            None => return,
        };
        Metrics::inc(&self.sh.metrics.transfers_succeeded_total);
        self.update_record(record, |r| {
            r.status = Some(200);
            r.completed_at = Some(SystemTime::now());
        });
        self.emit_transferred(record);
        tracing::info!(
            took_ms = now.saturating_duration_since(refer_at).as_millis() as u64,
            "transfer answered, caller switched to the target"
        );
        // The AI agent hears how it went, and goes once it has acknowledged that.
        let reason = resp.reason().unwrap_or("OK").to_owned();
        match self.send_notify(resp.status().unwrap_or(200), &reason, true, now) {
            Some(tx) => {
                if let Some(t) = self.transfer.as_mut() {
                    t.final_notify_tx = Some(tx);
                    t.release_ai_at = Some(now + notify_timeout);
                }
            }
            None => self.release_ai_leg(now),
        }
    }

    /// 3xx: follow the first Contact the allow-list accepts, up to the limit.
    fn on_target_redirect(&mut self, resp: &Message, status: u16, now: Instant) {
        let max = self.sh.transfer.settings.max_redirects;
        let next = resp
            .header_values("Contact")
            .flat_map(crate::sip::message::split_list)
            .filter_map(|c| NameAddr::parse(c.trim()))
            .find_map(|na| self.sh.transfer.allow.check_uri(&na.uri).ok());
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        self.legs[Side::Target as usize].done = true;
        match next {
            Some(dest) if t.redirects < max => {
                tracing::info!(target = %dest.uri, status, "transfer redirected");
                t.redirects += 1;
                t.dest = dest;
                if let Some(m) = self.media.as_mut() {
                    m.drop_new_leg(Side::Target);
                }
                self.dial_target(now);
            }
            _ => {
                let reason = resp.reason().unwrap_or("").to_owned();
                self.transfer_failed(status, &reason, now);
            }
        }
    }

    /// 401/407: answer the challenge once when the destination has credentials.
    fn on_target_challenge(&mut self, resp: &Message, status: u16, now: Instant) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        t.auth_tried = true;
        let kind = digest::ChallengeKind::from_status(status);
        let creds = t.dest.credentials.clone();
        let invite = t.invite.clone();
        let (Some(kind), Some(creds), Some(invite)) = (kind, creds, invite) else {
            let reason = resp.reason().unwrap_or("").to_owned();
            return self.transfer_failed(status, &reason, now);
        };
        let uri = invite.request_uri().unwrap_or_default().to_owned();
        let cnonce = format!("{:016x}", rand::thread_rng().gen::<u64>());
        // Whole header values: a challenge is one comma-separated list of
        // auth-params, not a list of challenges.
        let answer = resp
            .headers()
            .iter()
            .filter(|h| {
                h.name()
                    .as_str()
                    .eq_ignore_ascii_case(kind.challenge_header())
            })
            .find_map(|h| {
                digest::digest_authorization(h.value(), "INVITE", &uri, &creds, &cnonce, 1).ok()
            });
        let Some(answer) = answer else {
            tracing::warn!("transfer target's challenge cannot be answered");
            let reason = resp.reason().unwrap_or("").to_owned();
            return self.transfer_failed(status, &reason, now);
        };
        // RFC 3261 22.2: the same request again, new branch and CSeq, with credentials.
        let leg = &mut self.legs[Side::Target as usize];
        leg.dialog.local_cseq = leg.dialog.local_cseq.wrapping_add(1);
        let mut retry = invite;
        retry.set(
            "Via",
            Via::ours(
                leg.dialog.peer.transport.via_name(),
                &leg.via_host,
                leg.via_port,
                &generate_branch(),
            ),
        );
        retry.set("CSeq", format!("{} INVITE", leg.dialog.local_cseq));
        retry.push(kind.authorization_header(), answer);
        leg.dialog.remote_tag = None;
        leg.done = false;
        let copy = retry.clone();
        let id = self.send_request(Side::Target, retry, now);
        if let Some(t) = self.transfer.as_mut() {
            t.invite_tx = Some(id);
            t.invite = Some(copy);
            t.got_provisional = false;
        }
    }

    /// The transfer did not happen: the AI agent hears why and keeps the caller.
    fn transfer_failed(&mut self, status: u16, reason: &str, now: Instant) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if t.state == State::Abandoned {
            return; // Already reported.
        }
        let record = t.record;
        Metrics::inc(&self.sh.metrics.transfers_failed_total);
        self.update_record(record, |r| {
            r.status = Some(status);
            r.completed_at = Some(SystemTime::now());
        });
        self.emit_transferred(record);
        tracing::info!(
            status,
            "transfer failed, the caller stays with the AI agent"
        );
        self.send_notify(status, reason, true, now);
        if let Some(m) = self.media.as_mut() {
            m.drop_new_leg(Side::Target);
        }
        self.refer_headers.clear();
        if let Some(t) = self.transfer.as_mut() {
            t.state = State::Abandoned;
            t.ring_deadline = None;
            // An INVITE still pending keeps the transfer until its final answer
            // (after our CANCEL); otherwise it is over.
            if t.invite_tx.is_none() {
                self.transfer = None;
            }
        }
        if self.legs[Side::Ai as usize].done {
            // The AI agent left during the transfer: nobody is left for the caller.
            self.note_ended_by(crate::events::EndedBy::Agent);
            self.end_call(now);
        }
    }

    /// Send a NOTIFY about the transfer to the AI agent; returns its transaction.
    fn send_notify(&mut self, status: u16, reason: &str, last: bool, now: Instant) -> Option<TxId> {
        let t = self.transfer.as_ref()?;
        if !t.notify || self.legs[Side::Ai as usize].done {
            return None;
        }
        let event = notify::event_value(t.refer_cseq);
        if last {
            if let Some(t) = self.transfer.as_mut() {
                t.notify = false;
            }
        }
        let mut m = self.new_request(Side::Ai, Method::Notify);
        m.push("Event", event);
        m.push(
            "Subscription-State",
            if last {
                notify::SUBSCRIPTION_TERMINATED.to_owned()
            } else {
                notify::subscription_active(SUBSCRIPTION_SECS)
            },
        );
        m.push(
            "Contact",
            self.legs[Side::Ai as usize].dialog.local_contact.clone(),
        );
        m.push("Content-Type", notify::SIPFRAG_CONTENT_TYPE);
        m.set_body(bytes::Bytes::from(notify::sipfrag(status, reason)));
        Some(self.send_request(Side::Ai, m, now))
    }

    /// The AI agent's part is over: BYE its leg (once).
    fn release_ai_leg(&mut self, now: Instant) {
        if let Some(t) = self.transfer.as_mut() {
            t.final_notify_tx = None;
            t.release_ai_at = None;
        }
        self.bye_leg(Side::Ai, now);
    }

    /// BYE one leg that is up, unless it is already done or being hung up.
    pub(super) fn bye_leg(&mut self, side: Side, now: Instant) {
        let Some(leg) = self.legs.get(side as usize) else {
            return;
        };
        if leg.done || leg.bye_tx.is_some() {
            return;
        }
        let bye = self.new_request(side, Method::Bye);
        let tx = self.send_request(side, bye, now);
        self.legs[side as usize].bye_tx = Some(tx);
    }

    /// CANCEL our INVITE to the target, now if it has sent a provisional
    /// response, else when it does (RFC 3261 9.1).
    fn cancel_target(&mut self, now: Instant) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if t.cancelled || t.state != State::Inviting && t.state != State::Abandoned {
            return;
        }
        if t.invite_tx.is_none() {
            return; // Its final answer is in: nothing to cancel.
        }
        if !t.got_provisional {
            t.cancel_on_provisional = true;
            return;
        }
        t.cancelled = true;
        t.cancel_on_provisional = false;
        if let Some(inv) = t.invite.clone() {
            self.send_request(Side::Target, cancel_for(&inv), now);
        }
    }

    /// The call is ending: a transfer still ringing is cancelled, one resolving
    /// is dropped. The AI agent gets its BYE from `end_call`, not a NOTIFY.
    pub(super) fn cancel_transfer(&mut self, now: Instant) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        match t.state {
            State::Resolving => {
                self.transfer = None;
                if let Some(m) = self.media.as_mut() {
                    m.drop_new_leg(Side::Target);
                }
            }
            State::Inviting => {
                t.state = State::Abandoned;
                t.notify = false;
                t.ring_deadline = None;
                self.cancel_target(now);
            }
            State::Answered | State::Abandoned => {}
        }
    }

    /// Whether a leg has a confirmed dialog that needs a BYE to end.
    pub(super) fn leg_confirmed(&self, side: Side) -> bool {
        match side {
            Side::Caller => true,
            Side::Ai => self.answered,
            Side::Target => self.far == Side::Target,
        }
    }

    /// A transfer is under way (the AI agent may not start another).
    pub(super) fn transfer_running(&self) -> bool {
        self.transfer
            .as_ref()
            .is_some_and(|t| matches!(t.state, State::Resolving | State::Inviting))
    }

    /// The AI agent hung up while it was not (or no longer) the caller's peer.
    pub(super) fn on_far_leg_gone(&mut self, side: Side, _now: Instant) {
        if side == Side::Ai {
            if let Some(t) = self.transfer.as_mut() {
                // Nobody left to tell.
                t.notify = false;
                t.final_notify_tx = None;
                t.release_ai_at = None;
            }
            tracing::info!("AI agent left; the transfer goes on");
        }
    }

    pub(super) fn transfer_deadline(&self) -> Option<Instant> {
        let t = self.transfer.as_ref()?;
        [t.ring_deadline, t.release_ai_at]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn on_transfer_tick(&mut self, now: Instant) {
        let Some(t) = self.transfer.as_ref() else {
            return;
        };
        if t.release_ai_at.is_some_and(|d| now >= d) {
            tracing::info!("no answer to the final NOTIFY; releasing the AI leg");
            self.release_ai_leg(now);
        }
        let Some(t) = self.transfer.as_ref() else {
            return;
        };
        if t.ring_deadline.is_some_and(|d| now >= d) && t.state == State::Inviting {
            tracing::info!("transfer target did not answer in time");
            self.transfer_failed(408, "Request Timeout", now);
            self.cancel_target(now);
        }
    }

    fn record_transfer(&self, record: TransferRecord) -> usize {
        self.sh
            .sessions
            .update(&self.session_id, |s| {
                s.transfers.push(record);
                s.transfers.len() - 1
            })
            .unwrap_or(0)
    }

    fn update_record(&self, index: usize, f: impl FnOnce(&mut TransferRecord)) {
        self.sh.sessions.update(&self.session_id, |s| {
            if let Some(r) = s.transfers.get_mut(index) {
                f(r);
            }
        });
    }
}
