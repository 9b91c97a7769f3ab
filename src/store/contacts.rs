//! The contact store: Zendesk users resolved to handoff's own stable contact ids.
//!
//! One row per (org, Zendesk user): the contact id handoff gave that user the first
//! time it met them, and what Zendesk last said about them. The id never changes
//! afterwards, so the same caller on a later call (or after a restart) carries the
//! same `X-OPENCX-CONTACT-ID`. A resolve is one `BEGIN IMMEDIATE` transaction: the
//! lookup and the insert or update cannot interleave with another writer, and a
//! committed row survives a crash (`synchronous = FULL`, see `store`).
//!
//! SQLite blocks: the async API runs each call on tokio's blocking pool, on the one
//! connection this store owns (behind a std mutex; in memory that connection is the
//! whole database).

use super::{Store, StoreError};
use crate::session::ContactDetails;
use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Tables of the contact store, created when missing.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contacts (
    org_id TEXT NOT NULL,
    zendesk_user_id INTEGER NOT NULL,
    contact_id TEXT NOT NULL,
    details TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (org_id, zendesk_user_id)
);
CREATE INDEX IF NOT EXISTS contacts_by_contact_id ON contacts (contact_id);
";

/// Why the contact store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ContactStoreError {
    #[error("contact store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("Zendesk user id {0} is out of the store's range")]
    UserIdRange(u64),
    #[error("contact store task failed: {0}")]
    Task(String),
}

/// A new contact id: `ct-` and 128 random bits in hex (token characters, safe in a
/// SIP header).
pub fn new_contact_id() -> String {
    let bits: u128 = rand::thread_rng().gen();
    format!("ct-{bits:032x}")
}

/// Longest contact id a store takes or gives back.
pub const MAX_CONTACT_ID: usize = 128;

/// A contact id that may be stored and put in `X-OPENCX-CONTACT-ID`: 1 to
/// [`MAX_CONTACT_ID`] token characters (ours are `ct-` and hex; a preferred id set
/// through the session API is taken over when it passes this too).
pub fn is_valid_contact_id(id: &str) -> bool {
    (1..=MAX_CONTACT_ID).contains(&id.len()) && id.bytes().all(crate::sip::message::is_token_char)
}

/// The details as stored (and as the session API shows them).
pub fn details_json(d: &ContactDetails) -> Value {
    json!({
        "name": d.name,
        "email": d.email,
        "phone": d.phone,
        "zendesk_user_id": d.zendesk_user_id,
        "external_id": d.external_id,
        "custom_data": d.custom_data,
    })
}

/// The inverse of [`details_json`]; unknown or mistyped parts are left out.
pub fn details_from_json(v: &Value) -> ContactDetails {
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    ContactDetails {
        name: s("name"),
        email: s("email"),
        phone: s("phone"),
        zendesk_user_id: v["zendesk_user_id"].as_u64(),
        external_id: s("external_id"),
        custom_data: v["custom_data"]
            .as_object()
            .cloned()
            .unwrap_or_else(Map::new)
            .into_iter()
            .collect(),
    }
}

/// One row of the contact table, for copying the table elsewhere
/// ([`ContactStore::page_blocking`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRow {
    pub org_id: String,
    pub zendesk_user_id: u64,
    pub contact_id: String,
    /// As stored: [`details_json`] text.
    pub details: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One stored contact.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredContact {
    pub contact_id: String,
    pub details: ContactDetails,
}

/// The contact table on its own connection; cheap to clone.
#[derive(Clone)]
pub struct ContactStore {
    conn: Arc<Mutex<Connection>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn user_key(zendesk_user_id: u64) -> Result<i64, ContactStoreError> {
    i64::try_from(zendesk_user_id).map_err(|_| ContactStoreError::UserIdRange(zendesk_user_id))
}

impl ContactStore {
    pub fn open(store: &Store) -> Result<ContactStore, StoreError> {
        Ok(ContactStore {
            conn: Arc::new(Mutex::new(store.connect()?)),
        })
    }

    /// The contact id of this Zendesk user in `org`, with `details` recorded. A user
    /// met before keeps their id; a new one gets `preferred` (a contact id the
    /// session already had, set through the session API) or a new random one.
    /// Blocks: use [`ContactStore::resolve`] from async code.
    pub fn resolve_blocking(
        &self,
        org: &str,
        zendesk_user_id: u64,
        preferred: Option<&str>,
        details: &ContactDetails,
    ) -> Result<String, ContactStoreError> {
        let user = user_key(zendesk_user_id)?;
        let details = details_json(details).to_string();
        let now = now_ms();
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT contact_id FROM contacts WHERE org_id = ?1 AND zendesk_user_id = ?2",
                params![org, user],
                |row| row.get(0),
            )
            .optional()?;
        let contact_id = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE contacts SET details = ?3, updated_at_ms = ?4 WHERE org_id = ?1 AND zendesk_user_id = ?2",
                    params![org, user, details, now],
                )?;
                id
            }
            None => {
                let id = preferred.map_or_else(new_contact_id, str::to_owned);
                tx.execute(
                    "INSERT INTO contacts (org_id, zendesk_user_id, contact_id, details, created_at_ms, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![org, user, id, details, now],
                )?;
                id
            }
        };
        tx.commit()?;
        Ok(contact_id)
    }

    /// [`ContactStore::resolve_blocking`] on the blocking pool.
    pub async fn resolve(
        &self,
        org: String,
        zendesk_user_id: u64,
        preferred: Option<String>,
        details: ContactDetails,
    ) -> Result<String, ContactStoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.resolve_blocking(&org, zendesk_user_id, preferred.as_deref(), &details)
        })
        .await
        .map_err(|e| ContactStoreError::Task(e.to_string()))?
    }

    /// The stored contact of a Zendesk user, if any. Blocks.
    pub fn get_blocking(
        &self,
        org: &str,
        zendesk_user_id: u64,
    ) -> Result<Option<StoredContact>, ContactStoreError> {
        let user = user_key(zendesk_user_id)?;
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT contact_id, details FROM contacts WHERE org_id = ?1 AND zendesk_user_id = ?2",
                params![org, user],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(contact_id, details)| StoredContact {
            contact_id,
            details: serde_json::from_str(&details)
                .map(|v: Value| details_from_json(&v))
                .unwrap_or_default(),
        }))
    }
}

