//! What the relay does to SDP: point it at handoff's own ports, restrict its
//! codecs, and the RFC 3264 offer/answer decisions around hold.

use std::net::IpAddr;

use super::{Attribute, Connection, Direction, MediaDescription, SessionDescription};

/// handoff's side of the relay on one leg: the address to advertise and the
/// RTP port for each m= line, in order (RTCP is on port + 1). The port given
/// for a rejected (port 0) m= line is ignored: it stays 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAddrs {
    pub ip: IpAddr,
    pub ports: Vec<u16>,
}

/// A caller bug, not the peer's: never answered with 488.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("SDP has {media} m= lines but {ports} relay ports were given")]
    PortCountMismatch { media: usize, ports: usize },
    #[error("relay port {port} leaves no room for RTCP on port + 1")]
    NoRtcpPort { port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("m= line {media_index} has no codec in the allowed set")]
    NoCommonCodec { media_index: usize },
}

impl FilterError {
    pub fn reason(&self) -> &'static str {
        match self {
            FilterError::NoCommonCodec { .. } => "No common codec",
        }
    }
}

/// Whether an offer puts the session on hold or takes it off, compared to
/// the previous SDP from the same side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldChange {
    Hold,
    Resume,
    Unchanged,
}

/// Attributes that describe the far side's own transport. After rewriting,
/// packets reach handoff's plain RTP ports instead, so they would lie: ICE
/// (RFC 8839) candidates and credentials, DTLS (RFC 8842) fingerprint,
/// setup and connection, and BUNDLE handled as a group below.
///
/// `rtcp-mux` (RFC 5761) goes too: the relay listens for RTCP on port + 1
/// and advertises that in `a=rtcp`, so the peer must not mux RTCP onto RTP.
///
/// `crypto` (RFC 4568 SDES) is left to the caller: handoff terminates SRTP per
/// leg, and the call replaces every leg's `a=crypto` with its own
/// (`crypto::with_crypto`, decided in `b2bua::srtp_policy`).
const DROPPED_ATTRIBUTES: &[&str] = &[
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "fingerprint",
    "setup",
    "connection",
    "tls-id",
    "rtcp-mux",
    "rtcp-mux-only",
];

/// Not codecs: a stream offering only these carries no audio.
const NOT_CODECS: &[&str] = &["telephone-event", "CN", "red"];

/// Rewrites an SDP from one leg for the other leg: c= and every m= port to
/// the relay, `a=rtcp` to the relay's port + 1, transport attributes that
/// would lie dropped, codecs and everything else kept.
///
/// `previous` is the last SDP handoff sent on the leg this one goes to.
/// RFC 3264 8 wants the same o= username and sess-id on every SDP of a
/// session and the version up by exactly one when the SDP changes (equal
/// when not, as for a session refresh). So the leg keeps its own o= even
/// when the far side behind it changes on transfer. Without `previous`
/// (the first SDP on the leg) the source's o= is used with our address.
pub fn rewrite_for_relay(
    sdp: &SessionDescription,
    relay: &RelayAddrs,
    previous: Option<&SessionDescription>,
) -> Result<SessionDescription, RewriteError> {
    if sdp.media.len() != relay.ports.len() {
        return Err(RewriteError::PortCountMismatch {
            media: sdp.media.len(),
            ports: relay.ports.len(),
        });
    }
    let ours = Connection::new(relay.ip);
    let mut out = sdp.clone();
    out.connection = Some(ours);
    out.attributes.retain(keep_attribute);
    for (m, &port) in out.media.iter_mut().zip(&relay.ports) {
        rewrite_media(m, ours, port)?;
    }

    out.origin.addr_type = if relay.ip.is_ipv4() { "IP4" } else { "IP6" }.to_owned();
    out.origin.address = relay.ip.to_string();
    if let Some(prev) = previous {
        out.origin.username = prev.origin.username.clone();
        out.origin.session_id = prev.origin.session_id.clone();
        out.origin.net_type = prev.origin.net_type.clone();
        out.origin.version = prev.origin.version;
        if out != *prev {
            // Saturating: a peer-chosen u64::MAX must not wrap to a lower one.
            out.origin.version = prev.origin.version.saturating_add(1);
        }
    }
    Ok(out)
}

fn rewrite_media(
    m: &mut MediaDescription,
    ours: Connection,
    port: u16,
) -> Result<(), RewriteError> {
    if m.connection.is_some() {
        m.connection = Some(ours);
    }
    m.attributes.retain(keep_attribute);
    // RFC 3264 6: a rejected stream keeps port 0, and its a=rtcp would
    // only describe the far side, so it goes.
    if m.port == 0 {
        m.attributes.retain(|a| a.name != "rtcp");
        return Ok(());
    }
    let rtcp = port
        .checked_add(1)
        .ok_or(RewriteError::NoRtcpPort { port })?;
    m.port = port;
    // The relay gives one RTP/RTCP pair per m= line, whatever was asked.
    m.port_count = None;
    for a in m.attributes.iter_mut().filter(|a| a.name == "rtcp") {
        a.value = Some(format!("{rtcp} {ours}"));
    }
    Ok(())
}

