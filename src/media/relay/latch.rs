//! Where one peer's packets are accepted from and sent to: strict symmetric
//! RTP latching (RFC 4961 behaviour for a peer behind NAT) or the SDP address.
//!
//! Strict (issue 12): the peer may latch only from a source whose IP is its
//! SDP connection address or lies in the leg's allowed media networks (a
//! trunk's media CIDRs); the port may differ (NAT). Anything else is refused,
//! so one packet from a stranger cannot take a call's media (the class of
//! Asterisk's CVE-2017-14099).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// What the latch says of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// From the peer: relay it.
    Accept,
    /// From the peer, and the first such packet: the latch is now fixed there.
    Latched,
    /// From a source the peer may not use: drop it and count it.
    Refused,
}

impl Verdict {
    pub(crate) fn accepted(self) -> bool {
        self != Verdict::Refused
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Latch {
    enabled: bool,
    // From the peer's SDP (c= and m= port, or a=rtcp); may be unknown.
    expected: Option<SocketAddr>,
    // Where the peer's first allowed packet came from.
    latched: Option<SocketAddr>,
    // Further networks the peer's media may come from (a trunk's media CIDRs).
    allowed: Arc<[IpNet]>,
}

impl Latch {
    pub(crate) fn new(enabled: bool, expected: Option<SocketAddr>, allowed: Arc<[IpNet]>) -> Self {
        Latch {
            enabled,
            expected,
            latched: None,
            allowed,
        }
    }

    /// Decide whether a valid packet from `src` belongs to this peer. With
    /// latching, the first packet from an allowed source fixes the peer's
    /// address; afterwards only that address is accepted. Without, only the
    /// SDP address is.
    pub(crate) fn accept(&mut self, src: SocketAddr) -> Verdict {
        let verdict = self.check(src);
        self.commit(src, verdict);
        verdict
    }

    /// What `accept` would say of a packet from `src`, moving nothing: an
    /// SRTP leg asks this, authenticates the packet, and only then commits.
    pub(crate) fn check(&self, src: SocketAddr) -> Verdict {
        if !self.enabled {
            return if self.expected == Some(src) {
                Verdict::Accept
            } else {
                Verdict::Refused
            };
        }
        match self.latched {
            // The hot path: one compare.
            Some(addr) if addr == src => Verdict::Accept,
            Some(_) => Verdict::Refused,
            None if self.may_latch(src.ip()) => Verdict::Latched,
            None => Verdict::Refused,
        }
    }

    /// Fix the latch at `src` if `check` said `Latched` for it.
    pub(crate) fn commit(&mut self, src: SocketAddr, verdict: Verdict) {
        if verdict == Verdict::Latched && self.enabled && self.latched.is_none() {
            self.latched = Some(src);
        }
    }

    /// Whether a packet from `ip` may fix the latch: the SDP address's IP,
    /// else one of the allowed networks (scanned only when the IP differs).
    fn may_latch(&self, ip: IpAddr) -> bool {
        // A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        self.expected.is_some_and(|e| e.ip().to_canonical() == ip)
            || self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// Where packets for this peer go, if anywhere yet.
    pub(crate) fn destination(&self) -> Option<SocketAddr> {
        if self.enabled {
            self.latched.or(self.expected)
        } else {
            self.expected
        }
    }

    /// A new SDP address (re-INVITE). A changed address means the peer
    /// moved, so the latch is released and the next allowed packet latches
    /// again; the allowed networks stay.
    pub(crate) fn set_expected(&mut self, expected: Option<SocketAddr>) {
        if expected != self.expected {
            self.latched = None;
        }
        self.expected = expected;
    }

    #[cfg(test)]
    pub(crate) fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn at(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    fn none() -> Arc<[IpNet]> {
        Arc::from(Vec::new())
    }

    fn nets(list: &[&str]) -> Arc<[IpNet]> {
        list.iter()
            .map(|n| n.parse().expect("a CIDR"))
            .collect::<Vec<IpNet>>()
            .into()
    }

    #[test]
    fn latching_sends_to_sdp_address_until_first_packet() {
        let mut l = Latch::new(true, Some(addr(1000)), none());
        assert_eq!(l.destination(), Some(addr(1000)));
        // Same IP, another port: NAT.
        assert_eq!(l.accept(addr(2000)), Verdict::Latched);
        assert_eq!(l.destination(), Some(addr(2000)));
        assert_eq!(l.latched(), Some(addr(2000)));
        assert_eq!(l.accept(addr(2000)), Verdict::Accept);
    }

    #[test]
    fn latched_peer_rejects_strangers() {
        let mut l = Latch::new(true, Some(addr(1000)), none());
        assert!(l.accept(addr(2000)).accepted());
        assert_eq!(l.accept(addr(3000)), Verdict::Refused);
        assert_eq!(l.accept(addr(1000)), Verdict::Refused);
        assert_eq!(l.destination(), Some(addr(2000)));
    }

    #[test]
    fn a_source_off_the_sdp_address_cannot_latch() {
        let mut l = Latch::new(true, Some(at([192, 0, 2, 10], 4000)), none());
        assert_eq!(l.accept(at([198, 51, 100, 7], 4000)), Verdict::Refused);
        assert_eq!(l.accept(at([127, 0, 0, 9], 4000)), Verdict::Refused);
        assert_eq!(l.latched(), None, "the stranger took nothing");
        assert_eq!(l.destination(), Some(at([192, 0, 2, 10], 4000)));
        assert_eq!(l.accept(at([192, 0, 2, 10], 5000)), Verdict::Latched);
    }

    #[test]
    fn check_moves_nothing_until_committed() {
        let mut l = Latch::new(true, Some(addr(1000)), none());
        assert_eq!(l.check(addr(2000)), Verdict::Latched);
        assert_eq!(
            l.latched(),
            None,
            "a packet that fails later latches nothing"
        );
        assert_eq!(l.check(addr(3000)), Verdict::Latched);
        l.commit(addr(3000), Verdict::Latched);
        assert_eq!(l.latched(), Some(addr(3000)));
        assert_eq!(l.check(addr(2000)), Verdict::Refused);
        l.commit(addr(2000), Verdict::Latched);
        assert_eq!(l.latched(), Some(addr(3000)), "the first commit holds");
    }

    #[test]
    fn no_sdp_address_and_no_networks_latches_nothing() {
        let mut l = Latch::new(true, None, none());
        assert_eq!(l.destination(), None);
        assert_eq!(l.accept(addr(2000)), Verdict::Refused);
        assert_eq!(l.latched(), None);
    }

    #[test]
    fn a_source_in_the_allowed_networks_may_latch() {
        let allowed = nets(&["168.86.128.0/18", "2001:db8::/32"]);
        let mut l = Latch::new(true, Some(at([192, 0, 2, 10], 4000)), allowed.clone());
        assert_eq!(l.accept(at([168, 86, 130, 1], 9000)), Verdict::Latched);
        assert_eq!(l.accept(at([192, 0, 2, 10], 4000)), Verdict::Refused);

        let mut l = Latch::new(true, None, allowed.clone());
        assert_eq!(l.accept(at([168, 86, 192, 1], 9000)), Verdict::Refused);
        let v6: SocketAddr = "[2001:db8::5]:7000".parse().expect("addr");
        assert_eq!(l.accept(v6), Verdict::Latched);
    }

    #[test]
    fn a_v4_mapped_source_matches_its_v4_sdp_address() {
        let mut l = Latch::new(true, Some(at([192, 0, 2, 10], 4000)), none());
        let mapped: SocketAddr = "[::ffff:192.0.2.10]:4002".parse().expect("addr");
        assert_eq!(l.accept(mapped), Verdict::Latched);
        let mut l = Latch::new(true, None, nets(&["192.0.2.0/24"]));
        let mapped: SocketAddr = "[::ffff:192.0.2.99]:4002".parse().expect("addr");
        assert_eq!(l.accept(mapped), Verdict::Latched);
    }

    #[test]
    fn without_latching_only_sdp_address_is_accepted() {
        let mut l = Latch::new(false, Some(addr(1000)), nets(&["127.0.0.0/8"]));
        assert_eq!(l.accept(addr(2000)), Verdict::Refused);
        assert_eq!(l.accept(addr(1000)), Verdict::Accept);
        assert_eq!(l.destination(), Some(addr(1000)));
        let mut unknown = Latch::new(false, None, none());
        assert_eq!(unknown.accept(addr(1000)), Verdict::Refused);
        assert_eq!(unknown.destination(), None);
    }

    #[test]
    fn new_sdp_address_releases_latch() {
        let mut l = Latch::new(true, Some(addr(1000)), none());
        assert!(l.accept(addr(2000)).accepted());
        l.set_expected(Some(addr(1000)));
        assert_eq!(l.latched(), Some(addr(2000)), "same SDP keeps the latch");
        l.set_expected(Some(addr(4000)));
        assert_eq!(l.destination(), Some(addr(4000)));
        assert!(l.accept(addr(5000)).accepted());
        assert_eq!(l.destination(), Some(addr(5000)));
    }

    #[test]
    fn a_moved_peer_is_followed_only_to_its_new_sdp_address() {
        let mut l = Latch::new(true, Some(at([192, 0, 2, 10], 4000)), none());
        assert!(l.accept(at([192, 0, 2, 10], 4000)).accepted());
        l.set_expected(Some(at([203, 0, 113, 5], 6000)));
        assert_eq!(l.accept(at([192, 0, 2, 10], 4000)), Verdict::Refused);
        assert_eq!(l.accept(at([203, 0, 113, 5], 6010)), Verdict::Latched);
    }
}
