//! What the lifecycle payloads are built from: the call's own record (owned by the
//! call, never in the shared session store) and the parts of the stored session
//! read when an event needs them (contact, custom data).

use crate::session::{ContactDetails, Session, SessionId};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// What the call knows of itself for its events: who, when, and each transfer the AI
/// agent asked for.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub session_id: SessionId,
    pub org_id: String,
    pub agent_id: String,
    /// Caller's number in E.164, None when anonymous/unknown.
    pub caller_phone: Option<String>,
    pub caller_display_name: Option<String>,
    /// Called number as it arrived (Request-URI user).
    pub called: String,
    pub started_at: SystemTime,
    pub answered_at: Option<SystemTime>,
    /// Each transfer the AI agent asked for, in order (it may retry after a failure).
    pub transfers: Vec<TransferRecord>,
    /// The AI agent placed the call: `caller_phone` is then the customer (the callee)
    /// and `called` the caller ID handoff presented.
    pub outbound: bool,
}

impl CallRecord {
    /// The record of the call that created `s`.
    pub fn of(s: &Session) -> CallRecord {
        CallRecord {
            session_id: s.id.clone(),
            org_id: s.org_id.clone(),
            agent_id: s.agent_id.clone(),
            caller_phone: s.caller_phone.clone(),
            caller_display_name: s.caller_display_name.clone(),
            called: s.called.clone(),
            started_at: s.started_at,
            answered_at: s.answered_at,
            transfers: Vec::new(),
            outbound: false,
        }
    }

    /// The session as the call alone knows it: no ticket, no contact, no custom
    /// data (what a failed store read leaves).
    pub fn bare_session(&self) -> Session {
        let mut s = Session::new(
            self.session_id.clone(),
            self.org_id.clone(),
            self.agent_id.clone(),
            self.caller_phone.clone(),
            self.caller_display_name.clone(),
            self.called.clone(),
        );
        s.started_at = self.started_at;
        s.answered_at = self.answered_at;
        s
    }

    /// A transfer completed (2xx).
    pub fn handed_off(&self) -> bool {
        self.completed_transfers() > 0
    }

    pub fn completed_transfers(&self) -> usize {
        self.transfers
            .iter()
            .filter(|t| t.status.is_some_and(|st| (200..300).contains(&st)))
            .count()
    }
}

/// What happened to one transfer (for the lifecycle events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    /// The URI dialled (a named destination's configured URI, or the Refer-To target).
    pub target: String,
    /// The `[[transfer.destination]]` name, when it was one.
    pub destination: Option<String>,
    /// The target's final status (or the one handoff decided: 408 ring timeout, 503
    /// unreachable); None while it is under way.
    pub status: Option<u16>,
    pub requested_at: SystemTime,
    pub invite_sent_at: Option<SystemTime>,
    pub completed_at: Option<SystemTime>,
}

/// The stored session's parts an event carries, borrowed from a store read. The
/// default (nothing) is what a failed read leaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoredParts<'a> {
    pub contact_id: Option<&'a str>,
    pub contact: Option<&'a ContactDetails>,
    pub custom_data: Option<&'a BTreeMap<String, String>>,
}

impl<'a> StoredParts<'a> {
    pub fn of(s: &'a Session) -> StoredParts<'a> {
        StoredParts {
            contact_id: s.contact_id.as_deref(),
            contact: s.contact.as_ref(),
            custom_data: Some(&s.custom_data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_session_has_the_calls_parties_and_nothing_from_the_store() {
        let mut s = Session::new(
            SessionId::parse("abc").unwrap(),
            "org-1".into(),
            "agent-1".into(),
            Some("+14155551212".into()),
            Some("Alice".into()),
            "+18005550100".into(),
        );
        s.zendesk_ticket_id = Some(7);
        s.contact_id = Some("c-1".into());
        s.custom_data.insert("k".into(), "v".into());
        let bare = CallRecord::of(&s).bare_session();
        assert_eq!(bare.id, s.id);
        assert_eq!(bare.caller_phone, s.caller_phone);
        assert_eq!(bare.caller_display_name, s.caller_display_name);
        assert_eq!((bare.org_id, bare.agent_id), (s.org_id, s.agent_id));
        assert_eq!(bare.started_at, s.started_at);
        assert_eq!(bare.zendesk_ticket_id, None);
        assert_eq!(bare.contact_id, None);
        assert!(bare.custom_data.is_empty());
    }

    #[test]
    fn stored_parts_default_is_nothing() {
        let p = StoredParts::default();
        assert!(p.contact_id.is_none() && p.contact.is_none() && p.custom_data.is_none());
    }
}
