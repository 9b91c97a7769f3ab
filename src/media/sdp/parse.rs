//! RFC 4566 parsing. Strict where a wrong guess would misroute media (c=,
//! m=, o=), lenient on the order of optional session-level lines.

use std::net::IpAddr;

use super::{
    Attribute, Connection, MediaDescription, Origin, SessionDescription, Timing, MAX_MEDIA,
    MAX_SDP_BYTES,
};

/// Why an SDP body was refused. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("SDP is {size} bytes, over the {MAX_SDP_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("SDP body is empty")]
    Empty,
    #[error("SDP is not valid UTF-8")]
    NotUtf8,
    #[error("line {line}: control character in SDP line")]
    ControlCharacter { line: usize },
    #[error("line {line}: no '=' in SDP line")]
    MissingEquals { line: usize },
    #[error("line {line}: SDP line is not <letter>=<value>")]
    MalformedLine { line: usize },
    #[error("line {line}: unknown SDP line type '{kind}='")]
    UnknownLine { line: usize, kind: char },
    #[error("SDP does not start with v=")]
    MissingVersion,
    #[error("line {line}: unsupported SDP version (only v=0)")]
    UnsupportedVersion { line: usize },
    #[error("SDP has no o= line")]
    MissingOrigin,
    #[error("SDP has no s= line")]
    MissingSessionName,
    #[error("SDP has no t= line")]
    MissingTiming,
    #[error("line {line}: m= before the required {missing}= line")]
    MediaBeforeRequired { line: usize, missing: char },
    #[error("line {line}: {kind}= is not allowed here")]
    MisplacedLine { line: usize, kind: char },
    #[error("line {line}: second {kind}= line where one is allowed")]
    DuplicateLine { line: usize, kind: char },
    #[error("line {line}: malformed o= line")]
    BadOrigin { line: usize },
    #[error("line {line}: malformed or unsupported c= line")]
    BadConnection { line: usize },
    #[error("line {line}: malformed t= line")]
    BadTiming { line: usize },
    #[error("line {line}: malformed m= line")]
    BadMedia { line: usize },
    #[error("line {line}: bad port in m= line")]
    BadPort { line: usize },
    #[error("more than {MAX_MEDIA} m= lines")]
    TooManyMedia,
    #[error("m= line {media_index} has no connection address (no c= in it nor at session level)")]
    NoConnectionAddress { media_index: usize },
}

impl ParseError {
    /// A short, header-safe reason phrase for the 488.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::TooLarge { .. } => "SDP too large",
            ParseError::Empty => "Empty SDP",
            ParseError::NotUtf8 | ParseError::ControlCharacter { .. } => {
                "Invalid characters in SDP"
            }
            ParseError::MissingEquals { .. }
            | ParseError::MalformedLine { .. }
            | ParseError::UnknownLine { .. }
            | ParseError::MisplacedLine { .. }
            | ParseError::DuplicateLine { .. } => "Malformed SDP line",
            ParseError::MissingVersion | ParseError::UnsupportedVersion { .. } => {
                "Missing or unsupported SDP version"
            }
            ParseError::MissingOrigin | ParseError::BadOrigin { .. } => "Missing or bad SDP origin",
            ParseError::MissingSessionName => "Missing SDP session name",
            ParseError::MissingTiming | ParseError::BadTiming { .. } => "Missing or bad SDP timing",
            ParseError::MediaBeforeRequired { .. } => "SDP media before session lines",
            ParseError::BadConnection { .. } => "Bad SDP connection address",
            ParseError::BadMedia { .. } | ParseError::BadPort { .. } => "Bad SDP media line",
            ParseError::TooManyMedia => "Too many SDP media lines",
            ParseError::NoConnectionAddress { .. } => "No SDP connection address",
        }
    }
}

