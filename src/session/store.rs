//! The session store seam: what calls and the HTTP sidecar share about a call,
//! behind one object-safe async trait, so that a store shared by several nodes
//! can replace the in-memory table with one new file and a `[session] store` kind.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use super::{ContactDetails, InsertError, Session, SessionId, StampOutcome};

/// What every store operation returns.
///
/// Boxed futures written out rather than the `async-trait` crate: no proc-macro
/// to build, and the in-memory store does its work when called and returns a
/// ready future, so awaiting it costs one allocation and one poll (the call
/// awaits a read between REFER and the transfer INVITE). The `'a` lets a
/// networked store borrow its arguments across its awaits.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store operation that did not happen. A shared store can fail; every caller
/// says what it does then (the call reads "no ticket, no contact", the webhook
/// answers 503).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A new session was refused (full, or its id taken).
    #[error(transparent)]
    Insert(#[from] InsertError),
    /// The store could not be reached or did not answer in time.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something that is not a session.
    #[error("session store returned a malformed record: {0}")]
    Malformed(String),
}

/// `[session] store`: which implementation holds the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionStoreKind {
    /// This process's own table ([`super::SessionTable`]): sessions are not shared with
    /// other nodes and do not survive a restart.
    #[default]
    Memory,
    /// A Redis server shared by several nodes (`super::redis::RedisStore`).
    Redis,
}

impl SessionStoreKind {
    /// The accepted `[session] store` values.
    pub const NAMES: [&'static str; 2] = ["memory", "redis"];

    pub fn parse(s: &str) -> Option<SessionStoreKind> {
        match s {
            "memory" => Some(SessionStoreKind::Memory),
            "redis" => Some(SessionStoreKind::Redis),
            _ => None,
        }
    }
}

/// A change made through the session API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionPatch {
    /// `Some(None)` clears the contact id; `None` leaves it.
    pub contact_id: Option<Option<String>>,
    /// Merged into the session's custom data, key by key.
    pub custom_data: std::collections::BTreeMap<String, String>,
    /// The most custom-data entries the merged map may hold.
    pub max_custom_data: usize,
    /// `Some(None)` clears the summary; `None` leaves it.
    pub summary: Option<Option<String>>,
}

/// What `SessionStore::patch` did.
#[derive(Debug, Clone)]
pub enum PatchOutcome {
    /// The session after the change.
    Patched(Box<Session>),
    /// The merged custom data would exceed the limit: nothing changed.
    TooMany,
    NotFound,
}

/// Sessions held, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// Live and lingering.
    pub held: usize,
    /// Not yet ended.
    pub live: usize,
}

/// What calls and the HTTP sidecar share about a call: identity, org, agent, caller
/// and called number, ticket, contact, custom data, and whether the call is live,
/// answered or ended. Nothing a single call alone needs lives here.
pub trait SessionStore: Send + Sync {
    /// Adds a new session; refuses when full (after making room from lingering
    /// sessions) or when the id exists.
    fn create<'a>(&'a self, session: Session) -> StoreFuture<'a, ()>;

    /// The session, live or lingering.
    fn get<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<Session>>;

    /// Live sessions whose caller is this E.164 phone, newest first.
    fn live_by_phone<'a>(&'a self, phone_e164: &'a str) -> StoreFuture<'a, Vec<Session>>;

    /// The call was answered at `at` (the first answer time stays).
    fn mark_answered<'a>(&'a self, id: &'a SessionId, at: SystemTime) -> StoreFuture<'a, ()>;

    /// The call ended at `at` (the first end time stays): the session leaves the
    /// live set and lingers for late webhooks.
    fn mark_ended<'a>(&'a self, id: &'a SessionId, at: SystemTime) -> StoreFuture<'a, ()>;

    /// One atomic step: stamp `ticket_id` on the org's live session whose caller is
    /// `phone_e164`. With several, one already carrying this ticket wins (idempotent
    /// repeat), else the newest not yet stamped; a session never changes its ticket.
    fn stamp_ticket<'a>(
        &'a self,
        org_id: &'a str,
        phone_e164: &'a str,
        ticket_id: u64,
    ) -> StoreFuture<'a, StampOutcome>;

    /// One atomic step: the session's contact id becomes `contact_id` unless it has
    /// one already (set through the API: that one stays), and `details` are merged
    /// over its contact ([`ContactDetails::merge`]). The contact id the session
    /// carries afterwards; None when the session is gone.
    fn attach_contact<'a>(
        &'a self,
        id: &'a SessionId,
        contact_id: String,
        details: ContactDetails,
    ) -> StoreFuture<'a, Option<String>>;

    /// One atomic step: the session API's change (custom data merged, contact id
    /// set or cleared).
    fn patch<'a>(&'a self, id: &'a SessionId, patch: SessionPatch)
        -> StoreFuture<'a, PatchOutcome>;

    /// Housekeeping: removes sessions that ended longer than the linger ago (a
    /// store that expires entries itself does nothing). How many went.
    fn sweep(&self) -> StoreFuture<'_, usize>;

    /// Sessions held, live and lingering.
    fn counts(&self) -> StoreFuture<'_, SessionCounts>;
}
