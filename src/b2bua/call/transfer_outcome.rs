//! The outcome side of a transfer: the target's answers (2xx, 3xx, 401/407,
//! failures), the NOTIFYs that report them to the AI agent, the release of the AI
//! leg, CANCEL when the caller leaves, and the transfer's timers.

use super::transfer::{State, SUBSCRIPTION_SECS};
use super::{Call, Side};
use crate::b2bua::transfer::{digest, notify};
use crate::events::TransferRecord;
use crate::metrics::Metrics;
use crate::sip::message::{generate_branch, Message, Method, NameAddr, Via};
use crate::sip::transaction::set::cancel_for;
use crate::sip::transaction::TxId;
use rand::Rng;
use std::time::{Instant, SystemTime};

impl Call {
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
    pub(super) fn transfer_failed(&mut self, status: u16, reason: &str, now: Instant) {
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
    pub(super) fn send_notify(
        &mut self,
        status: u16,
        reason: &str,
        last: bool,
        now: Instant,
    ) -> Option<TxId> {
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

    /// A new transfer attempt in the call's record; its index.
    pub(super) fn record_transfer(&mut self, record: TransferRecord) -> usize {
        self.record.transfers.push(record);
        self.record.transfers.len() - 1
    }

    pub(super) fn update_record(&mut self, index: usize, f: impl FnOnce(&mut TransferRecord)) {
        if let Some(r) = self.record.transfers.get_mut(index) {
            f(r);
        }
    }
}
