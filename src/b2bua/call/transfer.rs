//! The call's side of a transfer (RFC 3515): the AI agent's REFER, the INVITE to the
//! target, the NOTIFYs back to the AI agent, the media switch and the release of the
//! AI leg. What goes into the INVITE and who may be dialled is decided by the pure
//! functions of `b2bua::transfer`; this is the state machine around them.

use super::setup::local_host_port;
use super::store_io::Purpose;
use super::{contact_for, resolve, Call, CallEvent, Leg, Phase, Side};
use crate::b2bua::policy::ALLOW;
use crate::b2bua::transfer::{
    notify, parse_refer_to, transfer_from, transfer_headers, Destination, DestinationKind,
};
use crate::events::TransferRecord;
use crate::metrics::Metrics;
use crate::session::Session;
use crate::sip::dialog::Dialog;
use crate::sip::message::{generate_branch, generate_tag, Message, Method, NameAddr, SipUri, Via};
use crate::sip::transaction::TxId;
use crate::sip::transport::{Peer, Transport};
use rand::Rng;
use std::time::{Instant, SystemTime};

/// How long the implicit subscription of a REFER lasts (RFC 3515 2.4.6): the
/// final NOTIFY ends it long before.
pub(super) const SUBSCRIPTION_SECS: u32 = 120;

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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
    pub(super) state: State,
    /// CSeq number of the REFER: the `id` of the `Event: refer` of its NOTIFYs.
    pub(super) refer_cseq: u32,
    /// NOTIFYs are sent (no `Refer-Sub: false`, and the AI leg is still there).
    pub(super) notify: bool,
    pub(super) dest: Destination,
    /// Bumped on every new attempt, so a late lookup result for an old one is ignored.
    pub(super) generation: u32,
    pub(super) invite_tx: Option<TxId>,
    /// Our last INVITE to the target, for a retry with credentials (its
    /// transaction may be gone by the time the 401 is handled: TCP has no Timer D).
    pub(super) invite: Option<Message>,
    pub(super) got_provisional: bool,
    /// CANCEL as soon as the target sends a provisional response.
    pub(super) cancel_on_provisional: bool,
    pub(super) cancelled: bool,
    pub(super) redirects: u32,
    pub(super) auth_tried: bool,
    pub(super) ring_deadline: Option<Instant>,
    /// The final NOTIFY (after a 2xx) and when the AI leg goes regardless.
    pub(super) final_notify_tx: Option<TxId>,
    pub(super) release_ai_at: Option<Instant>,
    pub(super) refer_at: Instant,
    /// The index of this attempt in the session's transfer records.
    pub(super) record: usize,
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
        // The INVITE may wait for its session read (`store_io`): the 100 follows it.
        if !self.store_io.defer_trying_notify() {
            self.send_notify(100, "", false, now);
        }
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
    pub(super) fn dial_target(&mut self, now: Instant) {
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

    /// The target's INVITE needs the session as it is now (a ticket stamped a
    /// moment ago goes out): read it, then `send_transfer_invite_with`.
    fn send_transfer_invite(&mut self, peer: Peer, _now: Instant) {
        self.store_io.read(Purpose::TransferInvite {
            peer,
            notify_trying: false,
        });
    }

    /// Build the target leg and its INVITE from `session`, and send it.
    pub(super) fn send_transfer_invite_with(
        &mut self,
        peer: Peer,
        session: &Session,
        now: Instant,
    ) {
        let Some(t) = self.transfer.as_ref() else {
            return;
        };
        if t.state != State::Resolving {
            return; // Ended or failed while the session was read.
        }
        let dest = t.dest.clone();
        let Some((uri, _)) = self.request_target(&dest) else {
            return self.transfer_failed(503, "No PSTN gateway", now);
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
            transfer_from(session, &host, &generate_tag(), &policy.fallback_from),
        );
        m.push("To", NameAddr::format(None, uri.as_str(), None));
        let n: u128 = rand::thread_rng().gen();
        m.push("Call-ID", format!("{n:032x}"));
        m.push("CSeq", "1 INVITE");
        m.push("Contact", contact.clone());
        m.push("Allow", ALLOW);
        m.push("User-Agent", self.sh.settings.user_agent.clone());
        let headers = transfer_headers(session, &dest, &policy.settings);
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
}
