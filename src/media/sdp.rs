//! SDP (RFC 4566) as handoff needs it to anchor media: parse a body, answer
//! the questions the relay asks of it (where to send, which codecs, hold or
//! not), rewrite it to point at the relay, and restrict its codecs.
//! Pure functions only: no sockets, no clocks, no panics on input.

pub mod crypto;
mod parse;
mod relay;
#[cfg(test)]
mod tests;
mod write;

pub use parse::ParseError;
pub use relay::{
    answer_direction, audio_stream, codec_names, filter_codecs, hold_change, only_stream,
    rewrite_for_relay, FilterError, HoldChange, RelayAddrs, RewriteError,
};

use std::net::IpAddr;

/// Largest SDP body accepted; a real offer is well under 4 KiB.
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// Most m= lines accepted in one body.
pub const MAX_MEDIA: usize = 64;
/// The SIP status every SDP error is answered with.
pub const STATUS_NOT_ACCEPTABLE_HERE: u16 = 488;

/// Any SDP failure that is the peer's fault, answered with `488 Not
/// Acceptable Here` (RFC 3261 21.4.26) and [`SdpError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Filter(#[from] FilterError),
}

impl SdpError {
    /// Always 488: the body, not the request, is what we cannot take.
    pub fn status(&self) -> u16 {
        STATUS_NOT_ACCEPTABLE_HERE
    }

    /// A short, header-safe reason phrase (no CR, LF or peer data in it).
    pub fn reason(&self) -> &'static str {
        match self {
            SdpError::Parse(e) => e.reason(),
            SdpError::Filter(e) => e.reason(),
        }
    }
}

/// A parsed session description. Fields stay private: build one with
/// [`SessionDescription::parse`] and change it only through this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    origin: Origin,
    session_name: String,
    information: Option<String>,
    uri: Option<String>,
    emails: Vec<String>,
    phones: Vec<String>,
    connection: Option<Connection>,
    bandwidths: Vec<String>,
    timings: Vec<Timing>,
    time_zones: Option<String>,
    encryption_key: Option<String>,
    attributes: Vec<Attribute>,
    media: Vec<MediaDescription>,
}

/// The `o=` line (RFC 4566 5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    username: String,
    session_id: String,
    version: u64,
    net_type: String,
    addr_type: String,
    address: String,
}

/// A `c=` line: always `IN`, unicast, `IP4` or `IP6` by the address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    address: IpAddr,
}

/// A `t=` line and the `r=` lines that follow it, kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Timing {
    value: String,
    repeats: Vec<String>,
}

/// An `a=` line: `a=name` or `a=name:value`. `Debug` hides `a=crypto` keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Attribute {
    name: String,
    value: Option<String>,
}

/// One `m=` section with its own lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    media: String,
    port: u16,
    port_count: Option<u16>,
    proto: String,
    formats: Vec<String>,
    information: Option<String>,
    connection: Option<Connection>,
    bandwidths: Vec<String>,
    encryption_key: Option<String>,
    attributes: Vec<Attribute>,
}

/// Media direction attributes (RFC 4566 6, RFC 3264 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// An RTP payload type of an m= line with its encoding, from `a=rtpmap` or,
/// for static types without one, from RFC 3551's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadType {
    number: u8,
    name: Option<String>,
    clock_rate: Option<u32>,
    channels: Option<u16>,
}

/// One media section seen together with its session, so that session-level
/// defaults (c=, direction) apply.
#[derive(Debug, Clone, Copy)]
pub struct Stream<'a> {
    session: &'a SessionDescription,
    media: &'a MediaDescription,
}

impl SessionDescription {
    /// Parses an SDP body (CRLF or LF line ends). See [`ParseError`].
    pub fn parse(input: &[u8]) -> Result<SessionDescription, ParseError> {
        parse::parse(input)
    }

