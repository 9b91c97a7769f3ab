//! The torture corpus against a running handoff: every raw message in `sip-fixtures/`
//! goes out on its own UDP socket and on its own TCP connection, and what comes back
//! is held to `sip-fixtures/EXPECTED.toml` (accepted and answered with a status,
//! refused with 400/416/505 and the problem in the reason phrase, or dropped). After
//! the whole corpus handoff still answers an OPTIONS, and the malformed-answer counter
//! matches the refusals.

mod common;

use common::{handoff_addr, Rig, Transport};
use handoff::metrics::Metrics;
use handoff::sip::transport::{Frame, Framer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long an answer may take; how long silence must last to count as a drop.
const ANSWER: Duration = Duration::from_secs(2);
const SILENCE: Duration = Duration::from_millis(400);

/// The sent-by every fixture names; rewritten to the sending socket's address.
const SENT_BY: &[u8] = b"127.0.0.1:5070";

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Outcome {
    expect: Expect,
    status: Option<u16>,
    reason: Option<String>,
    #[serde(default)]
    closes: bool,
    #[allow(dead_code)]
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[allow(dead_code)]
    source: String,
    #[serde(flatten)]
    udp: Outcome,
    tcp: Option<Outcome>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Accept,
    Reject,
    Drop,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sip-fixtures")
}

fn manifest() -> BTreeMap<String, Entry> {
    let text = std::fs::read_to_string(fixture_dir().join("EXPECTED.toml")).expect("manifest");
    toml::from_str(&text).unwrap_or_else(|e| panic!("EXPECTED.toml: {e}"))
}

/// Every fixture file has an entry and every entry a file.
#[test]
fn manifest_covers_every_fixture() {
    let m = manifest();
    let files: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("sip-fixtures/")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .filter(|n| n.ends_with(".sip"))
        .collect();
    for f in &files {
        assert!(m.contains_key(f), "{f} has no entry in EXPECTED.toml");
    }
    for (name, e) in &m {
        assert!(
            files.contains(name),
            "EXPECTED.toml names {name}, not a file"
        );
        for o in std::iter::once(&e.udp).chain(e.tcp.as_ref()) {
            match o.expect {
                Expect::Accept => assert!(o.status.is_some(), "{name}: accept needs status"),
                Expect::Reject => assert!(
                    o.status.is_some() && o.reason.is_some(),
                    "{name}: reject needs status and reason"
                ),
                Expect::Drop => assert!(o.status.is_none(), "{name}: drop has no status"),
            }
        }
    }
    assert!(m.len() >= 60, "only {} fixtures", m.len());
}

fn load(name: &str, local: SocketAddr) -> Vec<u8> {
    let raw = std::fs::read(fixture_dir().join(name)).expect("fixture");
    let addr = local.to_string().into_bytes();
    let mut out = Vec::with_capacity(raw.len() + 16);
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with(SENT_BY) {
            out.extend_from_slice(&addr);
            i += SENT_BY.len();
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

/// A response's status and reason phrase. Read from its status line only: a 400 echoes
/// the malformed headers it refuses (a bad CSeq, say), so it need not parse itself.
#[derive(Debug)]
struct Answer {
    status: u16,
    reason: String,
}

fn status_line(name: &str, data: &[u8]) -> Answer {
    let line = data.split(|b| *b == b'\r').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.splitn(3, ' ');
    let (Some("SIP/2.0"), Some(code), reason) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{name}: handoff's answer is not a response: {line:?}");
    };
    Answer {
        status: code
            .parse()
            .unwrap_or_else(|_| panic!("{name}: status {code:?}")),
        reason: reason.unwrap_or("").to_owned(),
    }
}

/// What one fixture got back: the first answer, and (TCP) whether the connection was
/// closed by handoff within the wait.
struct Got {
    answer: Option<Answer>,
    closed: bool,
}

async fn over_udp(handoff: SocketAddr, name: &str, wait: Duration) -> Got {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let data = load(name, sock.local_addr().expect("addr"));
    sock.send_to(&data, handoff).await.expect("send");
    let mut buf = vec![0u8; 65536];
    let answer = match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(status_line(name, &buf[..n])),
        _ => None,
    };
    Got {
        answer,
        closed: false,
    }
}

async fn over_tcp(handoff: SocketAddr, name: &str, wait: Duration, closes: bool) -> Got {
    let mut conn = TcpStream::connect(handoff).await.expect("connect");
    let data = load(name, conn.local_addr().expect("addr"));
    conn.write_all(&data).await.expect("write");
    let mut framer = Framer::new(65536);
    let until = Instant::now() + wait;
    let mut answer = None;
    let mut closed = false;
    while answer.is_none() || (closes && !closed) {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read_buf(framer.buffer_mut())).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {}
        }
        while let Ok(Some(frame)) = framer.next_frame() {
            if let (Frame::Message(m), None) = (frame, &answer) {
                answer = Some(status_line(name, &m));
            }
        }
    }
    Got { answer, closed }
}

