//! Where one peer's packets are accepted from and sent to: symmetric RTP
//! latching (RFC 4961 behaviour for a peer behind NAT) or the SDP address.

use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub(crate) struct Latch {
    enabled: bool,
    // From the peer's SDP (c= and m= port, or a=rtcp); may be unknown.
    expected: Option<SocketAddr>,
    // Where the peer's first valid packet came from.
    latched: Option<SocketAddr>,
}

impl Latch {
    pub(crate) fn new(enabled: bool, expected: Option<SocketAddr>) -> Self {
        Latch {
            enabled,
            expected,
            latched: None,
        }
    }

    /// Decide whether a valid packet from `src` belongs to this peer. With
    /// latching, the first one fixes the peer's address; afterwards only
    /// that address is accepted. Without, only the SDP address is.
    pub(crate) fn accept(&mut self, src: SocketAddr) -> bool {
        if !self.enabled {
            return self.expected == Some(src);
        }
        match self.latched {
            Some(addr) => addr == src,
            None => {
                self.latched = Some(src);
                true
            }
        }
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
    /// moved, so the latch is released and the next packet latches again.
    pub(crate) fn set_expected(&mut self, expected: Option<SocketAddr>) {
        if expected != self.expected {
            self.latched = None;
        }
        self.expected = expected;
    }

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

    #[test]
    fn latching_sends_to_sdp_address_until_first_packet() {
        let mut l = Latch::new(true, Some(addr(1000)));
        assert_eq!(l.destination(), Some(addr(1000)));
        assert!(l.accept(addr(2000)));
        assert_eq!(l.destination(), Some(addr(2000)));
        assert_eq!(l.latched(), Some(addr(2000)));
    }

    #[test]
    fn latched_peer_rejects_strangers() {
        let mut l = Latch::new(true, None);
        assert_eq!(l.destination(), None);
        assert!(l.accept(addr(2000)));
        assert!(!l.accept(addr(3000)));
        assert!(!l.accept(addr(1000)));
        assert_eq!(l.destination(), Some(addr(2000)));
    }

    #[test]
    fn without_latching_only_sdp_address_is_accepted() {
        let mut l = Latch::new(false, Some(addr(1000)));
        assert!(!l.accept(addr(2000)));
        assert!(l.accept(addr(1000)));
        assert_eq!(l.destination(), Some(addr(1000)));
        let mut unknown = Latch::new(false, None);
        assert!(!unknown.accept(addr(1000)));
        assert_eq!(unknown.destination(), None);
    }

    #[test]
    fn new_sdp_address_releases_latch() {
        let mut l = Latch::new(true, Some(addr(1000)));
        assert!(l.accept(addr(2000)));
        l.set_expected(Some(addr(1000)));
        assert_eq!(l.latched(), Some(addr(2000)), "same SDP keeps the latch");
        l.set_expected(Some(addr(4000)));
        assert_eq!(l.destination(), Some(addr(4000)));
        assert!(l.accept(addr(5000)));
        assert_eq!(l.destination(), Some(addr(5000)));
    }
}
