//! Shared contacts in Redis (`[session] store = "redis"`): the contact table of
//! `store/contacts.rs` as one hash per (org, Zendesk user), so every node gives the
//! same Zendesk user the same `ct-` id.
//!
//! Keys: `{prefix}contact:{org}:{zendesk_user_id}`, hash fields `id`, `details`
//! (the JSON [`details_json`] makes, as SQLite stores it), `created`, `updated`
//! (ms since the epoch). No TTL: contacts are durable data, so Redis needs
//! persistence (README, "Shared sessions (Redis)").
//!
//! A resolve is one Lua script: the first one for a user sets the id (two nodes
//! racing get the same one), later ones update the details and keep it. What comes
//! back is checked ([`checked_id`], [`decode_stored`]): a foreign or corrupt value
//! is an error, never a header. Every command is bounded by `session.timeout_ms`,
//! on the session store's connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use crate::metrics::Metrics;
use crate::session::contacts::ContactsError;
use crate::session::ContactDetails;
use crate::store::contacts::{
    details_from_json, details_json, is_valid_contact_id, new_contact_id, now_ms, ContactRow,
    StoredContact,
};

/// KEYS[1] contact; ARGV: the id for a new contact, details, now (ms). Returns the
/// contact's id: the one already there (its details updated), else ARGV[1].
pub const RESOLVE: &str = r#"
local id = redis.call('HGET', KEYS[1], 'id')
if id then
  redis.call('HSET', KEYS[1], 'details', ARGV[2], 'updated', ARGV[3])
  return id
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'details', ARGV[2], 'created', ARGV[3], 'updated', ARGV[3])
return ARGV[1]
"#;

/// KEYS: contacts; ARGV: four values per key (id, details, created, updated).
/// A contact with an id keeps it (HSETNX); a key holding something else is
/// skipped, not an abort of the batch. Returns {copied, already there, skipped}.
pub const COPY: &str = r#"
local copied, kept, bad = 0, 0, 0
for i, k in ipairs(KEYS) do
  local b = (i - 1) * 4
  local r = redis.pcall('HSETNX', k, 'id', ARGV[b + 1])
  if type(r) == 'table' and r.err then
    bad = bad + 1
  elseif r == 1 then
    redis.call('HSET', k, 'details', ARGV[b + 2], 'created', ARGV[b + 3], 'updated', ARGV[b + 4])
    copied = copied + 1
  else
    kept = kept + 1
  end
end
return {copied, kept, bad}
"#;

/// The key of one contact. The user id is the part after the last `:` and all
/// digits, so an org id holding `:` cannot reach another org's key.
pub fn contact_key(prefix: &str, org: &str, zendesk_user_id: u64) -> String {
    format!("{prefix}contact:{org}:{zendesk_user_id}")
}

/// The id a resolve script answered, if it may reach a SIP header.
pub fn checked_id(id: String) -> Result<String, String> {
    if is_valid_contact_id(&id) {
        Ok(id)
    } else {
        Err(format!(
            "stored contact id is not 1 to 128 token characters ({} bytes)",
            id.len()
        ))
    }
}

/// A contact from its hash fields (`HGETALL`): None when there is none; an id that
/// is not a valid contact id or details that are not a JSON object are errors.
pub fn decode_stored(fields: Vec<(String, String)>) -> Result<Option<StoredContact>, String> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut id = None;
    let mut details = None;
    for (k, v) in fields {
        match k.as_str() {
            "id" => id = Some(v),
            "details" => details = Some(v),
            _ => {}
        }
    }
    let contact_id = checked_id(id.ok_or("stored contact has no id")?)?;
    let details = match details {
        None => ContactDetails::default(),
        Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) if v.is_object() => details_from_json(&v),
            _ => return Err("stored contact details are not a JSON object".into()),
        },
    };
    Ok(Some(StoredContact {
        contact_id,
        details,
    }))
}

/// A Redis error as the contact store reports it: a value of the wrong type or
/// shape is bad stored data; anything else (refused, dropped, loading, ...) is
/// Redis being unavailable.
fn classify(e: &redis::RedisError) -> ContactsError {
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::UnexpectedReturnType || text.contains("WRONGTYPE") {
        ContactsError::Corrupt(text)
    } else {
        ContactsError::Unavailable(text)
    }
}

/// What a copy of contacts into Redis did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyCount {
    /// Written: Redis had no id for them.
    pub copied: u64,
    /// Left alone: Redis already had an id for them (it wins).
    pub already: u64,
    /// Not copied: an invalid id in SQLite, or a key in Redis holding something else.
    pub skipped: u64,
}

impl std::ops::AddAssign for CopyCount {
    fn add_assign(&mut self, o: CopyCount) {
        self.copied += o.copied;
        self.already += o.already;
        self.skipped += o.skipped;
    }
}

/// The shared contact table; cheap to clone (one connection, shared).
#[derive(Clone)]
pub struct RedisContacts {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    resolve: Arc<Script>,
    copy: Arc<Script>,
    metrics: Arc<Metrics>,
}

