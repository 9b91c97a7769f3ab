//! An outbound call inside the ordinary call actor: the AI agent is on the caller
//! (UAS) side, the callee on the far (UAC) side through the carrier trunk. What
//! differs from an inbound call is here: the carrier INVITE (caller ID in From, the
//! callee in To and the Request-URI, no session headers to the carrier), the one
//! digest retry when the carrier challenges, who the `user` is in the events,
//! and the swap of the two legs when the agent transfers the callee: from then
//! on the call is laid out as an inbound one (customer on the caller side).

use super::invite::NewInvite;
use super::pending::PendingInvite;
use super::{Call, Side};
use crate::b2bua::outbound::OutboundCall;
use crate::sip::auth as digest;
use crate::sip::message::{bracket_v6, generate_tag, Message, NameAddr, SipUri};
use bytes::Bytes;
use rand::Rng;
use std::time::Instant;

/// An outbound call's own state in its call.
#[derive(Debug)]
pub(crate) struct OutboundLeg {
    pub call: OutboundCall,
    /// The carrier INVITE as sent, for the retry with credentials (a TCP
    /// transaction is gone by the time its 401 is handled: no Timer D).
    wire: Option<Bytes>,
    /// A challenge was answered once already: a second one fails the call.
    challenged: bool,
    /// The agent's REFER swapped the legs: the callee is on the caller side
    /// and the agent on the AI side, as on an inbound call, from then on.
    swapped: bool,
}

impl OutboundLeg {
    pub fn new(call: OutboundCall) -> OutboundLeg {
        OutboundLeg {
            call,
            wire: None,
            challenged: false,
            swapped: false,
        }
    }
}

/// The carrier's URI with the callee's number as its user part:
/// `sip:carrier.example;transport=tls` -> `sip:+14155550100@carrier.example;transport=tls`.
pub(super) fn carrier_request_uri(carrier: &SipUri, callee: &str) -> String {
    let mut s = format!("{}:{callee}@{}", carrier.scheme, bracket_v6(&carrier.host));
    if let Some(p) = carrier.port {
        s.push_str(&format!(":{p}"));
    }
    for (k, v) in &carrier.params {
        s.push(';');
        s.push_str(k);
        if let Some(v) = v {
            s.push('=');
            s.push_str(v);
        }
    }
    s
}

/// The INVITE to the carrier: our caller ID in From, the callee in To, the agent's
/// SDP (pointed at the relay, or as is). Neither the session headers nor the
/// agent's `X-` headers go to the carrier: they are handoff's and the agent's.
pub(super) fn build_carrier_invite(
    agent_invite: &Message,
    o: &OutboundCall,
    mut new: NewInvite<'_>,
    relayed_sdp: Option<Bytes>,
) -> (Message, String) {
    new.from = NameAddr::format(
        None,
        &format!("sip:{}@{}", o.admitted.caller_id, bracket_v6(new.host)),
        Some(&generate_tag()),
    );
    let carrier_host = bracket_v6(&o.carrier.uri.host);
    new.to = format!("<sip:{}@{carrier_host}>", o.admitted.callee);
    new.max_forwards = match agent_invite.max_forwards() {
        Some(Ok(n)) => n.saturating_sub(1).min(70),
        _ => 70,
    };
    let (mut m, contact) = new.build();
    if let Some(sdp) = relayed_sdp {
        m.push("Content-Type", "application/sdp");
        m.set_body(sdp);
    } else if !agent_invite.body().is_empty() {
        if let Some(ct) = agent_invite.header("Content-Type") {
            m.push("Content-Type", ct.to_owned());
        }
        m.set_body(agent_invite.body().clone());
    }
    (m, contact)
}

/// Where the customer and the AI agent are, by the call's direction: on an
/// outbound call not yet swapped for a transfer the agent is the caller side
/// (it sent the INVITE) and the customer the AI side (the callee); otherwise
/// the other way round. Returns `(customer, agent)`.
pub(super) fn roles(outbound: bool, swapped: bool) -> (Side, Side) {
    if outbound && !swapped {
        (Side::Ai, Side::Caller)
    } else {
        (Side::Caller, Side::Ai)
    }
}

/// A side's name once the caller and AI legs have swapped places.
pub(super) fn swapped_side(side: Side) -> Side {
    match side {
        Side::Caller => Side::Ai,
        Side::Ai => Side::Caller,
        Side::Target => Side::Target,
    }
}

impl Call {
    /// Keep the carrier INVITE's bytes for a retry with credentials.
    pub(super) fn keep_outbound_wire(&mut self, wire: Option<Bytes>) {
        if let Some(o) = self.outbound.as_mut() {
            if o.call.carrier.credentials.is_some() {
                o.wire = wire;
            }
        }
    }

