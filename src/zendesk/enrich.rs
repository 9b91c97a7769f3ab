//! Contact enrichment: ticket -> requester -> organization, in the background after
//! a stamp, landing on the session as its contact.
//!
//! The contact id is handoff's own, from the contact store: the same Zendesk user
//! gets the same id on every call. A contact id already on the session (set
//! through the session API) stays: the enrichment fills in the details around it,
//! and a Zendesk user met for the first time is recorded under that id. A REFER
//! never waits for an enrichment: it reads the session as it is.

use super::client::{FetchError, Organization, Ticket, User, ZendeskClient};
use crate::e164::normalize_e164;
use crate::metrics::Metrics;
use crate::session::contacts::{Contacts, ContactsError};
use crate::session::{ContactDetails, SessionId, SessionStore};
use dashmap::DashMap;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Enrichments running at once; a stamp beyond it is not enriched (and counted).
pub const MAX_IN_FLIGHT: usize = 256;

/// Tickets kept between a stamp's confirmation and its enrichment, at most.
const MAX_CONFIRMED: usize = 1024;

/// How long a confirmed ticket is kept for the enrichment that follows.
const CONFIRMED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Why an enrichment changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("the session is gone")]
    SessionGone,
    #[error("ticket: {0}")]
    Ticket(FetchError),
    #[error("the ticket has no requester")]
    NoRequester,
    #[error("requester: {0}")]
    User(FetchError),
    #[error(transparent)]
    Store(#[from] ContactsError),
    #[error(transparent)]
    Sessions(#[from] crate::session::StoreError),
}

impl EnrichError {
    /// Zendesk says the ticket or user does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            EnrichError::Ticket(FetchError::NotFound) | EnrichError::User(FetchError::NotFound)
        )
    }
}

fn non_blank(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The contact as the requester and their organization describe it: name, email,
/// phone in E.164 (left out when it is not a phone number), Zendesk user id,
/// external id, and in `custom_data` the user fields as they are plus the
/// organization fields prefixed `org_` (as Zendesk's chat webhook does). An
/// organization field wins over a user field of the same resulting name.
pub fn contact_details(
    user: &User,
    org: Option<&Organization>,
    default_country: Option<&str>,
) -> ContactDetails {
    let mut custom_data: std::collections::BTreeMap<String, Value> = user
        .user_fields
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(fields) = org.and_then(|o| o.organization_fields.as_ref()) {
        for (k, v) in fields {
            custom_data.insert(format!("org_{k}"), v.clone());
        }
    }
    ContactDetails {
        name: non_blank(&user.name),
        email: non_blank(&user.email),
        phone: user
            .phone
            .as_deref()
            .and_then(|p| normalize_e164(p, default_country)),
        zendesk_user_id: Some(user.id),
        external_id: match &user.external_id {
            Some(Value::String(s)) => non_blank(&Some(s.clone())),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        },
        custom_data,
    }
}

/// `old` (what the session knew) updated with `new`: what Zendesk has replaces, what
/// it lacks stays; custom data is merged key by key.
pub fn merge_contact(old: Option<ContactDetails>, new: ContactDetails) -> ContactDetails {
    ContactDetails::merge(old, new)
}

/// A contact id from the session that the store may take over: token characters,
/// as a SIP header needs.
fn storable_contact_id(id: &str) -> bool {
    crate::store::contacts::is_valid_contact_id(id)
}

/// Contact enrichment from one Zendesk account (the webhook's
/// [`crate::http::ContactEnricher`] is the account registry over these).
#[derive(Clone)]
pub struct ZendeskEnricher(Arc<Inner>);

struct Inner {
    client: Arc<ZendeskClient>,
    contacts: Contacts,
    sessions: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
    default_country: Option<String>,
    slots: Arc<Semaphore>,
    /// Sessions with an enrichment under way: a webhook re-fire while one runs
    /// does not start a second.
    running: DashMap<SessionId, ()>,
    /// Tickets fetched to confirm a stamp, for the enrichment that follows.
    confirmed: DashMap<u64, (std::time::Instant, Ticket)>,
}

/// Takes the session off `running` when its enrichment ends, however it ends.
struct Running {
    inner: Arc<Inner>,
    id: SessionId,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.inner.running.remove(&self.id);
    }
}

impl ZendeskEnricher {
    pub fn new(
        client: ZendeskClient,
        contacts: Contacts,
        sessions: Arc<dyn SessionStore>,
        metrics: Arc<Metrics>,
        default_country: Option<String>,
    ) -> ZendeskEnricher {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        Self::sharing(client, contacts, sessions, metrics, default_country, slots)
    }

