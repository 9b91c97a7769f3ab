//! UDP, TCP and TLS transport (RFC 3261 18, 26.2): sockets, stream framing, connection
//! reuse, keep-alives, `received`/`rport`. Knows messages only as bytes in and parsed
//! messages out; knows nothing of transactions or calls.

mod conn_limit;
mod framing;
pub mod resolve;
mod targets;
mod tcp;
pub mod tls;
mod udp;

pub use crate::config::tls_client::ClientId;
pub use conn_limit::{choose_victim, Candidate, Over, EVICT_MIN_IDLE};
pub use framing::{Frame, Framer, FramingError};
pub use resolve::{ResolveError, Target};
pub use targets::{PeerError, Targets, MAX_TARGETS};
pub use tls::HandshakeError;

use crate::metrics::Metrics;
use crate::sip::message::{parse, Message, ParseError};
use bytes::Bytes;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP with TLS on it (RFC 3261 26.2): a stream like TCP.
    Tls,
}

impl Transport {
    /// Reliable transports zero the retransmission timers (RFC 3261 17, Table 4).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }

    /// As written in a Via sent-protocol.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The URI parameter that asks for it, as our Contact carries it: none for UDP,
    /// the default (RFC 3261 19.1.1). TLS: `;transport=tls` on a `sip:` URI, what
    /// carriers (Twilio among them) write for TLS hop by hop; RFC 5630 deprecates it
    /// in favour of `sips:`, which [`Transport::contact_scheme`] uses when the dialog
    /// is `sips:`.
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        }
    }

    /// From a URI `transport=` parameter or Via sent-protocol (case-insensitive).
    pub fn from_name(name: &str) -> Option<Transport> {
        if name.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if name.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else if name.eq_ignore_ascii_case("tls") {
            Some(Transport::Tls)
        } else {
            None
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_name())
    }
}

/// Identifies one TCP connection for the life of the process.
pub type ConnId = u64;

/// The far end of a message: where it came from, or where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The connection a stream message came on, or is to go out on.
    pub conn: Option<ConnId>,
    /// TLS we open: the client certificate we present (`tls_client_cert`); None:
    /// the default. A reconnect presents the same; a connection is reused only by it.
    pub identity: Option<ClientId>,
}

impl Peer {
    pub fn udp(addr: SocketAddr) -> Self {
        Peer {
            transport: Transport::Udp,
            addr,
            conn: None,
            identity: None,
        }
    }
}

/// Where the transport hands what it receives, with the transport it came on (to
/// answer through): the sink is built before the transport and holds none.
pub trait Sink: Send + Sync + 'static {
    /// A well-formed message. Requests already carry `received`/`rport` on the top Via.
    fn on_message(&self, msg: Message, from: Peer, transport: &Arc<TransportLayer>);
    /// A message that failed to parse; a request with enough headers can still get 400.
    fn on_bad_message(&self, err: ParseError, from: Peer, transport: &Arc<TransportLayer>);
}

#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub max_message_size: usize,
    pub tcp_idle_timeout: Duration,
    pub tcp_connect_timeout: Duration,
    /// DNS servers for resolving URIs; empty: the system's configuration.
    pub dns_servers: Vec<SocketAddr>,
    /// Connection caps and the message deadline (`sip.tcp_*`), TLS's too.
    pub tcp_limits: crate::config::SipTcpLimits,
    /// SIP over TLS: listeners and both sides' configurations; None: no TLS at all
    /// (a `sips:` or `;transport=tls` target cannot be reached).
    pub tls: Option<TlsTransportConfig>,
}

