//! The call's side of a transfer (RFC 3515): the AI agent's REFER, and the one
//! place where the transfer machine's actions are carried out. What a transfer
//! decides lives in `b2bua::transfer::machine`; what its INVITE carries and who
//! may be dialled in the pure functions beside it; the target's leg and its
//! answers in `transfer_target`.

use super::pending::{CancelStep, PendingInvite};
use super::{Call, Phase, Side};
use crate::b2bua::transfer::contract::{referred_by_value, MAX_REFER_CANDIDATES};
use crate::b2bua::transfer::machine::{
    admit_refer, Action, Event, Limits, NotifyState, ReferRefusal, TransferMachine,
};
use crate::b2bua::transfer::{notify, parse_refer_to};
use crate::events::TransferRecord;
use crate::metrics::Metrics;
use crate::sip::message::{Message, Method};
use crate::sip::transaction::set::cancel_for;
use crate::sip::transaction::TxId;
use crate::sip::transport::Targets;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

/// A transfer in progress: the machine and what the call keeps for it.
pub(super) struct TransferRun {
    pub(super) machine: TransferMachine,
    /// The target's INVITE while it awaits its final answer.
    pub(super) invite: Option<PendingInvite>,
    /// That INVITE as sent, for a retry with credentials (its transaction may
    /// be gone when the 401 is handled: TCP has no Timer D). Kept only when the
    /// destination has credentials; a `Bytes` handle, not a copy.
    pub(super) wire: Option<Bytes>,
    /// Where the lookup of the current attempt found the target, and the
    /// targets after it.
    pub(super) resolved: Option<Box<Targets>>,
    pub(super) final_notify_tx: Option<TxId>,
    /// Headers from the Refer-To URI copied onto the transfer INVITE.
    pub(super) refer_headers: Vec<(String, String)>,
    /// Headers of the REFER itself the destination's contract may copy (at
    /// most `contract::MAX_REFER_CANDIDATES`, checked when the INVITE is built).
    pub(super) refer_msg_headers: Vec<(String, String)>,
    /// The REFER's Referred-By (RFC 3892), checked, for the INVITE it triggers.
    pub(super) referred_by: Option<String>,
    /// The index of this attempt in the session's transfer records.
    pub(super) record: usize,
    /// What the ticket note needs when the transfer completes.
    pub(super) note: super::ticket_note::NoteParts,
}

