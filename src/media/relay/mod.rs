//! The in-process RTP/RTCP relay: one `MediaRelay` per call moves packets
//! between the caller leg and the far leg (the AI agent, later the transfer
//! target) on ports from a `PortPool`, untouched, with symmetric latching,
//! a media timeout, per-stream statistics and a one-step switch of the far
//! leg. It knows nothing of SIP or SDP: the call gives it addresses.

mod batch;
mod latch;
mod pool;
mod srtp;
mod stats;
mod task;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use pool::{PoolError, PortPair, PortPool};
pub use stats::{ReceiveStats, RelayStats, SendStats, SideStats, SrtpStats};

use task::{Command, LegSockets, RelayTask};

use super::srtp::LegSrtp;

/// Which of the call's two media sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The original caller (carrier leg).
    Caller,
    /// The other leg: the AI agent, or the transfer target after a switch.
    Far,
}

/// What the relay tells its call.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// No RTP from `side` for the configured timeout; the relay stops next
    /// (a `Stopped` follows) and the call should end with BYE.
    Timeout { side: Side },
    /// The relay has ended (timeout, `stop()`, or the handle was dropped);
    /// its ports are back in the pool. The last event.
    Stopped { stats: Box<RelayStats> },
}

/// Told how many packets a relay refused because they came from a source
/// the leg may not use (strict latching); called once per received batch
/// that had any, never per packet.
#[derive(Clone)]
pub struct OnRefused(pub Arc<dyn Fn(u64) + Send + Sync>);

impl fmt::Debug for OnRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnRefused(..)")
    }
}

/// Told of SRTP packets a relay dropped (failed authentication, replays,
/// SSRCs over the bound, packets it could not protect), as the growth of
/// one side's `SrtpStats`; called once per received batch that had any.
#[derive(Clone)]
pub struct OnSrtpDropped(pub Arc<dyn Fn(&SrtpStats) + Send + Sync>);

impl fmt::Debug for OnSrtpDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnSrtpDropped(..)")
    }
}

/// Relay behaviour for one call (from `[media]` in config.toml).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Symmetric RTP: send to where the peer's packets come from, and once
    /// latched accept nothing else. Latching is strict: only from the
    /// peer's SDP address (any port) or the leg's allowed networks.
    /// Default on.
    pub latching: bool,
    /// No RTP from a side for this long ends the relay; zero disables.
    /// Default 60 s.
    pub timeout: Duration,
    /// The same while the call is on hold (a held side may stay silent),
    /// for a side whose RTP has flowed: a side that never sent any has
    /// `timeout` even on hold. Zero disables. Default 1 hour.
    pub hold_timeout: Duration,
    /// RTP clock rate of the negotiated codec, for jitter. Default 8000 (G.711).
    pub clock_rate: u32,
    /// RFC 4733 telephone-event payload type, left out of jitter. Default 101.
    pub telephone_event_pt: Option<u8>,
    /// Where refused packets are counted (a metric); none by default.
    pub on_refused: Option<OnRefused>,
    /// Where dropped SRTP packets are counted (metrics); none by default.
    pub on_srtp_dropped: Option<OnSrtpDropped>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            latching: true,
            timeout: Duration::from_secs(60),
            hold_timeout: Duration::from_secs(3600),
            clock_rate: 8000,
            telephone_event_pt: Some(101),
            on_refused: None,
            on_srtp_dropped: None,
        }
    }
}

/// A peer's media addresses as its SDP gives them; either may be unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remote {
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
}

impl Remote {
    /// RTP at `rtp`, RTCP on the next port (RFC 3550 11); use `with_rtcp`
    /// when the SDP has `a=rtcp` (RFC 3605).
    pub fn new(rtp: SocketAddr) -> Self {
        let rtcp = rtp
            .port()
            .checked_add(1)
            .map(|port| SocketAddr::new(rtp.ip(), port));
        Remote {
            rtp: Some(rtp),
            rtcp,
        }
    }

    /// No SDP address yet: with latching, the peer's first packet decides.
    pub fn unknown() -> Self {
        Remote::default()
    }

    pub fn with_rtcp(self, rtcp: SocketAddr) -> Self {
        Remote {
            rtcp: Some(rtcp),
            ..self
        }
    }
}

/// One side of a relay: the ports handoff offered to it, the peer's
/// addresses, and the networks besides its SDP address its media may come
/// from (a trunk's media CIDRs; none by default).
#[derive(Debug)]
pub struct RelayLeg {
    ports: PortPair,
    remote: Remote,
    allowed: Arc<[IpNet]>,
    srtp: Option<LegSrtp>,
}

impl RelayLeg {
    pub fn new(ports: PortPair, remote: Remote) -> Self {
        RelayLeg {
            ports,
            remote,
            allowed: Arc::from(Vec::new()),
            srtp: None,
        }
    }

    /// This leg speaks SRTP with these keys (SDES); plain RTP without.
    pub fn srtp(self, srtp: LegSrtp) -> Self {
        RelayLeg {
            srtp: Some(srtp),
            ..self
        }
    }

    /// Also accept (and latch to) sources in `allowed`.
    pub fn allow(self, allowed: Arc<[IpNet]>) -> Self {
        RelayLeg { allowed, ..self }
    }

    // Hand the sockets to tokio; needs a runtime, and says so instead of panicking.
    fn into_sockets(self) -> io::Result<LegSockets> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("no tokio runtime"));
        }
        let (rtp, rtcp, lease) = self.ports.into_parts();
        Ok(LegSockets {
            rtp: register(rtp)?,
            rtcp: register(rtcp)?,
            remote: self.remote,
            allowed: self.allowed,
            srtp: self.srtp,
            lease,
        })
    }
}

