//! The test UA's sockets and its receive side: one UDP socket, one TCP or TLS
//! connection to handoff (the carrier), or a TCP or TLS listener that accepts
//! handoff's connections (the AI agent). Background tasks read and frame what arrives and queue it; the test pulls
//! from the queue with deadlines. The tasks are aborted when the UA is dropped.

use super::Transport;
use bytes::Bytes;
use handoff::sip::message::{generate_branch, generate_tag, parse, Message, Method};
use handoff::sip::transport::{Frame, Framer};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// Largest message the UA accepts on a stream.
const MAX_MESSAGE: usize = 1 << 20;

/// One message the UA received.
#[derive(Debug, Clone)]
pub struct Received {
    pub msg: Message,
    pub from: SocketAddr,
    pub at: Instant,
}

/// A message handoff sent that does not parse (a 400 to a request without Call-ID
/// cannot have one): kept as text.
#[derive(Debug, Clone)]
pub struct Unparsed {
    pub text: String,
    pub error: String,
    pub from: SocketAddr,
}

pub(super) enum Event {
    Msg(Box<Received>),
    Unparsed(Unparsed),
    Accepted(SocketAddr),
    Closed(SocketAddr),
}

/// The write half of every open connection, by the far end's address. Sends write
/// directly (not through a task) so that what a test sends is in the kernel, in
/// program order, when `send` returns.
type Writers = Arc<Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<BoxedWrite>>>>>;

/// The write half of a TCP or TLS connection.
type BoxedWrite = Box<dyn AsyncWrite + Send + Unpin>;

enum Sock {
    Udp(Arc<UdpSocket>),
    Tcp(Writers),
}

pub struct TestUa {
    pub transport: Transport,
    sock: Sock,
    pub(super) local: SocketAddr,
    /// Where requests without a better destination go (handoff, for a carrier).
    pub(super) peer: Option<SocketAddr>,
    /// Source of the last message received (a TCP agent answers on that connection).
    pub(super) last_from: Option<SocketAddr>,
    pub(super) rx: mpsc::UnboundedReceiver<Event>,
    pub(super) backlog: VecDeque<Received>,
    pub(super) unparsed: Vec<Unparsed>,
    pub(super) tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// Our To tag per Call-ID, so that 180 and 200 to one INVITE carry the same tag.
    pub(super) to_tags: HashMap<String, String>,
    pub(super) history: Vec<String>,
    pub(super) accepted: Vec<SocketAddr>,
    pub(super) closed: Vec<SocketAddr>,
    pub(super) started: Instant,
    /// TLS listener: the server name (SNI) each accepted handshake asked for.
    sni: Arc<Mutex<Vec<Option<String>>>>,
}

impl Drop for TestUa {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl TestUa {
    fn new(
        transport: Transport,
        sock: Sock,
        local: SocketAddr,
        rx: mpsc::UnboundedReceiver<Event>,
    ) -> Self {
        TestUa {
            transport,
            sock,
            local,
            peer: None,
            last_from: None,
            rx,
            backlog: VecDeque::new(),
            unparsed: Vec::new(),
            tasks: Arc::new(Mutex::new(Vec::new())),
            to_tags: HashMap::new(),
            history: Vec::new(),
            accepted: Vec::new(),
            closed: Vec::new(),
            started: Instant::now(),
            sni: Arc::default(),
        }
    }

