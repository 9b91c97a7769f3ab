//! The Zendesk accounts at run time: one per `[[zendesk.accounts]]` entry and the
//! default (`[zendesk]`), each with its own REST client (and token refresh) when it
//! has API credentials. Enrichment, stamp confirmation and event webhooks ask the
//! account of the session's (the webhook token's) org, and never another's.

use super::account_config::{ZendeskAccountSettings, ZendeskAccountsSettings};
use super::client::{ClientBuildError, ZendeskClient};
use super::enrich::ZendeskEnricher;
use crate::config::Secret;
use crate::http::confirm::{ConfirmError, ConfirmFuture, StampConfirmer};
use crate::http::ContactEnricher;
use crate::metrics::Metrics;
use crate::session::contacts::Contacts;
use crate::session::{SessionId, SessionStore};
use std::collections::HashMap;
use std::sync::Arc;

/// One Zendesk account.
pub struct Account {
    settings: ZendeskAccountSettings,
    /// With API credentials: the client, inside the enrichment that uses it.
    enricher: Option<ZendeskEnricher>,
}

impl Account {
    /// The org of the entry; None: the default account.
    pub fn org_id(&self) -> Option<&str> {
        self.settings.org_id.as_deref()
    }

    /// Zendesk's numeric account id, when configured.
    pub fn account_id(&self) -> Option<u64> {
        self.settings.account_id
    }

    pub fn signing_secret(&self) -> Option<&Secret> {
        self.settings.signing_secret.as_ref()
    }

    /// The REST client, when the account has API credentials.
    pub fn client(&self) -> Option<&ZendeskClient> {
        self.enricher.as_ref().map(|e| e.client())
    }

    pub fn enricher(&self) -> Option<&ZendeskEnricher> {
        self.enricher.as_ref()
    }
}

/// What the accounts share: where contacts go, the sessions, the metrics.
pub struct Shared {
    pub contacts: Contacts,
    pub sessions: Arc<dyn SessionStore>,
    pub metrics: Arc<Metrics>,
    pub default_country: Option<String>,
}

/// Every account, by org.
pub struct ZendeskAccounts {
    default: Arc<Account>,
    by_org: HashMap<String, Arc<Account>>,
}

impl ZendeskAccounts {
    /// One client per account with API credentials.
    pub fn new(
        settings: &ZendeskAccountsSettings,
        shared: &Shared,
    ) -> Result<ZendeskAccounts, ClientBuildError> {
        // One bound on enrichments however many accounts run them.
        let slots = Arc::new(tokio::sync::Semaphore::new(super::enrich::MAX_IN_FLIGHT));
        let build = |s: &ZendeskAccountSettings| -> Result<Arc<Account>, ClientBuildError> {
            let enricher = match &s.api {
                None => None,
                Some(api) => Some(ZendeskEnricher::sharing(
                    ZendeskClient::new(api.clone(), shared.metrics.clone())?,
                    shared.contacts.clone(),
                    shared.sessions.clone(),
                    shared.metrics.clone(),
                    shared.default_country.clone(),
                    slots.clone(),
                )),
            };
            Ok(Arc::new(Account {
                settings: s.clone(),
                enricher,
            }))
        };
        let mut by_org = HashMap::new();
        for a in &settings.accounts {
            if let Some(org) = &a.org_id {
                by_org.insert(org.clone(), build(a)?);
            }
        }
        Ok(ZendeskAccounts {
            default: build(&settings.default)?,
            by_org,
        })
    }

    /// The account of `org`: its own entry, else the default (`[zendesk]`). A listed
    /// org never falls back to the default's client or secret.
    pub fn for_org(&self, org: &str) -> Arc<Account> {
        self.by_org
            .get(org)
            .cloned()
            .unwrap_or_else(|| self.default.clone())
    }

    /// Whether any account has API credentials.
    pub fn any_api(&self) -> bool {
        self.default.enricher.is_some() || self.by_org.values().any(|a| a.enricher.is_some())
    }

