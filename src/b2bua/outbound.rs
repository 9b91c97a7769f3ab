//! Outbound calls: who may place one and to what. An INVITE from an `ai_agent`
//! trunk's sources is an outbound call of the trunk's org; `admit` (pure) decides
//! whether it may be dialled, and `OrgLimits` holds each org's `max_calls` and
//! `max_calls_per_second`. The call itself is the ordinary call actor with the AI
//! agent on the caller (UAS) side and the callee on the far (UAC) side.

use super::trunk::take_slot;
use super::TokenBucket;
use crate::config::trunk_outbound::{is_e164, OrgOutbound};
use crate::sip::message::{Message, SipUri};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The header an AI agent names itself with (validated against its trunk's org).
pub const AGENT_ID_HEADER: &str = "X-OPENCX-AGENT-ID";
/// The header an AI agent asks for one of its org's caller IDs with.
pub const CALLER_ID_HEADER: &str = "X-OPENCX-CALLER-ID";

/// What the AI agent's INVITE asks for, read from it before the `X-OPENCX-*`
/// headers are stripped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboundAsk {
    /// `X-OPENCX-AGENT-ID`, when sent.
    pub agent_id: Option<String>,
    /// The Request-URI's user part (`sip:+E164@handoff`) or a `tel:` number.
    pub number: Option<String>,
    /// `X-OPENCX-CALLER-ID`, when sent.
    pub caller_id: Option<String>,
}

impl OutboundAsk {
    pub fn of(invite: &Message) -> OutboundAsk {
        OutboundAsk {
            agent_id: invite.header(AGENT_ID_HEADER).map(|v| v.trim().to_owned()),
            number: invite
                .request_uri()
                .and_then(SipUri::parse)
                .and_then(|u| u.user),
            caller_id: invite.header(CALLER_ID_HEADER).map(|v| v.trim().to_owned()),
        }
    }
}

/// An outbound call that may be dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// Index into `Settings::outbound`.
    pub org: usize,
    pub agent_id: String,
    /// The callee, E.164.
    pub callee: String,
    /// The caller ID presented to the callee, E.164.
    pub caller_id: String,
}

/// Why an outbound INVITE is refused (every one: 403, nothing dialled).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundRefusal {
    #[error("X-OPENCX-AGENT-ID is not an agent of the trunk's org")]
    ForeignAgent,
    #[error("the org has no [[outbound]] table")]
    NoOutbound,
    #[error("the called number is not E.164")]
    BadNumber,
    #[error("the called number is outside the org's allowed_prefixes")]
    NotAllowed,
    #[error("X-OPENCX-CALLER-ID is not one of the org's caller_ids")]
    CallerIdNotAllowed,
}

impl OutboundRefusal {
    /// A destination refusal (toll-fraud guard) or an identity one, for the metrics.
    pub fn is_destination(&self) -> bool {
        matches!(
            self,
            OutboundRefusal::BadNumber | OutboundRefusal::NotAllowed
        )
    }
}

/// The number as E.164: `+` and digits, or digits with visual separators
/// (`+1-415-555-0100`, RFC 3966) dropped. No national forms: an agent dials E.164.
fn callee_e164(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.len() > 32 {
        return None;
    }
    let digits: String = raw
        .strip_prefix('+')?
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
        .collect();
    let n = format!("+{digits}");
    is_e164(&n).then_some(n)
}

/// The decision, pure: an INVITE from an `ai_agent` trunk of `org_id` whose agents
/// are `agents`, asking `ask`, against every org's `[[outbound]]`.
pub fn admit(
    org_id: &str,
    agents: &[String],
    orgs: &[OrgOutbound],
    ask: &OutboundAsk,
) -> Result<Admitted, OutboundRefusal> {
    let agent_id = match ask.agent_id.as_deref() {
        Some(a) => agents
            .iter()
            .find(|x| x.as_str() == a)
            .ok_or(OutboundRefusal::ForeignAgent)?,
        None => agents.first().ok_or(OutboundRefusal::ForeignAgent)?,
    };
    let (org, policy) = orgs
        .iter()
        .enumerate()
        .find(|(_, o)| o.org_id == org_id)
        .ok_or(OutboundRefusal::NoOutbound)?;
    let callee = ask
        .number
        .as_deref()
        .and_then(callee_e164)
        .ok_or(OutboundRefusal::BadNumber)?;
    if !policy
        .allowed_prefixes
        .iter()
        .any(|p| callee.starts_with(p.as_str()))
    {
        return Err(OutboundRefusal::NotAllowed);
    }
    let caller_id = match ask.caller_id.as_deref() {
        Some(c) => policy
            .caller_ids
            .iter()
            .find(|x| x.as_str() == c)
            .ok_or(OutboundRefusal::CallerIdNotAllowed)?,
        None => policy
            .caller_ids
            .first()
            .ok_or(OutboundRefusal::CallerIdNotAllowed)?,
    };
    Ok(Admitted {
        org,
        agent_id: agent_id.clone(),
        callee,
        caller_id: caller_id.clone(),
    })
}

