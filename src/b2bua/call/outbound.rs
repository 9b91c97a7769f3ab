//! An outbound call inside the ordinary call actor: the AI agent is on the caller
//! (UAS) side, the callee on the far (UAC) side through the carrier trunk. What
//! differs from an inbound call is here: the carrier INVITE (caller ID in From, the
//! callee in To and the Request-URI, no session headers to the carrier), the one
//! digest retry when the carrier challenges, and who the `user` is in the events.

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
}

impl OutboundLeg {
    pub fn new(call: OutboundCall) -> OutboundLeg {
        OutboundLeg {
            call,
            wire: None,
            challenged: false,
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

/// The answer to a REFER on an outbound call: from the callee (the far leg) a
/// 403, as on any leg that is not the AI agent's; from the AI agent a 501 until
/// the transfer of the callee is built.
pub(super) fn refer_refusal(side: Side) -> (u16, &'static str) {
    match side {
        Side::Caller => (501, "Transfer of outbound calls not implemented"),
        _ => (403, "REFER not allowed on this leg"),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agent_hears_that_outbound_transfers_are_missing() {
        assert_eq!(refer_refusal(Side::Caller).0, 501);
        assert_eq!(refer_refusal(Side::Ai).0, 403);
        assert_eq!(refer_refusal(Side::Target).0, 403);
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
