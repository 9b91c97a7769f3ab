//! The live session table: one entry per call, shared between the call actors
//! (which create and end sessions) and the HTTP sidecar (which finds a live
//! session by the caller's phone and stamps the Zendesk ticket on it).
//!
//! Ended sessions linger for a while so that late webhooks still find them,
//! then `sweep` removes them. The table is bounded: `insert` refuses when full.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
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

/// What we know about one call, from the INVITE to a while after the BYE.
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
    /// Each transfer the AI agent asked for, in order (it may retry after a failure).
    pub transfers: Vec<TransferRecord>,
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
            transfers: Vec::new(),
        }
    }

    /// The call has not ended.
    pub fn is_live(&self) -> bool {
        self.ended_at.is_none()
    }
}

/// What `SessionTable::stamp_ticket` did.
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

/// Why `SessionTable::insert` refused a session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InsertError {
    #[error("session table full ({0} entries)")]
    Full(usize),
    #[error("session {0} already exists")]
    Duplicate(String),
}

/// A session plus the monotonic time it ended, for linger expiry
/// (`SystemTime` can jump; `Instant` cannot).
#[derive(Debug)]
struct Entry {
    session: Session,
    ended_instant: Option<Instant>,
    /// Insertion order, to break ties between equal `started_at`.
    seq: u64,
}

impl Entry {
    fn expired(&self, now: Instant, linger: Duration) -> bool {
        self.ended_instant
            .is_some_and(|t| now.saturating_duration_since(t) >= linger)
    }

    /// Keeps `ended_instant` in step with `ended_at` after any change.
    fn sync_ended(&mut self) {
        match (self.session.ended_at, self.ended_instant) {
            (Some(_), None) => self.ended_instant = Some(Instant::now()),
            (None, Some(_)) => self.ended_instant = None,
            _ => {}
        }
    }
}

/// The bounded, shared table of sessions with an index by caller phone.
///
/// Ended sessions linger for late webhooks, kept in the order they ended so that
/// sweeping costs what it removes, not the table's size. The bound counts live and
/// lingering sessions; when it is reached, the oldest lingering session makes room
/// (its linger cut short) and only a table full of live calls refuses a new one.
///
/// Lock order: `stamp` is taken first and alone (it is held while the other locks are
/// taken, never taken under them); an `entries` guard may be held while `by_phone` is
/// locked, never the reverse; `ended` is never locked while an `entries` or `by_phone` guard is held,
/// nor the other way round. No method iterates a map while holding a guard on it.
///
/// Closures passed to `update` run under the entry's guard: they must not call
/// back into the table.
#[derive(Debug)]
pub struct SessionTable {
    entries: DashMap<SessionId, Entry>,
    /// E.164 caller phone -> ids of the live sessions with that phone.
    by_phone: DashMap<String, Vec<SessionId>>,
    /// Ended sessions, oldest end first. Ids whose session was revived or removed
    /// meanwhile are skipped when popped.
    ended: Mutex<VecDeque<(Instant, SessionId)>>,
    capacity: usize,
    linger: Duration,
    /// Entries present plus inserts in flight; makes the bound exact under races.
    reserved: AtomicUsize,
    next_seq: AtomicU64,
    /// Serialises `stamp_ticket`, so that choosing a session and stamping it is one
    /// step for concurrent webhooks.
    stamp: Mutex<()>,
}

impl SessionTable {
    /// A table holding at most `capacity` sessions, keeping ended ones for `linger`.
    pub fn new(capacity: usize, linger: Duration) -> Self {
        SessionTable {
            entries: DashMap::new(),
            by_phone: DashMap::new(),
            ended: Mutex::new(VecDeque::new()),
            capacity,
            linger,
            reserved: AtomicUsize::new(0),
            next_seq: AtomicU64::new(0),
            stamp: Mutex::new(()),
        }
    }

    /// Adds a session. When full, the oldest lingering session is removed to make
    /// room; a table full of live sessions refuses.
    pub fn insert(&self, s: Session) -> Result<(), InsertError> {
        while !self.try_reserve() {
            if !self.evict_oldest_ended() {
                return Err(InsertError::Full(self.capacity));
            }
        }
        let id = s.id.clone();
        let ended = match self.entries.entry(s.id.clone()) {
            MapEntry::Occupied(_) => {
                self.release();
                return Err(InsertError::Duplicate(s.id.to_string()));
            }
            MapEntry::Vacant(vacant) => {
                let mut entry = Entry {
                    session: s,
                    ended_instant: None,
                    seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
                };
                entry.sync_ended();
                if let (Some(phone), None) = (&entry.session.caller_phone, entry.ended_instant) {
                    self.index(phone, &entry.session.id);
                }
                let ended = entry.ended_instant;
                vacant.insert(entry);
                ended
            }
        };
        if let Some(at) = ended {
            self.queue_ended(at, id);
        }
        Ok(())
    }