/// One org's live outbound limits.
#[derive(Debug)]
struct OrgState {
    max_calls: Option<usize>,
    active: AtomicUsize,
    cps: Option<Mutex<TokenBucket>>,
}

/// Every org's outbound limits, indexed like `Settings::outbound`.
#[derive(Debug)]
pub struct OrgLimits {
    orgs: Box<[OrgState]>,
}

/// One outbound call's place in its org's `max_calls`; given back on drop.
#[derive(Debug)]
pub struct OrgSlot {
    limits: Arc<OrgLimits>,
    index: usize,
}

impl OrgLimits {
    pub fn new(orgs: &[OrgOutbound]) -> Arc<OrgLimits> {
        Arc::new(OrgLimits {
            orgs: orgs
                .iter()
                .map(|o| OrgState {
                    max_calls: o.max_calls,
                    active: AtomicUsize::new(0),
                    cps: o
                        .max_calls_per_second
                        .map(|r| Mutex::new(TokenBucket::new(f64::from(r)))),
                })
                .collect(),
        })
    }

    /// A new outbound call of org `index`: its slot, or `None` when a limit refuses.
    pub fn admit(self: &Arc<Self>, index: usize, now: Instant) -> Option<OrgSlot> {
        let o = self.orgs.get(index)?;
        if !take_slot(&o.active, o.max_calls) {
            return None;
        }
        let slot = OrgSlot {
            limits: self.clone(),
            index,
        };
        if let Some(bucket) = &o.cps {
            if !bucket.lock().map(|mut b| b.take(now)).unwrap_or(false) {
                return None; // The slot is dropped: given back.
            }
        }
        Some(slot)
    }

    /// Outbound calls of org `index` in progress.
    pub fn active(&self, index: usize) -> usize {
        self.orgs
            .get(index)
            .map_or(0, |o| o.active.load(Ordering::Relaxed))
    }
}

