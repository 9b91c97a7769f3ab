//! The Zendesk REST client and contact enrichment: when the voice-prefetch webhook
//! stamps a ticket on a live session, the ticket, its requester and the requester's
//! organization are fetched and the session's contact is resolved from them, by
//! ticket id and never by a phone search (Zendesk's phone search matches fuzzily).

pub mod account_config;
pub mod accounts;
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
pub use notes::{ClientFor, TicketNotes};
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

/// The hooks for these settings: the Zendesk accounts' when any has API
/// credentials, else none. Contacts live in `shared` (Redis) when given, else in
/// `store`.
pub fn hooks(
    settings: &Settings,
    store: &Store,
    shared: Option<RedisContacts>,
    sessions: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
) -> Result<ZendeskHooks, EnricherSetupError> {
    let z = &settings.zendesk_accounts;
    let with_api = z.default.api.is_some() || z.accounts.iter().any(|a| a.api.is_some());
    if !with_api {
        tracing::info!(
            "no Zendesk API credentials: contact enrichment and stamp confirmation are off"
        );
        return Ok(ZendeskHooks {
            enricher: Arc::new(NoEnrichment),
            confirmer: None,
            notes: None,
        });
    }
    let contacts = Contacts::open(store, shared)?;
    let accounts = Arc::new(accounts::ZendeskAccounts::new(
        z,
        &accounts::Shared {
            contacts,
            sessions,
            metrics: metrics.clone(),
            default_country: settings.default_country.clone(),
        },
    )?);
    tracing::info!(
        default_base_url = z
            .default
            .api
            .as_ref()
            .map(|a| a.base_url.as_str())
            .unwrap_or("none"),
        accounts_with_api = accounts.api_count(),
        "stamp confirmation and contact enrichment from Zendesk are on"
    );
    // Notes go out with the client of the session's org (its token cache too).
    let notes = settings.zendesk_ticket_notes.then(|| {
        let apis = z.default.api.iter().chain(z.accounts.iter().filter_map(|a| a.api.as_ref()));
        for api in apis {
            if let settings::ApiAuth::ClientCredentials { scope, .. } = &api.auth {
                let writes = scope
                    .split(' ')
                    .any(|s| s == "write" || s.ends_with(":write"));
                if !writes {
                    tracing::warn!(base_url = %api.base_url, scope = %scope, "an oauth_scope without write scope: ticket notes to this account will be refused (403); add \"write\" or set zendesk.ticket_notes = false");
                }
            }
        }
        tracing::info!("ticket notes at handoff are on");
        TicketNotes::start(accounts.clone(), metrics.clone())
    });
    Ok(ZendeskHooks {
        enricher: accounts.clone(),
        confirmer: Some(accounts),
        notes,
    })
}
