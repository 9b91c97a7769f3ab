//! End-to-end relay tests with real UDP sockets on loopback; a test "phone"
//! is a pair of tokio sockets on port 0. Helpers here, tests by concern in
//! `forwarding` and `lifecycle`.

mod forwarding;
mod lifecycle;
mod srtp;
mod strict;

pub(super) use super::*;
pub(super) use std::sync::Arc;
pub(super) use std::time::Duration;
pub(super) use tokio::net::UdpSocket;
pub(super) use tokio::time::{sleep, timeout, Instant};

use rtp_rs::{RtpPacketBuilder, Seq};
use std::net::{IpAddr, Ipv4Addr};

pub(super) const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub(super) const WAIT: Duration = Duration::from_millis(500);
pub(super) const QUIET: Duration = Duration::from_millis(150);
pub(super) const VOICE_LEN: usize = 12 + 160;

pub(super) async fn bind() -> UdpSocket {
    UdpSocket::bind((LOCALHOST, 0))
        .await
        .expect("bind test socket")
}

pub(super) fn pool(port_min: u16) -> PortPool {
    PortPool::new(LOCALHOST, port_min, port_min + 199).expect("valid range")
}

pub(super) struct Phone {
    pub(super) rtp: Arc<UdpSocket>,
    pub(super) rtcp: Arc<UdpSocket>,
}

impl Phone {
    pub(super) async fn new() -> Phone {
        Phone {
            rtp: Arc::new(bind().await),
            rtcp: Arc::new(bind().await),
        }
    }

    pub(super) fn remote(&self) -> Remote {
        Remote::new(self.rtp.local_addr().expect("addr"))
            .with_rtcp(self.rtcp.local_addr().expect("addr"))
    }
}

/// Addresses handoff offered to each side.
pub(super) struct Call {
    pub(super) relay: MediaRelay,
    pub(super) events: mpsc::Receiver<MediaEvent>,
    pub(super) caller_rtp: SocketAddr,
    pub(super) caller_rtcp: SocketAddr,
    pub(super) far_rtp: SocketAddr,
    pub(super) far_rtcp: SocketAddr,
}

pub(super) fn start(pool: &PortPool, config: RelayConfig, caller: Remote, far: Remote) -> Call {
    let caller_ports = pool.allocate().expect("caller ports");
    let far_ports = pool.allocate().expect("far ports");
    let (caller_rtp, caller_rtcp) = (caller_ports.rtp_addr(), caller_ports.rtcp_addr());
    let (far_rtp, far_rtcp) = (far_ports.rtp_addr(), far_ports.rtcp_addr());
    let (relay, events) = MediaRelay::start(
        config,
        RelayLeg::new(caller_ports, caller),
        RelayLeg::new(far_ports, far),
    )
    .expect("relay starts");
    Call {
        relay,
        events,
        caller_rtp,
        caller_rtcp,
        far_rtp,
        far_rtcp,
    }
}

pub(super) fn rtp(
    seq: u16,
    timestamp: u32,
    payload_type: u8,
    marked: bool,
    payload: &[u8],
) -> Vec<u8> {
    RtpPacketBuilder::new()
        .payload_type(payload_type)
        .marked(marked)
        .ssrc(0x0bad_cafe)
        .sequence(Seq::from(seq))
        .timestamp(timestamp)
        .payload(payload)
        .build()
        .expect("valid RTP packet")
}

/// A PCMU packet whose payload bytes depend on `seq` and `salt`.
pub(super) fn voice(seq: u16, salt: u8) -> Vec<u8> {
    let payload: Vec<u8> = (0..160u16)
        .map(|i| (seq as u8) ^ (i as u8) ^ salt)
        .collect();
    rtp(seq, u32::from(seq) * 160, 0, false, &payload)
}

pub(super) async fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let (len, _) = timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("packet in time")
        .expect("recv");
    buf.truncate(len);
    buf
}

pub(super) async fn assert_silent(socket: &UdpSocket) {
    let mut buf = [0u8; 2048];
    let got = timeout(QUIET, socket.recv_from(&mut buf)).await;
    assert!(got.is_err(), "expected no packet, got {:?}", got);
}

pub(super) async fn send_stream(socket: &UdpSocket, to: SocketAddr, count: u16, salt: u8) {
    for seq in 0..count {
        socket.send_to(&voice(seq, salt), to).await.expect("send");
        // Pace lightly so no socket buffer on loopback overflows.
        if seq % 10 == 9 {
            sleep(Duration::from_millis(1)).await;
        }
    }
}

pub(super) async fn recv_stream(socket: Arc<UdpSocket>, count: u16, salt: u8) {
    for seq in 0..count {
        assert_eq!(
            recv(&socket).await,
            voice(seq, salt),
            "packet {seq} intact and in order"
        );
    }
}
