//! The transport layer seen from raw sockets: TCP framing by Content-Length, keep-alive
//! pongs, closing of connections that cannot be framed or sit idle, responses on the
//! request's connection, reuse of the connection to the AI agent; UDP size limit and
//! `received`/`rport`; IPv6 listeners.

mod common;

use common::scenarios::{bye_from_caller, establish};
use common::{handoff_addr, InviteOpts, Rig, TestUa, Transport, WAIT};
use handoff::sip::message::{generate_branch, generate_tag, parse, Message, Method};
use handoff::sip::transport::{Frame, Framer};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An OPTIONS from `local` (the Via sent-by) to handoff at `to`, CRLF and Content-Length
/// included.
fn options(transport: &str, local: SocketAddr, to: SocketAddr, call_id: &str) -> String {
    format!(
        "OPTIONS sip:handoff@{to} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch={};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@test>;tag={}\r\nTo: <sip:handoff@{to}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        generate_branch(),
        generate_tag()
    )
}

async fn tcp_options(stream: &TcpStream, to: SocketAddr, call_id: &str) -> String {
    options("TCP", stream.local_addr().unwrap(), to, call_id)
}

/// Read from a raw stream until `n` messages are framed or `timeout` passes.
async fn read_messages(
    stream: &mut TcpStream,
    framer: &mut Framer,
    n: usize,
    timeout: Duration,
) -> Vec<Message> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        while let Ok(Some(frame)) = framer.next_frame() {
            if let Frame::Message(data) = frame {
                out.push(parse(data).expect("handoff's message parses"));
            }
        }
        if out.len() >= n {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        framer.buffer_mut().reserve(4096);
        match tokio::time::timeout(left, stream.read_buf(framer.buffer_mut())).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {}
        }
    }
    out
}