    /// A copy of the session, live or lingering.
    pub fn get(&self, id: &SessionId) -> Option<Session> {
        self.entries.get(id).map(|e| e.session.clone())
    }

    /// Runs `f` on the session under its lock and returns its result. The
    /// phone index follows a change of `caller_phone`, `ended_at` changes work
    /// like `mark_ended`, and a change of `id` is undone (the key is the id).
    /// `f` must not call into the table.
    pub fn update<R>(&self, id: &SessionId, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        let (out, newly_ended) = {
            let mut entry = self.entries.get_mut(id)?;
            let old_phone = entry.session.caller_phone.clone();
            let was_live = entry.ended_instant.is_none();
            let out = f(&mut entry.session);
            entry.session.id = id.clone();
            entry.sync_ended();
            let is_live = entry.ended_instant.is_none();
            // Only live sessions are indexed.
            if was_live && (!is_live || entry.session.caller_phone != old_phone) {
                if let Some(old) = &old_phone {
                    self.unindex(old, id);
                }
            }
            if is_live && (!was_live || entry.session.caller_phone != old_phone) {
                if let Some(new) = &entry.session.caller_phone {
                    self.index(new, id);
                }
            }
            let newly_ended = if was_live { entry.ended_instant } else { None };
            (out, newly_ended)
        };
        if let Some(at) = newly_ended {
            self.queue_ended(at, id.clone());
        }
        Some(out)
    }

    /// Records the answer time once; later calls keep the first.
    pub fn mark_answered(&self, id: &SessionId) {
        if let Some(mut entry) = self.entries.get_mut(id) {
            entry
                .session
                .answered_at
                .get_or_insert_with(SystemTime::now);
        }
    }

    /// The call ended: the entry stays readable for `linger` (late webhooks), then goes.
    /// Later calls keep the first end time.
    pub fn mark_ended(&self, id: &SessionId) {
        let ended = {
            let Some(mut entry) = self.entries.get_mut(id) else {
                return;
            };
            if entry.session.ended_at.is_some() {
                return;
            }
            entry.session.ended_at = Some(SystemTime::now());
            let at = Instant::now();
            entry.ended_instant = Some(at);
            if let Some(phone) = entry.session.caller_phone.clone() {
                self.unindex(&phone, id);
            }
            at
        };
        self.queue_ended(ended, id.clone());
    }

    /// Live sessions (not ended) whose caller is this E.164 phone, newest first.
    pub fn live_by_phone(&self, phone_e164: &str) -> Vec<Session> {
        // Copy the ids and drop the index guard before touching `entries`.
        let ids = match self.by_phone.get(phone_e164) {
            Some(ids) => ids.clone(),
            None => return Vec::new(),
        };
        let mut found: Vec<(u64, Session)> = ids
            .iter()
            .filter_map(|id| {
                let e = self.entries.get(id)?;
                let matches =
                    e.session.is_live() && e.session.caller_phone.as_deref() == Some(phone_e164);
                matches.then(|| (e.seq, e.session.clone()))
            })
            .collect();
        found.sort_by(|(sa, a), (sb, b)| b.started_at.cmp(&a.started_at).then(sb.cmp(sa)));
        found.into_iter().map(|(_, s)| s).collect()
    }

    /// Stamp a Zendesk ticket id on the org's live session whose caller is `phone_e164`.
    /// With several, one that already has this ticket wins (idempotent repeat), else
    /// the most recent one not yet stamped; a session never changes its ticket id.
    pub fn stamp_ticket(&self, org_id: &str, phone_e164: &str, ticket_id: u64) -> StampOutcome {
        let _one_at_a_time = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        let live: Vec<Session> = self
            .live_by_phone(phone_e164)
            .into_iter()
            .filter(|s| s.org_id == org_id)
            .collect();
        if let Some(s) = live.iter().find(|s| s.zendesk_ticket_id == Some(ticket_id)) {
            return StampOutcome::AlreadyStamped(s.id.clone());
        }
        for candidate in live.iter().filter(|s| s.zendesk_ticket_id.is_none()) {
            // Re-checked under the entry's guard: the call may have ended meanwhile.
            let stamped = self.update(&candidate.id, |s| {
                let still_fits = s.is_live()
                    && s.zendesk_ticket_id.is_none()
                    && s.org_id == org_id
                    && s.caller_phone.as_deref() == Some(phone_e164);
                if still_fits {
                    s.zendesk_ticket_id = Some(ticket_id);
                }
                still_fits
            });
            if stamped == Some(true) {
                return StampOutcome::Stamped(candidate.id.clone());
            }
        }
        match live.iter().find_map(|s| Some((s, s.zendesk_ticket_id?))) {
            Some((s, existing)) => StampOutcome::Conflict {
                session: s.id.clone(),
                existing,
            },
            None => StampOutcome::NoSession,
        }
    }

