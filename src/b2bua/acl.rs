//! The source ACL for requests outside any dialog: which configured trunk a source
//! address belongs to, whether it is one of handoff's own peers (an AI agent, a
//! transfer destination), or whether it is nobody handoff knows, whose requests are
//! dropped unanswered. Responses and in-dialog requests never come here: they are
//! routed by Call-ID to the call they belong to.
//!
//! On the hot path this is a few CIDR comparisons and one uncontended read lock:
//! no allocation.

use crate::config::{Settings, Trunk};
use crate::sip::message::SipUri;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::RwLock;

/// Who sent a request outside any dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From the trunk at this index of `Settings::trunks`.
    Trunk(usize),
    /// From a configured AI agent or transfer destination (not a trunk).
    Peer,
    /// No trunk is configured (loopback only, or `sip.allow_any_source`): anyone.
    /// Also any source when trunks exist and `allow_any_source = true`.
    Open,
    /// Nobody handoff knows: dropped unanswered.
    Untrusted,
}

/// An IPv4 address as an IPv6 socket reports it (`::ffff:192.0.2.1`) is the IPv4
/// address: trunks list it as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The decision, pure: the first trunk whose sources hold `ip`, else a peer, else
/// open or untrusted.
pub fn classify(ip: IpAddr, trunks: &[Vec<IpNet>], peers: &[IpAddr], open: bool) -> Source {
    let ip = canonical(ip);
    if let Some(i) = trunks
        .iter()
        .position(|nets| nets.iter().any(|n| n.contains(&ip)))
    {
        return Source::Trunk(i);
    }
    if peers.iter().any(|p| canonical(*p) == ip) {
        return Source::Peer;
    }
    if open {
        Source::Open
    } else {
        Source::Untrusted
    }
}

/// The ACL of a running handoff: the trunks' sources (fixed) and the peers'
/// addresses (refreshed from DNS by `b2bua::peers`).
#[derive(Debug)]
pub struct Acl {
    trunks: Vec<Vec<IpNet>>,
    /// No trunk, or `allow_any_source`: a source in no trunk is taken.
    open: bool,
    peers: RwLock<Vec<IpAddr>>,
}

impl Acl {
    /// From the settings; peers written as IP literals are known at once.
    pub fn new(settings: &Settings) -> Acl {
        let literal = peer_uris(settings)
            .iter()
            .filter_map(|u| literal_ip(&u.host))
            .collect();
        Acl::from_parts(&settings.trunks, settings.allow_any_source, literal)
    }

    fn from_parts(trunks: &[Trunk], allow_any_source: bool, peers: Vec<IpAddr>) -> Acl {
        Acl {
            trunks: trunks.iter().map(|t| t.sources.clone()).collect(),
            open: trunks.is_empty() || allow_any_source,
            peers: RwLock::new(peers),
        }
    }

    /// Whether any source is taken (no trunk configured): then peers need no lookup.
    pub fn takes_everyone(&self) -> bool {
        self.trunks.is_empty()
    }

    pub fn classify(&self, ip: IpAddr) -> Source {
        // No trunk: the configuration was accepted because every listener is on
        // loopback or allow_any_source says so.
        if self.trunks.is_empty() {
            return Source::Open;
        }
        match self.peers.read() {
            Ok(peers) => classify(ip, &self.trunks, &peers, self.open),
            // A writer panicked mid-update: the trunks still decide.
            Err(_) => classify(ip, &self.trunks, &[], self.open),
        }
    }

    /// Replace the peers' addresses (literals included) with a fresh resolution.
    pub fn set_peers(&self, mut ips: Vec<IpAddr>) {
        ips.sort_unstable();
        ips.dedup();
        if let Ok(mut p) = self.peers.write() {
            *p = ips;
        }
    }
}