    /// The same, with its running enrichments counted in `slots` (shared by every
    /// account, so [`MAX_IN_FLIGHT`] bounds them all together).
    pub fn sharing(
        client: ZendeskClient,
        contacts: Contacts,
        sessions: Arc<dyn SessionStore>,
        metrics: Arc<Metrics>,
        default_country: Option<String>,
        slots: Arc<Semaphore>,
    ) -> ZendeskEnricher {
        ZendeskEnricher(Arc::new(Inner {
            client: Arc::new(client),
            contacts,
            sessions,
            metrics,
            default_country,
            slots,
            running: DashMap::new(),
            confirmed: DashMap::new(),
        }))
    }

    pub(super) fn client(&self) -> &ZendeskClient {
        &self.0.client
    }

    /// The same client, shared (the ticket notes post with it).
    pub(super) fn shared_client(&self) -> Arc<ZendeskClient> {
        self.0.client.clone()
    }

    pub(super) fn default_country(&self) -> Option<&str> {
        self.0.default_country.as_deref()
    }

    /// Keep a ticket just fetched for a confirmation, so the enrichment of the
    /// stamp does not fetch it again. Bounded: when full of fresh tickets, it is
    /// not kept (the enrichment fetches it).
    pub(super) fn keep_confirmed(&self, ticket: Ticket) {
        let c = &self.0.confirmed;
        if c.len() >= MAX_CONFIRMED {
            c.retain(|_, (at, _)| at.elapsed() < CONFIRMED_FOR);
        }
        if c.len() < MAX_CONFIRMED {
            c.insert(ticket.id, (std::time::Instant::now(), ticket));
        }
    }

    /// Enrich the session from the ticket now, on this task; returns the contact id.
    pub async fn enrich(&self, session: &SessionId, ticket_id: u64) -> Result<String, EnrichError> {
        self.0.enrich(session, ticket_id).await
    }
}

impl ZendeskEnricher {
    /// Start the enrichment of a stamped session in the background (see
    /// `crate::http::ContactEnricher`); returns at once.
    pub fn session_stamped(&self, session: &SessionId, ticket_id: u64) {
        let m = &self.0.metrics;
        let Ok(permit) = self.0.slots.clone().try_acquire_owned() else {
            Metrics::inc(&m.enrichments_failed_total);
            tracing::warn!(session = %session, ticket = ticket_id, "{MAX_IN_FLIGHT} contact enrichments already running: this one is skipped");
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            Metrics::inc(&m.enrichments_failed_total);
            tracing::error!(session = %session, "contact enrichment needs a tokio runtime");
            return;
        };
        if self.0.running.insert(session.clone(), ()).is_some() {
            tracing::debug!(session = %session, "contact enrichment already under way");
            return;
        }
        let running = Running {
            inner: self.0.clone(),
            id: session.clone(),
        };
        let inner = self.0.clone();
        let id = session.clone();
        let span = tracing::info_span!("enrichment", session = %id, ticket = ticket_id);
        runtime.spawn(
            async move {
                let _permit = permit;
                let _running = running;
                inner.run(&id, ticket_id).await;
            }
            .instrument(span),
        );
    }
}

impl Inner {
    async fn run(&self, session: &SessionId, ticket_id: u64) {
        match self.enrich(session, ticket_id).await {
            Ok(contact_id) => {
                Metrics::inc(&self.metrics.enrichments_total);
                tracing::info!(contact = %contact_id, "contact enriched from Zendesk");
            }
            Err(e) => {
                Metrics::inc(&self.metrics.enrichments_failed_total);
                if e.is_not_found() {
                    tracing::info!(error = %e, "contact not enriched: Zendesk no longer has it");
                } else {
                    tracing::warn!(error = %e, "contact not enriched");
                }
            }
        }
    }