    /// A UDP UA bound to `addr` (port 0 picks a free one).
    pub async fn udp_bound(addr: SocketAddr) -> TestUa {
        let sock = Arc::new(UdpSocket::bind(addr).await.expect("bind test UDP socket"));
        let local = sock.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = sock.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                // An ICMP error for an earlier send surfaces here once; keep reading.
                let Ok((n, from)) = reader.recv_from(&mut buf).await else {
                    continue;
                };
                if tx
                    .send(event_for(Bytes::copy_from_slice(&buf[..n]), from))
                    .is_err()
                {
                    break;
                }
            }
        });
        let ua = TestUa::new(Transport::Udp, Sock::Udp(sock), local, rx);
        ua.tasks.lock().unwrap().push(task.abort_handle());
        ua
    }

    /// A TCP UA connected to `addr`.
    pub async fn tcp_connect(addr: SocketAddr) -> TestUa {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to handoff over TCP");
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let writers: Writers = Arc::default();
        let mut ua = TestUa::new(Transport::Tcp, Sock::Tcp(writers.clone()), local, rx);
        spawn_connection(stream, addr, writers, tx, ua.tasks.clone());
        ua.peer = Some(addr);
        ua
    }

    /// A TLS UA connected to `addr`, trusting what `client` trusts; the server's
    /// certificate must prove `addr`'s IP. Panics when the handshake fails.
    pub async fn tls_connect(addr: SocketAddr, client: Arc<rustls::ClientConfig>) -> TestUa {
        TestUa::try_tls_connect(addr, client)
            .await
            .expect("TLS handshake with handoff")
    }

    /// [`TestUa::tls_connect`], the handshake's failure as an error.
    pub async fn try_tls_connect(
        addr: SocketAddr,
        client: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TestUa> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr()?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, stream)
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writers: Writers = Arc::default();
        let mut ua = TestUa::new(Transport::Tls, Sock::Tcp(writers.clone()), local, rx);
        spawn_connection(tls, addr, writers, tx, ua.tasks.clone());
        ua.peer = Some(addr);
        Ok(ua)
    }

    /// A TLS UA listening on `addr` with `server`'s certificate, accepting every
    /// connection whose handshake succeeds.
    pub async fn tls_listen(addr: SocketAddr, server: Arc<rustls::ServerConfig>) -> TestUa {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind test TLS listener");
        let local = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let writers: Writers = Arc::default();
        let ua = TestUa::new(Transport::Tls, Sock::Tcp(writers.clone()), local, rx);
        let tasks = ua.tasks.clone();
        let sni = ua.sni.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let accept = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let Ok(tls) = acceptor.accept(stream).await else {
                    continue;
                };
                let name = tls.get_ref().1.server_name().map(str::to_owned);
                sni.lock().unwrap().push(name);
                if tx.send(Event::Accepted(peer)).is_err() {
                    break;
                }
                spawn_connection(tls, peer, writers.clone(), tx.clone(), tasks.clone());
            }
        });
        ua.tasks.lock().unwrap().push(accept.abort_handle());
        ua
    }

    /// A TCP UA listening on `addr` and accepting every connection made to it.
    pub async fn tcp_listen(addr: SocketAddr) -> TestUa {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind test TCP listener");
        let local = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let writers: Writers = Arc::default();
        let ua = TestUa::new(Transport::Tcp, Sock::Tcp(writers.clone()), local, rx);
        let tasks = ua.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                if tx.send(Event::Accepted(peer)).is_err() {
                    break;
                }
                spawn_connection(stream, peer, writers.clone(), tx.clone(), tasks.clone());
            }
        });
        ua.tasks.lock().unwrap().push(accept.abort_handle());
        ua
    }

    /// The carrier: sends to handoff at `handoff` over `transport`.
    pub async fn carrier(transport: Transport, handoff: SocketAddr) -> TestUa {
        let mut ua = match transport {
            Transport::Udp => TestUa::udp_bound(loopback_like(handoff)).await,
            Transport::Tcp => TestUa::tcp_connect(handoff).await,
            Transport::Tls => {
                TestUa::tls_connect(handoff, super::tls::test_ca().client_config()).await
            }
        };
        ua.peer = Some(handoff);
        ua
    }

    /// The AI agent: bound (UDP) or listening (TCP) on a free loopback port.
    pub async fn agent(transport: Transport) -> TestUa {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        match transport {
            Transport::Udp => TestUa::udp_bound(any).await,
            Transport::Tcp => TestUa::tcp_listen(any).await,
            Transport::Tls => {
                TestUa::tls_listen(any, super::tls::loopback_leaf().server_config()).await
            }
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The SNI of every TLS handshake this listening UA accepted, in order.
    pub fn sni_seen(&self) -> Vec<Option<String>> {
        self.sni.lock().unwrap().clone()
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = Some(peer);
    }

    /// Our Contact header value.
    pub fn contact(&self) -> String {
        format!("<sip:ua@{}{}>", self.local, self.transport.uri_param())
    }

    /// A top Via for a request from this UA, with a fresh branch.
    pub fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            self.transport.via_name(),
            self.local,
            generate_branch()
        )
    }

    // ---- sending -----------------------------------------------------------------

    /// Send a message. Over UDP a request goes to its Request-URI when that names an IP
    /// address and port (so in-dialog requests test handoff's Contact), else to the
    /// peer. Over TCP it goes on the connection to the peer, or the one that last
    /// brought us something.
    pub async fn send(&self, msg: &Message) {
        let dest = match (&self.sock, msg.request_uri()) {
            (Sock::Udp(_), Some(uri)) => uri_addr(uri).or(self.peer),
            _ => None,
        };
        self.send_bytes_to(&msg.to_bytes(), dest.or(self.default_dest()))
            .await;
    }

    /// Send bytes as they are to the default destination.
    pub async fn send_bytes(&self, bytes: &[u8]) {
        self.send_bytes_to(bytes, self.default_dest()).await;
    }

    /// Send raw SIP text: `\n` line ends become CRLF, Content-Length is added from the
    /// body unless the text has one (so a test can make it lie), and placeholders are
    /// filled: `{via}` (our Via, fresh branch), `{branch}`, `{local}` (our address),
    /// `{handoff}` (the peer), `{transport}`, `{call_id}`, `{tag}`. Returns what was sent.
    pub async fn send_raw(&self, text: &str) -> Bytes {
        let bytes = self.render_raw(text);
        self.send_bytes(&bytes).await;
        bytes
    }

    /// The bytes [`TestUa::send_raw`] would send.
    pub fn render_raw(&self, text: &str) -> Bytes {
        let branch = generate_branch();
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.transport.via_name(),
            self.local
        );
        let peer = self.peer.map(|p| p.to_string()).unwrap_or_default();
        let text = text
            .replace("{via}", &via)
            .replace("{branch}", &branch)
            .replace("{local}", &self.local.to_string())
            .replace("{handoff}", &peer)
            .replace("{transport}", self.transport.via_name())
            .replace("{call_id}", &format!("{}@test", generate_tag()))
            .replace("{tag}", &generate_tag());
        Bytes::from(crlf_with_length(&text))
    }

    fn default_dest(&self) -> Option<SocketAddr> {
        match self.sock {
            Sock::Udp(_) => self.peer,
            Sock::Tcp(_) => self.peer.or(self.last_from),
        }
    }

    pub async fn send_bytes_to(&self, bytes: &[u8], dest: Option<SocketAddr>) {
        let dest = dest.expect("the test UA has no destination for this message");
        match &self.sock {
            Sock::Udp(s) => {
                s.send_to(bytes, dest).await.expect("UDP send");
            }
            Sock::Tcp(writers) => {
                let w = writers.lock().unwrap().get(&dest).cloned();
                let w = w.unwrap_or_else(|| panic!("no open TCP connection to {dest}"));
                w.lock()
                    .await
                    .write_all(bytes)
                    .await
                    .unwrap_or_else(|e| panic!("TCP send to {dest}: {e}"));
            }
        }
    }

    /// Answer a received request: Via, From, To, Call-ID and CSeq copied, our To tag
    /// (the same for every response to one Call-ID), our Contact on 1xx/2xx to INVITE,
    /// `extra` headers and an SDP (or other) body. Sent back where the request came
    /// from; returns the response.
    pub async fn respond(
        &mut self,
        req: &Received,
        status: u16,
        extra: &[(&str, &str)],
        body: Option<&str>,
    ) -> Message {
        let call_id = req.msg.call_id().unwrap_or_default().to_owned();
        let tag = self
            .to_tags
            .entry(call_id)
            .or_insert_with(generate_tag)
            .clone();
        let mut resp =
            Message::response_to(&req.msg, status, (status > 100).then_some(tag.as_str()));
        if req.msg.method() == Some(&Method::Invite) && (101..300).contains(&status) {
            resp.push("Contact", self.contact());
        }
        for (name, value) in extra {
            resp.push_checked(name, value)
                .expect("test header is valid");
        }
        if let Some(b) = body {
            if resp.header("Content-Type").is_none() {
                resp.push("Content-Type", "application/sdp");
            }
            resp.set_body(Bytes::copy_from_slice(b.as_bytes()));
        }
        self.send_bytes_to(&resp.to_bytes(), Some(req.from)).await;
        resp
    }
}