/// Session-level fields gathered before they are known to be complete.
#[derive(Default)]
struct Partial {
    origin: Option<Origin>,
    session_name: Option<String>,
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

pub(super) fn parse(input: &[u8]) -> Result<SessionDescription, ParseError> {
    if input.len() > MAX_SDP_BYTES {
        return Err(ParseError::TooLarge { size: input.len() });
    }
    let text = std::str::from_utf8(input).map_err(|_| ParseError::NotUtf8)?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        // Blank lines carry nothing; some UAs end the body with one.
        .filter(|(_, l)| !l.trim().is_empty());

    let Some((line, first)) = lines.next() else {
        return Err(ParseError::Empty);
    };
    let (kind, value) = split_line(line, first)?;
    if kind != 'v' {
        return Err(ParseError::MissingVersion);
    }
    if value.trim() != "0" {
        return Err(ParseError::UnsupportedVersion { line });
    }

    let mut p = Partial::default();
    for (line, text) in lines {
        let (kind, value) = split_line(line, text)?;
        if kind == 'm' {
            start_media(&mut p, line, value)?;
        } else if let Some(m) = p.media.last_mut() {
            media_line(m, line, kind, value)?;
        } else {
            session_line(&mut p, line, kind, value)?;
        }
    }

    let origin = p.origin.ok_or(ParseError::MissingOrigin)?;
    let session_name = p.session_name.ok_or(ParseError::MissingSessionName)?;
    if p.timings.is_empty() {
        return Err(ParseError::MissingTiming);
    }
    let uncovered = p.media.iter().position(|m| m.connection.is_none());
    if let (None, Some(media_index)) = (p.connection, uncovered) {
        return Err(ParseError::NoConnectionAddress { media_index });
    }
    Ok(SessionDescription {
        origin,
        session_name,
        information: p.information,
        uri: p.uri,
        emails: p.emails,
        phones: p.phones,
        connection: p.connection,
        bandwidths: p.bandwidths,
        timings: p.timings,
        time_zones: p.time_zones,
        encryption_key: p.encryption_key,
        attributes: p.attributes,
        media: p.media,
    })
}

/// `<letter>=<value>`; the value may be empty.
fn split_line(line: usize, text: &str) -> Result<(char, &str), ParseError> {
    // A stray CR or NUL would be written back out and corrupt the body.
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParseError::ControlCharacter { line });
    }
    if !text.contains('=') {
        return Err(ParseError::MissingEquals { line });
    }
    match text.as_bytes() {
        [k, b'=', ..] if k.is_ascii_lowercase() => Ok((char::from(*k), &text[2..])),
        _ => Err(ParseError::MalformedLine { line }),
    }
}

fn known(kind: char) -> bool {
    "vosiuepcbtrzkam".contains(kind)
}

fn set_once<T>(slot: &mut Option<T>, value: T, line: usize, kind: char) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::DuplicateLine { line, kind });
    }
    *slot = Some(value);
    Ok(())
}

fn session_line(p: &mut Partial, line: usize, kind: char, value: &str) -> Result<(), ParseError> {
    let owned = || value.to_owned();
    match kind {
        'v' => return Err(ParseError::DuplicateLine { line, kind }),
        'o' => set_once(&mut p.origin, parse_origin(line, value)?, line, kind)?,
        's' => set_once(&mut p.session_name, owned(), line, kind)?,
        'i' => set_once(&mut p.information, owned(), line, kind)?,
        'u' => set_once(&mut p.uri, owned(), line, kind)?,
        'e' => p.emails.push(owned()),
        'p' => p.phones.push(owned()),
        'c' => set_once(
            &mut p.connection,
            parse_connection(line, value)?,
            line,
            kind,
        )?,
        'b' => p.bandwidths.push(owned()),
        't' => p.timings.push(parse_timing(line, value)?),
        'r' => match p.timings.last_mut() {
            Some(t) => t.repeats.push(owned()),
            None => return Err(ParseError::MisplacedLine { line, kind }),
        },
        'z' => set_once(&mut p.time_zones, owned(), line, kind)?,
        'k' => set_once(&mut p.encryption_key, owned(), line, kind)?,
        'a' => p.attributes.push(parse_attribute(value)),
        _ => return Err(ParseError::UnknownLine { line, kind }),
    }
    Ok(())
}

