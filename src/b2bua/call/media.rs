//! A call's side of media anchoring: which relay ports face which leg, and
//! every SDP that crosses the call rewritten to point at them. The relay
//! itself (`media::relay`) knows nothing of SIP; this is where SDP from one
//! leg becomes SDP for another and the relay learns where each peer is.

mod srtp;

use super::Side;
use crate::b2bua::srtp_policy::{LegCrypto, SrtpRefusal};
use crate::config::srtp::SrtpPolicy;
use crate::media::relay::{
    MediaEvent, MediaRelay, PoolError, PortPair, PortPool, ReceiveStats, RelayConfig, RelayLeg,
    RelayStats, Remote, Side as MediaSide, SideStats,
};
use crate::media::sdp::{self, HoldChange, RelayAddrs, SdpError, SessionDescription};
use crate::sip::message::Message;
use bytes::Bytes;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What every call's media shares: the port pool and how relays behave.
pub(in crate::b2bua) struct MediaShared {
    pub pool: PortPool,
    /// The address SDP advertises (`[media] public_ip`, else `ip`).
    pub sdp_ip: IpAddr,
    pub relay: RelayConfig,
    /// For the SRTP counters.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Why a call's media could not be set up; each maps to the caller's answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum MediaError {
    #[error("{0}")]
    Sdp(#[from] SdpError),
    #[error("the offer has no RTP audio stream")]
    NoAudio,
    #[error("body is {0}, not application/sdp")]
    NotSdp(String),
    #[error(transparent)]
    Ports(#[from] PoolError),
    #[error("cannot start the media relay: {0}")]
    Start(String),
    #[error("the offer's media address {0} is outside the trunk's media networks")]
    OutsideMediaNetworks(IpAddr),
    #[error(transparent)]
    Srtp(#[from] SrtpRefusal),
}

impl MediaError {
    /// The SIP status for the leg that sent the offer.
    pub fn status(&self) -> u16 {
        match self {
            MediaError::Sdp(e) => e.status(),
            MediaError::NoAudio | MediaError::OutsideMediaNetworks(_) | MediaError::Srtp(_) => {
                sdp::STATUS_NOT_ACCEPTABLE_HERE
            }
            MediaError::NotSdp(_) => 415,
            MediaError::Ports(_) | MediaError::Start(_) => 503,
        }
    }

    /// Header-safe words for a `Warning` (RFC 3261 20.43) beside a 488.
    pub fn warning(&self) -> Option<&'static str> {
        match self {
            MediaError::Sdp(e) => Some(e.reason()),
            MediaError::NoAudio => Some("No RTP audio stream offered"),
            MediaError::OutsideMediaNetworks(_) => Some("Media address not allowed"),
            MediaError::Srtp(e) => Some(e.reason()),
            _ => None,
        }
    }

    /// The Warning's code (RFC 3261 20.43): 399 but for SRTP refusals.
    pub fn warning_code(&self) -> u16 {
        match self {
            MediaError::Srtp(e) => e.warning_code(),
            _ => 399,
        }
    }
}

/// Whether a message's body is SDP (by its Content-Type, parameters ignored).
pub(super) fn is_sdp(msg: &Message) -> bool {
    msg.header("Content-Type")
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
}

/// A message's body as SDP: refused when it is not `application/sdp` or
/// does not parse (an empty body does not parse).
fn parse_body(msg: &Message) -> Result<SessionDescription, MediaError> {
    if !is_sdp(msg) {
        let ct = msg
            .header("Content-Type")
            .unwrap_or("a body without Content-Type");
        return Err(MediaError::NotSdp(ct.chars().take(64).collect()));
    }
    Ok(SessionDescription::parse(msg.body()).map_err(SdpError::from)?)
}

/// Three legs at most: the caller, the AI agent, the transfer target.
const LEGS: usize = 3;

/// One call's media: the running relay and the SDP state of each leg.
pub(super) struct CallMedia {
    relay: MediaRelay,
    events: Option<mpsc::Receiver<MediaEvent>>,
    sdp_ip: IpAddr,
    /// The relay's RTP port facing each leg.
    facing: [Option<u16>; LEGS],
    /// The leg bridged to the caller, whose peer the relay's far side is.
    far: Side,
    /// Ports for a leg being set up (the transfer target), switched in when
    /// it answers; and the remote its SDP gave.
    pending: Option<(Side, PortPair, Remote)>,
    /// The SDP handoff last sent on each leg (RFC 3264 8: o= continuity).
    sent: [Option<SessionDescription>; LEGS],
    /// The SDP last received from each leg (hold detection).
    received: [Option<SessionDescription>; LEGS],
    /// The index of the m= line the relay anchors.
    stream: Option<usize>,
    on_hold: bool,
    /// Not answered yet: the relay has the long timeout, hold changes wait.
    ringing: bool,
    /// Where each leg's media may come from besides its SDP address (the
    /// caller's trunk's media networks); when not empty its offers must lie
    /// inside (else 488).
    networks: [Arc<[IpNet]>; LEGS],
    /// Each leg's SDES state (`srtp_policy`): its policy, keys and pending offers.
    crypto: [LegCrypto; LEGS],
    /// The statistics of far legs a transfer replaced, sent back by the relay
    /// (one per completed transfer, so bounded by the call's transfers).
    released: Vec<oneshot::Receiver<SideStats>>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Whether an SDP's anchored stream points inside `networks`: an empty list
/// allows any address, and so does a stream with no live address (rejected,
/// `c=0.0.0.0` hold), which the relay never sends to.
pub(super) fn offer_within(sdp: &SessionDescription, stream: usize, networks: &[IpNet]) -> bool {
    if networks.is_empty() {
        return true;
    }
    let Some(remote) = remote_of(sdp, stream) else {
        return true;
    };
    [remote.rtp, remote.rtcp].into_iter().flatten().all(|a| {
        let ip = a.ip().to_canonical();
        networks.iter().any(|n| n.contains(&ip))
    })
}

impl CallMedia {
    /// Ports for the caller and the AI agent, and a relay between them. The
    /// relay starts ringing (the long silence timeout): nobody need talk
    /// until the AI agent answers. The caller's media may also come from
    /// `caller_networks` (its trunk's media CIDRs).
    pub fn start(
        shared: &MediaShared,
        caller_networks: Arc<[IpNet]>,
        caller_srtp: SrtpPolicy,
        ai_srtp: SrtpPolicy,
    ) -> Result<CallMedia, MediaError> {
        let caller = shared.pool.allocate()?;
        let ai = shared.pool.allocate()?;
        let mut facing = [None; LEGS];
        facing[Side::Caller as usize] = Some(caller.rtp_port());
        facing[Side::Ai as usize] = Some(ai.rtp_port());
        let (relay, events) = MediaRelay::start(
            shared.relay.clone(),
            RelayLeg::new(caller, Remote::unknown()).allow(caller_networks.clone()),
            RelayLeg::new(ai, Remote::unknown()),
        )
        .map_err(|e| MediaError::Start(e.to_string()))?;
        let _ = relay.ringing();
        Ok(CallMedia {
            relay,
            events: Some(events),
            sdp_ip: shared.sdp_ip,
            facing,
            far: Side::Ai,
            pending: None,
            sent: Default::default(),
            received: Default::default(),
            stream: None,
            on_hold: false,
            ringing: true,
            networks: [caller_networks, Arc::from([]), Arc::from([])],
            crypto: [
                LegCrypto::new(caller_srtp),
                LegCrypto::new(ai_srtp),
                LegCrypto::new(SrtpPolicy::Off),
            ],
            released: Vec::new(),
            metrics: shared.metrics.clone(),
        })
    }

    /// The body of `msg`, received on leg `from`, rewritten for leg `to`.
    /// `None` when it has no body. An SDP body is parsed, the sender's
    /// address given to the relay, hold followed, and the copy for `to`
    /// points at the relay's ports facing `to`.
    pub fn rewrite(
        &mut self,
        from: Side,
        to: Side,
        msg: &Message,
    ) -> Result<Option<Bytes>, MediaError> {
        if msg.body().is_empty() {
            return Ok(None);
        }
        let sdp = parse_body(msg)?;
        let stream = match self.stream {
            Some(i) if i < sdp.media().len() => i,
            Some(_) => return Err(MediaError::NoAudio),
            None => sdp::audio_stream(&sdp).ok_or(MediaError::NoAudio)?,
        };
        if !offer_within(&sdp, stream, &self.networks[from as usize]) {
            let ip = sdp
                .streams()
                .nth(stream)
                .and_then(|s| s.connection_address());
            return Err(MediaError::OutsideMediaNetworks(
                ip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            ));
        }
        let secured = self.crypto_for(from, to, msg, &sdp, stream)?;
        self.stream = Some(stream);
        let out = self.for_leg(to, &secured, stream)?;
        self.learn(from, &sdp, stream);
        Ok(Some(Bytes::from(out.to_bytes())))
    }

    /// `sdp` (already cut to its anchored stream) pointed at our ports facing `to`.
    fn for_leg(
        &mut self,
        to: Side,
        sdp: &SessionDescription,
        stream: usize,
    ) -> Result<SessionDescription, MediaError> {
        let sdp = sdp::only_stream(sdp, stream);
        let port = self.facing[to as usize].unwrap_or(0);
        let mut ports = vec![0; sdp.media().len()];
        ports[stream] = port;
        let addrs = RelayAddrs {
            ip: self.sdp_ip,
            ports,
        };
        let out = sdp::rewrite_for_relay(&sdp, &addrs, self.sent[to as usize].as_ref())
            .map_err(|e| MediaError::Start(e.to_string()))?;
        self.sent[to as usize] = Some(out.clone());
        Ok(out)
    }

    /// What an SDP from `from` tells the relay: where that peer is, and hold.
    fn learn(&mut self, from: Side, sdp: &SessionDescription, stream: usize) {
        let remote = remote_of(sdp, stream);
        let change = sdp::hold_change(self.received[from as usize].as_ref(), sdp);
        self.received[from as usize] = Some(sdp.clone());
        match change {
            HoldChange::Hold => self.set_hold(true),
            HoldChange::Resume => self.set_hold(false),
            HoldChange::Unchanged => {}
        }
        let Some(remote) = remote else { return };
        if from == Side::Caller {
            let _ = self.relay.set_remote(MediaSide::Caller, remote);
        } else if from == self.far {
            let _ = self.relay.set_remote(MediaSide::Far, remote);
        } else if let Some((side, _, pending)) = self.pending.as_mut() {
            if *side == from {
                *pending = remote;
            }
        }
    }

    /// The new leg's SDP answer (in its 2xx): where its peer is, before the
    /// switch. Nothing is sent on: the caller keeps its own session.
    pub fn learn_answer(&mut self, from: Side, msg: &Message) -> Result<(), MediaError> {
        let answer = parse_body(msg)?;
        let stream = self.stream.ok_or(MediaError::NoAudio)?;
        if answer.streams().nth(stream).is_none_or(|s| s.is_rejected()) {
            return Err(MediaError::NoAudio);
        }
        self.answer_crypto(from, &answer, stream)?;
        self.learn(from, &answer, stream);
        Ok(())
    }

    /// The call is answered: media is expected from now on, unless an SDP
    /// said the call is on hold.
    pub fn answered(&mut self) {
        let held = self
            .received
            .iter()
            .flatten()
            .any(SessionDescription::is_hold);
        // Always told: this also ends the relay's ringing phase.
        self.ringing = false;
        self.on_hold = held;
        let _ = self.relay.hold(held);
    }

    fn set_hold(&mut self, on: bool) {
        if on != self.on_hold {
            self.on_hold = on;
            if !self.ringing {
                let _ = self.relay.hold(on);
            }
        }
    }

    /// Ports for a new leg (the transfer target) and the SDP offer for it:
    /// the caller's stream restricted to `codecs` (when not empty)
    /// intersected with what the caller leg negotiated.
    pub fn offer_for_new_leg(
        &mut self,
        pool: &PortPool,
        leg: Side,
        codecs: &[String],
        srtp: SrtpPolicy,
    ) -> Result<Bytes, MediaError> {
        let stream = self.stream.ok_or(MediaError::NoAudio)?;
        let caller = self.received[Side::Caller as usize]
            .clone()
            .ok_or(MediaError::NoAudio)?;
        let negotiated = self.sent[Side::Caller as usize]
            .as_ref()
            .map(|s| sdp::codec_names(s, stream))
            .unwrap_or_default();
        let allowed: Vec<&str> = negotiated
            .iter()
            .map(String::as_str)
            .filter(|n| codecs.is_empty() || codecs.iter().any(|c| c.eq_ignore_ascii_case(n)))
            .collect();
        let offer = sdp::filter_codecs(&caller, &allowed).map_err(SdpError::from)?;
        let offer = self.offer_crypto(leg, srtp, &offer, stream);
        // A fresh leg: a fresh o= of its own, not a version of another leg's.
        self.sent[leg as usize] = None;
        self.received[leg as usize] = None;
        let ports = pool.allocate()?;
        self.facing[leg as usize] = Some(ports.rtp_port());
        self.pending = Some((leg, ports, Remote::unknown()));
        let out = self.for_leg(leg, &offer, stream)?;
        Ok(Bytes::from(out.to_bytes()))
    }

    /// The new leg failed: its ports go back to the pool.
    pub fn drop_new_leg(&mut self, leg: Side) {
        if self.pending.as_ref().is_some_and(|(s, _, _)| *s == leg) {
            self.pending = None;
            self.facing[leg as usize] = None;
            self.crypto[leg as usize] = LegCrypto::new(SrtpPolicy::Off);
        }
    }

    /// The new leg answered: the caller's stream goes to it in one step. The
    /// old far leg's statistics come back later, and count at [`Self::finish`].
    /// False when the switch could not be made.
    pub fn switch_to(&mut self, leg: Side) -> bool {
        let Some((side, ports, remote)) = self.pending.take().filter(|(s, _, _)| *s == leg) else {
            return false;
        };
        let mut far = RelayLeg::new(ports, remote);
        if let Some(keys) = self.keys_of(side) {
            far = far.srtp(keys);
        }
        match self.relay.switch_far(far) {
            Ok(rx) => {
                self.facing[self.far as usize] = None;
                self.far = side;
                self.released.push(rx);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "media switch failed");
                false
            }
        }
    }

    /// The caller leg and the AI leg change places, in the relay too: on an
    /// outbound call the AI agent's REFER keeps the callee (the AI leg) and
    /// moves it to the target as a caller is moved. Everything a leg owns
    /// goes with it: its ports, SDP history, keys and media networks. False
    /// (nothing changed) while a new leg is pending or the relay has stopped.
    pub fn swap_caller_and_ai(&mut self) -> bool {
        if self.pending.is_some() || self.far != Side::Ai || self.relay.swap_sides().is_err() {
            return false;
        }
        let (c, a) = (Side::Caller as usize, Side::Ai as usize);
        self.facing.swap(c, a);
        self.sent.swap(c, a);
        self.received.swap(c, a);
        self.networks.swap(c, a);
        self.crypto.swap(c, a);
        true
    }

    /// The relay's next event; pending forever once it has stopped.
    pub async fn next_event(&mut self) -> MediaEvent {
        if let Some(rx) = self.events.as_mut() {
            if let Some(ev) = rx.recv().await {
                return ev;
            }
            self.events = None;
        }
        std::future::pending().await
    }

    /// Stop relaying now (the call is over); the ports are freed at once.
    pub fn halt(&self) {
        self.relay.halt();
    }

    /// Stop and collect the final statistics, and those of every far leg a
    /// transfer released (the relay answered each before it stopped).
    pub async fn finish(self) -> (Option<RelayStats>, Vec<SideStats>) {
        let stats = self.relay.stop().await.ok();
        let mut released = Vec::with_capacity(self.released.len());
        for rx in self.released {
            if let Ok(s) = rx.await {
                released.push(s);
            }
        }
        (stats, released)
    }
}

/// The RTP (and RTCP) address an SDP gives for one stream; none for a
/// rejected stream or an RFC 2543 hold (`c=0.0.0.0`), which keep the old one.
fn remote_of(sdp: &SessionDescription, stream: usize) -> Option<Remote> {
    let s = sdp.streams().nth(stream)?;
    let ip = s.connection_address()?;
    if s.is_rejected() || ip.is_unspecified() {
        return None;
    }
    let rtp = SocketAddr::new(ip, s.port());
    let mut remote = Remote::new(rtp);
    if let Some(port) = s.rtcp_port() {
        let rtcp_ip = s.rtcp_address().unwrap_or(ip);
        remote = remote.with_rtcp(SocketAddr::new(rtcp_ip, port));
    }
    Some(remote)
}

/// Adds one leg's received media to the relay totals.
fn add_received(metrics: &crate::metrics::Metrics, r: &ReceiveStats) {
    use crate::metrics::Metrics;
    Metrics::add(&metrics.rtp_packets_relayed_total, r.packets);
    Metrics::add(&metrics.rtp_bytes_relayed_total, r.bytes);
    Metrics::add(&metrics.rtp_packets_lost_total, r.lost);
    Metrics::add(&metrics.rtcp_packets_relayed_total, r.rtcp_packets);
}

/// Adds the statistics of a far leg a transfer released (the AI agent's, for
/// one) to the totals and logs them.
pub(super) fn record_released(metrics: &crate::metrics::Metrics, stats: &SideStats) {
    let r = &stats.received;
    add_received(metrics, r);
    tracing::info!(
        packets = r.packets,
        lost = r.lost,
        jitter_ms = r.jitter_ms,
        dropped = r.dropped,
        refused = r.refused,
        "media stats of a released leg"
    );
}

/// Adds a finished call's relay statistics to the totals and logs them.
pub(super) fn record_stats(metrics: &crate::metrics::Metrics, stats: &RelayStats) {
    let (c, f) = (&stats.caller.received, &stats.far.received);
    add_received(metrics, c);
    add_received(metrics, f);
    tracing::info!(
        caller_packets = c.packets,
        caller_lost = c.lost,
        caller_jitter_ms = c.jitter_ms,
        caller_dropped = c.dropped,
        far_packets = f.packets,
        far_lost = f.lost,
        far_jitter_ms = f.jitter_ms,
        far_dropped = f.dropped,
        caller_refused = c.refused,
        far_refused = f.refused,
        "media stats"
    );
}

/// The explanation a media error's response carries.
pub(super) fn describe_error(e: &MediaError, resp: &mut Message, agent: &str) {
    match e {
        MediaError::NotSdp(_) => resp.push("Accept", "application/sdp"),
        _ => {
            if let Some(w) = e.warning() {
                // RFC 3261 20.43: code, agent (a token here), quoted text.
                let agent: String = agent
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(*c))
                    .collect();
                let agent = if agent.is_empty() {
                    "handoff".into()
                } else {
                    agent
                };
                let code = e.warning_code();
                resp.push("Warning", format!("{code} {agent} \"{w}\""));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(c: &str, rtcp: Option<&str>) -> SessionDescription {
        let rtcp = rtcp.map_or(String::new(), |a| format!("a=rtcp:4001 IN IP4 {a}\r\n"));
        let text = format!(
            "v=0\r\no=- 1 1 IN IP4 {c}\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0\r\n{rtcp}a=rtpmap:0 PCMU/8000\r\n"
        );
        SessionDescription::parse(text.as_bytes()).expect("test SDP parses")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("CIDR")).collect()
    }

    #[test]
    fn an_offer_is_checked_against_the_trunks_media_networks() {
        let twilio = nets(&["168.86.128.0/18"]);
        assert!(offer_within(&offer("168.86.130.7", None), 0, &twilio));
        assert!(!offer_within(&offer("198.51.100.7", None), 0, &twilio));
        // Edges of the /18: 168.86.128.0 - 168.86.191.255.
        assert!(offer_within(&offer("168.86.191.255", None), 0, &twilio));
        assert!(!offer_within(&offer("168.86.192.0", None), 0, &twilio));
        // An a=rtcp address outside counts too: the relay would send there.
        assert!(!offer_within(
            &offer("168.86.130.7", Some("198.51.100.7")),
            0,
            &twilio
        ));
    }

    #[test]
    fn no_networks_allow_any_offer_and_a_hold_address_is_not_checked() {
        assert!(offer_within(&offer("198.51.100.7", None), 0, &[]));
        // RFC 2543 hold: nothing is ever sent to 0.0.0.0.
        assert!(offer_within(
            &offer("0.0.0.0", None),
            0,
            &nets(&["10.0.0.0/8"])
        ));
    }

    #[test]
    fn an_offer_outside_the_networks_gets_488_with_a_warning() {
        let e = MediaError::OutsideMediaNetworks("198.51.100.7".parse().expect("ip"));
        assert_eq!(e.status(), 488);
        assert_eq!(e.warning(), Some("Media address not allowed"));
        assert!(e.to_string().contains("198.51.100.7"));
    }
}