/// Read, frame and parse one TCP or TLS connection.
fn spawn_connection<S>(
    stream: S,
    peer: SocketAddr,
    writers: Writers,
    events: mpsc::UnboundedSender<Event>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let wr: BoxedWrite = Box::new(wr);
    writers
        .lock()
        .unwrap()
        .insert(peer, Arc::new(tokio::sync::Mutex::new(wr)));
    let reader = tokio::spawn(async move {
        let mut framer = Framer::new(MAX_MESSAGE);
        'conn: loop {
            framer.buffer_mut().reserve(4096);
            match rd.read_buf(framer.buffer_mut()).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            loop {
                match framer.next_frame() {
                    Ok(Some(Frame::Message(data))) => {
                        if events.send(event_for(data, peer)).is_err() {
                            break 'conn;
                        }
                    }
                    Ok(Some(Frame::Ping)) => {}
                    Ok(Some(Frame::Unframeable(_))) => {
                        let _ = events.send(Event::Unparsed(Unparsed {
                            text: String::new(),
                            error: "handoff sent an untrustworthy Content-Length".into(),
                            from: peer,
                        }));
                        break 'conn;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = events.send(Event::Unparsed(Unparsed {
                            text: String::new(),
                            error: format!("stream from handoff cannot be framed: {e}"),
                            from: peer,
                        }));
                        break 'conn;
                    }
                }
            }
        }
        writers.lock().unwrap().remove(&peer);
        let _ = events.send(Event::Closed(peer));
    });
    tasks.lock().unwrap().push(reader.abort_handle());
}

