//! Interop (issue 14): rtpengine (Debian `rtpengine-daemon`, userspace, its
//! own SRTP over OpenSSL) as an independent SDES/SRTP endpoint on one leg of
//! a handoff `MediaRelay` whose other leg is plain.
//!
//! ```text
//! phone A ── plain ── [caller leg | handoff relay | far leg] ── SRTP ── rtpengine ── plain ── phone B
//! ```
//!
//! rtpengine is driven over its ng protocol (bencode over UDP) as a SIP proxy
//! would: `offer` with handoff's SRTP SDP (handoff's key in `a=crypto`) and
//! `transport-protocol: RTP/AVP` so it offers plain RTP to B; `answer` with
//! B's plain SDP, which comes back as SRTP with rtpengine's own key. 500
//! packets each way must arrive intact, in order, decrypted. rtpengine runs
//! on random loopback ports and is stopped by its PID.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use handoff::media::relay::{MediaRelay, PortPool, RelayConfig, RelayLeg, Remote};
use handoff::media::srtp::{LegSrtp, SrtpKey, SrtpSuite};
use tokio::net::UdpSocket;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PACKETS: u16 = 500;

// ---- bencode (BEP 3), the little the ng protocol needs ----

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Bytes(Vec<u8>),
    Int(i64),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    fn dict(pairs: &[(&str, Value)]) -> Value {
        Value::Dict(
            pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                .collect(),
        )
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Value::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Value::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Value::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    fn decode(input: &[u8]) -> Option<(Value, &[u8])> {
        match *input.first()? {
            b'i' => {
                let end = input.iter().position(|&b| b == b'e')?;
                let n = std::str::from_utf8(&input[1..end]).ok()?.parse().ok()?;
                Some((Value::Int(n), &input[end + 1..]))
            }
            b'l' => {
                let mut rest = &input[1..];
                let mut items = Vec::new();
                while *rest.first()? != b'e' {
                    let (v, r) = Value::decode(rest)?;
                    items.push(v);
                    rest = r;
                }
                Some((Value::List(items), &rest[1..]))
            }
            b'd' => {
                let mut rest = &input[1..];
                let mut map = BTreeMap::new();
                while *rest.first()? != b'e' {
                    let (Value::Bytes(k), r) = Value::decode(rest)? else {
                        return None;
                    };
                    let (v, r) = Value::decode(r)?;
                    map.insert(k, v);
                    rest = r;
                }
                Some((Value::Dict(map), &rest[1..]))
            }
            _ => {
                let colon = input.iter().position(|&b| b == b':')?;
                let len: usize = std::str::from_utf8(&input[..colon]).ok()?.parse().ok()?;
                let body = input.get(colon + 1..colon + 1 + len)?;
                Some((Value::Bytes(body.to_vec()), &input[colon + 1 + len..]))
            }
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    fn text(&self) -> String {
        match self {
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        }
    }
}

#[test]
fn bencode_round_trips() {
    let v = Value::dict(&[
        ("command", Value::str("offer")),
        ("n", Value::Int(-3)),
        ("flags", Value::List(vec![Value::str("a"), Value::str("")])),
    ]);
    let mut out = Vec::new();
    v.encode(&mut out);
    assert_eq!(out, b"d7:command5:offer5:flagsl1:a0:e1:ni-3ee".to_vec());
    assert_eq!(Value::decode(&out), Some((v, &b""[..])));
    assert_eq!(Value::decode(b"5:ab"), None);
}

// ---- rtpengine ----

struct Rtpengine {
    child: Child,
    ng: SocketAddr,
    control: StdUdpSocket,
}

impl Rtpengine {
    fn start(port_min: u16, port_max: u16) -> Rtpengine {
        let ng_port = free_udp_port();
        let child = Command::new("rtpengine")
            .args([
                "--config-file=none",
                "--table=-1",
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                "--interface=127.0.0.1",
                &format!("--listen-ng=127.0.0.1:{ng_port}"),
                &format!("--port-min={port_min}"),
                &format!("--port-max={port_max}"),
                "--delete-delay=0",
                "--num-threads=1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rtpengine runs (scripts/install-test-deps.sh installs rtpengine-daemon)");
        let control = StdUdpSocket::bind((LOCALHOST, 0)).expect("bind ng client");
        control
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut engine = Rtpengine {
            child,
            ng: SocketAddr::new(LOCALHOST, ng_port),
            control,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let pong = engine.try_command(&Value::dict(&[("command", Value::str("ping"))]));
            if pong
                .and_then(|r| r.get("result").map(Value::text))
                .as_deref()
                == Some("pong")
            {
                break;
            }
            assert!(Instant::now() < deadline, "rtpengine did not answer ping");
            if let Ok(Some(status)) = engine.child.try_wait() {
                panic!("rtpengine exited: {status}");
            }
        }
        engine
    }

    fn try_command(&mut self, message: &Value) -> Option<Value> {
        let cookie = format!("{:08x}", rand::random::<u32>());
        let mut out = format!("{cookie} ").into_bytes();
        message.encode(&mut out);
        self.control.send_to(&out, self.ng).ok()?;
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = self.control.recv(&mut buf).ok()?;
            let reply = &buf[..n];
            let Some(body) = reply.strip_prefix(format!("{cookie} ").as_bytes()) else {
                continue; // a late answer to an earlier ping
            };
            return Value::decode(body).map(|(v, _)| v);
        }
    }

    fn command(&mut self, message: &Value) -> Value {
        for _ in 0..10 {
            if let Some(reply) = self.try_command(message) {
                let result = reply.get("result").map(Value::text);
                assert_eq!(result.as_deref(), Some("ok"), "rtpengine said {reply:?}");
                return reply;
            }
        }
        panic!("rtpengine did not answer {message:?}");
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    let s = StdUdpSocket::bind((LOCALHOST, 0)).expect("bind");
    s.local_addr().expect("addr").port()
}

/// A random window of `len` loopback UDP ports that were free a moment ago.
fn port_window(len: u16) -> (u16, u16) {
    for _ in 0..50 {
        let min = (10_000 + rand::random::<u16>() % 50_000) & !1;
        let max = min + len - 1;
        if (min..=max).all(|p| StdUdpSocket::bind((LOCALHOST, p)).is_ok()) {
            return (min, max);
        }
    }
    panic!("no free port window");
}

// ---- SDP, as little as the test needs ----

fn sdp(port: u16, profile: &str, crypto: Option<&SrtpKey>) -> String {
    let mut s = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} {profile} 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    );
    if let Some(key) = crypto {
        let inline = base64::engine::general_purpose::STANDARD.encode(key.key_and_salt());
        s.push_str(&format!(
            "a=crypto:1 {} inline:{inline}\r\n",
            key.suite().sdes_name()
        ));
    }
    s
}

fn media_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio port in {sdp}"))
}

