//! The contact-store seam: where Zendesk users' contact ids live. One node keeps
//! them in its SQLite file (`store/contacts.rs`, the default); with
//! `[session] store = "redis"` every node shares them in Redis
//! (`session/redis/contacts.rs`), so the same Zendesk user gets the same `ct-` id
//! whichever node enriched it.
//!
//! Turning Redis on after running single-node keeps the ids: at start-up the
//! local table is copied into Redis without overwriting an id Redis already has
//! ([`copy_local_to_shared`]).

use std::time::Duration;

use super::redis::contacts::{CopyCount, RedisContacts};
use super::ContactDetails;
use crate::store::contacts::{ContactStore, ContactStoreError, StoredContact};
use crate::store::{Store, StoreError};

/// Rows copied per script at start-up: one script holds Redis for its run.
const COPY_PAGE: usize = 200;

/// How long a failed start-up copy waits before it tries again.
pub const COPY_RETRY: Duration = Duration::from_secs(10);

/// Why a contact could not be resolved or read.
#[derive(Debug, thiserror::Error)]
pub enum ContactsError {
    #[error(transparent)]
    Local(#[from] ContactStoreError),
    #[error("contact store (Redis) unavailable: {0}")]
    Unavailable(String),
    #[error("contact store (Redis): bad stored value: {0}")]
    Corrupt(String),
}

/// The contact table this node uses.
#[derive(Clone)]
pub enum Contacts {
    /// This node's SQLite file.
    Local(ContactStore),
    /// Redis, shared by every node on it.
    Shared(RedisContacts),
}

impl Contacts {
    /// The shared table when there is one, else this store's local one.
    pub fn open(store: &Store, shared: Option<RedisContacts>) -> Result<Contacts, StoreError> {
        Ok(match shared {
            Some(r) => Contacts::Shared(r),
            None => Contacts::Local(ContactStore::open(store)?),
        })
    }

    /// The contact id of this Zendesk user in `org`, with `details` recorded. A user
    /// met before keeps their id; a new one gets `preferred` (a valid contact id the
    /// session already had) or a new random one.
    pub async fn resolve(
        &self,
        org: String,
        zendesk_user_id: u64,
        preferred: Option<String>,
        details: ContactDetails,
    ) -> Result<String, ContactsError> {
        match self {
            Contacts::Local(s) => Ok(s.resolve(org, zendesk_user_id, preferred, details).await?),
            Contacts::Shared(r) => {
                r.resolve(&org, zendesk_user_id, preferred.as_deref(), &details)
                    .await
            }
        }
    }

    /// The stored contact of a Zendesk user, if any.
    pub async fn get(
        &self,
        org: &str,
        zendesk_user_id: u64,
    ) -> Result<Option<StoredContact>, ContactsError> {
        match self {
            Contacts::Local(s) => {
                let (s, org) = (s.clone(), org.to_owned());
                Ok(
                    tokio::task::spawn_blocking(move || s.get_blocking(&org, zendesk_user_id))
                        .await
                        .map_err(|e| ContactStoreError::Task(e.to_string()))??,
                )
            }
            Contacts::Shared(r) => r.get(org, zendesk_user_id).await,
        }
    }
}

/// Copies every contact of the local table into Redis, keeping the ids Redis
/// already has (another node's, or an earlier copy's): safe to repeat.
pub async fn copy_local_to_shared(
    local: &ContactStore,
    shared: &RedisContacts,
) -> Result<CopyCount, ContactsError> {
    let mut total = CopyCount::default();
    let mut cursor = 0;
    loop {
        let s = local.clone();
        let (rows, next) = tokio::task::spawn_blocking(move || s.page_blocking(cursor, COPY_PAGE))
            .await
            .map_err(|e| ContactStoreError::Task(e.to_string()))??;
        if rows.is_empty() {
            return Ok(total);
        }
        total += shared.copy_rows(&rows).await?;
        cursor = next;
    }
}

/// At start-up with the Redis store: copies this node's SQLite contacts into
/// Redis, logging how many. Redis unreachable does not stop start-up: the copy is
/// tried again in the background every `retry` until it goes through once (the
/// task is returned for tests; dropping it leaves it running).
pub async fn copy_at_start(
    store: &Store,
    shared: RedisContacts,
    retry: Duration,
) -> Result<Option<tokio::task::JoinHandle<()>>, StoreError> {
    let local = ContactStore::open(store)?;
    if let Err(e) = copy_once(&local, &shared).await {
        tracing::warn!(error = %e, retry_secs = retry.as_secs_f64(), "local contacts not copied to Redis yet: trying again in the background");
        return Ok(Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(retry).await;
                if copy_once(&local, &shared).await.is_ok() {
                    return;
                }
            }
        })));
    }
    Ok(None)
}

async fn copy_once(local: &ContactStore, shared: &RedisContacts) -> Result<(), ContactsError> {
    let n = copy_local_to_shared(local, shared).await?;
    shared.count_copied(n.copied);
    if n.skipped > 0 {
        tracing::warn!(
            copied = n.copied,
            already_in_redis = n.already,
            skipped = n.skipped,
            "local contacts copied to Redis; some were skipped (an invalid id here, or another kind of value under the key in Redis)"
        );
    } else {
        tracing::info!(
            copied = n.copied,
            already_in_redis = n.already,
            "local contacts copied to Redis (ids Redis already had were kept)"
        );
    }
    Ok(())
}