fn keep_attribute(a: &Attribute) -> bool {
    let dropped = DROPPED_ATTRIBUTES
        .iter()
        .any(|d| a.name.eq_ignore_ascii_case(d));
    // RFC 9143 BUNDLE would have the peer send every stream to one port,
    // while the relay gives each m= line its own.
    let bundle = a.name == "group" && a.value.as_deref().is_some_and(|v| v.starts_with("BUNDLE"));
    !dropped && !bundle
}

/// Restricts every live RTP audio m= line to the payload types whose
/// encoding name (any case) is in `allowed`, removing the rtpmap, fmtp and
/// rtcp-fb lines of the others. Preference order is kept. An m= line left
/// with no real codec (telephone-event or CN alone do not count) is an
/// error. Other media and rejected streams pass unchanged.
pub fn filter_codecs(
    sdp: &SessionDescription,
    allowed: &[&str],
) -> Result<SessionDescription, FilterError> {
    let mut out = sdp.clone();
    for (media_index, m) in out.media.iter_mut().enumerate() {
        if m.media != "audio" || m.port == 0 || !m.is_rtp() {
            continue;
        }
        let types = m.payload_types();
        let is_allowed = |name: Option<&str>| {
            name.is_some_and(|n| allowed.iter().any(|a| a.eq_ignore_ascii_case(n)))
        };
        let kept: Vec<String> = types
            .iter()
            .filter(|pt| is_allowed(pt.name()))
            .map(|pt| pt.number().to_string())
            .collect();
        let has_codec = types.iter().any(|pt| {
            is_allowed(pt.name())
                && pt
                    .name()
                    .is_some_and(|n| !NOT_CODECS.iter().any(|x| x.eq_ignore_ascii_case(n)))
        });
        if !has_codec {
            return Err(FilterError::NoCommonCodec { media_index });
        }
        m.attributes.retain(|a| {
            !matches!(a.name.as_str(), "rtpmap" | "fmtp" | "rtcp-fb")
                || a.first_token()
                    .is_some_and(|pt| pt == "*" || kept.iter().any(|k| k == pt))
        });
        m.formats = kept;
    }
    Ok(out)
}

/// RFC 3264 6.1: the answer's direction for an offered one. A sendrecv
/// offer is answered sendrecv: handoff relays both ways.
pub fn answer_direction(offer: Direction) -> Direction {
    match offer {
        Direction::SendRecv => Direction::SendRecv,
        Direction::SendOnly => Direction::RecvOnly,
        Direction::RecvOnly => Direction::SendOnly,
        Direction::Inactive => Direction::Inactive,
    }
}

/// Whether `offer` holds or resumes relative to the previous SDP from the
/// same side (`None` for the first offer of the call).
pub fn hold_change(
    previous: Option<&SessionDescription>,
    offer: &SessionDescription,
) -> HoldChange {
    let was = previous.is_some_and(SessionDescription::is_hold);
    match (was, offer.is_hold()) {
        (false, true) => HoldChange::Hold,
        (true, false) => HoldChange::Resume,
        _ => HoldChange::Unchanged,
    }
}

/// The m= line the relay anchors: the first live RTP audio stream.
pub fn audio_stream(sdp: &SessionDescription) -> Option<usize> {
    sdp.media
        .iter()
        .position(|m| m.media == "audio" && m.port != 0 && m.is_rtp())
}

/// Every m= line but `keep` rejected (port 0, RFC 3264 6/8.2): the relay
/// anchors one audio stream, so video or a second audio line is declined
/// instead of being sent to a port nobody listens on. The m= lines stay, so
/// the answer still lines up with the offer.
pub fn only_stream(sdp: &SessionDescription, keep: usize) -> SessionDescription {
    let mut out = sdp.clone();
    for (i, m) in out.media.iter_mut().enumerate() {
        if i != keep {
            m.port = 0;
            m.port_count = None;
        }
    }
    out
}

/// The encoding names (as written) of the live audio stream `index`,
/// telephone-event included: what a filter for a new leg intersects with.
pub fn codec_names(sdp: &SessionDescription, index: usize) -> Vec<String> {
    sdp.media
        .get(index)
        .map(|m| {
            m.payload_types()
                .iter()
                .filter_map(|pt| pt.name().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