fn crypto_key(sdp: &str) -> SrtpKey {
    let line = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=crypto:"))
        .unwrap_or_else(|| panic!("no a=crypto in {sdp}"));
    let mut fields = line.split_whitespace();
    let _tag = fields.next();
    let suite = fields
        .next()
        .and_then(SrtpSuite::from_sdes_name)
        .unwrap_or_else(|| panic!("suite in {line}"));
    let inline = fields
        .next()
        .and_then(|k| k.strip_prefix("inline:"))
        .map(|k| k.split('|').next().unwrap_or(k))
        .unwrap_or_else(|| panic!("inline key in {line}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(inline)
        .expect("base64 key");
    assert_eq!(bytes.len(), 30, "AES_CM_128 key and salt");
    SrtpKey::new(
        suite,
        bytes[..16].try_into().expect("16"),
        bytes[16..].try_into().expect("14"),
    )
}

fn voice(seq: u16, salt: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&(0x5eed_0000u32 | u32::from(salt)).to_be_bytes());
    p.extend((0..160u16).map(|i| (seq as u8) ^ (i as u8) ^ salt));
    p
}

async fn send_stream(from: &UdpSocket, to: SocketAddr, salt: u8) {
    for seq in 0..PACKETS {
        from.send_to(&voice(seq, salt), to).await.expect("send");
        // 2 ms apart: no socket buffer on the way overflows.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn recv_stream(at: &UdpSocket, salt: u8, what: &str) {
    let mut buf = vec![0u8; 2048];
    for seq in 0..PACKETS {
        let n = tokio::time::timeout(Duration::from_secs(3), at.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: packet {seq} did not arrive"))
            .expect("recv");
        let got = &buf[..n];
        let want = voice(seq, salt);
        assert_eq!(
            u16::from_be_bytes([got[2], got[3]]),
            seq,
            "{what}: in order"
        );
        assert_eq!(got, &want[..], "{what}: packet {seq} intact and decrypted");
    }
}

async fn interop(suite: SrtpSuite) {
    let (engine_min, engine_max) = port_window(40);
    let mut engine = Rtpengine::start(engine_min, engine_max);
    let (pool_min, pool_max) = port_window(20);
    let pool = PortPool::new(LOCALHOST, pool_min, pool_max).expect("pool");
    let caller_ports = pool.allocate().expect("caller ports");
    let far_ports = pool.allocate().expect("far ports");
    let (caller_rtp, far_rtp) = (caller_ports.rtp_addr(), far_ports.rtp_addr());

    let phone_a = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind A");
    let phone_b = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind B");
    let b_port = phone_b.local_addr().expect("addr").port();

    // handoff's key for the SRTP leg, offered to rtpengine.
    let send = SrtpKey::generate(suite);
    let call_id = format!("handoff-srtp-{}", rand::random::<u32>());
    let offer = engine.command(&Value::dict(&[
        ("command", Value::str("offer")),
        ("call-id", Value::str(&call_id)),
        ("from-tag", Value::str("handoff")),
        (
            "sdp",
            Value::str(&sdp(far_rtp.port(), "RTP/SAVP", Some(&send))),
        ),
        ("transport-protocol", Value::str("RTP/AVP")),
        ("ICE", Value::str("remove")),
    ]));
    let to_b = offer.get("sdp").map(Value::text).expect("offer SDP");
    assert!(to_b.contains("RTP/AVP"), "plain towards B: {to_b}");
    let engine_plain = SocketAddr::new(LOCALHOST, media_port(&to_b));

    let answer = engine.command(&Value::dict(&[
        ("command", Value::str("answer")),
        ("call-id", Value::str(&call_id)),
        ("from-tag", Value::str("handoff")),
        ("to-tag", Value::str("phone-b")),
        ("sdp", Value::str(&sdp(b_port, "RTP/AVP", None))),
        ("ICE", Value::str("remove")),
    ]));
    let to_handoff = answer.get("sdp").map(Value::text).expect("answer SDP");
    assert!(
        to_handoff.contains("RTP/SAVP"),
        "SRTP towards handoff: {to_handoff}"
    );
    let receive = crypto_key(&to_handoff);
    assert_eq!(receive.suite(), suite);
    let engine_srtp = SocketAddr::new(LOCALHOST, media_port(&to_handoff));

    let a_remote = Remote::new(phone_a.local_addr().expect("addr"));
    let (relay, _events) = MediaRelay::start(
        RelayConfig::default(),
        RelayLeg::new(caller_ports, a_remote),
        RelayLeg::new(far_ports, Remote::new(engine_srtp)).srtp(LegSrtp { receive, send }),
    )
    .expect("relay starts");

    // A -> handoff (encrypts) -> rtpengine (decrypts) -> B, and back.
    let a_to_b = async {
        tokio::join!(
            send_stream(&phone_a, caller_rtp, 0xa1),
            recv_stream(&phone_b, 0xa1, "A to B")
        )
    };
    let b_to_a = async {
        tokio::join!(
            send_stream(&phone_b, engine_plain, 0xb2),
            recv_stream(&phone_a, 0xb2, "B to A")
        )
    };
    tokio::join!(a_to_b, b_to_a);

    let stats = relay.stop().await.expect("stats");
    assert_eq!(stats.far.received.packets, u64::from(PACKETS), "{stats:?}");
    assert_eq!(stats.far.sent.packets, u64::from(PACKETS));
    assert_eq!(stats.far.srtp.auth_failures, 0);
    let _ = engine.try_command(&Value::dict(&[
        ("command", Value::str("delete")),
        ("call-id", Value::str(&call_id)),
        ("from-tag", Value::str("handoff")),
    ]));
}

#[tokio::test]
async fn rtpengine_and_handoff_translate_srtp_80_both_ways() {
    interop(SrtpSuite::AesCm128HmacSha1_80).await;
}

#[tokio::test]
async fn rtpengine_and_handoff_translate_srtp_32_both_ways() {
    interop(SrtpSuite::AesCm128HmacSha1_32).await;
}