fn media_line(
    m: &mut MediaDescription,
    line: usize,
    kind: char,
    value: &str,
) -> Result<(), ParseError> {
    match kind {
        'i' => set_once(&mut m.information, value.to_owned(), line, kind),
        // RFC 4566 allows several c= per m= for multicast; a relay does unicast.
        'c' => set_once(
            &mut m.connection,
            parse_connection(line, value)?,
            line,
            kind,
        ),
        'b' => {
            m.bandwidths.push(value.to_owned());
            Ok(())
        }
        'k' => set_once(&mut m.encryption_key, value.to_owned(), line, kind),
        'a' => {
            m.attributes.push(parse_attribute(value));
            Ok(())
        }
        k if known(k) => Err(ParseError::MisplacedLine { line, kind }),
        _ => Err(ParseError::UnknownLine { line, kind }),
    }
}

fn start_media(p: &mut Partial, line: usize, value: &str) -> Result<(), ParseError> {
    let missing = if p.origin.is_none() {
        Some('o')
    } else if p.session_name.is_none() {
        Some('s')
    } else if p.timings.is_empty() {
        Some('t')
    } else {
        None
    };
    if let Some(missing) = missing {
        return Err(ParseError::MediaBeforeRequired { line, missing });
    }
    if p.media.len() >= MAX_MEDIA {
        return Err(ParseError::TooManyMedia);
    }
    p.media.push(parse_media(line, value)?);
    Ok(())
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`
fn parse_origin(line: usize, value: &str) -> Result<Origin, ParseError> {
    let bad = || ParseError::BadOrigin { line };
    let t: Vec<&str> = value.split_ascii_whitespace().collect();
    let [username, session_id, version, net_type, addr_type, address] = t[..] else {
        return Err(bad());
    };
    Ok(Origin {
        username: username.to_owned(),
        session_id: session_id.to_owned(),
        version: version.parse().map_err(|_| bad())?,
        net_type: net_type.to_owned(),
        addr_type: addr_type.to_owned(),
        address: address.to_owned(),
    })
}

/// `c=IN IP4 <addr>` or `c=IN IP6 <addr>`; hostnames and multicast
/// `/ttl` suffixes are refused: the relay needs one unicast address.
fn parse_connection(line: usize, value: &str) -> Result<Connection, ParseError> {
    let bad = ParseError::BadConnection { line };
    let t: Vec<&str> = value.split_ascii_whitespace().collect();
    let ["IN", family, address] = t[..] else {
        return Err(bad);
    };
    let address: IpAddr = address.parse().map_err(|_| bad.clone())?;
    match (family, address) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(Connection { address }),
        _ => Err(bad),
    }
}

/// `t=<start> <stop>`, both NTP seconds; kept as written.
fn parse_timing(line: usize, value: &str) -> Result<Timing, ParseError> {
    let t: Vec<&str> = value.split_ascii_whitespace().collect();
    match t[..] {
        [start, stop] if start.parse::<u64>().is_ok() && stop.parse::<u64>().is_ok() => {
            Ok(Timing {
                value: value.to_owned(),
                repeats: Vec::new(),
            })
        }
        _ => Err(ParseError::BadTiming { line }),
    }
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...`
fn parse_media(line: usize, value: &str) -> Result<MediaDescription, ParseError> {
    let t: Vec<&str> = value.split_ascii_whitespace().collect();
    let [media, port, proto, formats @ ..] = &t[..] else {
        return Err(ParseError::BadMedia { line });
    };
    if formats.is_empty() {
        return Err(ParseError::BadMedia { line });
    }
    let bad_port = || ParseError::BadPort { line };
    let (port, port_count) = match port.split_once('/') {
        Some((p, n)) => {
            let n: u16 = n.parse().map_err(|_| bad_port())?;
            if n == 0 {
                return Err(bad_port());
            }
            (p.parse().map_err(|_| bad_port())?, Some(n))
        }
        None => (port.parse().map_err(|_| bad_port())?, None),
    };
    Ok(MediaDescription {
        media: (*media).to_owned(),
        port,
        port_count,
        proto: (*proto).to_owned(),
        formats: formats.iter().map(|f| (*f).to_owned()).collect(),
        information: None,
        connection: None,
        bandwidths: Vec::new(),
        encryption_key: None,
        attributes: Vec::new(),
    })
}

fn parse_attribute(value: &str) -> Attribute {
    match value.split_once(':') {
        Some((name, v)) => Attribute::new(name, Some(v.to_owned())),
        None => Attribute::new(value, None),
    }
}
