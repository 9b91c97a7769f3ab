//! Sessions: what is shared about a call between the call actors (which create
//! and end sessions) and the HTTP sidecar (which finds a live session by the
//! caller's phone, stamps the Zendesk ticket on it, attaches the contact, and
//! serves the session API).
//!
//! The calls and the sidecar reach sessions only through the [`SessionStore`]
//! trait (`store.rs`); [`SessionTable`] (`memory.rs`) is the in-memory
//! implementation, `[session] store = "memory"`. What only the call needs (its
//! transfer attempts, the times its events carry) stays in the call.

pub mod contacts;
pub mod memory;
pub mod redis;
mod slots;
pub mod store;

pub use memory::SessionTable;
pub use redis::RedisStore;
pub use store::{
    PatchOutcome, SessionCounts, SessionPatch, SessionStore, SessionStoreKind, StoreError,
    StoreFuture,
};

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use rand::Rng;

/// Identifies one session; carried in `X-OPENCX-SESSION-ID`, so it is
/// restricted to characters that are safe in a SIP header and a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// Longest id accepted from outside.
    pub const MAX_LEN: usize = 64;

    /// 128 random bits as 32 lowercase hex characters.
    pub fn new_random() -> Self {
        let bits: u128 = rand::thread_rng().gen();
        SessionId(format!("{bits:032x}"))
    }

    /// Accepts 1..=64 characters of `[A-Za-z0-9-_.]`, nothing else.
    pub fn parse(s: &str) -> Option<SessionId> {
        let ok = (1..=Self::MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        ok.then(|| SessionId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is shared about one call, from the INVITE to a while after the BYE.
///
/// `started_at`, `answered_at` and `ended_at` are the session's state as the session
/// API shows it and the stamping rules read it (only live sessions are stamped);
/// the call keeps its own times for its lifecycle events.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: SessionId,
    pub org_id: String,
    pub agent_id: String,
    /// Caller's number in E.164, None when anonymous/unknown.
    pub caller_phone: Option<String>,
    pub caller_display_name: Option<String>,
    /// Called number as it arrived (Request-URI user).
    pub called: String,
    pub started_at: SystemTime,
    pub answered_at: Option<SystemTime>,
    pub ended_at: Option<SystemTime>,
    pub zendesk_ticket_id: Option<u64>,
    pub contact_id: Option<String>,
    /// What is known of the caller as a person, beyond `contact_id` (contact
    /// enrichment from the Zendesk ticket's requester fills it in).
    pub contact: Option<ContactDetails>,
    /// Free-form values set through the session API (validated as SIP header values).
    pub custom_data: BTreeMap<String, String>,
    /// The AI agent's summary of the call for the ticket note, set through the
    /// session API (checked by `zendesk::note::check_summary`; never a SIP header).
    pub summary: Option<String>,
}

/// The caller as a person, as the Zendesk requester describes them. The contact's
/// id is `Session::contact_id`; nothing here goes into a SIP header unvalidated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactDetails {
    pub name: Option<String>,
    pub email: Option<String>,
    /// In E.164.
    pub phone: Option<String>,
    pub zendesk_user_id: Option<u64>,
    pub external_id: Option<String>,
    /// The Zendesk user fields as they are, plus the organization fields prefixed
    /// `org_`.
    pub custom_data: BTreeMap<String, serde_json::Value>,
}

impl Session {
    /// A session that starts now.
    pub fn new(
        id: SessionId,
        org_id: String,
        agent_id: String,
        caller_phone: Option<String>,
        caller_display_name: Option<String>,
        called: String,
    ) -> Self {
        Session {
            id,
            org_id,
            agent_id,
            caller_phone,
            caller_display_name,
            called,
            started_at: SystemTime::now(),
            answered_at: None,
            ended_at: None,
            zendesk_ticket_id: None,
            contact_id: None,
            contact: None,
            custom_data: BTreeMap::new(),
            summary: None,
        }
    }

    /// The call has not ended.
    pub fn is_live(&self) -> bool {
        self.ended_at.is_none()
    }
}

impl ContactDetails {
    /// `new` over `old`: a value `new` has wins, one it lacks is kept; custom data
    /// is merged key by key.
    pub fn merge(old: Option<ContactDetails>, new: ContactDetails) -> ContactDetails {
        let Some(mut c) = old else { return new };
        c.name = new.name.or(c.name);
        c.email = new.email.or(c.email);
        c.phone = new.phone.or(c.phone);
        c.zendesk_user_id = new.zendesk_user_id.or(c.zendesk_user_id);
        c.external_id = new.external_id.or(c.external_id);
        c.custom_data.extend(new.custom_data);
        c
    }
}

/// What `SessionStore::stamp_ticket` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StampOutcome {
    /// The ticket id is now on this session.
    Stamped(SessionId),
    /// This session already carried the same ticket id: nothing changed.
    AlreadyStamped(SessionId),
    /// Every matching live session carries another ticket id; the first stays.
    Conflict { session: SessionId, existing: u64 },
    /// No live session of the org has this caller phone.
    NoSession,
}

/// Why the store refused a new session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InsertError {
    #[error("session table full ({0} entries)")]
    Full(usize),
    #[error("session {0} already exists")]
    Duplicate(String),
}
