//! The Redis session store (`[session] store = "redis"`): sessions shared by every
//! node pointing at one Redis, so a webhook on any node stamps a call on any other.
//!
//! Each operation is one command or one Lua script (`redis/scripts.rs`), bounded
//! by `timeout_ms`; any failure is [`StoreError::Unavailable`]. Records
//! (`redis/record.rs`) live `record_ttl` unless the owning node refreshes them
//! (every third of it, from `sweep`): a dead node's sessions expire. Ended ones
//! expire after the linger.
//!
//! Degraded mode: when Redis cannot be reached, a new call's session is kept here
//! (the call completes and transfers without a ticket stamped elsewhere) and
//! written to Redis by the first sweep that finds Redis back, if the call is
//! still live; webhooks find it from then on. The gauge `handoff_session_store_up` and one
//! error log per change of state say so; the connection manager reconnects and
//! `sweep` probes Redis every second while it is down.

pub mod contacts;
mod record;
mod scripts;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::store::{PatchOutcome, SessionCounts, SessionPatch, SessionStore, StoreFuture};
use super::{ContactDetails, InsertError, Session, SessionId, StampOutcome, StoreError};
use crate::config::session::{redact_url, RedisSettings};
use crate::metrics::Metrics;

pub use record::Keys;

/// A session this node created: what it needs to refresh it, count it and, when
/// Redis was down at its start, the session itself.
#[derive(Debug)]
struct Owned {
    ended: Option<Instant>,
    /// Set when Redis could not take the session: it lives only here.
    local: Option<Box<Session>>,
}

struct Scripts {
    create: Script,
    mark_answered: Script,
    mark_ended: Script,
    stamp: Script,
    attach_contact: Script,
    patch: Script,
    refresh: Script,
}

/// The Redis-backed [`SessionStore`].
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    node_id: String,
    timeout: Duration,
    record_ttl: Duration,
    linger: Duration,
    owned: DashMap<SessionId, Owned>,
    scripts: Scripts,
    up: AtomicBool,
    /// This node's live sessions, at most `[session] capacity`.
    slots: super::slots::Slots,
    last_refresh: std::sync::Mutex<Instant>,
    metrics: Arc<Metrics>,
}

/// Why the Redis store could not be built (only a URL the client refuses:
/// an unreachable Redis is degraded mode, not a start-up failure).
#[derive(Debug, thiserror::Error)]
#[error("session.redis_url: {0}")]
pub struct RedisSetupError(String);

