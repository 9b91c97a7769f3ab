//! The transfer target's leg: finding the target, its INVITE (and the retry
//! with credentials), moving the caller's media to it, and its answers turned
//! into events for the transfer machine.

use super::invite::NewInvite;
use super::leg::Leg;
use super::pending::PendingInvite;
use super::setup::local_host_port;
use super::store_io::Purpose;
use super::{Call, CallEvent, Side};
use crate::b2bua::transfer::machine::{Event, State};
use crate::b2bua::transfer::TransferPolicy;
use crate::b2bua::transfer::{transfer_from, transfer_headers, Destination, DestinationKind};
use crate::metrics::Metrics;
use crate::session::Session;
use crate::sip::auth as digest;
use crate::sip::dialog::Dialog;
use crate::sip::message::{generate_tag, Message, NameAddr, SipUri};
use crate::sip::transaction::TxId;
use crate::sip::transport::{Targets, Transport};
use rand::Rng;
use std::time::Instant;

/// The Request-URI of the INVITE for a destination (its own URI, or for a
/// telephone number the PSTN gateway with that number) and the transport its
/// configuration asks for (`None`: as the URI and DNS say).
fn request_target(
    policy: &TransferPolicy,
    dest: &Destination,
) -> Option<(SipUri, Option<Transport>)> {
    let uri = if dest.kind == DestinationKind::Tel {
        let gw = policy.pstn_gateway.as_ref()?;
        let number = dest.uri.user.clone().unwrap_or_default();
        // The gateway's scheme: a sips: gateway is never reached in the clear.
        let text = format!(
            "{}:{number}@{}{};user=phone",
            gw.scheme,
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
    Some((uri, dest.transport))
}

const NO_GATEWAY: (u16, &str) = (503, "No PSTN gateway");

impl Call {
    /// Find where the transfer's target is, then invite it. An IP literal over
    /// UDP goes at once; a name (DNS) or TCP (connect) is done by
    /// `TransportLayer::peer_for_transport` on a task whose result comes back
    /// through the call's inbox.
    pub(super) fn dial_target(&mut self, generation: u32) -> Option<Event<'static>> {
        let t = self.transfer.as_ref()?;
        let Some((uri, transport)) = request_target(&self.sh.transfer, t.machine.destination())
        else {
            tracing::warn!("tel: transfer target but no [transfer] pstn_gateway");
            let (status, reason) = NO_GATEWAY;
            return Some(Event::DialFailed { status, reason });
        };
        if let Some(targets) = Targets::immediate(&uri, transport) {
            // The INVITE goes once the session is read (`on_transfer_session`).
            self.store_io.read(Purpose::TransferInvite {
                targets: Box::new(targets),
                dial: true,
            });
            return None;
        }
        // Mutual TLS: a named destination's own client certificate, if it has one.
        let identity = t.machine.destination().name.as_deref().and_then(|n| {
            self.transport
                .client_identity(&crate::config::tls_client::destination_identity(n))
        });
        let (layer, inbox) = (self.transport.clone(), self.inbox.clone());
        tokio::spawn(async move {
            let targets = match layer.peer_for_as(&uri, transport, identity).await {
                Ok(targets) => Some(Box::new(targets)),
                Err(e) => {
                    tracing::debug!(uri = %uri, error = %e, "transfer target not reached");
                    None
                }
            };
            let _ = inbox
                .send(CallEvent::TargetResolved {
                    generation,
                    targets,
                })
                .await;
        });
        Some(Event::DialStarted { sent: false })
    }

    /// The lookup's peer is at hand: the INVITE goes once the session is read.
    pub(super) fn invite_resolved(&mut self) {
        if let Some(targets) = self.transfer.as_mut().and_then(|t| t.resolved.take()) {
            self.store_io.read(Purpose::TransferInvite {
                targets,
                dial: false,
            });
        }
    }

    /// The session as the store has it now (`None`: gone): the transfer INVITE
    /// to the first of `targets` goes out with its ticket and contact, and the
    /// machine hears.
    pub(super) fn on_transfer_session(
        &mut self,
        targets: Targets,
        dial: bool,
        session: Option<&Session>,
        now: Instant,
    ) {
        let resolving = self
            .transfer
            .as_ref()
            .is_some_and(|t| t.machine.state() == State::Resolving);
        if !resolving {
            return; // Ended or failed while the session was read.
        }
        let sent = match session {
            Some(s) => self.send_transfer_invite(targets, s, now),
            None => Err((500, "Session gone")),
        };
        let event = match sent {
            Ok(()) if dial => Event::DialStarted { sent: true },
            Ok(()) => Event::InviteSent,
            Err((status, reason)) => Event::DialFailed { status, reason },
        };
        self.transfer_event(event, now);
    }

    /// The target's address is known (or could not be found).
    pub(super) fn on_target_resolved(
        &mut self,
        generation: u32,
        targets: Option<Box<Targets>>,
        now: Instant,
    ) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if targets.is_none() && t.machine.generation() == generation {
            tracing::warn!("transfer target unreachable (DNS or connection)");
        }
        let reachable = targets.is_some();
        t.resolved = targets;
        self.transfer_event(
            Event::Resolved {
                generation,
                reachable,
            },
            now,
        );
    }

    /// Build the target leg and its INVITE from `session`, and send it.
    fn send_transfer_invite(
        &mut self,
        targets: Targets,
        session: &Session,
        now: Instant,
    ) -> Result<(), (u16, &'static str)> {
        let peer = targets.peer();
        let sh = self.sh.clone();
        let policy = &sh.transfer;
        let Some(t) = self.transfer.as_ref() else {
            return Err((500, "Server Internal Error"));
        };
        let dest = t.machine.destination();
        let (uri, _) = request_target(policy, dest).ok_or(NO_GATEWAY)?;
        let sdp = match self.media.as_mut().map(|m| {
            let pool = &sh.media.as_ref().expect("media mode has a pool").pool;
            m.offer_for_new_leg(pool, Side::Target, &dest.codecs, dest.srtp)
        }) {
            Some(Ok(sdp)) => sdp,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "no SDP offer for the transfer target");
                return Err((e.status(), "Cannot offer media"));
            }
            None => return Err((501, "Not Implemented")),
        };

        let context = transfer_headers(session, dest, &policy.settings);
        let plan = dest.contract.plan(
            &context.headers,
            &t.refer_headers,
            &t.refer_msg_headers,
            &session.custom_data,
        );
        for o in context.omitted.iter().chain(&plan.omitted) {
            Metrics::inc(&sh.metrics.transfer_headers_dropped_total);
            tracing::warn!(header = %o.name, problem = %o.problem, "transfer header left out");
        }
        let request_uri = plan.request_uri(uri.as_str());
        let (host, port) = local_host_port(&sh, &self.transport, peer);
        let (mut m, contact) = NewInvite {
            request_uri: &request_uri,
            from: transfer_from(session, &host, &generate_tag(), &policy.fallback_from),
            to: NameAddr::format(None, uri.as_str(), None),
            transport: peer.transport,
            host: &host,
            port,
            max_forwards: 70,
            user_agent: &sh.settings.user_agent,
        }
        .build();
        for (name, value) in &plan.lines {
            // Checked by the plan already; a refusal here cannot happen.
            let _ = m.push_checked(name, value);
        }
        if let Some(rb) = &t.referred_by {
            let _ = m.push_checked("Referred-By", rb);
        }
        m.push("Content-Type", "application/sdp");
        m.set_body(sdp);
        let keep_wire = dest.credentials.is_some();
        let note_wanted = dest.ticket_note;
        let note_ticket = session.zendesk_ticket_id;
        let note_summary = session.summary.clone();

        let dialog = Dialog::uac(&m, peer, contact).ok_or((500, "Server Internal Error"))?;
        let call_id = dialog.call_id.clone();
        let leg = Leg::new(dialog, host, port);
        if self.legs.len() > Side::Target as usize {
            let old = std::mem::replace(&mut self.legs[Side::Target as usize], leg);
            self.old_call_ids.push(old.take_call_id());
        } else {
            self.legs.push(leg);
        }
        self.sh.register_call_id(call_id, self.inbox.clone());
        if let Some(hold) = self.transport.hold(&peer) {
            self._holds.push(hold);
        }
        let id = self.send_request(Side::Target, m, now);
        let Some(t) = self.transfer.as_mut() else {
            return Ok(());
        };
        t.note.wanted = note_wanted;
        t.note.ticket = note_ticket;
        t.note.session_summary = note_summary;
        let deadline = now + sh.transfer.settings.ring_timeout();
        let wire = self.txs.wire(id);
        t.invite = Some(
            PendingInvite::new(id, Some(t.machine.ring_deadline().unwrap_or(deadline)))
                .with_failover(targets, wire.clone()),
        );
        t.wire = wire.filter(|_| keep_wire);
        let latency = now.elapsed() + now.saturating_duration_since(t.machine.refer_at());
        if t.machine.first_invite() {
            self.sh
                .metrics
                .transfer_setup_seconds
                .observe(latency.as_secs_f64());
        }
        tracing::info!(
            latency_us = latency.as_micros() as u64,
            "transfer INVITE sent"
        );
        Ok(())
    }

    /// The last INVITE again with credentials (RFC 3261 22.2).
    pub(super) fn retry_with_credentials(
        &mut self,
        header: &'static str,
        value: String,
        now: Instant,
    ) -> Event<'static> {
        let failed = Event::DialFailed {
            status: 500,
            reason: "Server Internal Error",
        };
        let Some(wire) = self.transfer.as_mut().and_then(|t| t.wire.take()) else {
            return failed;
        };
        let Ok(invite) = crate::sip::message::parse(wire) else {
            return failed;
        };
        let retry = self.leg(Side::Target).retry_invite(invite, header, value);
        let id = self.send_request(Side::Target, retry, now);
        if let Some(t) = self.transfer.as_mut() {
            t.invite = Some(PendingInvite::new(id, t.machine.ring_deadline()));
        }
        Event::InviteSent
    }

    /// The target answered: move the caller's media to it.
    pub(super) fn switch_media(
        &mut self,
        resp: Option<&Message>,
        now: Instant,
    ) -> Result<(), (u16, &'static str)> {
        let switched = match (self.media.as_mut(), resp) {
            (Some(m), Some(resp)) => Some(
                m.learn_answer(Side::Target, resp)
                    .map(|()| m.switch_to(Side::Target)),
            ),
            _ => None,
        };
        match switched {
            Some(Ok(true)) => {}
            Some(Ok(false)) | None => return Err((500, "Media switch failed")),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "transfer target's SDP answer refused");
                Metrics::inc(&self.sh.metrics.sdp_rejected_total);
                return Err((488, "Not Acceptable Here"));
            }
        }
        self.far = Side::Target;
        if let Some(t) = self.transfer.as_ref() {
            tracing::info!(
                took_ms = now
                    .saturating_duration_since(t.machine.refer_at())
                    .as_millis() as u64,
                "transfer answered, caller switched to the target"
            );
        }
        Ok(())
    }

    /// A response to the target's INVITE `tx`.
    pub(super) fn on_target_response(&mut self, tx: TxId, resp: &Message, now: Instant) {
        let Some(status) = resp.status() else { return };
        if status < 200 {
            if status > 100 {
                self.leg(Side::Target).on_early_response(resp);
                let cancel_now = self
                    .transfer
                    .as_mut()
                    .and_then(|t| t.invite.as_mut())
                    .is_some_and(PendingInvite::on_provisional);
                if cancel_now {
                    self.send_cancel(Side::Target, tx, now);
                }
            }
            return;
        }
        if status >= 300 && self.try_fail_over(Side::Target, status, false) {
            return; // The next target gets the INVITE.
        }
        // The INVITE has its final answer: nothing more will come of it.
        if let Some(t) = self.transfer.as_mut() {
            t.invite = None;
        }
        let reason = resp.reason().unwrap_or("");
        if (200..300).contains(&status) {
            let seq = self.leg(Side::Target).confirm(resp);
            self.send_ack(Side::Target, seq, tx, None);
            if self.legs[Side::Caller as usize].is_ending() {
                tracing::info!("transfer target answered after the caller left");
            }
            return self.transfer_event_with(Event::Answered { status, reason }, Some(resp), now);
        }
        self.leg(Side::Target).end();
        let event = match status {
            300..=399 => {
                let from = self
                    .transfer
                    .as_ref()
                    .map(|t| t.machine.destination().clone());
                let next = resp
                    .header_values("Contact")
                    .flat_map(crate::sip::message::split_list)
                    .filter_map(|c| NameAddr::parse(c.trim()))
                    .filter_map(|na| self.sh.transfer.allow.check_uri(&na.uri).ok())
                    .find(|d| from.as_ref().is_none_or(|f| f.may_redirect_to(d)));
                if let Some(d) = &next {
                    tracing::info!(target = %d.uri, status, "transfer redirected");
                }
                Event::Redirected {
                    status,
                    reason,
                    next,
                }
            }
            401 | 407 => Event::Challenged {
                status,
                reason,
                answer: self.answer_challenge(resp, status),
            },
            _ => Event::Rejected { status, reason },
        };
        self.transfer_event(event, now);
    }

    /// The credentials header answering a 401/407 from the target, when the
    /// destination has credentials and the challenge can be answered.
    fn answer_challenge(&self, resp: &Message, status: u16) -> Option<(&'static str, String)> {
        let t = self.transfer.as_ref()?;
        let kind = digest::ChallengeKind::from_status(status)?;
        let creds = t.machine.destination().credentials.as_ref()?;
        let wire = t.wire.as_ref()?;
        let uri = crate::sip::message::parse(wire.clone())
            .ok()?
            .request_uri()?
            .to_owned();
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
                digest::digest_authorization(h.value(), "INVITE", &uri, &creds.digest(), &cnonce, 1)
                    .ok()
            });
        if answer.is_none() {
            tracing::warn!("transfer target's challenge cannot be answered");
        }
        Some((kind.authorization_header(), answer?))
    }
}
