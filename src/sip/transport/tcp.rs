//! The stream side, TCP and TLS alike: listeners, one reader and one writer task per
//! connection, framing by Content-Length, keep-alive pongs, idle close, and reuse of
//! open connections. Caps on connections in total and per source (over one, an idle
//! connection with no dialog gives way, else the new one is closed), and a deadline
//! for each message from its first byte that later bytes do not move. One hub per
//! transport; the TLS hub does its handshakes (`tls.rs`) and then treats the
//! connection as TCP's, under the same counter of connections.

use super::conn_limit::{choose_victim, Candidate, Over};
use super::tls::{may_reuse, name_of_addr, TlsSide};
use super::{
    deliver, BindError, ClientId, ConnId, Frame, Framer, Peer, SendError, Transport, TransportLayer,
};
use crate::metrics::Metrics;
use crate::net::{source_key, Admission, ConnCaps, ConnCounter, ConnPermit};
use bytes::Bytes;
use dashmap::DashMap;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

/// Messages queued for one connection's writer before sends are refused.
const WRITE_QUEUE: usize = 1024;
/// TLS: addresses whose verified name is remembered for a reconnect.
const MAX_NAMES: usize = 4096;

struct Conn {
    peer: SocketAddr,
    tx: mpsc::Sender<Bytes>,
    /// Dialogs using this connection: while any does, idleness does not close it.
    holders: AtomicU64,
    /// Accepted from a peer (not one we opened): may be evicted.
    inbound: bool,
    /// TLS we opened: the name the peer's certificate was verified for.
    verified: Option<ServerName<'static>>,
    /// TLS we opened: the client identity we presented (None: the default).
    identity: Option<ClientId>,
    activity: Arc<Activity>,
    /// Tells the reader to close (eviction).
    close: Arc<Notify>,
    /// Its place under the caps, given back when the connection leaves the table.
    _permit: ConnPermit,
}

/// What the reader and writer tasks note for eviction, in ms since the hub's epoch.
#[derive(Default)]
struct Activity {
    last_read: AtomicU64,
    last_write: AtomicU64,
    /// Part of a message is buffered.
    mid_message: AtomicBool,
}

impl Activity {
    fn last(&self) -> u64 {
        self.last_read
            .load(Ordering::Relaxed)
            .max(self.last_write.load(Ordering::Relaxed))
    }
}

pub(super) struct TcpHub {
    transport: Transport,
    /// The handshakes of the TLS hub; None for TCP.
    tls: Option<TlsSide>,
    /// TLS: the name last verified at an address, for a reconnect that knows only it.
    names: DashMap<SocketAddr, ServerName<'static>>,
    listen: Vec<SocketAddr>,
    conns: DashMap<ConnId, Conn>,
    /// The open connection to an address, per client identity we present on it
    /// (always None on TCP and for connections a peer opened).
    by_peer: DashMap<(SocketAddr, Option<ClientId>), ConnId>,
    next_id: AtomicU64,
    /// The layer that owns this hub: what the readers deliver through.
    layer: Weak<TransportLayer>,
    metrics: Arc<Metrics>,
    max_message: usize,
    idle: Duration,
    connect_timeout: Duration,
    message_timeout: Duration,
    counter: Arc<ConnCounter>,
    epoch: Instant,
}

/// Bind a stream listener at each of `addrs`: the listeners and their local addresses.
pub(super) fn bind_all(
    addrs: &[SocketAddr],
    transport: Transport,
) -> Result<(Vec<TcpListener>, Vec<SocketAddr>), BindError> {
    let mut listeners = Vec::new();
    let mut listen = Vec::new();
    for addr in addrs {
        let l = bind(*addr).map_err(|source| BindError::Bind {
            transport,
            addr: *addr,
            source,
        })?;
        listen.push(l.local_addr().map_err(|source| BindError::Bind {
            transport,
            addr: *addr,
            source,
        })?);
        listeners.push(l);
    }
    Ok((listeners, listen))
}

/// What the hubs of one layer share: the limits of `sip.tcp_*` and one counter of
/// connections, so TCP and TLS together stay under the caps.
pub(super) struct HubShared {
    pub max_message: usize,
    pub idle: Duration,
    pub connect_timeout: Duration,
    pub message_timeout: Duration,
    pub counter: Arc<ConnCounter>,
}

impl HubShared {
    pub(super) fn new(cfg: &super::TransportConfig) -> HubShared {
        HubShared {
            max_message: cfg.max_message_size,
            idle: cfg.tcp_idle_timeout,
            connect_timeout: cfg.tcp_connect_timeout,
            message_timeout: cfg.tcp_limits.message_timeout,
            counter: ConnCounter::new(ConnCaps {
                total: cfg.tcp_limits.max_connections,
                per_source: cfg.tcp_limits.max_connections_per_ip,
            }),
        }
    }
}