    /// Serialises in RFC 4566 order with CRLF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn session_name(&self) -> &str {
        &self.session_name
    }

    /// The session-level `c=`, if any.
    pub fn connection(&self) -> Option<Connection> {
        self.connection
    }

    /// Session-level attributes, in order.
    pub fn attributes(&self) -> &[Attribute] {
        &self.attributes
    }

    pub fn media(&self) -> &[MediaDescription] {
        &self.media
    }

    /// Each media section with session-level defaults applied.
    pub fn streams(&self) -> impl Iterator<Item = Stream<'_>> {
        self.media.iter().map(move |media| Stream {
            session: self,
            media,
        })
    }

    /// The session-level direction (RFC 4566 6: sendrecv when absent).
    pub fn direction(&self) -> Direction {
        direction_in(&self.attributes).unwrap_or(Direction::SendRecv)
    }

    /// True when every stream that is not rejected is on hold, so no RTP is
    /// to be expected from the sender (the relay picks its timeout by this).
    pub fn is_hold(&self) -> bool {
        let mut live = self.streams().filter(|s| !s.is_rejected()).peekable();
        live.peek().is_some() && live.all(|s| s.is_hold())
    }
}

impl Origin {
    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// `sess-version`: RFC 3264 8 raises it whenever the SDP changes.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Connection {
    pub fn new(address: IpAddr) -> Connection {
        Connection { address }
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }
}

impl std::fmt::Debug for Attribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = match &self.value {
            Some(v) if self.name.eq_ignore_ascii_case("crypto") => Some(crypto::redact_keys(v)),
            other => other.clone(),
        };
        f.debug_struct("Attribute")
            .field("name", &self.name)
            .field("value", &value)
            .finish()
    }
}

impl Attribute {
    pub fn new(name: impl Into<String>, value: Option<String>) -> Attribute {
        Attribute {
            name: name.into(),
            value,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// The first whitespace-separated token of the value: the payload type
    /// of rtpmap, fmtp and rtcp-fb lines.
    fn first_token(&self) -> Option<&str> {
        self.value.as_deref()?.split_ascii_whitespace().next()
    }
}

impl MediaDescription {
    /// The media type: `audio`, `video`, `application`, ...
    pub fn kind(&self) -> &str {
        &self.media
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn proto(&self) -> &str {
        &self.proto
    }

    /// The fmt list as written; payload type numbers for RTP.
    pub fn formats(&self) -> &[String] {
        &self.formats
    }

    /// The media-level `c=`, if any.
    pub fn connection(&self) -> Option<Connection> {
        self.connection
    }

    pub fn attributes(&self) -> &[Attribute] {
        &self.attributes
    }

    fn is_rtp(&self) -> bool {
        self.proto.contains("RTP/")
    }

    /// The RTP payload types in the order of preference of the m= line.
    /// Empty for non-RTP protocols.
    pub fn payload_types(&self) -> Vec<PayloadType> {
        if !self.is_rtp() {
            return Vec::new();
        }
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok().filter(|pt| *pt < 128))
            .map(|pt| self.payload_type(pt))
            .collect()
    }

    fn payload_type(&self, number: u8) -> PayloadType {
        let rtpmap = self
            .attributes
            .iter()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| parse_rtpmap(a.value.as_deref()?))
            .find(|(pt, ..)| *pt == number);
        match rtpmap {
            Some((_, name, clock, channels)) => PayloadType {
                number,
                name: Some(name.to_owned()),
                clock_rate: Some(clock),
                channels,
            },
            None => match static_payload_type(number) {
                Some((name, clock, channels)) => PayloadType {
                    number,
                    name: Some(name.to_owned()),
                    clock_rate: Some(clock),
                    channels,
                },
                None => PayloadType {
                    number,
                    name: None,
                    clock_rate: None,
                    channels: None,
                },
            },
        }
    }
}

impl PayloadType {
    pub fn number(&self) -> u8 {
        self.number
    }

    /// The encoding name as written (`PCMU`, `opus`, `telephone-event`).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn clock_rate(&self) -> Option<u32> {
        self.clock_rate
    }

    pub fn channels(&self) -> Option<u16> {
        self.channels
    }
}

impl Direction {
    pub fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

impl<'a> Stream<'a> {
    pub fn media(&self) -> &'a MediaDescription {
        self.media
    }

    /// Where to send: the media-level c= else the session-level one.
    /// Always `Some` for a parsed SDP (parse rejects one without either).
    pub fn connection_address(&self) -> Option<IpAddr> {
        self.media
            .connection
            .or(self.session.connection)
            .map(|c| c.address)
    }