impl RedisContacts {
    /// Over the session store's connection manager, key prefix and timeout.
    pub fn new(
        conn: ConnectionManager,
        prefix: &str,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> RedisContacts {
        RedisContacts {
            conn,
            prefix: prefix.to_owned(),
            timeout,
            resolve: Arc::new(Script::new(RESOLVE)),
            copy: Arc::new(Script::new(COPY)),
            metrics,
        }
    }

    /// One command under the timeout; a failure is counted, never logged here (the
    /// enrichment that asked logs it once).
    async fn run<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ContactsError> {
        let out = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(ContactsError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        };
        if out.is_err() {
            self.metrics
                .contact_store_errors_total
                .fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    /// The contact id of this Zendesk user in `org`, with `details` recorded: as
    /// [`crate::store::contacts::ContactStore::resolve_blocking`], atomically
    /// across every node on this Redis.
    pub async fn resolve(
        &self,
        org: &str,
        zendesk_user_id: u64,
        preferred: Option<&str>,
        details: &ContactDetails,
    ) -> Result<String, ContactsError> {
        let candidate = preferred
            .filter(|p| is_valid_contact_id(p))
            .map_or_else(new_contact_id, str::to_owned);
        let mut c = self.conn.clone();
        let got: String = self
            .run(
                self.resolve
                    .key(contact_key(&self.prefix, org, zendesk_user_id))
                    .arg(candidate)
                    .arg(details_json(details).to_string())
                    .arg(now_ms())
                    .invoke_async(&mut c),
            )
            .await?;
        checked_id(got).map_err(|e| self.corrupt(e))
    }

    /// The stored contact of a Zendesk user, if any.
    pub async fn get(
        &self,
        org: &str,
        zendesk_user_id: u64,
    ) -> Result<Option<StoredContact>, ContactsError> {
        let mut c = self.conn.clone();
        let fields: Vec<(String, String)> = self
            .run(
                redis::cmd("HGETALL")
                    .arg(contact_key(&self.prefix, org, zendesk_user_id))
                    .query_async(&mut c),
            )
            .await?;
        decode_stored(fields).map_err(|e| self.corrupt(e))
    }

    /// Copies rows of a local contact table into Redis, keeping every id Redis
    /// already has (one script per call: pass a page, not the whole table).
    pub async fn copy_rows(&self, rows: &[ContactRow]) -> Result<CopyCount, ContactsError> {
        let mut count = CopyCount::default();
        let mut inv = self.copy.prepare_invoke();
        let mut any = false;
        for r in rows {
            if !is_valid_contact_id(&r.contact_id) {
                count.skipped += 1;
                continue;
            }
            any = true;
            inv.key(contact_key(&self.prefix, &r.org_id, r.zendesk_user_id))
                .arg(&r.contact_id)
                .arg(&r.details)
                .arg(r.created_at_ms)
                .arg(r.updated_at_ms);
        }
        if !any {
            return Ok(count);
        }
        let mut c = self.conn.clone();
        let (copied, already, skipped): (u64, u64, u64) =
            self.run(inv.invoke_async(&mut c)).await?;
        count += CopyCount {
            copied,
            already,
            skipped,
        };
        Ok(count)
    }

    /// Counts contacts a start-up copy wrote.
    pub fn count_copied(&self, n: u64) {
        self.metrics
            .contacts_copied_to_redis_total
            .fetch_add(n, Ordering::Relaxed);
    }

    fn corrupt(&self, e: String) -> ContactsError {
        self.metrics
            .contact_store_errors_total
            .fetch_add(1, Ordering::Relaxed);
        ContactsError::Corrupt(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_sit_under_the_prefix_one_per_org_and_user() {
        assert_eq!(contact_key("handoff:", "acme", 7), "handoff:contact:acme:7");
        assert_ne!(contact_key("p:", "a:1", 2), contact_key("p:", "a", 12));
        assert_ne!(contact_key("p:", "a", 7), contact_key("p:", "b", 7));
    }

    #[test]
    fn resolved_ids_must_be_bounded_tokens() {
        assert_eq!(checked_id("ct-00ff".into()), Ok("ct-00ff".into()));
        assert_eq!(
            checked_id("c-42".into()),
            Ok("c-42".into()),
            "a preferred id"
        );
        for bad in [
            "",
            "ct-1\r\nX-Injected: 1",
            "ct 1",
            "ct-<1>",
            &format!("ct-{}", "a".repeat(126)),
        ] {
            assert!(checked_id(bad.into()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stored_contacts_decode_and_garbage_is_an_error() {
        assert_eq!(decode_stored(Vec::new()), Ok(None));
        let got = decode_stored(f(&[
            ("id", "ct-1"),
            ("details", r#"{"name":"Ada","zendesk_user_id":7}"#),
            ("created", "1"),
            ("future_field", "x"),
        ]))
        .expect("decodes")
        .expect("some");
        assert_eq!(got.contact_id, "ct-1");
        assert_eq!(got.details.name.as_deref(), Some("Ada"));
        assert_eq!(got.details.zendesk_user_id, Some(7));
        let bare = decode_stored(f(&[("id", "ct-1")])).expect("decodes");
        assert_eq!(bare.expect("some").details, ContactDetails::default());
        for bad in [
            f(&[("details", "{}")]),
            f(&[("id", "bad id"), ("details", "{}")]),
            f(&[("id", "ct-1"), ("details", "not json")]),
            f(&[("id", "ct-1"), ("details", "[1]")]),
        ] {
            assert!(decode_stored(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wrong_types_are_corrupt_and_the_rest_unavailable() {
        let wrong = redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "nil"));
        assert!(matches!(classify(&wrong), ContactsError::Corrupt(_)));
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify(&refused), ContactsError::Unavailable(_)));
    }

    #[test]
    fn copy_counts_add_up() {
        let mut c = CopyCount {
            copied: 1,
            already: 2,
            skipped: 3,
        };
        c += CopyCount {
            copied: 10,
            already: 20,
            skipped: 30,
        };
        assert_eq!((c.copied, c.already, c.skipped), (11, 22, 33));
    }
}
