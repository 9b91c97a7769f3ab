//! Stamp confirmation against the ticket (the webhook's [`StampConfirmer`]): the
//! ticket's `via.source.from.phone`, else its requester's phone, must be one of
//! the phones the webhook names. The ticket fetched here is kept a short while
//! for the enrichment that follows a stamp, so a stamp costs one ticket GET.

use super::client::{FetchError, Ticket};
use super::enrich::ZendeskEnricher;
use crate::e164::normalize_e164;
use crate::http::confirm::{confirmed_phones, ConfirmError};
use serde_json::Value;

/// The caller's phone as the ticket's channel recorded it, in E.164.
pub fn via_phone(ticket: &Ticket, default_country: Option<&str>) -> Option<String> {
    let phone = ticket
        .via
        .as_ref()?
        .pointer("/source/from/phone")
        .and_then(Value::as_str)?;
    normalize_e164(phone, default_country)
}

fn fetch_error(e: FetchError) -> ConfirmError {
    match e {
        FetchError::NotFound => ConfirmError::TicketNotFound,
        other => ConfirmError::Unavailable(other.to_string()),
    }
}

/// Whether a ticket came in by phone (Talk): only then may its requester's phone
/// stand in for a caller the channel did not record. An email or web ticket's
/// requester may well have a live call that the ticket is not about.
pub fn phone_channel(ticket: &Ticket) -> bool {
    ticket
        .via
        .as_ref()
        .and_then(|v| v.get("channel"))
        .and_then(Value::as_str)
        .is_some_and(|c| c.starts_with("voice") || c.contains("phone"))
}

impl ZendeskEnricher {
    /// The phones among `claimed` that the ticket names (see `StampConfirmer`).
    pub async fn confirm(
        &self,
        ticket_id: u64,
        claimed: &[String],
    ) -> Result<Vec<String>, ConfirmError> {
        let country = self.default_country();
        let ticket = self.client().ticket(ticket_id).await.map_err(fetch_error)?;
        let via = via_phone(&ticket, country);
        let mut confirmed = confirmed_phones(claimed, via.as_slice());
        if confirmed.is_empty() {
            if let Some(requester) = ticket.requester_id {
                let phone = self.requester_phone(requester).await?;
                confirmed = confirmed_phones(claimed, phone.as_slice());
            }
        }
        if !confirmed.is_empty() {
            self.keep_confirmed(ticket);
        }
        Ok(confirmed)
    }

    /// The ticket's caller: `via.source.from.phone`, else, for a phone-channel
    /// ticket, its requester's phone; empty when it names none. The ticket is kept
    /// for the enrichment that follows a stamp.
    pub async fn ticket_callers(&self, ticket_id: u64) -> Result<Vec<String>, ConfirmError> {
        let ticket = self.client().ticket(ticket_id).await.map_err(fetch_error)?;
        let mut phones: Vec<String> = via_phone(&ticket, self.default_country())
            .into_iter()
            .collect();
        if phones.is_empty() && phone_channel(&ticket) {
            if let Some(requester) = ticket.requester_id {
                phones.extend(self.requester_phone(requester).await?);
            }
        }
        if !phones.is_empty() {
            self.keep_confirmed(ticket);
        }
        Ok(phones)
    }

    async fn requester_phone(&self, requester: u64) -> Result<Option<String>, ConfirmError> {
        let user = match self.client().user(requester).await {
            Ok(u) => Some(u),
            // A requester gone leaves only the channel's phone.
            Err(FetchError::NotFound) => None,
            Err(e) => return Err(ConfirmError::Unavailable(e.to_string())),
        };
        Ok(user
            .and_then(|u| u.phone)
            .and_then(|p| normalize_e164(&p, self.default_country())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(via: Value) -> Ticket {
        serde_json::from_value(
            serde_json::json!({"id": 1, "requester_id": 2, "organization_id": null, "via": via}),
        )
        .expect("ticket")
    }

    #[test]
    fn the_channels_caller_phone_in_e164() {
        let t = ticket(
            serde_json::json!({"channel": "voice", "source": {"from": {"phone": "(415) 555-1212"}}}),
        );
        assert_eq!(via_phone(&t, Some("US")).as_deref(), Some("+14155551212"));
        for via in [
            serde_json::json!({"channel": "web", "source": {"from": {}}}),
            serde_json::json!({"source": {"from": {"phone": "anonymous"}}}),
            serde_json::json!({"source": {"from": {"phone": 4155551212u64}}}),
            Value::Null,
        ] {
            assert_eq!(via_phone(&ticket(via.clone()), Some("US")), None, "{via}");
        }
    }

    #[test]
    fn only_phone_channel_tickets_fall_back_to_the_requester() {
        for (via, phone) in [
            (serde_json::json!({"channel": "voice"}), true),
            (serde_json::json!({"channel": "voice_inbound"}), true),
            (serde_json::json!({"channel": "phone_call_inbound"}), true),
            (serde_json::json!({"channel": "email"}), false),
            (serde_json::json!({"channel": "web"}), false),
            (serde_json::json!({"channel": 7}), false),
            (Value::Null, false),
        ] {
            assert_eq!(phone_channel(&ticket(via.clone())), phone, "{via}");
        }
    }
}