fn check(name: &str, t: Transport, want: &Outcome, got: &Got) -> Result<(), String> {
    let line = got
        .answer
        .as_ref()
        .map(|m| format!("{} {}", m.status, m.reason));
    let fail = |what: &str| Err(format!("{name} over {t:?}: {what}, got {line:?}"));
    match (want.expect, &got.answer) {
        (Expect::Drop, None) => {}
        (Expect::Drop, Some(_)) => return fail("expected no answer"),
        (_, None) => return fail(&format!("expected {:?}", want.status)),
        (_, Some(m)) => {
            if Some(m.status) != want.status {
                return fail(&format!("expected status {:?}", want.status));
            }
            if let Some(reason) = &want.reason {
                if !m.reason.contains(reason.as_str()) {
                    return fail(&format!("expected {reason:?} in the reason phrase"));
                }
            }
        }
    }
    if t == Transport::Tcp && want.closes && !got.closed {
        return fail("expected the connection to be closed");
    }
    if t == Transport::Tcp && !want.closes && got.closed && want.expect != Expect::Drop {
        return fail("the connection was closed");
    }
    Ok(())
}

async fn run_corpus(t: Transport) {
    let rig = Rig::new(t, "").await;
    let handoff = handoff_addr(&rig.server, t);
    let mut failures = Vec::new();
    let mut refused = 0;
    for (name, entry) in manifest() {
        let want = match t {
            Transport::Tcp | Transport::Tls => entry.tcp.clone().unwrap_or(entry.udp.clone()),
            Transport::Udp => entry.udp.clone(),
        };
        let wait = if want.expect == Expect::Drop && !want.closes {
            SILENCE
        } else {
            ANSWER
        };
        let got = match t {
            Transport::Udp => over_udp(handoff, &name, wait).await,
            Transport::Tcp => over_tcp(handoff, &name, wait, want.closes).await,
            Transport::Tls => panic!("the torture corpus runs over UDP and TCP"),
        };
        if want.expect == Expect::Reject {
            refused += 1;
        }
        if let Err(e) = check(&name, t, &want, &got) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Still serving, and every refusal counted.
    let alive = over_udp_or_tcp(t, handoff).await;
    assert_eq!(alive.map(|m| m.status), Some(200), "no 200 to OPTIONS");
    let answered = Metrics::get(&rig.server.metrics().sip_malformed_answered_total);
    assert_eq!(answered, refused, "sip_malformed_answered_total");
    let text = rig.server.metrics().render_prometheus();
    assert!(
        text.contains(&format!("handoff_sip_malformed_answered_total {refused}")),
        "{text}"
    );
}

async fn over_udp_or_tcp(t: Transport, handoff: SocketAddr) -> Option<Answer> {
    let got = match t {
        Transport::Udp => over_udp(handoff, "valid_folded_headers.sip", ANSWER).await,
        Transport::Tcp => over_tcp(handoff, "valid_folded_headers.sip", ANSWER, false).await,
        Transport::Tls => panic!("the torture corpus runs over UDP and TCP"),
    };
    got.answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_corpus_over_udp() {
    common::bounded(Duration::from_secs(120), run_corpus(Transport::Udp)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_corpus_over_tcp() {
    common::bounded(Duration::from_secs(120), run_corpus(Transport::Tcp)).await;
}
