//! The call's lifecycle events: small hooks the call calls where it starts, is
//! answered, transferred, fails or ends. Payloads are built by the pure functions
//! of `events::payload` from the session as it is then; `Events::emit` only queues.

use super::{Call, Side};
use crate::events::payload::{self, AgentInfo};
use crate::events::{EndedBy, Event, EventType, SipOutcome};
use crate::session::Session;
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
}

impl Call {
    fn session_for(&self, kind: EventType) -> Option<Session> {
        if !self.sh.events.wants(kind) {
            // No subscriber takes it: counted, nothing built.
            self.sh.events.count(kind);
            return None;
        }
        self.sh.sessions.get(&self.session_id)
    }

    /// `phone_call.started` and `conversation.started`, once the session exists.
    pub(super) fn emit_started(&self) {
        if let Some(s) = self.session_for(EventType::PhoneCallStarted) {
            let data = payload::started(&s);
            self.sh
                .events
                .emit(Event::new(EventType::PhoneCallStarted, &s, data));
        }
        if let Some(s) = self.session_for(EventType::ConversationStarted) {
            let data = payload::conversation_started(&s);
            self.sh
                .events
                .emit(Event::new(EventType::ConversationStarted, &s, data));
        }
    }

    pub(super) fn emit_answered(&self) {
        if let Some(s) = self.session_for(EventType::PhoneCallAnswered) {
            let data = payload::answered(&s, SystemTime::now());
            self.sh
                .events
                .emit(Event::new(EventType::PhoneCallAnswered, &s, data));
        }
    }

    /// A transfer attempt (the session's transfer record `index`) has its outcome.
    pub(super) fn emit_transferred(&mut self, index: usize) {
        if self.lifecycle.transfers_reported.contains(&index) {
            return;
        }
        self.lifecycle.transfers_reported.push(index);
        if let Some(s) = self.session_for(EventType::PhoneCallTransferred) {
            if let Some(data) = payload::transferred(&s, index) {
                self.sh
                    .events
                    .emit(Event::new(EventType::PhoneCallTransferred, &s, data));
            }
        }
    }

    /// A BYE from `side` ends the call: the caller is the `user`, anyone else the
    /// `agent` (the AI agent, or the human a transfer reached).
    pub(super) fn note_bye_from(&mut self, side: Side) {
        self.note_ended_by(if side == Side::Caller {
            EndedBy::User
        } else {
            EndedBy::Agent
        });
    }

    /// The caller gave up before the answer (CANCEL, or BYE in the early dialog).
    pub(super) fn emit_cancelled(&mut self) {
        self.emit_failed(SipOutcome::Cancelled, Some(EndedBy::User));
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
        if let Some(s) = self.session_for(EventType::PhoneCallFailed) {
            let data = payload::failed(&s, &self.lifecycle.agent, outcome, by, SystemTime::now());
            self.sh
                .events
                .emit(Event::new(EventType::PhoneCallFailed, &s, data));
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
        let count = self
            .sh
            .sessions
            .get(&self.session_id)
            .map_or(0, |s| s.transfers.len());
        for i in 0..count {
            self.emit_transferred(i);
        }
        if let Some(s) = self.session_for(EventType::PhoneCallEnded) {
            let by = Some(self.lifecycle.ended_by.unwrap_or(EndedBy::System));
            let data = payload::ended(&s, &self.lifecycle.agent, by, SystemTime::now());
            self.sh
                .events
                .emit(Event::new(EventType::PhoneCallEnded, &s, data));
        }
    }
}