// Readable only: the relay sends without waiting for writability.
fn register(socket: std::net::UdpSocket) -> io::Result<AsyncFd<std::net::UdpSocket>> {
    // SAFETY: the UdpSocket owns its descriptor, keeps it open for as long
    // as the AsyncFd holds it, and always returns that same descriptor.
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the media relay: {0}")]
    Socket(#[source] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("cannot switch the far leg: {0}")]
    Socket(#[source] io::Error),
    #[error("cannot switch the far leg: the media relay has stopped")]
    Stopped,
}

/// The relay task is gone (timed out, stopped, or failed).
#[derive(Debug, thiserror::Error)]
#[error("the media relay has stopped")]
pub struct RelayStopped;

// Only Timeout and Stopped are ever sent.
const EVENT_QUEUE: usize = 4;

/// The media of one call. Dropping it stops the relay and frees its ports.
#[derive(Debug)]
pub struct MediaRelay {
    // Unbounded so that the call actor, which never awaits, can command the
    // relay: commands come one per SIP transaction at most, so the queue
    // stays a few entries long.
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<RelayStats>,
}

impl MediaRelay {
    /// Start relaying between `caller` and `far` on a new tokio task. The
    /// receiver yields `MediaEvent`s for the call.
    pub fn start(
        config: RelayConfig,
        caller: RelayLeg,
        far: RelayLeg,
    ) -> Result<(MediaRelay, mpsc::Receiver<MediaEvent>), StartError> {
        let caller = caller.into_sockets().map_err(StartError::Socket)?;
        let far = far.into_sockets().map_err(StartError::Socket)?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::channel(EVENT_QUEUE);
        let task = tokio::spawn(RelayTask::new(config, caller, far, command_rx, events).run());
        Ok((MediaRelay { commands, task }, event_rx))
    }

    /// Point the caller's stream at a new far leg, in one step. The relay
    /// applies commands in order before any further packet, so once this has
    /// returned no packet queued after it reaches the old far leg. The old
    /// leg's final statistics arrive on the returned receiver (drop it if
    /// they are not wanted); its ports are freed when they are sent.
    pub fn switch_far(&self, far: RelayLeg) -> Result<oneshot::Receiver<SideStats>, SwitchError> {
        let far = far.into_sockets().map_err(SwitchError::Socket)?;
        let (ack, done) = oneshot::channel();
        self.commands
            .send(Command::SwitchFar {
                far: Box::new(far),
                ack,
            })
            .map_err(|_| SwitchError::Stopped)?;
        Ok(done)
    }

    /// The two sides change places: what was the caller side is the far side
    /// from now on, with its sockets, latch, keys and statistics. Nothing
    /// moves on the wire; the call uses it when the party a transfer keeps is
    /// on the far side (the callee of an outbound call), so that `switch_far`
    /// replaces the other one.
    pub fn swap_sides(&self) -> Result<(), RelayStopped> {
        self.commands.send(Command::Swap).map_err(|_| RelayStopped)
    }

    /// New SDP addresses for one side (re-INVITE). A changed address
    /// releases that side's latch.
    pub fn set_remote(&self, side: Side, remote: Remote) -> Result<(), RelayStopped> {
        self.commands
            .send(Command::SetRemote { side, remote })
            .map_err(|_| RelayStopped)
    }

    /// New SRTP keys for one side, or plain RTP (`None`): a re-INVITE or
    /// an answer that changed the leg's `a=crypto`. Applied before any
    /// further packet, like every command.
    pub fn set_srtp(&self, side: Side, srtp: Option<LegSrtp>) -> Result<(), RelayStopped> {
        self.commands
            .send(Command::SetSrtp { side, srtp })
            .map_err(|_| RelayStopped)
    }

    /// On hold the longer `hold_timeout` applies to a side whose RTP has
    /// flowed; both sides' silence clocks restart. Ends the ringing phase.
    pub fn hold(&self, on_hold: bool) -> Result<(), RelayStopped> {
        self.commands
            .send(Command::Hold { on_hold })
            .map_err(|_| RelayStopped)
    }

    /// Not answered yet: nobody need talk, `hold_timeout` applies to both
    /// sides (the call's answer timeout bounds this phase) until `hold`.
    pub fn ringing(&self) -> Result<(), RelayStopped> {
        self.commands
            .send(Command::Ringing)
            .map_err(|_| RelayStopped)
    }

    /// Stop relaying now and free the ports, without waiting; the final
    /// statistics follow as `MediaEvent::Stopped` and from `stop()`.
    pub fn halt(&self) {
        let _ = self.commands.send(Command::Stop);
    }

    /// A snapshot of both sides' statistics.
    pub async fn stats(&self) -> Result<RelayStats, RelayStopped> {
        self.request(|ack| Command::Stats { ack }).await
    }

    /// Stop relaying and free the ports; returns the final statistics (also
    /// sent as `MediaEvent::Stopped` unless the relay had already stopped).
    pub async fn stop(self) -> Result<RelayStats, RelayStopped> {
        // An error means the task already ended; its result is still there.
        let _ = self.commands.send(Command::Stop);
        self.task.await.map_err(|_| RelayStopped)
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RelayStopped> {
        let (ack, done) = oneshot::channel();
        self.commands.send(make(ack)).map_err(|_| RelayStopped)?;
        done.await.map_err(|_| RelayStopped)
    }
}
