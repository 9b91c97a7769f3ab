//! The call's side of the ticket note (issue 16): when a transfer has completed
//! (the target answered and the caller was switched), what the note says is
//! decided here from the call's record and handed to the note task; the call never
//! waits for Zendesk.

use super::Call;
use crate::events::CallRecord;
use crate::zendesk::note::TicketNote;
use std::time::SystemTime;

/// What the transfer knew when it completed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct NoteParts {
    /// The destination the last INVITE went to asks for a note (`ticket_note`).
    pub wanted: bool,
    /// The ticket the transfer INVITE carried (the session's, when it was sent).
    pub ticket: Option<u64>,
    /// From the REFER's summary header, cleaned and bounded.
    pub refer_summary: Option<String>,
    /// From the session API, as the session had it when the INVITE was sent.
    pub session_summary: Option<String>,
}

/// The note for the completed transfer `index`, or None: the destination does not
/// want one, or the session had no ticket. The REFER's summary wins over the
/// session's: it came with this transfer.
pub(super) fn note_for(
    record: &CallRecord,
    index: usize,
    parts: &NoteParts,
    now: SystemTime,
) -> Option<TicketNote> {
    if !parts.wanted {
        return None;
    }
    let ticket_id = parts.ticket?;
    let t = record.transfers.get(index);
    let done = t.and_then(|t| t.completed_at).unwrap_or(now);
    Some(TicketNote {
        ticket_id,
        org_id: record.org_id.clone(),
        session_id: record.session_id.as_str().to_owned(),
        agent_id: record.agent_id.clone(),
        caller_phone: record.caller_phone.clone(),
        destination: t.and_then(|t| t.destination.clone()),
        duration: done.duration_since(record.started_at).unwrap_or_default(),
        summary: parts
            .refer_summary
            .clone()
            .or_else(|| parts.session_summary.clone()),
        transfer: index,
    })
}

impl Call {
    /// The transfer in progress completed: its note, if any, to the note task.
    pub(super) fn queue_ticket_note(&self) {
        let Some(notes) = self.sh.notes.as_ref() else {
            return;
        };
        let Some(t) = self.transfer.as_ref() else {
            return;
        };
        if let Some(note) = note_for(&self.record, t.record, &t.note, SystemTime::now()) {
            tracing::debug!(ticket = note.ticket_id, "ticket note queued");
            notes.queue(note);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::TransferRecord;
    use crate::session::{Session, SessionId};
    use std::time::Duration;

    fn record() -> CallRecord {
        let mut s = Session::new(
            SessionId::parse("s-1").unwrap(),
            "org-1".into(),
            "agent-1".into(),
            Some("+14155551212".into()),
            None,
            "+18005550100".into(),
        );
        s.started_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut r = CallRecord::of(&s);
        r.transfers.push(TransferRecord {
            target: "sip:support@example.zendesk.sip.twilio.com".into(),
            destination: Some("zendesk".into()),
            status: Some(200),
            requested_at: s.started_at,
            invite_sent_at: None,
            completed_at: Some(s.started_at + Duration::from_secs(95)),
        });
        r
    }

    fn parts() -> NoteParts {
        NoteParts {
            wanted: true,
            ticket: Some(100),
            refer_summary: None,
            session_summary: None,
        }
    }

    #[test]
    fn completed_transfer_with_a_ticket_gets_a_note() {
        let n = note_for(&record(), 0, &parts(), SystemTime::now()).expect("a note");
        assert_eq!(n.ticket_id, 100);
        assert_eq!(n.session_id, "s-1");
        assert_eq!(n.agent_id, "agent-1");
        assert_eq!(n.org_id, "org-1");
        assert_eq!(n.caller_phone.as_deref(), Some("+14155551212"));
        assert_eq!(n.destination.as_deref(), Some("zendesk"));
        assert_eq!(n.duration, Duration::from_secs(95));
        assert_eq!(n.transfer, 0);
        assert_eq!(n.summary, None);
    }

    #[test]
    fn no_ticket_or_not_wanted_means_no_note() {
        let mut p = parts();
        p.ticket = None;
        assert_eq!(note_for(&record(), 0, &p, SystemTime::now()), None);
        let mut p = parts();
        p.wanted = false;
        assert_eq!(note_for(&record(), 0, &p, SystemTime::now()), None);
    }

    #[test]
    fn refer_summary_wins_over_the_sessions() {
        let mut p = parts();
        p.session_summary = Some("from the API".into());
        let n = note_for(&record(), 0, &p, SystemTime::now()).expect("note");
        assert_eq!(n.summary.as_deref(), Some("from the API"));
        p.refer_summary = Some("from the REFER".into());
        let n = note_for(&record(), 0, &p, SystemTime::now()).expect("note");
        assert_eq!(n.summary.as_deref(), Some("from the REFER"));
    }
}
