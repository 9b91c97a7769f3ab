//! The call's lifecycle events: small hooks the call calls where it starts, is
//! answered, transferred, fails or ends. Payloads are built by the pure functions
//! of `events::payload` from the call's own record (`Call::record`) and, for
//! `ended` and `failed`, the stored session read through `store_io`;
//! `Events::emit` only queues.

use super::store_io::Purpose;
use super::{Call, Side};
use crate::events::payload::{self, AgentInfo};
use crate::events::{live, EndedBy, Event, EventType, SipOutcome};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// What the call remembers for its events.
#[derive(Debug, Default)]
pub(super) struct Lifecycle {
    /// The route's agent languages and version.
    pub agent: AgentInfo,
    /// Who hung up, once known.
    pub ended_by: Option<EndedBy>,
    /// `phone_call.ended` or `phone_call.failed` has been emitted.
    pub closed: bool,
    /// Transfer records already reported by `phone_call.transferred`.
    pub transfers_reported: Vec<usize>,
    /// The call is recorded live in the store (`events::live`) and its record
    /// not yet closed.
    pub live: bool,
    /// The session was stored and the call started (`emit_started`): from then
    /// on its id means something to whoever is told it.
    pub started: bool,
}

impl Call {
    /// A subscriber takes `kind`; else it is counted and nothing is built.
    fn wants(&self, kind: EventType) -> bool {
        let wanted = self.sh.events.wants(kind);
        if !wanted {
            self.sh.events.count(kind);
        }
        wanted
    }

    /// `phone_call.started` and `conversation.started`, once the session exists;
    /// the call is recorded live with the first (`custom_data`: the session's, for
    /// an end built after a crash).
    pub(super) fn emit_started(&mut self, custom_data: BTreeMap<String, String>) {
        let events = &self.sh.events;
        let change = events.tracks_live().then(|| {
            live::started(
                &self.record,
                &self.lifecycle.agent,
                custom_data,
                events.node_id(),
            )
        });
        self.lifecycle.live = change.is_some();
        self.lifecycle.started = true;
        if self.wants(EventType::PhoneCallStarted) {
            let data = payload::started(&self.record);
            self.sh.events.emit_with(
                Event::new(EventType::PhoneCallStarted, &self.record, data),
                change,
            );
        } else if let Some(c) = change {
            self.sh.events.live(c);
        }
        if self.wants(EventType::ConversationStarted) {
            // A session just created has no contact yet.
            let data = payload::conversation_started(&self.record, None);
            self.sh.events.emit(Event::new(
                EventType::ConversationStarted,
                &self.record,
                data,
            ));
        }
    }

    pub(super) fn emit_answered(&self) {
        let change = self.lifecycle.live.then(|| {
            let at = self.record.answered_at.unwrap_or_else(SystemTime::now);
            live::answered(&self.record, at)
        });
        if self.wants(EventType::PhoneCallAnswered) {
            let data = payload::answered(&self.record, SystemTime::now());
            self.sh.events.emit_with(
                Event::new(EventType::PhoneCallAnswered, &self.record, data),
                change,
            );
        } else if let Some(c) = change {
            self.sh.events.live(c);
        }
    }

    /// The change that closes the call's live record, once.
    pub(super) fn take_live_close(&mut self) -> Option<live::Change> {
        std::mem::replace(&mut self.lifecycle.live, false).then(|| live::closed(&self.record))
    }

    /// Close the call's live record with no event (its end is not wanted, or
    /// there is none to send).
    pub(super) fn close_live(&mut self) {
        if let Some(c) = self.take_live_close() {
            self.sh.events.live(c);
        }
    }

    /// A transfer attempt (the call's transfer record `index`) has its outcome.
    pub(super) fn emit_transferred(&mut self, index: usize) {
        if self.lifecycle.transfers_reported.contains(&index) {
            return;
        }
        self.lifecycle.transfers_reported.push(index);
        if self.wants(EventType::PhoneCallTransferred) {
            if let Some(data) = payload::transferred(&self.record, index) {
                self.sh.events.emit(Event::new(
                    EventType::PhoneCallTransferred,
                    &self.record,
                    data,
                ));
            }
        }
    }

    /// A BYE from `side` ends the call: the caller is the `user`, anyone else the
    /// `agent` (the AI agent, or the human a transfer reached).
    /// On an outbound call the customer is the callee (`Call::roles`).
    pub(super) fn note_bye_from(&mut self, side: Side) {
        let (customer, _) = self.roles();
        self.note_ended_by(if side == customer {
            EndedBy::User
        } else {
            EndedBy::Agent
        });
    }

    /// The caller gave up before the answer (CANCEL, or BYE in the early dialog).
    /// On an outbound call the AI agent gave up before the callee answered:
    /// nobody the seed names hung up (null).
    pub(super) fn emit_cancelled(&mut self) {
        let by = (!self.is_outbound()).then_some(EndedBy::User);
        self.emit_failed(SipOutcome::Cancelled, by);
    }

    /// handoff is shutting down: the call ends by the `system`; one not yet
    /// answered fails (its caller gets 503).
    pub(super) fn note_shutdown(&mut self, unanswered: bool) {
        self.note_ended_by(EndedBy::System);
        if unanswered {
            self.emit_failed(SipOutcome::Local(503), Some(EndedBy::System));
        }
    }

    /// Who ended the call, unless it is already known.
    pub(super) fn note_ended_by(&mut self, by: EndedBy) {
        self.lifecycle.ended_by.get_or_insert(by);
    }

    /// The call failed to connect: `phone_call.failed`, once.
    pub(super) fn emit_failed(&mut self, outcome: SipOutcome, by: Option<EndedBy>) {
        if std::mem::replace(&mut self.lifecycle.closed, true) {
            return;
        }
        if self.wants(EventType::PhoneCallFailed) {
            // Built once the store has answered (contact, custom data); the live
            // record is closed with it.
            self.store_io.read(Purpose::Failed {
                outcome,
                by,
                at: SystemTime::now(),
            });
        } else {
            self.close_live();
        }
    }

    /// The call is ending: a transfer cut short is reported, then
    /// `phone_call.ended` (or `failed`, for a call that was never answered), once.
    pub(super) fn emit_ended(&mut self) {
        if self.lifecycle.closed {
            return;
        }
        if !self.answered {
            let by = self.lifecycle.ended_by;
            return self.emit_failed(SipOutcome::Local(500), by);
        }
        self.lifecycle.closed = true;
        for i in 0..self.record.transfers.len() {
            self.emit_transferred(i);
        }
        if self.wants(EventType::PhoneCallEnded) {
            // Built once the store has answered (contact, custom data).
            let by = Some(self.lifecycle.ended_by.unwrap_or(EndedBy::System));
            self.store_io.read(Purpose::Ended {
                by,
                at: SystemTime::now(),
            });
        } else {
            self.close_live();
        }
    }
}
