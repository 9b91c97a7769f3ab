//! SIP over TLS (RFC 3261 26.2, RFC 5630): the handshakes. A TLS connection is a TCP
//! connection of the stream hub (`tcp.rs`) once its handshake is done, so framing,
//! limits, keep-alive, idle close and reuse are TCP's; this holds only what differs:
//! the server and client configurations, the bounded handshake, and which name a
//! connection is verified for.

use crate::config::tls::config_for;
use crate::config::tls_client::ClientId;
use ipnet::IpNet;
use rustls::pki_types::ServerName;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The TLS side of the stream hub: what it presents, what it trusts, how long a
/// handshake may take.
pub(super) struct TlsSide {
    /// None: no TLS listener (outbound only).
    acceptor: Option<TlsAcceptor>,
    /// Sources that must present a client certificate, and the acceptor that asks.
    client_auth: Vec<(Vec<IpNet>, TlsAcceptor)>,
    connector: TlsConnector,
    /// One connector per client identity, in `ClientId` order, and their names.
    identities: Vec<(String, TlsConnector)>,
    handshake_timeout: Duration,
}

/// Why a TLS handshake did not complete. Carries no certificate or key material.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not done within {0:?}")]
    TimedOut(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(String),
    #[error("no TLS listener configured")]
    NoServer,
}

impl TlsSide {
    pub(super) fn new(cfg: &super::TlsTransportConfig) -> TlsSide {
        TlsSide {
            acceptor: cfg.server.clone().map(TlsAcceptor::from),
            client_auth: cfg
                .client_auth
                .iter()
                .map(|(nets, c)| (nets.clone(), TlsAcceptor::from(c.clone())))
                .collect(),
            connector: TlsConnector::from(cfg.client.clone()),
            identities: cfg
                .identities
                .iter()
                .map(|(n, c)| (n.clone(), TlsConnector::from(c.clone())))
                .collect(),
            handshake_timeout: cfg.handshake_timeout,
        }
    }

    /// The server handshake on a connection a peer at `from` opened, bounded in time;
    /// a trunk's source with `tls_client_ca` must present a client certificate.
    pub(super) async fn accept(
        &self,
        tcp: TcpStream,
        from: IpAddr,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, HandshakeError> {
        let default = self.acceptor.as_ref().ok_or(HandshakeError::NoServer)?;
        let acceptor = config_for(from, &self.client_auth, default);
        tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| HandshakeError::TimedOut(self.handshake_timeout))?
            .map_err(|e| HandshakeError::Failed(e.to_string()))
    }

    /// The identity registered under `name`.
    pub(super) fn client_identity(&self, name: &str) -> Option<ClientId> {
        self.identities
            .iter()
            .position(|(n, _)| n == name)
            .and_then(|p| u16::try_from(p).ok())
            .map(ClientId)
    }

    /// The client handshake towards `name` (SNI and the name the certificate must
    /// hold), presenting `identity` (None: the default configuration), bounded in time.
    pub(super) async fn connect(
        &self,
        tcp: TcpStream,
        name: ServerName<'static>,
        identity: Option<ClientId>,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HandshakeError> {
        let connector = match identity {
            None => &self.connector,
            Some(ClientId(i)) => {
                &self
                    .identities
                    .get(usize::from(i))
                    .ok_or_else(|| {
                        HandshakeError::Failed(format!("no client identity {i} configured"))
                    })?
                    .1
            }
        };
        tokio::time::timeout(self.handshake_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| HandshakeError::TimedOut(self.handshake_timeout))?
            .map_err(|e| HandshakeError::Failed(e.to_string()))
    }
}

/// The name a connection to `host` is verified for: a DNS name (also sent as SNI),
/// or an IP address (no SNI; RFC 6066 3 forbids literals in it; the certificate must
/// hold the address). `None` when `host` is neither.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let bare = host.trim_matches(['[', ']']);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_ascii_lowercase()).ok()
}

/// The name to verify when only the address is known (a reconnect for a send).
pub fn name_of_addr(addr: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

/// May an open connection be reused for a request to `want`? RFC 5922: only one we
/// opened and verified for that same name; a connection a peer opened proved nothing
/// about the peer (no client certificate), so it carries only what is addressed to it
/// (responses, and requests of the dialog it carries). And only one on which we
/// presented the same client identity: a peer that tells parties apart by their
/// certificate must never get one party's request on another's connection.
pub fn may_reuse(
    verified: Option<&ServerName<'static>>,
    want: &ServerName<'static>,
    presented: Option<ClientId>,
    want_identity: Option<ClientId>,
) -> bool {
    verified.is_some_and(|v| v == want) && presented == want_identity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_is_a_dns_name_lowercased() {
        let n = server_name("SIP.Example.COM").expect("name");
        assert_eq!(
            n,
            ServerName::try_from("sip.example.com")
                .expect("dns")
                .to_owned()
        );
    }

    #[test]
    fn an_ip_literal_is_an_address_and_gets_no_sni() {
        assert!(matches!(
            server_name("192.0.2.7"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[2001:db8::1]"),
            Some(ServerName::IpAddress(_))
        ));
    }

    #[test]
    fn garbage_is_no_name() {
        assert!(server_name("bad host!").is_none());
        assert!(server_name("").is_none());
    }

    #[test]
    fn reuse_needs_the_same_verified_name() {
        let a = server_name("a.example.com").expect("a");
        let b = server_name("b.example.com").expect("b");
        assert!(may_reuse(Some(&a), &a, None, None));
        assert!(!may_reuse(Some(&a), &b, None, None));
        // Accepted from a peer: verified for nothing.
        assert!(!may_reuse(None, &a, None, None));
    }

    #[test]
    fn reuse_needs_the_same_client_identity() {
        let a = server_name("sbc.example.com").expect("a");
        let (one, two) = (Some(ClientId(0)), Some(ClientId(1)));
        assert!(may_reuse(Some(&a), &a, one, one));
        assert!(!may_reuse(Some(&a), &a, one, two));
        assert!(!may_reuse(Some(&a), &a, one, None));
        assert!(!may_reuse(Some(&a), &a, None, one));
    }
}
