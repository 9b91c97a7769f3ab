//! The in-memory session store: a bounded `DashMap` of sessions with an index of
//! the live ones by caller phone, private to this process (`[session] store =
//! "memory"`).
//!
//! Ended sessions linger for a while so that late webhooks still find them,
//! then `sweep` removes them. The table is bounded: `insert` refuses when full.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use super::store::{PatchOutcome, SessionCounts, SessionPatch, SessionStore, StoreFuture};
use super::{ContactDetails, InsertError, Session, SessionId, StampOutcome};

/// A session plus the monotonic time it ended, for linger expiry
/// (`SystemTime` can jump; `Instant` cannot).
#[derive(Debug)]
struct Entry {
    /// Boxed: the map keeps spare slots, each the size of an entry (a
    /// `Session` inline made every slot, used or not, 400-odd bytes).
    session: Box<Session>,
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
    linger: Duration,
    /// Entries present plus inserts in flight; makes the bound exact under races.
    slots: super::slots::Slots,
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
            linger,
            slots: super::slots::Slots::new(capacity),
            next_seq: AtomicU64::new(0),
            stamp: Mutex::new(()),
        }
    }

    /// Adds a session. When full, the oldest lingering session is removed to make
    /// room; a table full of live sessions refuses.
    pub fn insert(&self, s: Session) -> Result<(), InsertError> {
        while !self.slots.try_take() {
            if !self.evict_oldest_ended() {
                return Err(InsertError::Full(self.slots.capacity()));
            }
        }
        let id = s.id.clone();
        let ended = match self.entries.entry(s.id.clone()) {
            MapEntry::Occupied(_) => {
                self.slots.give_back();
                return Err(InsertError::Duplicate(s.id.to_string()));
            }
            MapEntry::Vacant(vacant) => {
                let mut entry = Entry {
                    session: Box::new(s),
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
        self.entries.get(id).map(|e| (*e.session).clone())
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
        self.mark_answered_at(id, SystemTime::now());
    }

    /// Records `at` as the answer time unless one is already there.
    pub fn mark_answered_at(&self, id: &SessionId, at: SystemTime) {
        if let Some(mut entry) = self.entries.get_mut(id) {
            entry.session.answered_at.get_or_insert(at);
        }
    }

    /// The call ended: the entry stays readable for `linger` (late webhooks), then goes.
    /// Later calls keep the first end time.
    pub fn mark_ended(&self, id: &SessionId) {
        self.mark_ended_at(id, SystemTime::now());
    }

    /// `mark_ended` with the end time the call recorded.
    pub fn mark_ended_at(&self, id: &SessionId, at: SystemTime) {
        let ended = {
            let Some(mut entry) = self.entries.get_mut(id) else {
                return;
            };
            if entry.session.ended_at.is_some() {
                return;
            }
            entry.session.ended_at = Some(at);
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
                matches.then(|| (e.seq, (*e.session).clone()))
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
                self.slots.give_back();
                return true;
            }
        }
        false
    }

    fn queue_ended(&self, at: Instant, id: SessionId) {
        let mut q = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back((at, id));
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

/// Every operation is done when called, under the table's own locks, and comes back
/// as a ready future: nothing here waits.
impl SessionStore for SessionTable {
    fn create<'a>(&'a self, session: Session) -> StoreFuture<'a, ()> {
        ready(self.insert(session).map_err(Into::into))
    }

    fn get<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<Session>> {
        ready(Ok(SessionTable::get(self, id)))
    }

    fn live_by_phone<'a>(&'a self, phone_e164: &'a str) -> StoreFuture<'a, Vec<Session>> {
        ready(Ok(SessionTable::live_by_phone(self, phone_e164)))
    }

    fn mark_answered<'a>(&'a self, id: &'a SessionId, at: SystemTime) -> StoreFuture<'a, ()> {
        self.mark_answered_at(id, at);
        ready(Ok(()))
    }

    fn mark_ended<'a>(&'a self, id: &'a SessionId, at: SystemTime) -> StoreFuture<'a, ()> {
        self.mark_ended_at(id, at);
        ready(Ok(()))
    }

    fn stamp_ticket<'a>(
        &'a self,
        org_id: &'a str,
        phone_e164: &'a str,
        ticket_id: u64,
    ) -> StoreFuture<'a, StampOutcome> {
        ready(Ok(SessionTable::stamp_ticket(
            self, org_id, phone_e164, ticket_id,
        )))
    }

    fn attach_contact<'a>(
        &'a self,
        id: &'a SessionId,
        contact_id: String,
        details: ContactDetails,
    ) -> StoreFuture<'a, Option<String>> {
        let attached = self.update(id, |s| {
            let id = s.contact_id.get_or_insert(contact_id).clone();
            s.contact = Some(ContactDetails::merge(s.contact.take(), details));
            id
        });
        ready(Ok(attached))
    }

    fn patch<'a>(
        &'a self,
        id: &'a SessionId,
        patch: SessionPatch,
    ) -> StoreFuture<'a, PatchOutcome> {
        let outcome = self.update(id, |s| {
            let mut merged = s.custom_data.clone();
            merged.extend(patch.custom_data);
            if merged.len() > patch.max_custom_data {
                return PatchOutcome::TooMany;
            }
            s.custom_data = merged;
            if let Some(contact) = patch.contact_id {
                s.contact_id = contact;
            }
            if let Some(summary) = patch.summary {
                s.summary = summary;
            }
            PatchOutcome::Patched(Box::new(s.clone()))
        });
        ready(Ok(outcome.unwrap_or(PatchOutcome::NotFound)))
    }

    fn sweep(&self) -> StoreFuture<'_, usize> {
        ready(Ok(SessionTable::sweep(self)))
    }

    fn counts(&self) -> StoreFuture<'_, SessionCounts> {
        ready(Ok(SessionCounts {
            held: self.len(),
            live: self.live_count(),
        }))
    }
}

fn ready<'a, T: Send + 'a>(v: Result<T, super::StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(v))
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
        assert_eq!(self.slots.taken(), self.entries.len());
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
mod store_tests;
#[cfg(test)]
mod tests;