impl TcpHub {
    pub(super) fn new(
        shared: &HubShared,
        transport: Transport,
        tls: Option<TlsSide>,
        listen: Vec<SocketAddr>,
        layer: Weak<TransportLayer>,
        metrics: Arc<Metrics>,
    ) -> Arc<TcpHub> {
        Arc::new(TcpHub {
            transport,
            tls,
            names: DashMap::new(),
            listen,
            conns: DashMap::new(),
            by_peer: DashMap::new(),
            next_id: AtomicU64::new(1),
            layer,
            metrics,
            max_message: shared.max_message,
            idle: shared.idle,
            connect_timeout: shared.connect_timeout,
            message_timeout: shared.message_timeout,
            counter: shared.counter.clone(),
            epoch: Instant::now(),
        })
    }

    /// TLS: the client identity registered under `name`.
    pub(super) fn client_identity(&self, name: &str) -> Option<ClientId> {
        self.tls.as_ref()?.client_identity(name)
    }

    pub(super) fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Keep a connection open while a dialog uses it (see [`ConnHold`]).
    pub(super) fn hold(&self, id: ConnId) -> bool {
        match self.conns.get(&id) {
            Some(c) => {
                c.holders.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    pub(super) fn release(&self, id: ConnId) {
        if let Some(c) = self.conns.get(&id) {
            let _ = c
                .holders
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    fn is_held(&self, id: ConnId) -> bool {
        self.conns
            .get(&id)
            .is_some_and(|c| c.holders.load(Ordering::Relaxed) > 0)
    }

    pub(super) fn send(self: &Arc<Self>, to: &Peer, bytes: Bytes) -> Result<(), SendError> {
        let open = to
            .conn
            .filter(|id| self.conns.contains_key(id))
            .or_else(|| {
                self.by_peer
                    .get(&(to.addr, to.identity))
                    .map(|e| *e.value())
            });
        let Some(id) = open else {
            // RFC 3261 18.1.1: no connection to the target any more: open a new one.
            // The send completes in the background; a failure shows as a timeout.
            let hub = self.clone();
            let addr = to.addr;
            let identity = to.identity;
            let name = self.tls.as_ref().map(|_| {
                self.names
                    .get(&addr)
                    .map_or_else(|| name_of_addr(addr), |n| n.value().clone())
            });
            tokio::spawn(async move {
                match hub.connect(addr, name, identity).await {
                    Ok(p) => {
                        let _ = hub.send(&p, bytes);
                    }
                    Err(e) => tracing::debug!(error = %e, "reconnect for send failed"),
                }
            });
            return Ok(());
        };
        let conn = self.conns.get(&id).ok_or(SendError::ConnectionClosed(id))?;
        conn.tx.try_send(bytes).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SendError::ConnectionClosed(id),
        })
    }

    /// An open connection to `addr` or a new one. TLS: `name` is what the peer's
    /// certificate must prove (and the SNI), and only a connection verified for it is
    /// reused.
    /// `identity`: TLS, the client certificate to present; a connection is reused
    /// only by the identity it was opened with.
    pub(super) async fn connect(
        self: &Arc<Self>,
        addr: SocketAddr,
        name: Option<ServerName<'static>>,
        identity: Option<ClientId>,
    ) -> Result<Peer, SendError> {
        let identity = identity.filter(|_| self.tls.is_some());
        if let Some(id) = self.by_peer.get(&(addr, identity)).map(|e| *e.value()) {
            let reusable = self.conns.get(&id).is_some_and(|c| match &name {
                Some(want) if self.tls.is_some() => {
                    may_reuse(c.verified.as_ref(), want, c.identity, identity)
                }
                _ => true,
            });
            if reusable {
                return Ok(Peer {
                    transport: self.transport,
                    addr,
                    conn: Some(id),
                    identity,
                });
            }
        }
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| SendError::Connect {
                addr,
                reason: "timed out".into(),
            })?
            .map_err(|e| SendError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let permit = self.counter.acquire_own(addr.ip());
        let _ = stream.set_nodelay(true);
        let id = match &self.tls {
            None => self.register(stream, addr, permit, false, None, None),
            Some(tls) => {
                let name = name.unwrap_or_else(|| name_of_addr(addr));
                let tls_stream = tls.connect(stream, name.clone(), identity).await.map_err(|e| {
                    Metrics::inc(&self.metrics.sip_tls_connect_failures_total);
                    static LOG: crate::log_limit::LogLimit = crate::log_limit::per_call();
                    if let Some(left_out) = LOG.admit() {
                        tracing::warn!(%addr, name = ?name, error = %e, left_out, "SIP/TLS connection refused: the peer's certificate or handshake failed");
                    }
                    SendError::Connect {
                        addr,
                        reason: e.to_string(),
                    }
                })?;
                // Bounded: addresses come from DNS and REFERs; a reconnect that finds
                // none verifies the address itself.
                if self.names.len() >= MAX_NAMES {
                    self.names.clear();
                }
                self.names.insert(addr, name.clone());
                self.register(tls_stream, addr, permit, false, Some(name), identity)
            }
        };
        Ok(Peer {
            transport: self.transport,
            addr,
            conn: Some(id),
            identity,
        })
    }

    /// A connection a peer opened: admitted under the caps, possibly in place of an
    /// idle one; else closed at once.
    fn accept(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let permit = match self.counter.try_acquire(peer.ip()) {
            Ok(p) => Some(p),
            Err(over) => {
                let over = match over {
                    Admission::OverPerSource => Over::Source(source_key(peer.ip())),
                    _ => Over::Total,
                };
                // TCP and TLS share the counter: an idle connection of either gives way.
                let sibling = self
                    .layer
                    .upgrade()
                    .and_then(|l| l.sibling_hub(self.transport));
                let own = choose_victim(&self.candidates(), over).map(|v| (self.clone(), v));
                let victim = own.or_else(|| {
                    let other = sibling?;
                    let v = choose_victim(&other.candidates(), over)?;
                    Some((other, v))
                });
                match victim {
                    Some((hub, victim)) => {
                        hub.evict(victim);
                        self.counter.try_acquire(peer.ip()).ok()
                    }
                    None => None,
                }
            }
        };
        match permit {
            Some(p) if self.tls.is_some() => {
                // The handshake holds its place under the caps, and is bounded in time.
                let _ = stream.set_nodelay(true);
                let hub = self.clone();
                tokio::spawn(async move {
                    let Some(tls) = &hub.tls else { return };
                    match tls.accept(stream, peer.ip()).await {
                        Ok(s) => {
                            hub.register(s, peer, p, true, None, None);
                        }
                        Err(e) => {
                            Metrics::inc(&hub.metrics.sip_tls_handshakes_failed_total);
                            // A scanner can fail handshakes as fast as it connects.
                            static LOG: crate::log_limit::LogLimit = crate::log_limit::per_call();
                            if let Some(left_out) = LOG.admit() {
                                tracing::info!(source = %peer.ip(), error = %e, left_out, "SIP/TLS handshake failed, connection closed");
                            }
                        }
                    }
                });
            }
            Some(p) => {
                let _ = stream.set_nodelay(true);
                self.register(stream, peer, p, true, None, None);
            }
            None => {
                Metrics::inc(&self.metrics.sip_tcp_connections_refused_total);
                tracing::debug!(source = %peer.ip(), "SIP/TCP connection over its cap and none idle to evict: closed");
            }
        }
    }

    fn candidates(&self) -> Vec<Candidate> {
        let now = self.millis();
        self.conns
            .iter()
            .map(|e| {
                let c = e.value();
                Candidate {
                    id: *e.key(),
                    source: source_key(c.peer.ip()),
                    inbound: c.inbound,
                    held: c.holders.load(Ordering::Relaxed) > 0,
                    mid_message: c.activity.mid_message.load(Ordering::Relaxed),
                    idle_for: Duration::from_millis(now.saturating_sub(c.activity.last())),
                }
            })
            .collect()
    }

    /// Close `id` to make room: out of the table now (its place is free at once),
    /// its reader told to stop.
    fn evict(&self, id: ConnId) {
        let close = self.conns.get(&id).map(|c| c.close.clone());
        if let Some(close) = close {
            tracing::debug!(
                conn = id,
                "evicting an idle SIP/TCP connection for a new one"
            );
            Metrics::inc(&self.metrics.sip_tcp_connections_evicted_total);
            self.unregister(id);
            close.notify_one();
        }
    }

    fn register<S>(
        self: &Arc<Self>,
        stream: S,
        peer: SocketAddr,
        permit: ConnPermit,
        inbound: bool,
        verified: Option<ServerName<'static>>,
        identity: Option<ClientId>,
    ) -> ConnId
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let activity = Arc::new(Activity::default());
        let now = self.millis();
        activity.last_read.store(now, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        self.conns.insert(
            id,
            Conn {
                peer,
                tx,
                holders: AtomicU64::new(0),
                inbound,
                verified,
                identity,
                activity: activity.clone(),
                close: close.clone(),
                _permit: permit,
            },
        );
        self.by_peer.insert((peer, identity), id);
        self.gauge().fetch_add(1, Ordering::Relaxed);
        let (rd, wr) = tokio::io::split(stream);
        tokio::spawn(writer(wr, rx, activity.clone(), self.epoch));
        tokio::spawn(reader(self.clone(), rd, id, peer, activity, close));
        id
    }

    fn unregister(&self, id: ConnId) {
        if let Some((_, conn)) = self.conns.remove(&id) {
            self.by_peer
                .remove_if(&(conn.peer, conn.identity), |_, v| *v == id);
            self.gauge().fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn gauge(&self) -> &std::sync::atomic::AtomicI64 {
        match self.transport {
            Transport::Tls => &self.metrics.tls_connections,
            _ => &self.metrics.tcp_connections,
        }
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

pub(super) async fn accept_loop(listener: TcpListener, hub: Arc<TcpHub>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => hub.accept(stream, peer),
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Bytes>,
    activity: Arc<Activity>,
    epoch: Instant,
) {
    while let Some(bytes) = rx.recv().await {
        if wr.write_all(&bytes).await.is_err() {
            break;
        }
        activity
            .last_write
            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    let _ = wr.shutdown().await;
}

async fn reader<R: AsyncRead + Unpin>(
    hub: Arc<TcpHub>,
    mut rd: R,
    id: ConnId,
    peer: SocketAddr,
    activity: Arc<Activity>,
    close: Arc<Notify>,
) {
    // What comes in on a connection we opened with an identity goes back on it.
    let identity = hub.conns.get(&id).and_then(|c| c.identity);
    let from = Peer {
        transport: hub.transport,
        addr: peer,
        conn: Some(id),
        identity,
    };
    // The layer is gone only when the process is shutting down.
    let Some(layer) = hub.layer.upgrade() else {
        return hub.unregister(id);
    };
    let mut framer = Framer::new(hub.max_message);
    // When the message being received must be complete: set by its first byte.
    let mut message_deadline: Option<Instant> = None;
    'conn: loop {
        framer.buffer_mut().reserve(4096);
        let wait = message_deadline.map_or(hub.idle, |d| {
            hub.idle.min(d.saturating_duration_since(Instant::now()))
        });
        let read = tokio::select! {
            r = tokio::time::timeout(wait, rd.read_buf(framer.buffer_mut())) => r,
            _ = close.notified() => break,
        };
        match read {
            Err(_) => {
                if message_deadline.is_some_and(|d| Instant::now() >= d) {
                    Metrics::inc(&hub.metrics.sip_tcp_message_timeouts_total);
                    tracing::debug!(%peer, "SIP/TCP message not complete in time, closing");
                    break;
                }
                // Idle in both directions for the configured time: close.
                let idle_for = hub.millis().saturating_sub(activity.last());
                if idle_for >= hub.idle.as_millis() as u64 && !hub.is_held(id) {
                    tracing::debug!(%peer, "tcp connection idle, closing");
                    break;
                }
                continue;
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => activity.last_read.store(hub.millis(), Ordering::Relaxed),
        }
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(data))) => {
                    // The message the deadline was for is complete.
                    message_deadline = None;
                    deliver(&layer, data, from);
                }
                Ok(Some(Frame::Unframeable(head))) => {
                    // Answered (400) from its header block, then closed: the stream
                    // cannot be framed past a Content-Length we cannot trust.
                    deliver(&layer, head, from);
                    tracing::info!(%peer, "closing tcp connection after a message that cannot be framed");
                    break 'conn;
                }
                Ok(Some(Frame::Ping)) => {
                    // RFC 5626 4.4.1: answer a double-CRLF ping with a single CRLF pong.
                    if let Some(conn) = hub.conns.get(&id) {
                        let _ = conn.tx.try_send(Bytes::from_static(b"\r\n"));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Metrics::inc(&hub.metrics.sip_parse_errors_total);
                    tracing::info!(%peer, error = %e, "closing tcp connection that cannot be framed");
                    break 'conn;
                }
            }
        }
        let mid_message = framer.in_message();
        activity.mid_message.store(mid_message, Ordering::Relaxed);
        if !mid_message {
            message_deadline = None;
        } else if message_deadline.is_none() {
            message_deadline = Some(Instant::now() + hub.message_timeout);
        }
    }
    hub.unregister(id);
}
