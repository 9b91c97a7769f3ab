//! The call's lifecycle events: small hooks the call calls where it starts, is
//! answered, transferred, fails or ends. Payloads are built by the pure functions
//! of `events::payload` from the call's own record (`Call::record`) and, for
//! `ended` and `failed`, the stored session read through `store_io`;
//! `Events::emit` only queues.

use super::store_io::Purpose;
use super::{Call, Side};
use crate::events::payload::{self, AgentInfo};
use crate::events::{EndedBy, Event, EventType, SipOutcome};
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
    /// A subscriber takes `kind`; else it is counted and nothing is built.
    fn wants(&self, kind: EventType) -> bool {
        let wanted = self.sh.events.wants(kind);
        if !wanted {
            self.sh.events.count(kind);
        }
        wanted
    }

    /// `phone_call.started` and `conversation.started`, once the session exists.
    pub(super) fn emit_started(&self) {
        if self.wants(EventType::PhoneCallStarted) {
            let data = payload::started(&self.record);
            self.sh
                .events
                .emit(Event::new(EventType::PhoneCallStarted, &self.record, data));
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
        if self.wants(EventType::PhoneCallAnswered) {
            let data = payload::answered(&self.record, SystemTime::now());
            self.sh
                .events
                .emit(Event::new(EventType::PhoneCallAnswered, &self.record, data));
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
        if self.wants(EventType::PhoneCallFailed) {
            // Built once the store has answered (contact, custom data).
            self.store_io.read(Purpose::Failed {
                outcome,
                by,
                at: SystemTime::now(),
            });
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
        }
    }
}
