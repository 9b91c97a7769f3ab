//! Stamp confirmation: with Zendesk API credentials, a stamp counts only when the
//! ticket itself names the caller. A token holder could otherwise pin any ticket
//! on any live call of the org, and enrichment would copy that ticket's requester
//! into the session.

use std::future::Future;
use std::pin::Pin;

/// What confirming a ticket returns: the phones of the body that the ticket
/// confirms, in the body's order (empty: none).
pub type ConfirmFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<String>, ConfirmError>> + Send + 'a>>;

/// Asks the ticket, in the Zendesk account of the webhook's org, which of the
/// claimed callers it belongs to.
pub trait StampConfirmer: Send + Sync + 'static {
    /// Whether `org`'s Zendesk account has API credentials (else its stamps are
    /// not confirmed and its event webhooks cannot be served).
    fn confirms(&self, org: &str) -> bool;

    /// The phones among `claimed` (E.164) that ticket `ticket_id`'s
    /// `via.source.from.phone` or its requester's phone normalise to, asked of
    /// `org`'s Zendesk account.
    fn confirm<'a>(
        &'a self,
        org: &'a str,
        ticket_id: u64,
        claimed: &'a [String],
    ) -> ConfirmFuture<'a>;

    /// The caller of ticket `ticket_id` in `org`'s account, for an event webhook
    /// that names only the ticket: its `via.source.from.phone`, else (a phone-call
    /// ticket whose caller is not recorded) its requester's phone. Empty: the
    /// ticket names no caller.
    fn ticket_callers<'a>(&'a self, org: &'a str, ticket_id: u64) -> ConfirmFuture<'a>;
}

/// Why a ticket could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    /// Zendesk has no such ticket: the stamp is refused.
    #[error("ticket not found in Zendesk")]
    TicketNotFound,
    /// Zendesk could not be asked (credentials, timeout, 5xx): nothing is
    /// stamped, and Zendesk is told to retry (503).
    #[error("cannot ask Zendesk: {0}")]
    Unavailable(String),
    /// The org's Zendesk account has no API credentials.
    #[error("no Zendesk API credentials for this org's account")]
    NoCredentials,
}

/// The phones of `claimed` that are among `ticket_phones`, in `claimed`'s order.
/// Both sides are E.164 already.
pub fn confirmed_phones(claimed: &[String], ticket_phones: &[String]) -> Vec<String> {
    claimed
        .iter()
        .filter(|p| ticket_phones.contains(p))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_phones_the_ticket_names_are_confirmed() {
        let claimed = v(&["+14155551212", "+14155550000"]);
        assert_eq!(
            confirmed_phones(&claimed, &v(&["+14155550000"])),
            v(&["+14155550000"])
        );
        assert_eq!(
            confirmed_phones(&claimed, &v(&["+14155550000", "+14155551212"])),
            claimed
        );
        assert!(confirmed_phones(&claimed, &v(&["+14155559999"])).is_empty());
        assert!(confirmed_phones(&claimed, &[]).is_empty());
    }
}