fn event_for(data: Bytes, from: SocketAddr) -> Event {
    match parse(data.clone()) {
        Ok(msg) => Event::Msg(Box::new(Received {
            msg,
            from,
            at: Instant::now(),
        })),
        Err(e) => Event::Unparsed(Unparsed {
            text: String::from_utf8_lossy(&data).into_owned(),
            error: e.to_string(),
            from,
        }),
    }
}

/// `ip:port` of a sip: URI whose host is an IP literal.
fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let u = handoff::sip::message::SipUri::parse(uri)?;
    let ip: std::net::IpAddr = u.host.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(ip, u.port.unwrap_or(5060)))
}

/// A free-port address on the same loopback family as `to`.
fn loopback_like(to: SocketAddr) -> SocketAddr {
    SocketAddr::new(to.ip(), 0)
}

/// Normalise line ends to CRLF and add Content-Length unless the text carries one.
pub fn crlf_with_length(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let (head, body) = match text.find("\r\n\r\n") {
        Some(i) => (&text[..i], &text[i + 4..]),
        None => (text.trim_end_matches("\r\n"), ""),
    };
    let has_length = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("content-length:")
            || l.to_ascii_lowercase().starts_with("l:")
    });
    if has_length {
        format!("{head}\r\n\r\n{body}")
    } else {
        format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    }
}
