//! The Zendesk REST client and contact enrichment: when the voice-prefetch webhook
//! stamps a ticket on a live session, the ticket, its requester and the requester's
//! organization are fetched and the session's contact is resolved from them, by
//! ticket id and never by a phone search (Zendesk's phone search matches fuzzily).

pub mod auth;
pub mod client;
pub mod comment;
pub mod confirm;
pub mod enrich;
pub mod note;
pub mod notes;
pub mod settings;

pub use client::{FetchError, ZendeskClient};
pub use enrich::{contact_details, merge_contact, EnrichError, ZendeskEnricher};
pub use notes::{ClientFor, GlobalClient, TicketNotes};
pub use settings::{ApiAuth, ZendeskApiSettings, ZendeskConfig, ZendeskConfigError};

use crate::config::Settings;
use crate::http::{ContactEnricher, NoEnrichment, StampConfirmer};
use crate::metrics::Metrics;
use crate::session::contacts::Contacts;
use crate::session::redis::contacts::RedisContacts;
use crate::session::SessionStore;
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// Why contact enrichment could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum EnricherSetupError {
    #[error(transparent)]
    Client(#[from] client::ClientBuildError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the webhook asks of Zendesk: contact enrichment, and stamp confirmation
/// against the ticket (None: stamps are not confirmed).
pub struct ZendeskHooks {
    pub enricher: Arc<dyn ContactEnricher>,
    pub confirmer: Option<Arc<dyn StampConfirmer>>,
    /// The ticket-note task (None: no API credentials, or `zendesk.ticket_notes =
    /// false`).
    pub notes: Option<TicketNotes>,
}

/// The hooks for these settings: Zendesk's when API credentials are configured,
/// else none. Contacts live in `shared` (Redis) when given, else in `store`.
pub fn hooks(
    settings: &Settings,
    store: &Store,
    shared: Option<RedisContacts>,
    sessions: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
) -> Result<ZendeskHooks, EnricherSetupError> {
    let Some(api) = &settings.zendesk else {
        tracing::info!(
            "no Zendesk API credentials: contact enrichment and stamp confirmation are off"
        );
        return Ok(ZendeskHooks {
            enricher: Arc::new(NoEnrichment),
            confirmer: None,
            notes: None,
        });
    };
    let client = ZendeskClient::new(api.clone(), metrics.clone())?;
    // Its own client (and token cache): the seam per-org accounts replace.
    let notes = if settings.zendesk_ticket_notes {
        if let settings::ApiAuth::ClientCredentials { scope, .. } = &api.auth {
            let writes = scope
                .split(' ')
                .any(|s| s == "write" || s.ends_with(":write"));
            if !writes {
                tracing::warn!(scope = %scope, "zendesk.oauth_scope has no write scope: ticket notes will be refused (403); add \"write\" or set zendesk.ticket_notes = false");
            }
        }
        let notes_client = Arc::new(ZendeskClient::new(api.clone(), metrics.clone())?);
        tracing::info!("ticket notes at handoff are on");
        Some(TicketNotes::start(
            Arc::new(GlobalClient(notes_client)),
            metrics.clone(),
        ))
    } else {
        None
    };
    let contacts = Contacts::open(store, shared)?;
    tracing::info!(base_url = %api.base_url, "stamp confirmation and contact enrichment from Zendesk are on");
    let zendesk = Arc::new(ZendeskEnricher::new(
        client,
        contacts,
        sessions,
        metrics,
        settings.default_country.clone(),
    ));
    Ok(ZendeskHooks {
        enricher: zendesk.clone(),
        confirmer: Some(zendesk),
        notes,
    })
}