/// `host` as an IP address, brackets of an IPv6 reference removed.
pub(super) fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Every configured SIP peer that may send requests outside a dialog: each route's AI
/// agent, the named transfer destinations, the PSTN gateway, and exact hosts of
/// `[transfer] allow` (a wildcard names no address to trust).
pub fn peer_uris(settings: &Settings) -> Vec<SipUri> {
    let mut uris: Vec<SipUri> = settings
        .routes
        .iter()
        .map(|r| r.ai_agent_uri.clone())
        .collect();
    uris.extend(settings.transfer.allow.peer_uris());
    uris.extend(settings.transfer.pstn_gateway.iter().cloned());
    uris.dedup_by(|a, b| a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port);
    uris
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::trunk::{compile, TrunkConfig};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trunks() -> Vec<Trunk> {
        let t = |name: &str, sources: &[&str]| TrunkConfig {
            name: name.into(),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            media: Vec::new(),
            max_calls: None,
            ..Default::default()
        };
        compile(&[
            t("a", &["198.51.100.0/24", "2001:db8::/32"]),
            t("b", &["203.0.113.9"]),
        ])
        .unwrap()
    }

    #[test]
    fn a_source_in_a_trunk_is_that_trunk() {
        let acl = Acl::from_parts(&trunks(), false, Vec::new());
        assert_eq!(acl.classify(ip("198.51.100.200")), Source::Trunk(0));
        assert_eq!(acl.classify(ip("2001:db8:1::5")), Source::Trunk(0));
        assert_eq!(acl.classify(ip("203.0.113.9")), Source::Trunk(1));
        // An IPv4 source as a dual-stack socket reports it.
        assert_eq!(acl.classify(ip("::ffff:203.0.113.9")), Source::Trunk(1));
    }

    #[test]
    fn a_source_in_no_trunk_is_untrusted_unless_a_peer() {
        let acl = Acl::from_parts(&trunks(), false, vec![ip("192.0.2.50")]);
        assert_eq!(acl.classify(ip("203.0.113.10")), Source::Untrusted);
        assert_eq!(acl.classify(ip("198.51.101.1")), Source::Untrusted);
        assert_eq!(acl.classify(ip("127.0.0.1")), Source::Untrusted);
        assert_eq!(acl.classify(ip("::ffff:192.0.2.51")), Source::Untrusted);
        assert_eq!(acl.classify(ip("192.0.2.50")), Source::Peer);
        assert_eq!(acl.classify(ip("::ffff:192.0.2.50")), Source::Peer);
        acl.set_peers(vec![ip("192.0.2.51")]);
        assert_eq!(acl.classify(ip("192.0.2.50")), Source::Untrusted);
        assert_eq!(acl.classify(ip("192.0.2.51")), Source::Peer);
    }

    #[test]
    fn a_trunk_wins_over_a_peer_at_the_same_address() {
        let acl = Acl::from_parts(&trunks(), false, vec![ip("203.0.113.9")]);
        assert_eq!(acl.classify(ip("203.0.113.9")), Source::Trunk(1));
    }

    #[test]
    fn without_trunks_everyone_is_taken() {
        let acl = Acl::from_parts(&[], false, Vec::new());
        assert!(acl.takes_everyone());
        assert_eq!(acl.classify(ip("192.0.2.1")), Source::Open);
    }

    #[test]
    fn allow_any_source_with_trunks_still_names_the_trunk() {
        let acl = Acl::from_parts(&trunks(), true, Vec::new());
        assert!(!acl.takes_everyone());
        assert_eq!(acl.classify(ip("203.0.113.9")), Source::Trunk(1));
        assert_eq!(acl.classify(ip("192.0.2.1")), Source::Open);
    }

    #[test]
    fn peers_come_from_routes_destinations_and_exact_allow_hosts() {
        let text = r#"
            [transfer]
            allow = ["*.zendesk.sip.twilio.com", "pbx.example.com", "192.0.2.70", "sip:line@192.0.2.71"]
            pstn_gateway = "sip:gw.example.net"
            [[transfer.destination]]
            name = "tier2"
            uri = "sip:tier2@192.0.2.72"
            [[trunk]]
            name = "carrier"
            sources = ["198.51.100.0/24"]
            [[route]]
            default = true
            org_id = "o"
            agent_id = "a"
            ai_agent_uri = "sip:ai@192.0.2.60:5070"
        "#;
        let s = crate::config::Config::parse(text, "t").unwrap();
        let hosts: Vec<String> = peer_uris(&s).into_iter().map(|u| u.host).collect();
        for h in [
            "192.0.2.60",
            "pbx.example.com",
            "192.0.2.70",
            "192.0.2.71",
            "192.0.2.72",
            "gw.example.net",
        ] {
            assert!(hosts.iter().any(|x| x == h), "{h} missing from {hosts:?}");
        }
        assert!(!hosts.iter().any(|h| h.contains('*')), "{hosts:?}");
        let acl = Acl::new(&s);
        for p in ["192.0.2.60", "192.0.2.70", "192.0.2.71", "192.0.2.72"] {
            assert_eq!(acl.classify(ip(p)), Source::Peer, "{p}");
        }
        assert_eq!(acl.classify(ip("192.0.2.73")), Source::Untrusted);
    }
}
