//! The relay task: one per call, waiting on the four sockets, the command
//! channel and the silence timer in one hand-written poll (no futures made
//! and dropped per packet). Each wake-up takes up to `BATCH` packets from a
//! ready socket with one `recvmmsg`; a short batch means the socket is
//! drained, so no further receive is needed to find that out.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ipnet::IpNet;
use rtp_rs::RtpReader;
use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

use super::batch::{self, BATCH};
use super::latch::{Latch, Verdict};
use super::pool::PortLease;
use super::srtp::{LegCrypto, Protocol};
use super::stats::{RelayStats, RtpFields, SendStats, SideStats, StreamState};
use super::{MediaEvent, RelayConfig, Remote, Side};
use crate::media::srtp::LegSrtp;

// RFC 3550 6.4: the smallest RTCP packet (an empty receiver report).
const RTCP_MIN_LEN: usize = 8;
// Rounds over the four sockets in one wake-up before yielding to the other
// calls' tasks on this worker, so a flooded call cannot hog it.
const ROUNDS_PER_WAKE: usize = 4;

type Socket = AsyncFd<std::net::UdpSocket>;

/// A leg's sockets, already registered with tokio.
#[derive(Debug)]
pub(crate) struct LegSockets {
    pub(crate) rtp: Socket,
    pub(crate) rtcp: Socket,
    pub(crate) remote: Remote,
    /// Networks besides the SDP address the peer's media may come from.
    pub(crate) allowed: Arc<[IpNet]>,
    /// SRTP keys of the leg; none: plain RTP.
    pub(crate) srtp: Option<LegSrtp>,
    pub(crate) lease: PortLease,
}

#[derive(Debug)]
pub(crate) enum Command {
    SwitchFar {
        far: Box<LegSockets>,
        ack: oneshot::Sender<SideStats>,
    },
    Swap,
    SetRemote {
        side: Side,
        remote: Remote,
    },
    SetSrtp {
        side: Side,
        srtp: Option<LegSrtp>,
    },
    Hold {
        on_hold: bool,
    },
    Ringing,
    Stats {
        ack: oneshot::Sender<RelayStats>,
    },
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rtp,
    Rtcp,
}

#[derive(Debug)]
struct Leg {
    // Sockets before the lease: drop order closes them before the ports are freed.
    rtp: Socket,
    rtcp: Socket,
    rtp_peer: Latch,
    rtcp_peer: Latch,
    stream: StreamState,
    // SRTP contexts of the leg; none: plain RTP, untouched.
    srtp: Option<LegCrypto>,
    stats: SideStats,
    last_rtp: Instant,
    // Whether this peer's RTP has come at all: until it has, the normal
    // timeout applies even on hold (an a=inactive call holds no ports for long).
    flowed: bool,
    _lease: PortLease,
}

impl Leg {
    fn new(s: LegSockets, config: &RelayConfig, now: Instant) -> Self {
        Leg {
            rtp: s.rtp,
            rtcp: s.rtcp,
            rtp_peer: Latch::new(config.latching, s.remote.rtp, s.allowed.clone()),
            rtcp_peer: Latch::new(config.latching, s.remote.rtcp, s.allowed),
            stream: StreamState::new(config.clock_rate, config.telephone_event_pt),
            srtp: s.srtp.as_ref().map(LegCrypto::new),
            stats: SideStats::default(),
            last_rtp: now,
            flowed: false,
            _lease: s.lease,
        }
    }

    fn snapshot(&self) -> SideStats {
        let mut stats = self.stats;
        self.stream.fill(&mut stats.received);
        stats
    }

    fn socket(&self, kind: Kind) -> &Socket {
        match kind {
            Kind::Rtp => &self.rtp,
            Kind::Rtcp => &self.rtcp,
        }
    }
}

pub(crate) struct RelayTask {
    config: RelayConfig,
    caller: Leg,
    far: Leg,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<MediaEvent>,
    on_hold: bool,
    // Not answered yet: the hold timeout applies to both sides.
    ringing: bool,
    // Arrival times for jitter are measured from here.
    epoch: Instant,
}

/// Why the relay loop ended.
enum End {
    Stopped,
    Timeout(Side),
    Failed(io::Error),
}

