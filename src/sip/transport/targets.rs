//! The peer for a URI: resolve it (RFC 3263, see [`super::resolve`]), then open the
//! first target that can be used (UDP as is; TCP an open connection to that address
//! or a new one; TLS the same, verified for the URI's host), keeping the rest for a
//! later failover.

use super::resolve::{ResolveError, Resolver, Target};
use super::{Peer, SendError, Transport, TransportLayer};
use crate::sip::message::SipUri;

/// Why no peer could be had for a URI.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("none of {tried} targets could be opened, the last: {last}")]
    Unreachable { tried: usize, last: SendError },
}

/// Targets of one URI tried at the most (the first and its failovers), in the
/// order RFC 3263 gives them.
pub const MAX_TARGETS: usize = 8;

/// The peer in use for a URI and the targets left to fail over to (RFC 3263 4.3:
/// on a transport error or a 503, the next one). Small on purpose: it may live in
/// every pending INVITE.
#[derive(Debug, Clone)]
pub struct Targets {
    peer: Peer,
    /// Still to try, the next one last.
    rest: Vec<Target>,
    /// TLS: the URI's host, which every target's certificate must prove (RFC 5922
    /// 4.1: the domain of the URI, not the SRV target's name).
    host: Option<Box<str>>,
}

impl Targets {
    /// Requests go to `peer` now; `rest` are the targets left, in the order
    /// they are to be tried.
    pub fn new(peer: Peer, mut rest: Vec<Target>) -> Targets {
        rest.reverse();
        Targets {
            peer,
            rest,
            host: None,
        }
    }

    /// The targets of an IP literal over UDP, at once: no DNS, no connect, no task.
    /// `None` when the URI needs either (a host name, or TCP), or is refused.
    pub fn immediate(uri: &SipUri, transport: Option<Transport>) -> Option<Targets> {
        match Resolver::literal(uri, transport) {
            Ok(Some(t)) if t.transport == Transport::Udp => Some(Targets {
                peer: Peer::udp(t.addr),
                rest: Vec::new(),
                host: None,
            }),
            _ => None,
        }
    }

    /// Where requests go now.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Targets left to fail over to.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Move on to the next target that can be opened (after a transport error or a
    /// 503 from the current one); `None` when none is left.
    pub async fn next(&mut self, layer: &TransportLayer) -> Option<Peer> {
        let peer = layer
            // TLS: every target gets the client certificate the first one got.
            .open_first(&mut self.rest, self.host.as_deref(), self.peer.identity)
            .await
            .ok()?;
        self.peer = peer;
        Some(peer)
    }
}

impl TransportLayer {
    /// The peer for `uri` per RFC 3263: its transport and address, the TCP
    /// connection opened (or an open one reused), failing over to the next target
    /// when one cannot be opened.
    pub async fn peer_for(&self, uri: &SipUri) -> Result<Targets, PeerError> {
        self.peer_for_transport(uri, None).await
    }

    /// [`Self::peer_for`] with the transport given by configuration rather than by
    /// the URI (`None`: as the URI and DNS say).
    pub async fn peer_for_transport(
        &self,
        uri: &SipUri,
        transport: Option<Transport>,
    ) -> Result<Targets, PeerError> {
        self.peer_for_as(uri, transport, None).await
    }

    /// [`Self::peer_for_transport`] presenting `identity` on TLS (mutual TLS: a
    /// destination's own client certificate, [`TransportLayer::client_identity`]).
    pub async fn peer_for_as(
        &self,
        uri: &SipUri,
        transport: Option<Transport>,
        identity: Option<super::ClientId>,
    ) -> Result<Targets, PeerError> {
        let mut rest = self.resolver.resolve(uri, transport).await?;
        if rest.is_empty() {
            return Err(ResolveError::NotFound(uri.host.clone()).into());
        }
        let tls = rest.iter().any(|t| t.transport == Transport::Tls);
        if tls && self.tls.is_none() {
            return Err(ResolveError::TlsUnsupported.into());
        }
        let host: Option<Box<str>> = tls.then(|| uri.host.as_str().into());
        // DNS is not ours: a name with hundreds of targets must not make one
        // INVITE try (and connect to) each of them.
        rest.truncate(MAX_TARGETS);
        rest.reverse();
        let identity = identity.filter(|_| tls);
        let peer = self
            .open_first(&mut rest, host.as_deref(), identity)
            .await?;
        Ok(Targets { peer, rest, host })
    }

    /// Every address `uri` resolves to (RFC 3263, as [`Self::peer_for`] would try
    /// them), without opening anything: the source ACL's view of a peer.
    pub async fn addresses_of(&self, uri: &SipUri) -> Result<Vec<std::net::IpAddr>, ResolveError> {
        let mut ips: Vec<std::net::IpAddr> = self
            .resolver
            .resolve(uri, None)
            .await?
            .iter()
            .map(|t| t.addr.ip())
            .collect();
        ips.sort_unstable();
        ips.dedup();
        Ok(ips)
    }

    /// Pop targets (the next one last) until one opens. `host`: the name TLS targets
    /// must prove.
    async fn open_first(
        &self,
        rest: &mut Vec<Target>,
        host: Option<&str>,
        identity: Option<super::ClientId>,
    ) -> Result<Peer, PeerError> {
        let mut tried = 0;
        let mut last = None;
        while let Some(t) = rest.pop() {
            tried += 1;
            let opened = match t.transport {
                Transport::Udp
                    if self
                        .udp_addrs
                        .iter()
                        .any(|a| a.is_ipv4() == t.addr.is_ipv4()) =>
                {
                    Ok(Peer::udp(t.addr))
                }
                Transport::Udp => Err(SendError::NoSocket(Transport::Udp, t.addr)),
                Transport::Tcp => self.connect_tcp(t.addr).await,
                Transport::Tls => {
                    let ip = t.addr.ip().to_string();
                    self.connect_tls(t.addr, host.unwrap_or(&ip), identity)
                        .await
                }
            };
            match opened {
                Ok(peer) => return Ok(peer),
                Err(e) => {
                    tracing::debug!(transport = %t.transport, addr = %t.addr, error = %e, "target unusable, trying the next");
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(last) => PeerError::Unreachable { tried, last },
            None => PeerError::Resolve(ResolveError::NotFound(String::new())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> SipUri {
        SipUri::parse(s).expect("test URI parses")
    }

    #[test]
    fn ip_literal_over_udp_is_immediate() {
        let t = Targets::immediate(&uri("sip:a@192.0.2.7:5080"), None).expect("immediate");
        assert_eq!(t.peer(), Peer::udp("192.0.2.7:5080".parse().expect("addr")));
        assert_eq!(t.remaining(), 0);
        let t = Targets::immediate(&uri("sip:a@[2001:db8::1]"), None).expect("immediate");
        assert_eq!(t.peer().addr, "[2001:db8::1]:5060".parse().expect("addr"));
    }

    #[test]
    fn names_tcp_and_sips_are_not_immediate() {
        assert!(Targets::immediate(&uri("sip:a@ai.test"), None).is_none());
        assert!(Targets::immediate(&uri("sip:a@192.0.2.7;transport=tcp"), None).is_none());
        assert!(Targets::immediate(&uri("sip:a@192.0.2.7"), Some(Transport::Tcp)).is_none());
        assert!(Targets::immediate(&uri("sips:a@192.0.2.7"), None).is_none());
    }

    #[test]
    fn targets_stay_small() {
        // One lives in every pending INVITE.
        assert!(std::mem::size_of::<Targets>() <= 96);
    }
}