    /// Accounts with API credentials, for the start-up log.
    pub fn api_count(&self) -> usize {
        usize::from(self.default.enricher.is_some())
            + self
                .by_org
                .values()
                .filter(|a| a.enricher.is_some())
                .count()
    }
}

impl ContactEnricher for ZendeskAccounts {
    fn session_stamped(&self, org: &str, session: &SessionId, ticket_id: u64) {
        match self.for_org(org).enricher() {
            Some(e) => e.session_stamped(session, ticket_id),
            None => {
                tracing::debug!(org, session = %session, "no Zendesk API credentials for this org: not enriched")
            }
        }
    }
}

impl StampConfirmer for ZendeskAccounts {
    fn confirms(&self, org: &str) -> bool {
        self.for_org(org).enricher.is_some()
    }

    fn confirm<'a>(
        &'a self,
        org: &'a str,
        ticket_id: u64,
        claimed: &'a [String],
    ) -> ConfirmFuture<'a> {
        let account = self.for_org(org);
        Box::pin(async move {
            match account.enricher() {
                Some(e) => e.confirm(ticket_id, claimed).await,
                None => Err(ConfirmError::NoCredentials),
            }
        })
    }

    fn ticket_callers<'a>(&'a self, org: &'a str, ticket_id: u64) -> ConfirmFuture<'a> {
        let account = self.for_org(org);
        Box::pin(async move {
            match account.enricher() {
                Some(e) => e.ticket_callers(ticket_id).await,
                None => Err(ConfirmError::NoCredentials),
            }
        })
    }
}

impl super::notes::ClientFor for ZendeskAccounts {
    /// The client of the org's own account (a listed org never gets the
    /// default's); None when that account has no API credentials.
    fn client_for(&self, org_id: &str) -> Option<Arc<ZendeskClient>> {
        self.for_org(org_id).enricher().map(|e| e.shared_client())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::session::memory::SessionTable;
    use crate::store::Store;
    use std::time::Duration;

    fn accounts(zendesk: &str) -> ZendeskAccounts {
        let text = format!("{zendesk}\n[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1\"\n");
        let s = Config::parse(&text, "t.toml").expect("valid");
        let shared = Shared {
            contacts: Contacts::open(&Store::in_memory(), None).expect("contacts"),
            sessions: Arc::new(SessionTable::new(10, Duration::from_secs(1))),
            metrics: Arc::new(Metrics::default()),
            default_country: None,
        };
        ZendeskAccounts::new(&s.zendesk_accounts, &shared).expect("clients")
    }

    #[test]
    fn a_listed_org_gets_its_own_account_and_never_the_defaults() {
        let z = accounts(
            "[zendesk]\nsubdomain = \"global\"\noauth_token = \"g\"\nwebhook_signing_secret = \"gs\"\naccount_id = 9\n\
             [[zendesk.accounts]]\norg_id = \"org-a\"\naccount_id = 111\nsubdomain = \"acme\"\noauth_token = \"a\"\nwebhook_signing_secret = \"as\"\n\
             [[zendesk.accounts]]\norg_id = \"org-b\"\naccount_id = 222\n",
        );
        let a = z.for_org("org-a");
        assert_eq!((a.org_id(), a.account_id()), (Some("org-a"), Some(111)));
        assert_eq!(a.signing_secret().map(Secret::expose), Some("as"));
        assert!(a.client().is_some());
        // org-b is listed without credentials or secret: nothing of the default's.
        let b = z.for_org("org-b");
        assert_eq!((b.org_id(), b.account_id()), (Some("org-b"), Some(222)));
        assert!(b.client().is_none() && b.signing_secret().is_none());
        assert!(!z.confirms("org-b"));
        let c = z.for_org("org-c");
        assert_eq!((c.org_id(), c.account_id()), (None, Some(9)));
        assert_eq!(c.signing_secret().map(Secret::expose), Some("gs"));
        assert!(z.confirms("org-c") && z.confirms("org-a"));
        assert_eq!(z.api_count(), 2);
        assert!(z.any_api());
    }
}
