//! Media checks for the integration tests: SDP that went through handoff's
//! relay, and RTP packets to send through it and recognise at the far end.

use handoff::media::sdp::{Direction, SessionDescription};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

/// Asserts that `got` is `original` as handoff's relay rewrites it: the same
/// codecs, rtpmaps and direction, but c= and the audio port handoff's own
/// (127.0.0.1 in tests). Returns the relay address it advertises.
pub fn assert_sdp_relayed(got: &[u8], original: &str, what: &str) -> SocketAddr {
    let got = SessionDescription::parse(got)
        .unwrap_or_else(|e| panic!("{what}: not SDP ({e}): {:?}", String::from_utf8_lossy(got)));
    let orig = SessionDescription::parse(original.as_bytes()).expect("test SDP parses");
    let (g, o) = (
        got.streams().next().expect("an m= line"),
        orig.streams().next().expect("an m= line"),
    );
    let addr = g.connection_address().expect("a connection address");
    assert_eq!(addr.to_string(), "127.0.0.1", "{what}: c= is the relay's");
    assert_ne!(g.port(), 0, "{what}: the stream is live");
    assert_ne!(
        g.port(),
        o.port(),
        "{what}: the port is the relay's, not the peer's"
    );
    assert_eq!(
        g.media().formats(),
        o.media().formats(),
        "{what}: same codecs"
    );
    assert_eq!(g.payload_types(), o.payload_types(), "{what}: same rtpmaps");
    assert_eq!(g.direction(), o.direction(), "{what}: same direction");
    SocketAddr::new(addr, g.port())
}

/// The direction of the first stream of an SDP body.
pub fn direction_of(body: &[u8]) -> Direction {
    SessionDescription::parse(body)
        .expect("SDP")
        .streams()
        .next()
        .expect("an m= line")
        .direction()
}

/// A G.711 RTP packet: PT 0, `seq`, timestamp seq*160, `ssrc`, 160 bytes
/// of payload that encode `seq` and `ssrc` so corruption shows.
pub fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    rtp_pt(0, seq, ssrc)
}

pub fn rtp_pt(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(172);
    p.push(0x80);
    p.push(pt & 0x7f);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..160u32 {
        p.push((i as u8) ^ (seq as u8) ^ (ssrc as u8));
    }
    p
}

/// A minimal RTCP receiver report (RFC 3550 6.4.2) from `ssrc`.
pub fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

/// A media endpoint of a test UA: an RTP socket and the RTCP one above it.
pub struct Phone {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

impl Phone {
    /// Binds an even port and the next one on loopback.
    pub async fn new() -> Phone {
        for _ in 0..100 {
            let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            let port = rtp.local_addr().expect("addr").port();
            if port % 2 != 0 || port == u16::MAX {
                continue;
            }
            if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)).await {
                return Phone { rtp, rtcp };
            }
        }
        panic!("no free even/odd port pair");
    }

    pub fn rtp_port(&self) -> u16 {
        self.rtp.local_addr().expect("addr").port()
    }

    /// `template` with its audio port replaced by this phone's RTP port.
    pub fn sdp(&self, template: &str) -> String {
        let (head, tail) = template.split_once("m=audio ").expect("an audio line");
        let (_, rest) = tail.split_once(' ').expect("a port");
        format!("{head}m=audio {} {rest}", self.rtp_port())
    }

    /// The next datagram on `sock`, or panics after `wait`.
    pub async fn recv(sock: &UdpSocket, wait: Duration, what: &str) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                buf.truncate(n);
                (buf, from)
            }
            _ => panic!("{what}: nothing arrived within {wait:?}"),
        }
    }

    /// Asserts nothing arrives on `sock` for `wait`.
    pub async fn assert_silent(sock: &UdpSocket, wait: Duration, what: &str) {
        let mut buf = [0u8; 2048];
        if let Ok(Ok((n, from))) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            panic!("{what}: {n} bytes arrived from {from}");
        }
    }
}

/// `packet` sent from `from` to the relay port `relay` arrives, unchanged, at `to`.
pub async fn relayed(
    from: &UdpSocket,
    relay: SocketAddr,
    to: &UdpSocket,
    packet: Vec<u8>,
    what: &str,
) {
    from.send_to(&packet, relay).await.expect("send");
    let (p, _) = Phone::recv(to, super::WAIT, what).await;
    assert_eq!(p, packet, "{what}");
}