/// The TLS part of [`TransportConfig`] (from `[sip]`, `config::tls`).
#[derive(Debug, Clone)]
pub struct TlsTransportConfig {
    pub listen: Vec<SocketAddr>,
    /// What the listeners present; needed when `listen` is not empty.
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// Mutual TLS: sources whose connections get a configuration that requires a
    /// client certificate (`trunk.tls_client_ca`).
    pub client_auth: Vec<(Vec<ipnet::IpNet>, Arc<rustls::ServerConfig>)>,
    /// Roots and options of outbound TLS.
    pub client: Arc<rustls::ClientConfig>,
    /// Client identities by name, in `ClientId` order: a configuration each, with
    /// the same roots, presenting its own certificate.
    pub identities: Vec<(String, Arc<rustls::ClientConfig>)>,
    pub handshake_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot bind {transport} {addr}: {source}")]
    Bind {
        transport: Transport,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no {0} socket for the address family of {1}")]
    NoSocket(Transport, SocketAddr),
    #[error("connection {0} is closed")]
    ConnectionClosed(ConnId),
    #[error("send queue full")]
    QueueFull,
    #[error("no TLS configured for {0}")]
    NoTls(SocketAddr),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The running transport: its sockets and the live TCP and TLS connections.
pub struct TransportLayer {
    udp: Vec<Arc<UdpSocket>>,
    udp_addrs: Vec<SocketAddr>,
    tcp: Arc<tcp::TcpHub>,
    /// None without `TransportConfig::tls`.
    tls: Option<Arc<tcp::TcpHub>>,
    resolver: resolve::Resolver,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
}

impl TransportLayer {
    /// Bind every listener and start receiving; messages go to `sink`.
    pub async fn start(
        cfg: TransportConfig,
        sink: Arc<dyn Sink>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, BindError> {
        let mut udp = Vec::new();
        let mut udp_addrs = Vec::new();
        for addr in &cfg.udp {
            let sock = udp::bind(*addr).map_err(|source| BindError::Bind {
                transport: Transport::Udp,
                addr: *addr,
                source,
            })?;
            let local = sock.local_addr().map_err(|source| BindError::Bind {
                transport: Transport::Udp,
                addr: *addr,
                source,
            })?;
            udp_addrs.push(local);
            udp.push(Arc::new(sock));
        }
        let (listeners, listen) = tcp::bind_all(&cfg.tcp, Transport::Tcp)?;
        let (tls_listeners, tls_listen) = match &cfg.tls {
            Some(t) => tcp::bind_all(&t.listen, Transport::Tls)?,
            None => (Vec::new(), Vec::new()),
        };
        let shared = tcp::HubShared::new(&cfg);
        // The hubs' readers hand messages on with the layer that owns the hubs.
        let layer = Arc::new_cyclic(|layer| TransportLayer {
            udp,
            udp_addrs,
            tcp: tcp::TcpHub::new(
                &shared,
                Transport::Tcp,
                None,
                listen,
                layer.clone(),
                metrics.clone(),
            ),
            tls: cfg.tls.as_ref().map(|t| {
                let side = tls::TlsSide::new(t);
                tcp::TcpHub::new(
                    &shared,
                    Transport::Tls,
                    Some(side),
                    tls_listen,
                    layer.clone(),
                    metrics.clone(),
                )
            }),
            resolver: resolve::Resolver::new(&cfg.dns_servers),
            sink,
            metrics,
        });
        for l in listeners {
            tokio::spawn(tcp::accept_loop(l, layer.tcp.clone()));
        }
        if let Some(hub) = &layer.tls {
            for l in tls_listeners {
                tokio::spawn(tcp::accept_loop(l, hub.clone()));
            }
        }
        for sock in &layer.udp {
            tokio::spawn(udp::receive_loop(
                sock.clone(),
                layer.clone(),
                cfg.max_message_size,
            ));
        }
        Ok(layer)
    }

    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        self.tcp.listen_addrs()
    }

    pub fn tls_addrs(&self) -> &[SocketAddr] {
        self.tls.as_ref().map_or(&[], |h| h.listen_addrs())
    }

    /// The other stream hub (TLS for TCP, TCP for TLS), under the same counter.
    fn sibling_hub(&self, transport: Transport) -> Option<Arc<tcp::TcpHub>> {
        match transport {
            Transport::Tcp => self.tls.clone(),
            Transport::Tls => Some(self.tcp.clone()),
            Transport::Udp => None,
        }
    }

    /// The hub of a stream transport.
    fn hub(&self, transport: Transport) -> Option<&Arc<tcp::TcpHub>> {
        match transport {
            Transport::Udp => None,
            Transport::Tcp => Some(&self.tcp),
            Transport::Tls => self.tls.as_ref(),
        }
    }

    /// The address to put in our Via and Contact for messages to `to`: a listener of the
    /// same transport and address family.
    pub fn local_addr_for(&self, transport: Transport, to: SocketAddr) -> Option<SocketAddr> {
        let addrs = match transport {
            Transport::Udp => &self.udp_addrs[..],
            Transport::Tcp => self.tcp.listen_addrs(),
            Transport::Tls => self.tls_addrs(),
        };
        addrs
            .iter()
            .find(|a| a.is_ipv4() == to.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
    }

    /// Send without waiting. UDP goes straight out; TCP and TLS are queued to the
    /// connection's writer (the one named in `to`, else an open one to the same address).
    pub fn send(&self, to: &Peer, bytes: Bytes) -> Result<(), SendError> {
        // Keep-alive pongs are not SIP messages.
        if bytes.len() > 4 {
            self.metrics.sip.outgoing(&bytes);
        }
        let res = match to.transport {
            Transport::Udp => self.send_udp(to.addr, bytes),
            Transport::Tcp => self.tcp.send(to, bytes),
            Transport::Tls => match &self.tls {
                Some(hub) => hub.send(to, bytes),
                None => Err(SendError::NoTls(to.addr)),
            },
        };
        match &res {
            Ok(()) => Metrics::inc(&self.metrics.sip_messages_sent_total),
            Err(_) => Metrics::inc(&self.metrics.sip_send_errors_total),
        }
        res
    }

    fn send_udp(&self, addr: SocketAddr, bytes: Bytes) -> Result<(), SendError> {
        let idx = self
            .udp_addrs
            .iter()
            .position(|a| a.is_ipv4() == addr.is_ipv4())
            .ok_or(SendError::NoSocket(Transport::Udp, addr))?;
        let sock = &self.udp[idx];
        match sock.try_send_to(&bytes, addr) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // The socket buffer is full for a moment: finish the send off the caller.
                let sock = sock.clone();
                tokio::spawn(async move {
                    let _ = sock.send_to(&bytes, addr).await;
                });
                Ok(())
            }
            Err(e) => Err(SendError::Io(e)),
        }
    }

    /// A TCP connection to `addr`: an open one if there is one (RFC 3261 18.1.1: reuse),
    /// else a new one. Returns the peer to send on.
    pub async fn connect_tcp(&self, addr: SocketAddr) -> Result<Peer, SendError> {
        self.tcp.connect(addr, None, None).await
    }

    /// The client identity registered under `name` (`config::tls_client`:
    /// `transfer.destination:<name>`, `route:<i>`); None: no such identity (or no TLS).
    pub fn client_identity(&self, name: &str) -> Option<ClientId> {
        self.tls.as_ref()?.client_identity(name)
    }

    /// A TLS connection to `addr` whose certificate proves `host` (a DNS name, also
    /// sent as SNI, or an IP literal): an open one we verified for that name, else a
    /// new one. Never falls back to plain TCP.
    /// `identity`: the client certificate to present (None: the default); only a
    /// connection opened with the same one is reused.
    pub async fn connect_tls(
        &self,
        addr: SocketAddr,
        host: &str,
        identity: Option<ClientId>,
    ) -> Result<Peer, SendError> {
        let hub = self.tls.as_ref().ok_or(SendError::NoTls(addr))?;
        let name = tls::server_name(host).ok_or_else(|| SendError::Connect {
            addr,
            reason: format!("{host:?} is not a name a certificate can prove"),
        })?;
        hub.connect(addr, Some(name), identity).await
    }

    /// Keep the stream connection of `peer` open while the returned hold lives, however
    /// idle it gets: a long call with no signalling must still be able to send its BYE.
    pub fn hold(self: &Arc<Self>, peer: &Peer) -> Option<ConnHold> {
        let id = peer.conn?;
        let hub = self.hub(peer.transport)?;
        hub.hold(id).then(|| ConnHold {
            transport: self.clone(),
            kind: peer.transport,
            id,
        })
    }
}

/// A dialog's claim on a TCP or TLS connection; released when dropped.
pub struct ConnHold {
    transport: Arc<TransportLayer>,
    kind: Transport,
    id: ConnId,
}

impl Drop for ConnHold {
    fn drop(&mut self) {
        if let Some(hub) = self.transport.hub(self.kind) {
            hub.release(self.id);
        }
    }
}

fn count_incoming(metrics: &Metrics, msg: &crate::sip::message::Message) {
    use crate::metrics::Direction;
    if let Some(m) = msg.method() {
        metrics.sip.request(Direction::In, m.as_str());
    } else if let (Some(status), Some(cseq)) = (msg.status(), msg.cseq()) {
        metrics
            .sip
            .response(Direction::In, cseq.method.as_str(), status);
    }
}

/// Parse what arrived and hand it on. Shared by both transports.
pub(crate) fn deliver(layer: &Arc<TransportLayer>, data: Bytes, from: Peer) {
    let metrics = &*layer.metrics;
    Metrics::inc(&metrics.sip_messages_received_total);
    match parse(data) {
        Ok(mut msg) => {
            count_incoming(metrics, &msg);
            if msg.is_request() {
                stamp_via(&mut msg, from);
            }
            layer.sink.on_message(msg, from, layer);
        }
        Err(err) => {
            Metrics::inc(&metrics.sip_parse_errors_total);
            layer.sink.on_bad_message(err, from, layer);
        }
    }
}

/// RFC 3261 18.2.1 and RFC 3581 4: note the real source on the top Via of a request.
pub fn stamp_via(msg: &mut Message, from: Peer) {
    msg.stamp_source(from.addr.ip(), from.addr.port());
}

/// RFC 3261 18.2.2 and RFC 3581 4: where the response to a request goes. On a stream,
/// back over the connection it came on; on UDP, to the source address and the `rport`
/// (or sent-by) port.
pub fn response_peer(req: &Message, from: Peer) -> Peer {
    match from.transport {
        Transport::Tcp | Transport::Tls => from,
        Transport::Udp => {
            let port = req
                .top_via()
                .map_or(from.addr.port(), |v| v.response_port());
            Peer::udp(SocketAddr::new(from.addr.ip(), port))
        }
    }
}