impl Call {
    /// A REFER on one of the call's legs.
    pub(super) fn on_refer(&mut self, side: Side, tx: TxId, req: &Message, now: Instant) {
        Metrics::inc(&self.sh.metrics.refers_received_total);
        // Only the AI agent transfers, and only the customer it is bridged to
        // (the caller, or on an outbound call the callee).
        let (customer, agent) = self.roles();
        if let Err(refusal) = admit_refer(
            side == agent,
            self.peer_of(agent) == Some(customer),
            self.phase == Phase::Answered,
            self.transfer.as_ref().map(|t| &t.machine),
            self.media.is_some(),
        ) {
            if refusal == ReferRefusal::NotAllowedOnLeg {
                tracing::info!(from = ?side, "REFER refused: not from the AI agent of a live call");
            }
            return self.refuse_refer(tx, req, refusal.status(), refusal.reason(), now);
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
        // An outbound call is laid out as an inbound one from here on: the
        // callee where the caller would be, the agent on the AI leg.
        if !self.swap_roles_for_transfer() {
            tracing::warn!("REFER refused: the outbound call's legs cannot be rearranged");
            return self.refuse_refer(tx, req, 500, "Transfer not possible now", now);
        }
        let subscribe = !notify::refer_sub_disabled(req.header("Refer-Sub"));
        let mut accepted = self.response_for(req, 202);
        if !subscribe {
            // RFC 4488 4: we agree to do without the subscription.
            accepted.push("Refer-Sub", "false");
        }
        self.txs.respond(tx, &accepted, now, &mut self.events);
        Metrics::inc(&self.sh.metrics.transfers_total);
        tracing::info!(target = %dest.uri, destination = dest.name.as_deref().unwrap_or(""), "transfer accepted");

        let wall = SystemTime::now();
        let copied = policy.copy.copy(&target);
        for o in &copied.omitted {
            Metrics::inc(&self.sh.metrics.transfer_headers_dropped_total);
            tracing::warn!(header = %o.name, problem = ?o.problem, "Refer-To header not copied");
        }
        let refer_msg_headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter(|h| dest.contract.wants_refer_header(h.name().as_str()))
            .take(MAX_REFER_CANDIDATES)
            .map(|h| (h.name().as_str().to_owned(), h.value().to_owned()))
            .collect();
        let referred_by = req.header("Referred-By").and_then(|v| {
            let ok = referred_by_value(v);
            if ok.is_none() {
                Metrics::inc(&self.sh.metrics.transfer_headers_dropped_total);
                tracing::warn!("Referred-By not carried: not a valid name-addr");
            }
            ok
        });
        let settings = &policy.settings;
        // Whether a note is wanted, and the ticket, are the INVITE's (a redirect
        // may change the destination): set when it is sent.
        let note = super::ticket_note::NoteParts {
            refer_summary: Some(settings.summary_header.as_str())
                .filter(|h| !h.is_empty())
                .and_then(|h| req.header(h))
                .and_then(crate::zendesk::note::summary_from_header),
            ..Default::default()
        };
        let limits = Limits {
            max_redirects: settings.max_redirects,
            ring_timeout: settings.ring_timeout(),
            notify_timeout: settings.notify_timeout(),
        };
        let target_text = dest.uri.as_str().to_owned();
        let refer_cseq = req.cseq().map_or(0, |c| c.seq);
        let (machine, actions) =
            TransferMachine::start(dest, target_text, refer_cseq, subscribe, limits, now, wall);
        let record = self.record_transfer(machine.attempt().clone());
        self.transfer = Some(Box::new(TransferRun {
            machine,
            invite: None,
            wire: None,
            resolved: None,
            final_notify_tx: None,
            refer_headers: copied.headers,
            refer_msg_headers,
            referred_by,
            record,
            note,
        }));
        // The INVITE first, then the first NOTIFY (RFC 3515 2.4.4): the machine
        // asks for the NOTIFY once the dial has started.
        self.run_transfer(actions, None, now);
    }

    fn refuse_refer(&mut self, tx: TxId, req: &Message, status: u16, reason: &str, now: Instant) {
        Metrics::inc(&self.sh.metrics.refers_refused_total);
        let mut resp = self.response_for(req, status);
        if !reason.is_empty() {
            resp.set_reason(reason.to_owned());
        }
        self.txs.respond(tx, &resp, now, &mut self.events);
    }

    /// Tell the transfer machine what happened, and carry out what it asks.
    pub(super) fn transfer_event(&mut self, event: Event<'_>, now: Instant) {
        self.transfer_event_with(event, None, now);
    }

    /// The same, with the target's response at hand for the actions that need it.
    pub(super) fn transfer_event_with(
        &mut self,
        event: Event<'_>,
        resp: Option<&Message>,
        now: Instant,
    ) {
        let Some(run) = self.transfer.as_mut() else {
            return;
        };
        let actions = run.machine.handle(event, now);
        self.run_transfer(actions, resp, now);
    }

    /// The one place transfer actions are carried out, in order. An action
    /// whose outcome the machine needs feeds it back here; its new actions go
    /// to the back of the queue. Nothing is re-entered.
    fn run_transfer(&mut self, actions: Vec<Action>, resp: Option<&Message>, now: Instant) {
        let mut queue: VecDeque<Action> = actions.into();
        let mut end_call = false;
        while let Some(action) = queue.pop_front() {
            if action == Action::EndCall {
                end_call = true;
                continue;
            }
            let Some(event) = self.execute(action, resp, now) else {
                continue;
            };
            let Some(run) = self.transfer.as_mut() else {
                break;
            };
            queue.extend(run.machine.handle(event, now));
        }
        if self
            .transfer
            .as_ref()
            .is_some_and(|t| t.machine.state() == crate::b2bua::transfer::machine::State::Done)
        {
            self.transfer = None;
        }
        if end_call {
            // The AI agent left during the transfer: nobody is left for the caller.
            self.note_ended_by(crate::events::EndedBy::Agent);
            self.end_call(now);
        }
    }

    fn execute(
        &mut self,
        action: Action,
        resp: Option<&Message>,
        now: Instant,
    ) -> Option<Event<'static>> {
        match action {
            Action::Dial { generation } => self.dial_target(generation),
            Action::SendInvite => {
                self.invite_resolved();
                None
            }
            Action::SendInviteWithAuth { header, value } => {
                Some(self.retry_with_credentials(header, value, now))
            }
            Action::Notify {
                id,
                status,
                reason,
                state,
            } => {
                let last = state == NotifyState::Terminated;
                let sent = self.send_notify(id, status, &reason, state, now);
                if last {
                    match sent {
                        Some(tx) => self.transfer.as_mut()?.final_notify_tx = Some(tx),
                        // Nobody to tell: nothing to wait for.
                        None => return Some(Event::FinalNotifyDone),
                    }
                }
                None
            }
            Action::SwitchMedia => Some(Event::MediaSwitched(self.switch_media(resp, now))),
            Action::DropMedia => {
                if let Some(m) = self.media.as_mut() {
                    m.drop_new_leg(Side::Target);
                }
                None
            }
            Action::CancelTarget => {
                self.cancel_target(now);
                None
            }
            Action::ByeTarget => {
                self.bye_leg(Side::Target, now);
                None
            }
            Action::ReleaseAi => {
                if let Some(t) = self.transfer.as_mut() {
                    t.final_notify_tx = None;
                }
                self.bye_leg(Side::Ai, now);
                None
            }
            Action::Report(attempt) => {
                let record = self.transfer.as_ref()?.record;
                let done = attempt.status.is_some();
                if let Some(r) = self.record.transfers.get_mut(record) {
                    *r = attempt;
                }
                if done {
                    self.emit_transferred(record);
                }
                None
            }
            Action::Count { succeeded } => {
                if succeeded {
                    Metrics::inc(&self.sh.metrics.transfers_succeeded_total);
                    self.queue_ticket_note();
                } else {
                    Metrics::inc(&self.sh.metrics.transfers_failed_total);
                    tracing::info!("transfer failed, the caller stays with the AI agent");
                }
                None
            }
            Action::EndCall => None,
        }
    }