impl RedisStore {
    /// A store over `settings`; connects lazily (Redis may be down at start).
    pub fn new(
        settings: &RedisSettings,
        node_id: &str,
        capacity: usize,
        linger: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<RedisStore, RedisSetupError> {
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| {
            RedisSetupError(format!("{} ({:?})", redact_url(&settings.url), e.kind()))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RedisSetupError(format!("{:?}", e.kind())))?;
        metrics.session_store_up.store(1, Ordering::Relaxed);
        Ok(RedisStore {
            conn,
            keys: Keys::new(&settings.key_prefix),
            node_id: node_id.to_owned(),
            timeout: settings.timeout,
            record_ttl: settings.record_ttl,
            linger,
            owned: DashMap::new(),
            scripts: Scripts {
                create: Script::new(scripts::CREATE),
                mark_answered: Script::new(scripts::MARK_ANSWERED),
                mark_ended: Script::new(scripts::MARK_ENDED),
                stamp: Script::new(scripts::STAMP),
                attach_contact: Script::new(scripts::ATTACH_CONTACT),
                patch: Script::new(scripts::PATCH),
                refresh: Script::new(scripts::REFRESH),
            },
            up: AtomicBool::new(true),
            slots: super::slots::Slots::new(capacity),
            last_refresh: std::sync::Mutex::new(Instant::now()),
            metrics,
        })
    }

    /// The store's connection (cheap to clone), for the cluster task.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Whether the last command reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Runs one command or script under the timeout; records the store's state.
    async fn run<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let out = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("redis: {e}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis: no answer within {} ms",
                self.timeout.as_millis()
            ))),
        };
        self.note(out.as_ref().err());
        out
    }

    /// Logs once per change of state, not per call; counts every error.
    fn note(&self, err: Option<&StoreError>) {
        let ok = err.is_none();
        let was = self.up.swap(ok, Ordering::Relaxed);
        self.metrics
            .session_store_up
            .store(i64::from(ok), Ordering::Relaxed);
        if let Some(e) = err {
            self.metrics
                .session_store_errors_total
                .fetch_add(1, Ordering::Relaxed);
            if was {
                tracing::error!(error = %e, "session store (Redis) unreachable: degraded mode, webhooks answer 503, new calls keep their session locally");
            }
        } else if !was {
            tracing::info!("session store (Redis) reachable again");
        }
    }

    /// One PING under the timeout; the store's state follows its outcome (an
    /// unreachable Redis at start is logged as such at once).
    pub async fn probe(&self) -> Result<(), StoreError> {
        let mut c = self.conn();
        let _: String = self.run(redis::cmd("PING").query_async(&mut c)).await?;
        Ok(())
    }

    /// The shared contact table, on this store's connection, key prefix and timeout.
    pub fn contacts(&self) -> contacts::RedisContacts {
        contacts::RedisContacts::new(
            self.conn(),
            self.keys.prefix(),
            self.timeout,
            self.metrics.clone(),
        )
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn create_in_redis(&self, s: &Session) -> Result<bool, StoreError> {
        let fields = record::encode(s, &self.node_id);
        let index = s.caller_phone.as_deref().filter(|_| s.is_live());
        let mut inv = self.scripts.create.prepare_invoke();
        inv.key(self.keys.session(&s.id))
            .key(self.keys.phone(index.unwrap_or("")))
            .arg(ms(self.record_ttl))
            .arg(record::micros(s.started_at))
            .arg(s.id.as_str())
            .arg(if index.is_some() { "1" } else { "0" });
        for (k, v) in &fields {
            inv.arg(k).arg(v);
        }
        let mut c = self.conn();
        let created: i64 = self.run(inv.invoke_async(&mut c)).await?;
        Ok(created == 1)
    }

    /// Writes the live sessions kept here while Redis was down, now that it answers,
    /// so webhooks on any node find them again. How many went.
    async fn write_back_local(&self) -> usize {
        let pending: Vec<Session> = self
            .owned
            .iter()
            .filter_map(|o| o.local.as_deref().filter(|s| s.is_live()).cloned())
            .collect();
        let mut written = 0;
        for s in pending {
            match self.create_in_redis(&s).await {
                // Written (or somehow there already): Redis holds it from now on.
                Ok(_) => {}
                Err(_) => return written,
            }
            written += 1;
            // The call may have answered or ended while the write was in flight:
            // carry that over, then drop the local copy.
            let changed = self.owned.get_mut(&s.id).and_then(|mut o| {
                let now = o.local.take()?;
                Some((now.answered_at, now.ended_at))
            });
            if let Some((answered, ended)) = changed {
                if let (Some(at), None) = (answered, s.answered_at) {
                    let _ = self.mark_answered(&s.id, at).await;
                }
                if let Some(at) = ended {
                    let _ = self.mark_ended(&s.id, at).await;
                }
            }
        }
        written
    }

    /// Keeps this node's live sessions from expiring, every third of the TTL.
    async fn refresh_if_due(&self) -> Result<(), StoreError> {
        {
            let last = self.last_refresh.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < self.record_ttl / 3 {
                return Ok(());
            }
        }
        let ids: Vec<SessionId> = self
            .owned
            .iter()
            .filter(|o| o.ended.is_none() && o.local.is_none())
            .map(|o| o.key().clone())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.invoke_script(
                self.scripts
                    .refresh
                    .key(self.keys.session(id))
                    .arg(ms(self.record_ttl))
                    .arg(self.keys.phone_prefix()),
            )
            .ignore();
        }
        let mut c = self.conn();
        // A pipeline sends EVALSHA only: load the script first (Redis may have
        // restarted and forgotten it).
        let _: String = self.run(self.scripts.refresh.load_async(&mut c)).await?;
        self.run(pipe.query_async::<()>(&mut c)).await?;
        // Only a refresh that went through counts: a failed one is retried next sweep.
        *self.last_refresh.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }

    fn local_session(&self, id: &SessionId) -> Option<Session> {
        self.owned.get(id).and_then(|o| o.local.as_deref().cloned())
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn malformed(e: String) -> StoreError {
    StoreError::Malformed(e)
}

impl SessionStore for RedisStore {
    fn create<'a>(&'a self, session: Session) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.owned.contains_key(&session.id) {
                return Err(InsertError::Duplicate(session.id.to_string()).into());
            }
            let ended = session.ended_at.map(|_| Instant::now());
            if ended.is_none() && !self.slots.try_take() {
                return Err(InsertError::Full(self.slots.capacity()).into());
            }
            let outcome = match self.create_in_redis(&session).await {
                Ok(true) => Ok(None),
                Ok(false) => Err(InsertError::Duplicate(session.id.to_string()).into()),
                // Degraded mode: the call goes on with its session here only.
                Err(StoreError::Unavailable(_)) => Ok(Some(Box::new(session.clone()))),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(local) => {
                    self.owned.insert(session.id, Owned { ended, local });
                    Ok(())
                }
                Err(e) => {
                    if ended.is_none() {
                        self.slots.give_back();
                    }
                    Err(e)
                }
            }
        })
    }

    fn get<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<Session>> {
        Box::pin(async move {
            if let Some(s) = self.local_session(id) {
                return Ok(Some(s));
            }
            let mut c = self.conn();
            let fields: Vec<(String, String)> = self
                .run(
                    redis::cmd("HGETALL")
                        .arg(self.keys.session(id))
                        .query_async(&mut c),
                )
                .await?;
            if fields.is_empty() {
                return Ok(None);
            }
            record::decode(fields).map(Some).map_err(malformed)
        })
    }

    fn live_by_phone<'a>(&'a self, phone_e164: &'a str) -> StoreFuture<'a, Vec<Session>> {
        Box::pin(async move {
            let mut c = self.conn();
            let ids: Vec<String> = self
                .run(
                    redis::cmd("ZREVRANGE")
                        .arg(self.keys.phone(phone_e164))
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut c),
                )
                .await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGETALL")
                    .arg(format!("{}{id}", self.keys.session_prefix()));
            }
            let records: Vec<Vec<(String, String)>> = self.run(pipe.query_async(&mut c)).await?;
            let mut found = Vec::new();
            for fields in records.into_iter().filter(|f| !f.is_empty()) {
                let s = record::decode(fields).map_err(malformed)?;
                if s.is_live() && s.caller_phone.as_deref() == Some(phone_e164) {
                    found.push(s);
                }
            }
            // ZREVRANGE gave newest first; a stable sort keeps it on equal times.
            found.sort_by_key(|s| std::cmp::Reverse(s.started_at));
            Ok(found)
        })
    }

    fn mark_answered<'a>(&'a self, id: &'a SessionId, at: SystemTime) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if let Some(mut o) = self.owned.get_mut(id) {
                if let Some(s) = o.local.as_mut() {
                    s.answered_at.get_or_insert(at);
                    return Ok(());
                }
            }
            let mut c = self.conn();
            let _: i64 = self
                .run(
                    self.scripts
                        .mark_answered
                        .key(self.keys.session(id))
                        .arg(record::micros(at))
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(())
        })
    }

    fn mark_ended<'a>(&'a self, id: &'a SessionId, at: SystemTime) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if let Some(mut o) = self.owned.get_mut(id) {
                if o.ended.is_none() {
                    o.ended = Some(Instant::now());
                    self.slots.give_back();
                }
                if let Some(s) = o.local.as_mut() {
                    s.ended_at.get_or_insert(at);
                    return Ok(());
                }
            }
            let mut c = self.conn();
            let _: i64 = self
                .run(
                    self.scripts
                        .mark_ended
                        .key(self.keys.session(id))
                        .arg(record::micros(at))
                        .arg(ms(self.linger))
                        .arg(id.as_str())
                        .arg(self.keys.phone_prefix())
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(())
        })
    }

    fn stamp_ticket<'a>(
        &'a self,
        org_id: &'a str,
        phone_e164: &'a str,
        ticket_id: u64,
    ) -> StoreFuture<'a, StampOutcome> {
        Box::pin(async move {
            let mut c = self.conn();
            let out: Vec<String> = self
                .run(
                    self.scripts
                        .stamp
                        .key(self.keys.phone(phone_e164))
                        .arg(org_id)
                        .arg(phone_e164)
                        .arg(ticket_id.to_string())
                        .arg(self.keys.session_prefix())
                        .invoke_async(&mut c),
                )
                .await?;
            stamp_outcome(&out).map_err(malformed)
        })
    }

    fn attach_contact<'a>(
        &'a self,
        id: &'a SessionId,
        contact_id: String,
        details: ContactDetails,
    ) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            if let Some(mut o) = self.owned.get_mut(id) {
                if let Some(s) = o.local.as_mut() {
                    let cid = s.contact_id.get_or_insert(contact_id).clone();
                    s.contact = Some(ContactDetails::merge(s.contact.take(), details));
                    return Ok(Some(cid));
                }
            }
            let mut inv = self.scripts.attach_contact.prepare_invoke();
            inv.key(self.keys.session(id)).arg(&contact_id);
            for (k, v) in record::encode_contact(&details) {
                inv.arg(k).arg(v);
            }
            let mut c = self.conn();
            self.run(inv.invoke_async(&mut c)).await
        })
    }

    fn patch<'a>(
        &'a self,
        id: &'a SessionId,
        patch: SessionPatch,
    ) -> StoreFuture<'a, PatchOutcome> {
        Box::pin(async move {
            let mut inv = self.scripts.patch.prepare_invoke();
            let (mode, value) = match &patch.contact_id {
                None => ("keep", ""),
                Some(None) => ("clear", ""),
                Some(Some(v)) => ("set", v.as_str()),
            };
            let (summary_mode, summary) = match &patch.summary {
                None => ("keep", ""),
                Some(None) => ("clear", ""),
                Some(Some(v)) => ("set", v.as_str()),
            };
            inv.key(self.keys.session(id))
                .arg(patch.max_custom_data)
                .arg(mode)
                .arg(value)
                .arg(summary_mode)
                .arg(summary);
            for (k, v) in &patch.custom_data {
                inv.arg(format!("c:{k}")).arg(v);
            }
            let mut c = self.conn();
            let out: redis::Value = self.run(inv.invoke_async(&mut c)).await?;
            patch_outcome(out).map_err(malformed)
        })
    }

    fn sweep(&self) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let linger = self.linger;
            self.owned
                .retain(|_, o| o.ended.is_none_or(|t| t.elapsed() < linger));
            // Failures are counted and logged once per change of state by `run`:
            // the server's sweeper, which logs each error, sees none.
            // A PING every sweep (a second): the gauge follows Redis even when no
            // call or webhook is asking.
            if self.probe().await.is_err() {
                return Ok(0);
            }
            if self.owned.iter().any(|o| o.local.is_some()) {
                let n = self.write_back_local().await;
                if n > 0 {
                    tracing::info!(
                        sessions = n,
                        "sessions kept locally while Redis was down written to Redis"
                    );
                }
            }
            let _ = self.refresh_if_due().await;
            // Redis expires records itself.
            Ok(0)
        })
    }

    fn counts(&self) -> StoreFuture<'_, SessionCounts> {
        // This node's sessions: the shared store's total is not one node's to report.
        let held = self.owned.len();
        let live = self.slots.taken();
        Box::pin(std::future::ready(Ok(SessionCounts { held, live })))
    }
}

