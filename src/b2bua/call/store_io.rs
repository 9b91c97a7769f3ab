//! The call's session-store reads and writes. The call's handlers are synchronous:
//! they ask for a read or queue a write in `Call::store_io`, and `Call::run` awaits
//! the store right after the handler returns, before the next message, then feeds
//! a read back through `on_session_read`. No task is spawned and no channel is
//! crossed: with the in-memory store the read is done when it is asked for, and
//! awaiting its ready future costs one poll.

use super::Call;
use crate::events::payload;
use crate::events::{EndedBy, Event, EventType, SipOutcome, StoredParts};
use crate::session::{Session, StoreError};
use crate::sip::transport::Targets;
use std::time::{Instant, SystemTime};

/// Why the call reads its session.
#[derive(Debug)]
pub(super) enum Purpose {
    /// The transfer INVITE to the first of `targets` carries the ticket and contact as they are now
    /// (a ticket stamped a moment ago goes out). `dial`: it is the INVITE of a
    /// dial that found its peer at once (the machine hears `DialStarted`), not
    /// one after a lookup (`InviteSent`).
    TransferInvite { targets: Box<Targets>, dial: bool },
    /// `phone_call.ended` carries the contact and custom data.
    Ended { by: Option<EndedBy>, at: SystemTime },
    /// `phone_call.failed` carries the contact id and custom data.
    Failed {
        outcome: SipOutcome,
        by: Option<EndedBy>,
        at: SystemTime,
    },
}

/// Store work the handlers asked for, done by `Call::run` before the next message.
#[derive(Debug, Default)]
pub(super) struct StoreIo {
    /// Reads, in the order asked.
    reads: Vec<Purpose>,
    /// The answer time to write.
    answered: Option<SystemTime>,
}

impl StoreIo {
    pub(super) fn read(&mut self, purpose: Purpose) {
        self.reads.push(purpose);
    }

    pub(super) fn write_answered(&mut self, at: SystemTime) {
        self.answered = Some(at);
    }

    pub(super) fn pending(&self) -> bool {
        !self.reads.is_empty() || self.answered.is_some()
    }
}

impl Call {
    /// Does what the handlers asked of the store, writes first. A failed write is
    /// logged: the call goes on (the session API shows the state the store has).
    pub(super) async fn drive_store(&mut self) {
        if let Some(at) = self.store_io.answered.take() {
            if let Err(e) = self
                .sh
                .sessions
                .mark_answered(&self.record.session_id, at)
                .await
            {
                static LOG: crate::log_limit::LogLimit = crate::log_limit::per_call();
                if let Some(left_out) = LOG.admit() {
                    tracing::warn!(error = %e, left_out, "session not marked answered in the store");
                }
            }
        }
        while !self.store_io.reads.is_empty() {
            let purpose = self.store_io.reads.remove(0);
            let read = self.sh.sessions.get(&self.record.session_id).await;
            self.on_session_read(purpose, read, Instant::now());
        }
    }

    /// The session as the store has it now, for `purpose`.
    fn on_session_read(
        &mut self,
        purpose: Purpose,
        read: Result<Option<Session>, StoreError>,
        now: Instant,
    ) {
        let read = read.map_err(|e| {
            static LOG: crate::log_limit::LogLimit = crate::log_limit::per_call();
            if let Some(left_out) = LOG.admit() {
                tracing::warn!(error = %e, ?purpose, left_out, "session store read failed: going on without ticket, contact or custom data");
            }
        });
        match purpose {
            Purpose::TransferInvite { targets, dial } => {
                let session = match read {
                    Ok(Some(s)) => Some(s),
                    Ok(None) => None,
                    Err(()) => Some(self.record.bare_session()),
                };
                self.on_transfer_session(*targets, dial, session.as_ref(), now);
            }
            // No session (never created): no event, as before the store seam.
            Purpose::Ended { .. } | Purpose::Failed { .. } if matches!(read, Ok(None)) => {
                self.close_live()
            }
            Purpose::Ended { by, at } => {
                let s = read.ok().flatten();
                let parts = s.as_ref().map(StoredParts::of).unwrap_or_default();
                let data = payload::ended(&self.record, parts, &self.lifecycle.agent, by, at);
                let close = self.take_live_close();
                self.sh.events.emit_with(
                    Event::new(EventType::PhoneCallEnded, &self.record, data),
                    close,
                );
            }
            Purpose::Failed { outcome, by, at } => {
                let s = read.ok().flatten();
                let parts = s.as_ref().map(StoredParts::of).unwrap_or_default();
                let data =
                    payload::failed(&self.record, parts, &self.lifecycle.agent, outcome, by, at);
                let close = self.take_live_close();
                self.sh.events.emit_with(
                    Event::new(EventType::PhoneCallFailed, &self.record, data),
                    close,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_time_is_pending_until_taken() {
        let mut io = StoreIo::default();
        io.write_answered(SystemTime::now());
        assert!(io.pending());
        io.answered.take();
        assert!(!io.pending());
    }
}