    /// A NOTIFY about the transfer to the AI agent; its transaction, or `None`
    /// when the AI leg is gone.
    fn send_notify(
        &mut self,
        id: u32,
        status: u16,
        reason: &str,
        state: NotifyState,
        now: Instant,
    ) -> Option<TxId> {
        if self.legs[Side::Ai as usize].is_ending() {
            return None;
        }
        // The dialog's request carries our Contact already (RFC 6665 4.1.2.2).
        let mut m = self.new_request(Side::Ai, Method::Notify);
        m.push("Event", notify::event_value(id));
        m.push(
            "Subscription-State",
            match state {
                NotifyState::Active { expires } => notify::subscription_active(expires),
                NotifyState::Terminated => notify::SUBSCRIPTION_TERMINATED.to_owned(),
            },
        );
        m.push("Content-Type", notify::SIPFRAG_CONTENT_TYPE);
        m.set_body(Bytes::from(notify::sipfrag(status, reason)));
        Some(self.send_request(Side::Ai, m, now))
    }

    /// CANCEL our INVITE to the target, now if it has sent a provisional
    /// response, else when it does (RFC 3261 9.1).
    fn cancel_target(&mut self, now: Instant) {
        let Some(p) = self.transfer.as_mut().and_then(|t| t.invite.as_mut()) else {
            return; // Its final answer is in: nothing to cancel.
        };
        let tx = p.tx();
        if p.cancel() == CancelStep::Now {
            self.send_cancel(Side::Target, tx, now);
        }
    }

    /// CANCEL the client INVITE `tx` on `side`.
    pub(super) fn send_cancel(&mut self, side: Side, tx: TxId, now: Instant) {
        if let Some(cancel) = self.txs.request(tx).map(cancel_for) {
            self.send_request(side, cancel, now);
        }
    }

    /// The transfer is still trying to reach the target (the AI agent may not
    /// start another, and its leaving does not end the call).
    pub(super) fn transfer_running(&self) -> bool {
        self.transfer.as_ref().is_some_and(|t| t.machine.running())
    }

    /// The AI agent hung up while it was not (or no longer) the caller's peer.
    pub(super) fn on_far_leg_gone(&mut self, side: Side, now: Instant) {
        if side == Side::Ai {
            tracing::info!("AI agent left; the transfer goes on");
            self.transfer_event(Event::AiGone, now);
        }
    }

    pub(super) fn transfer_deadline(&self) -> Option<Instant> {
        let t = self.transfer.as_ref()?;
        [
            t.machine.deadline(),
            t.invite.as_ref().and_then(PendingInvite::deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(super) fn on_transfer_tick(&mut self, now: Instant) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if t.invite.as_mut().is_some_and(|p| p.take_expired(now)) {
            tracing::info!("transfer target did not answer in time");
            return self.transfer_event(Event::RingTimeout, now);
        }
        let actions = t.machine.tick(now);
        if !actions.is_empty() {
            tracing::info!("no answer to the final NOTIFY; releasing the AI leg");
        }
        self.run_transfer(actions, None, now);
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
        if t.invite.as_ref().is_some_and(|p| p.tx() == tx) {
            self.on_target_response(tx, resp, now);
            return true;
        }
        if t.final_notify_tx == Some(tx) {
            if resp.status().is_some_and(|s| s >= 200) {
                self.transfer_event(Event::FinalNotifyDone, now);
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
        let Some(t) = self.transfer.as_mut() else {
            return false;
        };
        if t.invite.as_ref().is_some_and(|p| p.tx() == tx) {
            if self.try_fail_over(Side::Target, status, true) {
                return true; // The next target gets the INVITE.
            }
            if let Some(t) = self.transfer.as_mut() {
                t.invite = None;
            }
            self.leg(Side::Target).end();
            self.transfer_event(Event::Rejected { status, reason: "" }, now);
            return true;
        }
        if t.final_notify_tx == Some(tx) {
            self.transfer_event(Event::FinalNotifyDone, now);
            return true;
        }
        false
    }

    /// A new transfer attempt in the call's record; its index.
    pub(super) fn record_transfer(&mut self, record: TransferRecord) -> usize {
        self.record.transfers.push(record);
        self.record.transfers.len() - 1
    }
}