    /// A 401/407 from the carrier: the INVITE again, once, with credentials
    /// (RFC 3261 22.2, RFC 8760). False: not answered (no credentials, a second
    /// challenge, an unusable challenge); the failure goes to the agent.
    pub(super) fn retry_carrier_with_credentials(
        &mut self,
        resp: &Message,
        status: u16,
        now: Instant,
    ) -> bool {
        let Some(kind) = digest::ChallengeKind::from_status(status) else {
            return false;
        };
        let Some(o) = self.outbound.as_mut() else {
            return false;
        };
        if std::mem::replace(&mut o.challenged, true) {
            tracing::warn!(status, "carrier challenged the answered INVITE again");
            return false;
        }
        let Some((user, password)) = o.call.carrier.credentials.as_ref() else {
            tracing::warn!(
                status,
                "carrier challenged and no credentials are configured"
            );
            return false;
        };
        let Some(invite) = o
            .wire
            .take()
            .and_then(|w| crate::sip::message::parse(w).ok())
        else {
            return false;
        };
        let Some(uri) = invite.request_uri().map(str::to_owned) else {
            return false;
        };
        let creds = digest::DigestCredentials {
            username: user,
            password: password.expose(),
        };
        let cnonce = format!("{:016x}", rand::thread_rng().gen::<u64>());
        let answer = resp
            .headers()
            .iter()
            .filter(|h| {
                h.name()
                    .as_str()
                    .eq_ignore_ascii_case(kind.challenge_header())
            })
            .find_map(|h| {
                digest::digest_authorization(h.value(), "INVITE", &uri, &creds, &cnonce, 1).ok()
            });
        let Some(answer) = answer else {
            tracing::warn!(status, "carrier's challenge cannot be answered");
            return false;
        };
        let retry = self
            .leg(Side::Ai)
            .retry_invite(invite, kind.authorization_header(), answer);
        let deadline = self.ai_invite.as_ref().and_then(PendingInvite::deadline);
        let id = self.send_request(Side::Ai, retry, now);
        self.ai_invite = Some(PendingInvite::new(id, deadline));
        tracing::debug!(
            status,
            "carrier challenged, INVITE sent again with credentials"
        );
        true
    }

    /// Whether this call was placed by the AI agent.
    pub(super) fn is_outbound(&self) -> bool {
        self.outbound.is_some()
    }

    /// The legs of the customer (the `user` of the events, the party a
    /// transfer keeps) and of the AI agent: `(customer, agent)`.
    pub(super) fn roles(&self) -> (Side, Side) {
        let o = self.outbound.as_ref();
        roles(o.is_some(), o.is_some_and(|o| o.swapped))
    }

    /// Before the AI agent's transfer on an outbound call: the callee's leg
    /// and the agent's change places (in the relay too), so that the callee
    /// is where the transfer machinery keeps a caller and the agent where it
    /// releases one. Nothing to do on an inbound call or once swapped.
    /// False when the legs cannot swap (a new leg's media pending, the relay
    /// stopped, the agent's INVITE unfinished).
    pub(super) fn swap_roles_for_transfer(&mut self) -> bool {
        let Some(o) = self.outbound.as_ref() else {
            return true;
        };
        if o.swapped {
            return true;
        }
        if self.ai_invite.is_some()
            || self.legs.len() != 2
            || self.far != Side::Ai
            || !self.media.as_mut().is_some_and(|m| m.swap_caller_and_ai())
        {
            return false;
        }
        self.legs.swap(Side::Caller as usize, Side::Ai as usize);
        for r in &mut self.relays {
            r.from = swapped_side(r.from);
            r.to = swapped_side(r.to);
        }
        if let Some(o) = self.outbound.as_mut() {
            o.swapped = true;
        }
        tracing::debug!("outbound call: callee and agent legs swapped for the transfer");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_customer_is_the_callee_until_the_legs_swap() {
        // Inbound: the caller is the customer, the AI leg the agent.
        assert_eq!(roles(false, false), (Side::Caller, Side::Ai));
        // Outbound: the agent called, the callee (AI side) is the customer...
        assert_eq!(roles(true, false), (Side::Ai, Side::Caller));
        // ...until a transfer swaps the legs into the inbound layout.
        assert_eq!(roles(true, true), (Side::Caller, Side::Ai));
    }

    #[test]
    fn swapping_exchanges_the_caller_and_ai_sides_only() {
        assert_eq!(swapped_side(Side::Caller), Side::Ai);
        assert_eq!(swapped_side(Side::Ai), Side::Caller);
        assert_eq!(swapped_side(Side::Target), Side::Target);
        for s in [Side::Caller, Side::Ai, Side::Target] {
            assert_eq!(swapped_side(swapped_side(s)), s);
        }
    }

    #[test]
    fn the_callee_becomes_the_carrier_uris_user_part() {
        let u = SipUri::parse("sip:carrier.example;transport=tls").unwrap();
        assert_eq!(
            carrier_request_uri(&u, "+14155550100"),
            "sip:+14155550100@carrier.example;transport=tls"
        );
        let u = SipUri::parse("sips:[2001:db8::1]:5061").unwrap();
        assert_eq!(
            carrier_request_uri(&u, "+442079460000"),
            "sips:+442079460000@[2001:db8::1]:5061"
        );
    }
}