// The order sockets are served in each round.
const SOCKETS: [(Side, Kind); 4] = [
    (Side::Caller, Kind::Rtp),
    (Side::Far, Kind::Rtp),
    (Side::Caller, Kind::Rtcp),
    (Side::Far, Kind::Rtcp),
];

impl RelayTask {
    pub(crate) fn new(
        config: RelayConfig,
        caller: LegSockets,
        far: LegSockets,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::Sender<MediaEvent>,
    ) -> Self {
        let now = Instant::now();
        RelayTask {
            caller: Leg::new(caller, &config, now),
            far: Leg::new(far, &config, now),
            config,
            commands,
            events,
            on_hold: false,
            ringing: false,
            epoch: now,
        }
    }

    pub(crate) async fn run(mut self) -> RelayStats {
        let timer = tokio::time::sleep_until(self.earliest_deadline());
        tokio::pin!(timer);
        let end = poll_fn(|cx| self.poll_relay(cx, timer.as_mut())).await;
        match end {
            End::Stopped => {}
            End::Timeout(side) => {
                tracing::info!(?side, "no RTP within the media timeout");
                let _ = self.events.send(MediaEvent::Timeout { side }).await;
            }
            End::Failed(e) => tracing::warn!(error = %e, "media socket failed, relay stops"),
        }
        let stats = self.snapshot();
        let RelayTask {
            caller,
            far,
            events,
            ..
        } = self;
        // Free the ports before telling the call the relay has stopped.
        drop((caller, far));
        let _ = events
            .send(MediaEvent::Stopped {
                stats: Box::new(stats),
            })
            .await;
        stats
    }