/// The stamp script's answer.
fn stamp_outcome(out: &[String]) -> Result<StampOutcome, String> {
    let id = |i: usize| {
        out.get(i)
            .and_then(|s| SessionId::parse(s))
            .ok_or_else(|| format!("stamp: bad answer {out:?}"))
    };
    match out.first().map(String::as_str) {
        Some("stamped") => Ok(StampOutcome::Stamped(id(1)?)),
        Some("already") => Ok(StampOutcome::AlreadyStamped(id(1)?)),
        Some("conflict") => Ok(StampOutcome::Conflict {
            session: id(1)?,
            existing: out
                .get(2)
                .and_then(|t| t.parse().ok())
                .ok_or("stamp: bad existing ticket")?,
        }),
        Some("none") => Ok(StampOutcome::NoSession),
        _ => Err(format!("stamp: bad answer {out:?}")),
    }
}

/// The patch script's answer.
fn patch_outcome(v: redis::Value) -> Result<PatchOutcome, String> {
    let (tag, rest): (String, Option<Vec<(String, String)>>) = match v {
        redis::Value::Array(mut items) if !items.is_empty() => {
            let tag = redis::from_redis_value(items.remove(0)).map_err(|e| e.to_string())?;
            let rest = match items.pop() {
                Some(fields) => Some(redis::from_redis_value(fields).map_err(|e| e.to_string())?),
                None => None,
            };
            (tag, rest)
        }
        other => return Err(format!("patch: bad answer {other:?}")),
    };
    match (tag.as_str(), rest) {
        ("nf", _) => Ok(PatchOutcome::NotFound),
        ("toomany", _) => Ok(PatchOutcome::TooMany),
        ("patched", Some(fields)) => Ok(PatchOutcome::Patched(Box::new(record::decode(fields)?))),
        _ => Err(format!("patch: bad answer {tag:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_answers_map_to_outcomes_and_garbage_is_an_error() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = SessionId::parse("a").unwrap();
        assert_eq!(
            stamp_outcome(&s(&["stamped", "a"])),
            Ok(StampOutcome::Stamped(a.clone()))
        );
        assert_eq!(
            stamp_outcome(&s(&["already", "a"])),
            Ok(StampOutcome::AlreadyStamped(a.clone()))
        );
        assert_eq!(
            stamp_outcome(&s(&["conflict", "a", "18446744073709551615"])),
            Ok(StampOutcome::Conflict {
                session: a,
                existing: u64::MAX
            })
        );
        assert_eq!(stamp_outcome(&s(&["none"])), Ok(StampOutcome::NoSession));
        for bad in [
            &[][..],
            &["stamped"],
            &["stamped", "a b"],
            &["conflict", "a", "x"],
            &["?"],
        ] {
            assert!(stamp_outcome(&s(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn patch_answers_map_to_outcomes() {
        let bulk = |s: &str| redis::Value::BulkString(s.as_bytes().to_vec());
        let nf = redis::Value::Array(vec![bulk("nf")]);
        assert!(matches!(patch_outcome(nf), Ok(PatchOutcome::NotFound)));
        let tm = redis::Value::Array(vec![bulk("toomany")]);
        assert!(matches!(patch_outcome(tm), Ok(PatchOutcome::TooMany)));
        assert!(patch_outcome(redis::Value::Nil).is_err());
        let junk =
            redis::Value::Array(vec![bulk("patched"), redis::Value::Array(vec![bulk("id")])]);
        assert!(patch_outcome(junk).is_err());
    }
}