    pub fn port(&self) -> u16 {
        self.media.port
    }

    /// RFC 3264 6: a port of zero rejects the stream.
    pub fn is_rejected(&self) -> bool {
        self.media.port == 0
    }

    /// RFC 3605 `a=rtcp:port` else RTP port + 1 (RFC 3550 11).
    /// `None` for a rejected stream or when port + 1 does not exist.
    pub fn rtcp_port(&self) -> Option<u16> {
        if self.is_rejected() {
            return None;
        }
        match self.rtcp_attribute() {
            Some((port, _)) => Some(port),
            None => self.media.port.checked_add(1),
        }
    }

    /// The address in `a=rtcp:port IN IP4 addr` else the RTP address.
    pub fn rtcp_address(&self) -> Option<IpAddr> {
        self.rtcp_attribute()
            .and_then(|(_, addr)| addr)
            .or_else(|| self.connection_address())
    }

    fn rtcp_attribute(&self) -> Option<(u16, Option<IpAddr>)> {
        let value = self.media.attributes.iter().find(|a| a.name == "rtcp")?;
        let mut tokens = value.value.as_deref()?.split_ascii_whitespace();
        let port = tokens.next()?.parse().ok()?;
        let addr = match (tokens.next(), tokens.next(), tokens.next()) {
            (Some("IN"), Some("IP4" | "IP6"), Some(a)) => a.parse().ok(),
            _ => None,
        };
        Some((port, addr))
    }

    pub fn payload_types(&self) -> Vec<PayloadType> {
        self.media.payload_types()
    }

    /// Media-level direction over session-level, default sendrecv.
    pub fn direction(&self) -> Direction {
        direction_in(&self.media.attributes).unwrap_or_else(|| self.session.direction())
    }

    /// On hold: sendonly or inactive (RFC 3264 8.4), or the RFC 2543 style
    /// `c=0.0.0.0` (and its IPv6 twin `::`) that older UAs still send.
    pub fn is_hold(&self) -> bool {
        matches!(self.direction(), Direction::SendOnly | Direction::Inactive)
            || self
                .connection_address()
                .is_some_and(|a| a.is_unspecified())
    }
}

fn direction_in(attributes: &[Attribute]) -> Option<Direction> {
    attributes
        .iter()
        .filter(|a| a.value.is_none())
        .find_map(|a| Direction::from_attribute(&a.name))
}

/// `a=rtpmap:<pt> <name>/<clock>[/<channels>]` (RFC 4566 6).
fn parse_rtpmap(value: &str) -> Option<(u8, &str, u32, Option<u16>)> {
    let (pt, encoding) = value.split_once(' ')?;
    let mut parts = encoding.trim().split('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let clock = parts.next()?.parse().ok()?;
    let channels = match parts.next() {
        Some(c) => Some(c.parse().ok()?),
        None => None,
    };
    Some((pt.parse().ok()?, name, clock, channels))
}

/// RFC 3551 table 4 and 5: static payload types.
fn static_payload_type(pt: u8) -> Option<(&'static str, u32, Option<u16>)> {
    Some(match pt {
        0 => ("PCMU", 8000, None),
        3 => ("GSM", 8000, None),
        4 => ("G723", 8000, None),
        5 => ("DVI4", 8000, None),
        6 => ("DVI4", 16000, None),
        7 => ("LPC", 8000, None),
        8 => ("PCMA", 8000, None),
        // RFC 3551 4.5.2: G722 says 8000 although it samples at 16 kHz.
        9 => ("G722", 8000, None),
        10 => ("L16", 44100, Some(2)),
        11 => ("L16", 44100, None),
        12 => ("QCELP", 8000, None),
        13 => ("CN", 8000, None),
        14 => ("MPA", 90000, None),
        15 => ("G728", 8000, None),
        16 => ("DVI4", 11025, None),
        17 => ("DVI4", 22050, None),
        18 => ("G729", 8000, None),
        25 => ("CelB", 90000, None),
        26 => ("JPEG", 90000, None),
        28 => ("nv", 90000, None),
        31 => ("H261", 90000, None),
        32 => ("MPV", 90000, None),
        33 => ("MP2T", 90000, None),
        34 => ("H263", 90000, None),
        _ => return None,
    })
}