impl ContactStore {
    /// Up to `limit` rows after the row `after` (a cursor: the last row's key of the
    /// previous page, 0 for the first), in table order, with the cursor for the next
    /// page. Rows whose user id is negative (not ours) are skipped. Blocks.
    pub fn page_blocking(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<ContactRow>, i64), ContactStoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(
            "SELECT rowid, org_id, zendesk_user_id, contact_id, details, created_at_ms, updated_at_ms \
             FROM contacts WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut last = after;
        let mut rows = Vec::new();
        let mut q = stmt.query(params![after, limit])?;
        while let Some(r) = q.next()? {
            last = r.get(0)?;
            let user: i64 = r.get(2)?;
            let Ok(zendesk_user_id) = u64::try_from(user) else {
                continue;
            };
            rows.push(ContactRow {
                org_id: r.get(1)?,
                zendesk_user_id,
                contact_id: r.get(3)?,
                details: r.get(4)?,
                created_at_ms: r.get(5)?,
                updated_at_ms: r.get(6)?,
            });
        }
        Ok((rows, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(name: &str) -> ContactDetails {
        ContactDetails {
            name: Some(name.into()),
            zendesk_user_id: Some(7),
            custom_data: [("note".to_owned(), json!("line one\r\nline two"))]
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn same_user_same_id_details_updated() {
        let s = ContactStore::open(&Store::in_memory()).expect("open");
        let a = s
            .resolve_blocking("org", 7, None, &details("A"))
            .expect("a");
        assert!(a.starts_with("ct-") && a.len() == 35, "{a}");
        assert!(a.bytes().all(crate::sip::message::is_token_char));
        let b = s
            .resolve_blocking("org", 7, Some("c-other"), &details("B"))
            .expect("b");
        assert_eq!(a, b, "a known user keeps the id");
        let got = s.get_blocking("org", 7).expect("get").expect("row");
        assert_eq!(got.contact_id, a);
        assert_eq!(got.details, details("B"));
        // Another org's user 7 is another contact.
        let c = s
            .resolve_blocking("org2", 7, None, &details("C"))
            .expect("c");
        assert_ne!(a, c);
    }

    #[test]
    fn a_new_user_takes_the_preferred_id() {
        let s = ContactStore::open(&Store::in_memory()).expect("open");
        let id = s
            .resolve_blocking("org", 9, Some("c-42"), &details("A"))
            .expect("resolve");
        assert_eq!(id, "c-42");
        assert!(matches!(
            s.resolve_blocking("org", u64::MAX, None, &details("A")),
            Err(ContactStoreError::UserIdRange(_))
        ));
    }

    #[test]
    fn survives_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!("handoff-contacts-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("h.db");
        let id = {
            let s = ContactStore::open(&Store::open(Some(&path)).expect("store")).expect("open");
            s.resolve_blocking("org", 7, None, &details("A"))
                .expect("a")
        };
        let s = ContactStore::open(&Store::open(Some(&path)).expect("store")).expect("reopen");
        assert_eq!(
            s.resolve_blocking("org", 7, None, &details("A"))
                .expect("again"),
            id
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pages_walk_the_whole_table_once() {
        let s = ContactStore::open(&Store::in_memory()).expect("open");
        let ids: Vec<String> = (1..=5u64)
            .map(|u| {
                s.resolve_blocking("org", u, None, &details("A"))
                    .expect("resolve")
            })
            .collect();
        let (first, cursor) = s.page_blocking(0, 2).expect("page");
        assert_eq!(first.len(), 2);
        let (rest, cursor) = s.page_blocking(cursor, 10).expect("page");
        assert_eq!(rest.len(), 3);
        let (none, _) = s.page_blocking(cursor, 10).expect("page");
        assert!(none.is_empty());
        let got: Vec<String> = first
            .iter()
            .chain(&rest)
            .map(|r| r.contact_id.clone())
            .collect();
        assert_eq!(got, ids);
        assert_eq!(rest[2].zendesk_user_id, 5);
        assert_eq!(rest[2].org_id, "org");
    }

    #[test]
    fn contact_ids_are_bounded_tokens() {
        assert!(is_valid_contact_id("c-42"));
        assert!(is_valid_contact_id(&new_contact_id()));
        assert!(!is_valid_contact_id("c 42"));
        assert!(!is_valid_contact_id("a\r\nX-Evil: 1"));
        assert!(!is_valid_contact_id(""));
        assert!(!is_valid_contact_id(&"x".repeat(129)));
    }
}