/// Does handoff close the connection within `timeout`? Whatever it sends first is skipped.
async fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn tcp_rig(extra: &str) -> (Rig, SocketAddr) {
    let rig = Rig::new(Transport::Tcp, extra).await;
    let addr = handoff_addr(&rig.server, Transport::Tcp);
    (rig, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_in_one_write_are_both_answered() {
    let (_rig, addr) = tcp_rig("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let both = format!(
        "{}{}",
        tcp_options(&s, addr, "first").await,
        tcp_options(&s, addr, "second").await
    );
    s.write_all(both.as_bytes()).await.unwrap();
    let got = read_messages(&mut s, &mut Framer::new(1 << 20), 2, WAIT).await;
    let ids: Vec<_> = got
        .iter()
        .map(|m| (m.call_id().unwrap().to_owned(), m.status()))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("first".to_owned(), Some(200)),
            ("second".to_owned(), Some(200))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_written_one_byte_at_a_time_is_answered() {
    let (_rig, addr) = tcp_rig("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let msg = tcp_options(&s, addr, "trickle").await;
    for b in msg.as_bytes() {
        s.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = read_messages(&mut s, &mut Framer::new(1 << 20), 1, WAIT).await;
    assert_eq!(got.len(), 1, "no answer to an OPTIONS written byte by byte");
    assert_eq!(got[0].status(), Some(200));
    assert_eq!(got[0].call_id(), Some("trickle"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_small_content_length_followed_by_junk_closes_connection() {
    let (_rig, addr) = tcp_rig("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let msg = tcp_options(&s, addr, "liar").await.replace(
        "Content-Length: 0\r\n\r\n",
        "Content-Length: 1\r\n\r\nabc\x01\x02\x03 not sip\r\n\r\n",
    );
    s.write_all(msg.as_bytes()).await.unwrap();
    assert!(
        closed_within(&mut s, WAIT).await,
        "connection out of step with the stream was left open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_crlf_keepalive_gets_single_crlf() {
    let (_rig, addr) = tcp_rig("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut pong))
        .await
        .expect("pong in time")
        .unwrap();
    assert_eq!(&pong, b"\r\n");
    // Nothing more than the one CRLF, and the connection still serves SIP.
    let msg = tcp_options(&s, addr, "after-ping").await;
    s.write_all(msg.as_bytes()).await.unwrap();
    let mut framer = Framer::new(1 << 20);
    let got = read_messages(&mut s, &mut framer, 1, WAIT).await;
    assert_eq!(got.first().and_then(|m| m.call_id()), Some("after-ping"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_closes_connection() {
    let (_rig, addr) = tcp_rig("sip.max_message_size = 2048").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let pad: String = (0..30)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "p".repeat(100)))
        .collect();
    let msg = tcp_options(&s, addr, "big").await.replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{pad}"),
    );
    assert!(msg.len() > 2048);
    s.write_all(msg.as_bytes()).await.unwrap();
    assert!(
        closed_within(&mut s, WAIT).await,
        "a {} byte message over max_message_size = 2048 left the connection open",
        msg.len()
    );
    // A declared body over the limit too.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let msg = tcp_options(&s, addr, "big-body")
        .await
        .replace("Content-Length: 0", "Content-Length: 4000");
    s.write_all(msg.as_bytes()).await.unwrap();
    assert!(
        closed_within(&mut s, WAIT).await,
        "Content-Length: 4000 over max_message_size = 2048 left the connection open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed_after_idle_timeout() {
    let (_rig, addr) = tcp_rig("sip.tcp_idle_timeout_secs = 1").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_millis(3500)).await,
        "idle connection still open after 3.5 s"
    );
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before the 1 s idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_goes_back_on_the_connection_the_request_came_on() {
    let (_rig, addr) = tcp_rig("").await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    // B's request claims A's address as its sent-by: the answer still goes on B.
    let msg = options("TCP", a.local_addr().unwrap(), addr, "on-b");
    b.write_all(msg.as_bytes()).await.unwrap();
    let got = read_messages(&mut b, &mut Framer::new(1 << 20), 1, WAIT).await;
    assert_eq!(
        got.first().and_then(|m| m.call_id()),
        Some("on-b"),
        "no answer on the request's connection"
    );
    let on_a = read_messages(
        &mut a,
        &mut Framer::new(1 << 20),
        1,
        Duration::from_millis(200),
    )
    .await;
    assert!(on_a.is_empty(), "the answer went to the other connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_tcp_ai_agent_reuse_one_connection() {
    let (mut rig, _) = tcp_rig("").await;
    let mut first = establish(&mut rig, InviteOpts::default()).await;
    let mut second = establish(&mut rig, InviteOpts::default()).await;
    assert_eq!(
        rig.agent.accepted_connections().await,
        1,
        "handoff opened a second connection to the AI agent"
    );
    bye_from_caller(&mut rig, &mut first).await;
    bye_from_caller(&mut rig, &mut second).await;
    let mut third = establish(&mut rig, InviteOpts::default()).await;
    bye_from_caller(&mut rig, &mut third).await;
    assert_eq!(
        rig.agent.accepted_connections().await,
        1,
        "handoff opened a new connection to the AI agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_udp_datagram_is_dropped_and_next_options_answered() {
    let mut rig = Rig::new(Transport::Udp, "sip.max_message_size = 2048").await;
    let big = rig
        .caller
        .render_raw(&format!(
            "OPTIONS sip:handoff@{{handoff}} SIP/2.0\nVia: {{via}}\nMax-Forwards: 70\nFrom: <sip:p@test>;tag={{tag}}\nTo: <sip:handoff@{{handoff}}>\nCall-ID: big\nCSeq: 1 OPTIONS\nX-Pad: {}\n\n",
            "p".repeat(900)
        ))
        .to_vec();
    let mut big = String::from_utf8(big).unwrap();
    big = big.replace(
        "X-Pad:",
        &format!(
            "X-Pad2: {}\r\nX-Pad3: {}\r\nX-Pad:",
            "q".repeat(900),
            "r".repeat(900)
        ),
    );
    assert!(big.len() > 2048);
    rig.caller.send_bytes(big.as_bytes()).await;
    rig.caller
        .expect_silence(
            "answer to an oversize datagram",
            Duration::from_millis(300),
            |_| true,
        )
        .await;
    let addr = rig.caller.peer().unwrap();
    rig.caller
        .send_bytes(options("UDP", rig.caller.local_addr(), addr, "normal").as_bytes())
        .await;
    let ok = rig
        .caller
        .expect_response_to(Method::Options, 200, WAIT)
        .await;
    assert_eq!(ok.msg.call_id(), Some("normal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_response_via_gets_received_and_rport() {
    let mut rig = Rig::new(Transport::Udp, "").await;
    let addr = rig.caller.peer().unwrap();
    // sent-by names a port nobody listens on: only rport brings the answer back here.
    let claimed: SocketAddr = "127.0.0.1:9".parse().unwrap();
    rig.caller
        .send_bytes(options("UDP", claimed, addr, "rport").as_bytes())
        .await;
    let ok = rig
        .caller
        .expect_response_to(Method::Options, 200, WAIT)
        .await;
    let via = ok.msg.top_via().expect("response Via parses");
    assert_eq!(
        via.received(),
        Some("127.0.0.1".parse().unwrap()),
        "Via: {:?}",
        ok.msg.header("Via")
    );
    assert_eq!(
        via.response_port(),
        rig.caller.local_addr().port(),
        "rport is the source port: {:?}",
        ok.msg.header("Via")
    );
    assert_eq!(
        via.sent_by_port(),
        Some(9),
        "sent-by is left as the request had it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listeners_answer_options_over_udp_and_tcp() {
    if std::net::UdpSocket::bind("[::1]:0").is_err()
        || std::net::TcpListener::bind("[::1]:0").is_err()
    {
        println!("note: ::1 cannot be bound on this machine; IPv6 test skipped");
        return;
    }
    let agent = TestUa::agent(Transport::Udp).await;
    let text = common::config_text(
        Transport::Udp,
        agent.local_addr().port(),
        "sip.listen_udp = [\"[::1]:0\"]\nsip.listen_tcp = [\"[::1]:0\"]",
    );
    let server = common::start_with_config(&text).await;
    let (udp, tcp) = (server.udp_addrs()[0], server.tcp_addrs()[0]);
    assert!(udp.is_ipv6() && tcp.is_ipv6());
    for (t, addr) in [(Transport::Udp, udp), (Transport::Tcp, tcp)] {
        let mut ua = TestUa::carrier(t, addr).await;
        let local = ua.local_addr();
        assert!(local.is_ipv6());
        ua.send_bytes(options(t.via_name(), local, addr, "v6").as_bytes())
            .await;
        let ok = ua.expect_response_to(Method::Options, 200, WAIT).await;
        assert_eq!(ok.msg.call_id(), Some("v6"), "{t:?}");
        assert_eq!(ok.from.ip(), addr.ip());
    }
}
