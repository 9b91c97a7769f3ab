//! The dispatcher's side of an outbound call: an INVITE from an `ai_agent` trunk is
//! admitted (`outbound::admit`, pure), held to the org's and the carrier trunk's
//! limits, and handed to the ordinary call actor with the callee as its far leg.

use super::outbound::{admit, OutboundAsk, OutboundCall};
use super::{acl, call, inbox, policy, B2bua, CallEvent};
use crate::config::trunk_outbound::TrunkRole;
use crate::config::{Route, RouteMatch};
use crate::metrics::Metrics;
use crate::sip::message::Message;
use crate::sip::transport::{Peer, TransportLayer};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl B2bua {
    /// A new INVITE from trunk `agent_trunk`, of kind `ai_agent` (the global limits
    /// have been checked). Every refusal is final and nothing is dialled.
    pub(super) fn new_outbound_call(
        &self,
        t: &Arc<TransportLayer>,
        mut invite: Message,
        from: Peer,
        agent_trunk: usize,
    ) {
        let sh = &self.shared;
        let Some(TrunkRole::AiAgent { org_id, agent_ids }) =
            sh.settings.trunks.get(agent_trunk).map(|t| &t.role)
        else {
            return;
        };
        let ask = OutboundAsk::of(&invite);
        let admitted = match admit(org_id, agent_ids, &sh.settings.outbound, &ask) {
            Ok(a) => a,
            Err(why) => {
                let counter = if why.is_destination() {
                    &sh.metrics.outbound_refused_destination_total
                } else {
                    &sh.metrics.outbound_refused_identity_total
                };
                Metrics::inc(counter);
                tracing::warn!(
                    peer = %from.addr,
                    org_id = %org_id,
                    number = %crate::redact::Phone(ask.number.as_deref().unwrap_or_default()),
                    reason = %why,
                    "outbound call refused with 403, nothing dialled"
                );
                return self.reply(t, &invite, from, 403, &[]);
            }
        };
        let Some(org) = sh.settings.outbound.get(admitted.org) else {
            return self.reply(t, &invite, from, 403, &[]);
        };
        let Some(TrunkRole::CarrierWithOutbound(carrier)) =
            sh.settings.trunks.get(org.trunk).map(|t| &t.role)
        else {
            return self.reply(t, &invite, from, 403, &[]);
        };
        // The limits, each a place held by the call's task: the agent trunk's own
        // (as for any source), the org's, the carrier trunk's.
        let now = Instant::now();
        let refused = |what: &str| {
            Metrics::inc(&sh.metrics.outbound_refused_limit_total);
            tracing::info!(org_id = %org.org_id, limit = what, "outbound call over a limit, 503");
            self.reply_503(t, &invite, from)
        };
        let Ok(agent_slot) = sh.trunks.admit(agent_trunk, now) else {
            return refused("agent trunk");
        };
        let Some(org_slot) = sh.org_limits.admit(admitted.org, now) else {
            return refused("org");
        };
        let Ok(carrier_slot) = sh.trunks.admit(org.trunk, now) else {
            return refused("carrier trunk");
        };
        // Before the X-OPENCX-* headers go: X-OPENCX-SESSION-CUSTOM-DATA is data.
        let custom_data = crate::events::custom_data::from_invite_logged(&invite, &sh.metrics);
        policy::strip_spoofed_headers(&mut invite);
        let Some(call_id) = invite.call_id().map(str::to_owned) else {
            return;
        };
        let (inbox, rx) = inbox::inbox(sh.settings.call_inbox_depth);
        if let Err(owner) = sh.calls.claim(call_id, &inbox) {
            let _ = owner.try_send(CallEvent::Sip(Box::new((invite, from))));
            return;
        }
        sh.active.fetch_add(1, Ordering::Relaxed);
        sh.metrics.calls_active.fetch_add(1, Ordering::Relaxed);
        Metrics::inc(&sh.metrics.calls_started_total);
        Metrics::inc(&sh.metrics.outbound_calls_started_total);
        agent_slot.started();
        carrier_slot.started();
        // The agent's languages and version, from its inbound route when it has one.
        let agent = sh
            .settings
            .routes
            .iter()
            .find(|r| r.org_id == org.org_id && r.agent_id == admitted.agent_id)
            .map(|r| r.agent.clone())
            .unwrap_or_default();
        let trunk_srtp = |i: usize| {
            sh.settings
                .trunks
                .get(i)
                .map(|t| t.srtp)
                .unwrap_or_default()
        };
        let route = Route {
            matcher: RouteMatch::Default,
            org_id: org.org_id.clone(),
            agent_id: admitted.agent_id.clone(),
            ai_agent_uri: carrier.uri.clone(),
            agent,
            trunks: Vec::new(),
            // SRTP: the far leg is the carrier's, the caller leg the agent trunk's.
            srtp: trunk_srtp(org.trunk),
            caller_srtp: trunk_srtp(agent_trunk),
            tls_client: None,
        };
        let media_cidrs = agent_slot.media();
        let start = call::CallStart {
            sh: self.shared.clone(),
            transport: t.clone(),
            inbox,
            invite,
            from,
            route,
            called: admitted.caller_id.clone(),
            custom_data,
            media_cidrs,
            caller_srtp: trunk_srtp(agent_trunk),
            outbound: Some(Box::new(OutboundCall {
                admitted,
                carrier: carrier.clone(),
                ring_timeout: org.ring_timeout,
                slots: (org_slot, carrier_slot),
            })),
        };
        call::spawn(Box::new(start), rx, Some(agent_slot));
    }

    /// Whether a new INVITE from `source` is an AI agent's outbound call.
    pub(super) fn outbound_source(&self, source: acl::Source) -> Option<usize> {
        match source {
            acl::Source::Trunk(i) => matches!(
                self.shared.settings.trunks.get(i).map(|t| &t.role),
                Some(TrunkRole::AiAgent { .. })
            )
            .then_some(i),
            _ => None,
        }
    }
}
