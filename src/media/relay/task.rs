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
use std::task::{Context, Poll};
use std::time::Duration;

use rtp_rs::RtpReader;
use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

use super::batch::{self, BATCH};
use super::latch::Latch;
use super::pool::PortLease;
use super::stats::{RelayStats, RtpFields, SendStats, SideStats, StreamState};
use super::{MediaEvent, RelayConfig, Remote, Side};

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
    pub(crate) lease: PortLease,
}

#[derive(Debug)]
pub(crate) enum Command {
    SwitchFar {
        far: Box<LegSockets>,
        ack: oneshot::Sender<SideStats>,
    },
    SetRemote {
        side: Side,
        remote: Remote,
    },
    Hold {
        on_hold: bool,
    },
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
    stats: SideStats,
    last_rtp: Instant,
    _lease: PortLease,
}

impl Leg {
    fn new(s: LegSockets, config: &RelayConfig, now: Instant) -> Self {
        Leg {
            rtp: s.rtp,
            rtcp: s.rtcp,
            rtp_peer: Latch::new(config.latching, s.remote.rtp),
            rtcp_peer: Latch::new(config.latching, s.remote.rtcp),
            stream: StreamState::new(config.clock_rate, config.telephone_event_pt),
            stats: SideStats::default(),
            last_rtp: now,
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
            if !self.silence_limit().is_zero() {
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
            let now = Instant::now();
            let arrival = now - self.epoch;
            batch::with_batch(|b| {
                for i in 0..b.len() {
                    let d = b.get(i);
                    let Some(source) = d.source.filter(|_| !d.truncated) else {
                        src.stats.received.dropped += 1;
                        continue;
                    };
                    match kind {
                        Kind::Rtp => forward_rtp(src, dst, d.data, source, now, arrival),
                        Kind::Rtcp => forward_rtcp(src, dst, d.data, source),
                    }
                }
            });
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
            Command::SetRemote { side, remote } => {
                let leg = self.leg_mut(side);
                leg.rtp_peer.set_expected(remote.rtp);
                leg.rtcp_peer.set_expected(remote.rtcp);
                false
            }
            Command::Hold { on_hold } => {
                let changed = on_hold != self.on_hold;
                if changed {
                    self.on_hold = on_hold;
                    self.caller.last_rtp = now;
                    self.far.last_rtp = now;
                }
                changed
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

    fn silence_limit(&self) -> Duration {
        if self.on_hold {
            self.config.hold_timeout
        } else {
            self.config.timeout
        }
    }

    fn earliest_deadline(&self) -> Instant {
        self.caller.last_rtp.min(self.far.last_rtp) + self.silence_limit()
    }

    fn silent_side(&self, now: Instant) -> Option<Side> {
        let limit = self.silence_limit();
        [(Side::Caller, &self.caller), (Side::Far, &self.far)]
            .into_iter()
            .find(|(_, leg)| now >= leg.last_rtp + limit)
            .map(|(side, _)| side)
    }
}

fn forward_rtp(
    src: &mut Leg,
    dst: &mut Leg,
    packet: &[u8],
    source: SocketAddr,
    now: Instant,
    arrival: Duration,
) {
    let Ok(rtp) = RtpReader::new(packet) else {
        src.stats.received.dropped += 1;
        tracing::trace!(%source, "non-RTP datagram on an RTP port dropped");
        return;
    };
    if !accept(&mut src.rtp_peer, source, "RTP") {
        src.stats.received.dropped += 1;
        return;
    }
    let received = &mut src.stats.received;
    if is_muxed_rtcp(packet) {
        received.rtcp_packets += 1;
        received.rtcp_bytes += packet.len() as u64;
    } else {
        received.packets += 1;
        received.bytes += packet.len() as u64;
        let fields = RtpFields {
            ssrc: rtp.ssrc(),
            seq: rtp.sequence_number().into(),
            timestamp: rtp.timestamp(),
            payload_type: rtp.payload_type(),
        };
        src.stream.update(fields, arrival);
        src.last_rtp = now;
    }
    send(
        &dst.rtp,
        dst.rtp_peer.destination(),
        packet,
        &mut dst.stats.sent,
        Kind::Rtp,
    );
}

fn forward_rtcp(src: &mut Leg, dst: &mut Leg, packet: &[u8], source: SocketAddr) {
    // RFC 3550 6.4.1: version 2 and at least a header; forwarded as is.
    let valid = packet.len() >= RTCP_MIN_LEN && packet[0] >> 6 == 2;
    if !valid || !accept(&mut src.rtcp_peer, source, "RTCP") {
        src.stats.received.dropped += 1;
        return;
    }
    src.stats.received.rtcp_packets += 1;
    src.stats.received.rtcp_bytes += packet.len() as u64;
    send(
        &dst.rtcp,
        dst.rtcp_peer.destination(),
        packet,
        &mut dst.stats.sent,
        Kind::Rtcp,
    );
}

fn accept(peer: &mut Latch, source: SocketAddr, what: &'static str) -> bool {
    let was_latched = peer.latched().is_some();
    let accepted = peer.accept(source);
    if !accepted {
        tracing::trace!(%source, what, "packet from an unexpected source dropped");
    } else if !was_latched && peer.latched().is_some() {
        tracing::debug!(%source, what, "latched to peer");
    }
    accepted
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
    fn muxed_rtcp_is_recognised_by_payload_type() {
        // 0x80 0xc9: version 2, PT 201 (receiver report).
        assert!(is_muxed_rtcp(&[0x80, 0xc9, 0, 1, 0, 0, 0, 0]));
        assert!(!is_muxed_rtcp(&[0x80, 0x00]));
        assert!(!is_muxed_rtcp(&[0x80, 0x80 | 101]));
        assert!(!is_muxed_rtcp(&[0x80]));
    }
}