    /// Remove entries ended longer than `linger` ago; returns how many were removed.
    /// Costs what it removes: the ended queue is in end order.
    pub fn sweep(&self) -> usize {
        self.sweep_at(Instant::now())
    }

    fn sweep_at(&self, now: Instant) -> usize {
        let due: Vec<SessionId> = {
            let mut q = self.ended.lock().unwrap_or_else(|p| p.into_inner());
            let mut due = Vec::new();
            while q
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.linger)
            {
                if let Some((_, id)) = q.pop_front() {
                    due.push(id);
                }
            }
            due
        };
        due.into_iter()
            .filter(|id| self.remove_if(id, |e| e.expired(now, self.linger)))
            .count()
    }

    /// Entries held, live and lingering.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sessions not yet ended.
    pub fn live_count(&self) -> usize {
        self.entries.iter().filter(|e| e.session.is_live()).count()
    }

    /// Make room: remove the session that ended longest ago. False when no session
    /// is lingering.
    fn evict_oldest_ended(&self) -> bool {
        loop {
            let next = {
                let mut q = self.ended.lock().unwrap_or_else(|p| p.into_inner());
                q.pop_front()
            };
            let Some((_, id)) = next else { return false };
            if self.remove_if(&id, |e| e.ended_instant.is_some()) {
                return true;
            }
        }
    }

    /// Remove `id` if `cond` holds for it under its write guard.
    fn remove_if(&self, id: &SessionId, cond: impl Fn(&Entry) -> bool) -> bool {
        if let MapEntry::Occupied(occupied) = self.entries.entry(id.clone()) {
            if cond(occupied.get()) {
                if occupied.get().ended_instant.is_none() {
                    if let Some(phone) = &occupied.get().session.caller_phone {
                        self.unindex(phone, occupied.key());
                    }
                }
                occupied.remove();
                self.release();
                return true;
            }
        }
        false
    }

    fn queue_ended(&self, at: Instant, id: SessionId) {
        let mut q = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back((at, id));
    }

    fn try_reserve(&self) -> bool {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        // Never below zero, even if a bug released twice.
        let _ = self
            .reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Caller holds the guard of `id`'s entry (lock order: entries, then by_phone).
    /// `id` is new to this phone's list (sessions are indexed once, while live).
    fn index(&self, phone: &str, id: &SessionId) {
        self.by_phone
            .entry(phone.to_owned())
            .or_default()
            .push(id.clone());
    }

    /// Caller holds the guard of `id`'s entry. Empty lists are dropped so the
    /// index does not grow with every phone ever seen.
    fn unindex(&self, phone: &str, id: &SessionId) {
        if let Some(mut ids) = self.by_phone.get_mut(phone) {
            ids.retain(|x| x != id);
        }
        // Under the shard lock again: an insert may have pushed in between.
        self.by_phone.remove_if(phone, |_, ids| ids.is_empty());
    }
}

#[cfg(test)]
impl SessionTable {
    /// Number of phones in the index.
    fn index_len(&self) -> usize {
        self.by_phone.len()
    }

    /// Panics unless the index, the entries and the reservation count agree.
    /// Call only when no other thread uses the table.
    fn assert_consistent(&self) {
        assert_eq!(self.reserved.load(Ordering::Acquire), self.entries.len());
        // Copy the index first: keep the lock order even in tests.
        let index: Vec<(String, Vec<SessionId>)> = self
            .by_phone
            .iter()
            .map(|r| (r.key().clone(), r.value().clone()))
            .collect();
        let mut indexed = 0;
        for (phone, ids) in &index {
            assert!(!ids.is_empty(), "empty list for {phone}");
            for id in ids {
                let e = self.entries.get(id).expect("indexed id has an entry");
                assert_eq!(e.session.caller_phone.as_deref(), Some(phone.as_str()));
                assert!(e.session.is_live(), "only live sessions are indexed");
                indexed += 1;
            }
        }
        let live_with_phone = self
            .entries
            .iter()
            .filter(|e| e.session.caller_phone.is_some() && e.session.is_live())
            .count();
        assert_eq!(indexed, live_with_phone);
    }
}

#[cfg(test)]
mod tests;