    // One wake-up: commands first (a switch must not wait behind a packet
    // burst), then the silence timer, then every ready socket, round after
    // round while packets keep coming, at most ROUNDS_PER_WAKE.
    fn poll_relay(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<End> {
        for _ in 0..ROUNDS_PER_WAKE {
            loop {
                match self.commands.poll_recv(cx) {
                    Poll::Ready(None | Some(Command::Stop)) => return Poll::Ready(End::Stopped),
                    Poll::Ready(Some(command)) => {
                        if self.apply(command) {
                            timer.as_mut().reset(self.earliest_deadline());
                        }
                    }
                    Poll::Pending => break,
                }
            }
            if self.silence_timed() {
                while timer.as_mut().poll(cx).is_ready() {
                    match self.silent_side(Instant::now()) {
                        Some(side) => return Poll::Ready(End::Timeout(side)),
                        None => timer.as_mut().reset(self.earliest_deadline()),
                    }
                }
            }
            let mut more = false;
            for (side, kind) in SOCKETS {
                match self.poll_socket(cx, side, kind) {
                    Ok(m) => more |= m,
                    Err(e) => return Poll::Ready(End::Failed(e)),
                }
            }
            if !more {
                // Every socket, the channel and the timer have the waker.
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    // Relay what is queued on one socket. Ok(true): a full batch was taken
    // and more may be waiting (the next round comes back). Ok(false): the
    // socket is drained and its readiness polled again, so the waker is
    // registered for the next packet; a cleared readiness not polled again
    // would never wake the task.
    fn poll_socket(&mut self, cx: &mut Context<'_>, from: Side, kind: Kind) -> io::Result<bool> {
        let (src, dst) = match from {
            Side::Caller => (&mut self.caller, &mut self.far),
            Side::Far => (&mut self.far, &mut self.caller),
        };
        let mut taken = 0;
        while taken < BATCH {
            let mut guard = match src.socket(kind).poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            };
            let received = batch::with_batch(|b| b.recv(guard.get_ref().as_raw_fd()));
            let n = match received {
                // Fewer than asked for: recvmmsg found the queue empty.
                Ok(n) => {
                    if n < BATCH {
                        guard.clear_ready();
                    }
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => {
                    // A transient socket error (say an ICMP report): try
                    // again next round, as the per-packet loop before did.
                    tracing::debug!(error = %e, ?from, "media receive failed");
                    return Ok(true);
                }
            };
            drop(guard);
            let refused_before = src.stats.received.refused;
            let srtp_before = (src.stats.srtp, dst.stats.srtp);
            let now = Instant::now();
            let arrival = now - self.epoch;
            batch::with_batch(|b| {
                for i in 0..b.len() {
                    let d = b.get_mut(i);
                    let Some(source) = d.source.filter(|_| !d.truncated) else {
                        src.stats.received.dropped += 1;
                        continue;
                    };
                    match kind {
                        Kind::Rtp => forward_rtp(src, dst, d.buf, d.len, source, now, arrival),
                        Kind::Rtcp => forward_rtcp(src, dst, d.buf, d.len, source),
                    }
                }
            });
            let refused = src.stats.received.refused - refused_before;
            if refused > 0 {
                if let Some(hook) = &self.config.on_refused {
                    (hook.0)(refused);
                }
            }
            if let Some(hook) = &self.config.on_srtp_dropped {
                for (after, before) in [
                    (src.stats.srtp, srtp_before.0),
                    (dst.stats.srtp, srtp_before.1),
                ] {
                    let grown = after.since(&before);
                    if !grown.is_zero() {
                        (hook.0)(&grown);
                    }
                }
            }
            taken += n;
        }
        Ok(true)
    }

    // Returns whether the silence clocks changed.
    fn apply(&mut self, command: Command) -> bool {
        let now = Instant::now();
        match command {
            Command::SwitchFar { far, ack } => {
                let old = std::mem::replace(&mut self.far, Leg::new(*far, &self.config, now));
                let stats = old.snapshot();
                // Old sockets close (and the pair returns to the pool) before
                // the caller learns the switch is done.
                drop(old);
                tracing::debug!("far leg switched");
                let _ = ack.send(stats);
                true
            }
            Command::Swap => {
                std::mem::swap(&mut self.caller, &mut self.far);
                tracing::debug!("relay sides swapped");
                false
            }
            Command::SetRemote { side, remote } => {
                let leg = self.leg_mut(side);
                leg.rtp_peer.set_expected(remote.rtp);
                leg.rtcp_peer.set_expected(remote.rtcp);
                false
            }
            // New contexts for this side only: the other side's keep their
            // replay windows and rollover counters.
            Command::SetSrtp { side, srtp } => {
                self.leg_mut(side).srtp = srtp.as_ref().map(LegCrypto::new);
                tracing::debug!(?side, srtp = srtp.is_some(), "media keys changed");
                false
            }
            Command::Hold { on_hold } => {
                let changed = on_hold != self.on_hold || self.ringing;
                if changed {
                    self.on_hold = on_hold;
                    self.ringing = false;
                    self.caller.last_rtp = now;
                    self.far.last_rtp = now;
                }
                changed
            }
            Command::Ringing => {
                self.ringing = true;
                self.caller.last_rtp = now;
                self.far.last_rtp = now;
                true
            }
            Command::Stats { ack } => {
                let _ = ack.send(self.snapshot());
                false
            }
            // Handled by the loop.
            Command::Stop => false,
        }
    }

    fn leg_mut(&mut self, side: Side) -> &mut Leg {
        match side {
            Side::Caller => &mut self.caller,
            Side::Far => &mut self.far,
        }
    }

    fn snapshot(&self) -> RelayStats {
        RelayStats {
            caller: self.caller.snapshot(),
            far: self.far.snapshot(),
        }
    }

    // How long `leg` may be silent; zero: for ever.
    fn silence_limit(&self, leg: &Leg) -> Duration {
        silence_limit(&self.config, self.ringing, self.on_hold, leg.flowed)
    }

    // Whether either side has a silence limit now.
    fn silence_timed(&self) -> bool {
        !self.silence_limit(&self.caller).is_zero() || !self.silence_limit(&self.far).is_zero()
    }

    fn sides(&self) -> [(Side, &Leg); 2] {
        [(Side::Caller, &self.caller), (Side::Far, &self.far)]
    }

    fn earliest_deadline(&self) -> Instant {
        self.sides()
            .into_iter()
            .filter_map(|(_, leg)| {
                let limit = self.silence_limit(leg);
                (!limit.is_zero()).then(|| leg.last_rtp + limit)
            })
            .min()
            // No limit: the timer is not polled; any instant will do.
            .unwrap_or_else(|| self.caller.last_rtp + Duration::from_secs(86_400))
    }

    fn silent_side(&self, now: Instant) -> Option<Side> {
        self.sides()
            .into_iter()
            .find(|(_, leg)| {
                let limit = self.silence_limit(leg);
                !limit.is_zero() && now >= leg.last_rtp + limit
            })
            .map(|(side, _)| side)
    }
}

/// How long one side may send no RTP. Ringing (not answered yet): the hold
/// timeout. On hold: the hold timeout, but only for a side whose RTP has
/// flowed; one that never sent any gets the normal timeout, so an offer on
/// hold from the start (`a=inactive`) cannot hold ports for an hour.
fn silence_limit(config: &RelayConfig, ringing: bool, on_hold: bool, flowed: bool) -> Duration {
    if ringing || (on_hold && flowed) {
        config.hold_timeout
    } else {
        config.timeout
    }
}

fn forward_rtp(
    src: &mut Leg,
    dst: &mut Leg,
    buf: &mut [u8],
    len: usize,
    source: SocketAddr,
    now: Instant,
    arrival: Duration,
) {
    let muxed = is_muxed_rtcp(&buf[..len]);
    let protocol = if muxed { Protocol::Rtcp } else { Protocol::Rtp };
    let Some(len) = open(src, Kind::Rtp, protocol, buf, len, source) else {
        return;
    };
    let packet = &buf[..len];
    let Ok(rtp) = RtpReader::new(packet) else {
        src.stats.received.dropped += 1;
        tracing::trace!(%source, "non-RTP datagram on an RTP port dropped");
        return;
    };
    let fields = RtpFields {
        ssrc: rtp.ssrc(),
        seq: rtp.sequence_number().into(),
        timestamp: rtp.timestamp(),
        payload_type: rtp.payload_type(),
    };
    if !latch(src, Kind::Rtp, source) {
        return;
    }
    let received = &mut src.stats.received;
    if muxed {
        received.rtcp_packets += 1;
        received.rtcp_bytes += len as u64;
    } else {
        received.packets += 1;
        received.bytes += len as u64;
        src.stream.update(fields, arrival);
        src.last_rtp = now;
        src.flowed = true;
    }
    seal_and_send(dst, Kind::Rtp, protocol, buf, len);
}

fn forward_rtcp(src: &mut Leg, dst: &mut Leg, buf: &mut [u8], len: usize, source: SocketAddr) {
    let Some(len) = open(src, Kind::Rtcp, Protocol::Rtcp, buf, len, source) else {
        return;
    };
    // RFC 3550 6.4.1: version 2 and at least a header; forwarded as is.
    let valid = len >= RTCP_MIN_LEN && buf[0] >> 6 == 2;
    if !valid {
        src.stats.received.dropped += 1;
        return;
    }
    if !latch(src, Kind::Rtcp, source) {
        return;
    }
    src.stats.received.rtcp_packets += 1;
    src.stats.received.rtcp_bytes += len as u64;
    seal_and_send(dst, Kind::Rtcp, Protocol::Rtcp, buf, len);
}

// The first steps of a packet from `src`: on an SRTP leg, the latch is
// asked (moving nothing) and the packet authenticated and decrypted in
// place before anything else reads it; a plain leg's packet is left as it
// came. The plain length, or None: dropped and counted.
fn open(
    src: &mut Leg,
    kind: Kind,
    protocol: Protocol,
    buf: &mut [u8],
    len: usize,
    source: SocketAddr,
) -> Option<usize> {
    let Some(crypto) = src.srtp.as_mut() else {
        return Some(len);
    };
    let peer = match kind {
        Kind::Rtp => &src.rtp_peer,
        Kind::Rtcp => &src.rtcp_peer,
    };
    if !peer.check(source).accepted() {
        src.stats.received.dropped += 1;
        src.stats.received.refused += 1;
        return None;
    }
    let opened = crypto.open(protocol, &mut buf[..len], &mut src.stats.srtp);
    if opened.is_none() {
        src.stats.received.dropped += 1;
    }
    opened
}

// Strict latching for a valid (on an SRTP leg: authenticated) packet: the
// latch moves here and nowhere else.
fn latch(src: &mut Leg, kind: Kind, source: SocketAddr) -> bool {
    let (peer, what) = match kind {
        Kind::Rtp => (&mut src.rtp_peer, "RTP"),
        Kind::Rtcp => (&mut src.rtcp_peer, "RTCP"),
    };
    if accept(peer, source, what) {
        return true;
    }
    src.stats.received.dropped += 1;
    src.stats.received.refused += 1;
    false
}

// Encrypt for an SRTP leg (in place, the tag into the buffer's spare room),
// then send; a packet that cannot be sealed is not sent plain.
fn seal_and_send(dst: &mut Leg, kind: Kind, protocol: Protocol, buf: &mut [u8], len: usize) {
    let len = match dst.srtp.as_mut() {
        None => len,
        Some(crypto) => match crypto.seal(protocol, buf, len, &mut dst.stats.srtp) {
            Some(sealed) => sealed,
            None => {
                dst.stats.sent.unsent += 1;
                return;
            }
        },
    };
    let (socket, peer) = match kind {
        Kind::Rtp => (&dst.rtp, &dst.rtp_peer),
        Kind::Rtcp => (&dst.rtcp, &dst.rtcp_peer),
    };
    send(
        socket,
        peer.destination(),
        &buf[..len],
        &mut dst.stats.sent,
        kind,
    );
}

fn accept(peer: &mut Latch, source: SocketAddr, what: &'static str) -> bool {
    let verdict = peer.accept(source);
    match verdict {
        Verdict::Accept => {}
        Verdict::Latched => tracing::debug!(%source, what, "latched to peer"),
        Verdict::Refused => {
            tracing::trace!(%source, what, "packet from a source the peer may not use refused")
        }
    }
    verdict.accepted()
}

// RFC 5761 4: RTCP multiplexed on the RTP port has payload types 64-95
// once the marker bit is masked off. It is forwarded, but kept out of the
// RTP sequence statistics.
fn is_muxed_rtcp(packet: &[u8]) -> bool {
    packet
        .get(1)
        .is_some_and(|b| (64..=95).contains(&(b & 0x7f)))
}

// A direct non-blocking sendto: no tokio readiness wait, so a full send
// buffer drops this packet instead of stalling the other direction.
fn send(socket: &Socket, to: Option<SocketAddr>, packet: &[u8], sent: &mut SendStats, kind: Kind) {
    let Some(to) = to else {
        sent.unsent += 1;
        return;
    };
    match SockRef::from(socket.get_ref()).send_to(packet, &to.into()) {
        Ok(_) => match kind {
            Kind::Rtp => {
                sent.packets += 1;
                sent.bytes += packet.len() as u64;
            }
            Kind::Rtcp => {
                sent.rtcp_packets += 1;
                sent.rtcp_bytes += packet.len() as u64;
            }
        },
        Err(e) => {
            sent.unsent += 1;
            tracing::trace!(error = %e, %to, "media send failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_hold_the_long_timeout_is_only_for_a_side_whose_rtp_flowed() {
        let c = RelayConfig {
            timeout: Duration::from_secs(5),
            hold_timeout: Duration::from_secs(3600),
            ..RelayConfig::default()
        };
        let (short, long) = (c.timeout, c.hold_timeout);
        // (ringing, on_hold, flowed) -> limit
        assert_eq!(silence_limit(&c, false, false, false), short);
        assert_eq!(silence_limit(&c, false, false, true), short);
        assert_eq!(
            silence_limit(&c, false, true, false),
            short,
            "held before any RTP"
        );
        assert_eq!(silence_limit(&c, false, true, true), long);
        assert_eq!(silence_limit(&c, true, false, false), long, "ringing");
        assert_eq!(silence_limit(&c, true, true, false), long);
    }

    #[test]
    fn muxed_rtcp_is_recognised_by_payload_type() {
        // 0x80 0xc9: version 2, PT 201 (receiver report).
        assert!(is_muxed_rtcp(&[0x80, 0xc9, 0, 1, 0, 0, 0, 0]));
        assert!(!is_muxed_rtcp(&[0x80, 0x00]));
        assert!(!is_muxed_rtcp(&[0x80, 0x80 | 101]));
        assert!(!is_muxed_rtcp(&[0x80]));
    }
}