impl Drop for OrgSlot {
    fn drop(&mut self) {
        if let Some(o) = self.limits.orgs.get(self.index) {
            o.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What the call actor needs of an admitted outbound call.
#[derive(Debug)]
pub struct OutboundCall {
    pub admitted: Admitted,
    /// The carrier's `[trunk.outbound]`.
    pub carrier: Box<crate::config::trunk_outbound::CarrierOutbound>,
    pub ring_timeout: Duration,
    /// Held while the call lives: the org's and the carrier trunk's places.
    pub slots: (OrgSlot, super::trunk::TrunkSlot),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(prefixes: &[&str], caller_ids: &[&str]) -> OrgOutbound {
        OrgOutbound {
            org_id: "acme".into(),
            trunk: 0,
            allowed_prefixes: prefixes.iter().map(|s| (*s).to_owned()).collect(),
            caller_ids: caller_ids.iter().map(|s| (*s).to_owned()).collect(),
            max_calls: None,
            max_calls_per_second: None,
            ring_timeout: Duration::from_secs(30),
        }
    }

    fn ask(agent: Option<&str>, number: &str, caller: Option<&str>) -> OutboundAsk {
        OutboundAsk {
            agent_id: agent.map(str::to_owned),
            number: Some(number.to_owned()),
            caller_id: caller.map(str::to_owned),
        }
    }

    fn agents() -> Vec<String> {
        vec!["a1".into(), "a2".into()]
    }

    #[test]
    fn an_agent_of_the_org_dials_an_allowed_number_with_the_default_caller_id() {
        let orgs = [org(&["+1415", "+44"], &["+14155550100", "+14155550101"])];
        let a = admit(
            "acme",
            &agents(),
            &orgs,
            &ask(Some("a2"), "+14155551234", None),
        )
        .unwrap();
        assert_eq!(
            a,
            Admitted {
                org: 0,
                agent_id: "a2".into(),
                callee: "+14155551234".into(),
                caller_id: "+14155550100".into(),
            }
        );
        let a = admit(
            "acme",
            &agents(),
            &orgs,
            &ask(None, "+44-20-7946-0000", Some("+14155550101")),
        )
        .unwrap();
        assert_eq!(a.agent_id, "a1", "no header: the org's first agent");
        assert_eq!(a.callee, "+442079460000");
        assert_eq!(a.caller_id, "+14155550101");
    }

    #[test]
    fn an_agent_claiming_another_org_is_refused() {
        let orgs = [org(&["+1"], &["+14155550100"])];
        for bad in ["other-org-agent", "a1 ", "", "a1,a2"] {
            assert_eq!(
                admit(
                    "acme",
                    &agents(),
                    &orgs,
                    &ask(Some(bad), "+14155551234", None)
                ),
                Err(OutboundRefusal::ForeignAgent),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn numbers_outside_the_prefixes_or_not_e164_are_refused() {
        let orgs = [org(&["+1415"], &["+14155550100"])];
        for (number, why) in [
            ("+19005551234", OutboundRefusal::NotAllowed),
            ("+882345678901", OutboundRefusal::NotAllowed),
            ("14155551234", OutboundRefusal::BadNumber),
            ("0014155551234", OutboundRefusal::BadNumber),
            ("+1415555123456789", OutboundRefusal::BadNumber),
            ("+1415abc1234", OutboundRefusal::BadNumber),
            ("", OutboundRefusal::BadNumber),
        ] {
            assert_eq!(
                admit("acme", &agents(), &orgs, &ask(None, number, None)),
                Err(why),
                "{number:?}"
            );
        }
        let mut no_number = ask(None, "", None);
        no_number.number = None;
        assert_eq!(
            admit("acme", &agents(), &orgs, &no_number),
            Err(OutboundRefusal::BadNumber)
        );
    }

    #[test]
    fn no_prefixes_configured_dials_nothing() {
        let orgs = [org(&[], &["+14155550100"])];
        assert_eq!(
            admit("acme", &agents(), &orgs, &ask(None, "+14155551234", None)),
            Err(OutboundRefusal::NotAllowed)
        );
    }

    #[test]
    fn a_caller_id_the_org_does_not_own_is_refused() {
        let orgs = [org(&["+1"], &["+14155550100"])];
        assert_eq!(
            admit(
                "acme",
                &agents(),
                &orgs,
                &ask(None, "+14155551234", Some("+12025550100"))
            ),
            Err(OutboundRefusal::CallerIdNotAllowed)
        );
    }

    #[test]
    fn an_org_without_outbound_is_refused() {
        let orgs = [org(&["+1"], &["+14155550100"])];
        assert_eq!(
            admit("globex", &agents(), &orgs, &ask(None, "+14155551234", None)),
            Err(OutboundRefusal::NoOutbound)
        );
    }

    fn invite(ruri: &str, extra: &str) -> Message {
        let text = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:agent@ai.example>;tag=1\r\nTo: <{ruri}>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        crate::sip::message::parse(bytes::Bytes::from(text)).unwrap()
    }

    #[test]
    fn the_ask_is_read_from_a_sip_or_tel_request_uri_and_the_headers() {
        let a = OutboundAsk::of(&invite(
            "sip:+14155551234@handoff.example",
            "X-OPENCX-AGENT-ID: a2\r\nX-OPENCX-CALLER-ID: +14155550101\r\n",
        ));
        assert_eq!(a.number.as_deref(), Some("+14155551234"));
        assert_eq!(a.agent_id.as_deref(), Some("a2"));
        assert_eq!(a.caller_id.as_deref(), Some("+14155550101"));
        let a = OutboundAsk::of(&invite("tel:+1-415-555-1234", ""));
        let orgs = [org(&["+1415"], &["+14155550100"])];
        let ok = admit("acme", &agents(), &orgs, &a).unwrap();
        assert_eq!(ok.callee, "+14155551234");
        assert_eq!(a.agent_id, None);
    }

    #[test]
    fn org_limits_hold_max_calls_and_the_rate() {
        let mut o = org(&["+1"], &["+14155550100"]);
        o.max_calls = Some(2);
        o.max_calls_per_second = Some(3);
        let l = OrgLimits::new(&[o]);
        let t0 = Instant::now();
        let a = l.admit(0, t0).unwrap();
        let _b = l.admit(0, t0).unwrap();
        assert!(l.admit(0, t0).is_none(), "max_calls");
        drop(a);
        assert_eq!(l.active(0), 1);
        assert!(l.admit(0, t0).is_some(), "a place came back; third token");
        assert!(l.admit(0, t0).is_none());
        assert_eq!(l.active(0), 1, "refused calls hold no place");
        assert!(l.admit(5, t0).is_none(), "unknown org: refused, no panic");
    }
}