    async fn enrich(&self, session: &SessionId, ticket_id: u64) -> Result<String, EnrichError> {
        let org = self
            .sessions
            .get(session)
            .await?
            .ok_or(EnrichError::SessionGone)?
            .org_id;
        let kept = self
            .confirmed
            .remove(&ticket_id)
            .map(|(_, kept)| kept)
            .filter(|(at, _)| at.elapsed() < CONFIRMED_FOR);
        let ticket = match kept {
            Some((_, t)) => t,
            None => self
                .client
                .ticket(ticket_id)
                .await
                .map_err(EnrichError::Ticket)?,
        };
        let requester = ticket.requester_id.ok_or(EnrichError::NoRequester)?;
        let user = self
            .client
            .user(requester)
            .await
            .map_err(EnrichError::User)?;
        let organization = match user.organization_id.or(ticket.organization_id) {
            None => None,
            Some(org_id) => match self.client.organization(org_id).await {
                Ok(o) => Some(o),
                // The user's own details are still worth having.
                Err(e) => {
                    tracing::warn!(organization = org_id, error = %e, "organization not fetched: enriching without its fields");
                    None
                }
            },
        };
        let details = contact_details(
            &user,
            organization.as_ref(),
            self.default_country.as_deref(),
        );
        let on_session = self.sessions.get(session).await?.and_then(|s| s.contact_id);
        let preferred = on_session.clone().filter(|id| storable_contact_id(id));
        let stored = self
            .contacts
            .resolve(org, user.id, preferred, details.clone())
            .await?;
        if on_session.as_ref().is_some_and(|s| *s != stored) {
            tracing::info!(
                session_contact = on_session.as_deref().unwrap_or_default(),
                stored_contact = %stored,
                "the session keeps the contact id set through the API; the store keeps its own for this Zendesk user"
            );
        }
        // One store operation: a contact id set through the session API meanwhile
        // stays; the details are merged over what the session has.
        self.sessions
            .attach_contact(session, stored, details)
            .await?
            .ok_or(EnrichError::SessionGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(v: Value) -> User {
        serde_json::from_value(v).expect("user")
    }

    #[test]
    fn user_and_org_fields_map_to_the_contact() {
        let u = user(json!({
            "id": 20978392, "name": " Ada Lovelace ", "email": "ada@example.com",
            "phone": "(415) 555-1212", "external_id": "crm-7",
            "user_fields": {"tier": "gold", "vip": true, "note": "a\r\nb"},
            "organization_id": 509974
        }));
        let o: Organization = serde_json::from_value(json!({
            "id": 509974, "name": "Acme",
            "organization_fields": {"plan": "enterprise", "seats": 40}
        }))
        .expect("org");
        let c = contact_details(&u, Some(&o), Some("US"));
        assert_eq!(c.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(c.email.as_deref(), Some("ada@example.com"));
        assert_eq!(c.phone.as_deref(), Some("+14155551212"));
        assert_eq!(c.zendesk_user_id, Some(20978392));
        assert_eq!(c.external_id.as_deref(), Some("crm-7"));
        assert_eq!(c.custom_data["tier"], json!("gold"));
        assert_eq!(c.custom_data["vip"], json!(true));
        assert_eq!(c.custom_data["note"], json!("a\r\nb"), "values as they are");
        assert_eq!(c.custom_data["org_plan"], json!("enterprise"));
        assert_eq!(c.custom_data["org_seats"], json!(40));
        assert_eq!(c.custom_data.len(), 5);
    }

    #[test]
    fn missing_and_unusable_values_are_left_out() {
        let u = user(json!({
            "id": 1, "name": "", "email": null, "phone": "call me maybe",
            "external_id": null, "user_fields": null, "organization_id": null
        }));
        let c = contact_details(&u, None, Some("US"));
        assert_eq!(
            c,
            ContactDetails {
                zendesk_user_id: Some(1),
                ..Default::default()
            }
        );
        let u = user(json!({"id": 2, "external_id": 12345}));
        assert_eq!(
            contact_details(&u, None, None).external_id.as_deref(),
            Some("12345")
        );
    }

    #[test]
    fn org_field_wins_over_a_user_field_of_the_same_name() {
        let u = user(json!({"id": 1, "user_fields": {"org_plan": "user says"}}));
        let o: Organization =
            serde_json::from_value(json!({"id": 2, "organization_fields": {"plan": "org says"}}))
                .expect("org");
        let c = contact_details(&u, Some(&o), None);
        assert_eq!(c.custom_data["org_plan"], json!("org says"));
    }

    #[test]
    fn merge_updates_without_losing_what_zendesk_lacks() {
        let old = ContactDetails {
            name: Some("Set by API".into()),
            email: Some("old@example.com".into()),
            custom_data: [
                ("kept".to_owned(), json!(1)),
                ("tier".to_owned(), json!("silver")),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let new = ContactDetails {
            name: Some("From Zendesk".into()),
            zendesk_user_id: Some(5),
            custom_data: [("tier".to_owned(), json!("gold"))].into_iter().collect(),
            ..Default::default()
        };
        let m = merge_contact(Some(old), new.clone());
        assert_eq!(m.name.as_deref(), Some("From Zendesk"));
        assert_eq!(m.email.as_deref(), Some("old@example.com"));
        assert_eq!(m.zendesk_user_id, Some(5));
        assert_eq!(m.custom_data["kept"], json!(1));
        assert_eq!(m.custom_data["tier"], json!("gold"));
        assert_eq!(merge_contact(None, new.clone()), new);
    }

    #[test]
    fn only_token_contact_ids_are_stored() {
        assert!(storable_contact_id("c-42"));
        assert!(!storable_contact_id("c 42"));
        assert!(!storable_contact_id(""));
        assert!(!storable_contact_id(&"x".repeat(129)));
    }
}
