//! The parser: a pre-pass over the header block that closes rsip 0.4's gaps, then the
//! checks RFC 3261 8.2 asks of every request before it is acted on.

use super::headers::{Header, HeaderName};
use super::strict;
use super::typed::{CSeq, SipUri};
use super::{Message, Method, StartLine};
use bytes::Bytes;
use std::fmt;

/// At most this many header lines in one message: every table has a bound.
const MAX_HEADERS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    Empty,
    /// No blank line ending the header block.
    NoHeaderEnd,
    HeaderNotUtf8,
    BadStartLine,
    /// Extra spaces between or after the Request-Line's elements (RFC 4475 3.1.2.9,
    /// 3.1.2.10).
    BadRequestLine,
    /// A SIP version other than 2.0 (answered 505).
    BadVersion,
    /// A sip:, sips: or tel: Request-URI that is malformed: spaces, `<>`, headers.
    BadRequestUri,
    /// A Request-URI in a scheme handoff does not serve (answered 416).
    UnsupportedUriScheme,
    BadHeaderLine,
    TooManyHeaders,
    MissingHeader(&'static str),
    BadHeader(&'static str),
    /// A header that may appear once appears again (RFC 3261 7.3.1); `conflicting`
    /// when the values differ.
    Repeated {
        header: &'static str,
        conflicting: bool,
    },
    /// A quoted display name with a bare CR, LF or NUL, unterminated, or an unquoted
    /// one with characters outside `token` (RFC 3261 25.1, RFC 4475 3.1.2.6, 3.1.2.15).
    BadDisplayName,
    /// A control character (other than HTAB) in a header value; the header's name.
    ControlCharacter(String),
    CSeqMethodMismatch,
    BodyShorterThanContentLength {
        declared: usize,
        actual: usize,
    },
}

impl ParseErrorKind {
    /// The reason phrase of the response that refuses the message: the problem named in
    /// a few words (RFC 3261 21.4.1 leaves the phrase to the server).
    pub fn reason(&self) -> String {
        match self {
            ParseErrorKind::Empty | ParseErrorKind::BadStartLine => "Bad Start Line".into(),
            ParseErrorKind::NoHeaderEnd => "No Header End".into(),
            ParseErrorKind::HeaderNotUtf8 => "Header Not UTF-8".into(),
            ParseErrorKind::BadRequestLine => "Bad Request-Line".into(),
            ParseErrorKind::BadVersion => "Version Not Supported".into(),
            ParseErrorKind::BadRequestUri => "Bad Request-URI".into(),
            ParseErrorKind::UnsupportedUriScheme => "Unsupported URI Scheme".into(),
            ParseErrorKind::BadHeaderLine => "Bad Header Line".into(),
            ParseErrorKind::TooManyHeaders => "Too Many Headers".into(),
            ParseErrorKind::MissingHeader(h) => format!("Missing {h}"),
            ParseErrorKind::BadHeader(h) => format!("Bad {h}"),
            ParseErrorKind::Repeated {
                header: "Content-Length",
                conflicting: true,
            } => "Conflicting Content-Length".into(),
            ParseErrorKind::Repeated { header, .. } => format!("Multiple {header}"),
            ParseErrorKind::BadDisplayName => "Bad Display Name".into(),
            ParseErrorKind::ControlCharacter(h) => format!("Control Character in {h}"),
            ParseErrorKind::CSeqMethodMismatch => "CSeq Method Mismatch".into(),
            ParseErrorKind::BodyShorterThanContentLength { .. } => {
                "Body Shorter Than Content-Length".into()
            }
        }
    }
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::Empty => f.write_str("empty message"),
            ParseErrorKind::NoHeaderEnd => f.write_str("no blank line after the headers"),
            ParseErrorKind::HeaderNotUtf8 => f.write_str("header block is not UTF-8"),
            ParseErrorKind::BadStartLine => f.write_str("malformed start line"),
            ParseErrorKind::BadRequestLine => f.write_str("extra spaces in the Request-Line"),
            ParseErrorKind::BadVersion => f.write_str("unsupported SIP version"),
            ParseErrorKind::BadRequestUri => f.write_str("malformed Request-URI"),
            ParseErrorKind::UnsupportedUriScheme => f.write_str("unsupported Request-URI scheme"),
            ParseErrorKind::Repeated {
                header,
                conflicting: true,
            } => write!(f, "conflicting {header} headers"),
            ParseErrorKind::Repeated { header, .. } => write!(f, "repeated {header} header"),
            ParseErrorKind::BadDisplayName => f.write_str("malformed display name"),
            ParseErrorKind::ControlCharacter(h) => {
                write!(f, "control character in the {h} header")
            }
            ParseErrorKind::BadHeaderLine => f.write_str("malformed header line"),
            ParseErrorKind::TooManyHeaders => f.write_str("too many header lines"),
            ParseErrorKind::MissingHeader(h) => write!(f, "missing {h} header"),
            ParseErrorKind::BadHeader(h) => write!(f, "malformed {h} header"),
            ParseErrorKind::CSeqMethodMismatch => f.write_str("CSeq method does not match"),
            ParseErrorKind::BodyShorterThanContentLength { declared, actual } => write!(
                f,
                "body is {actual} bytes but Content-Length says {declared}"
            ),
        }
    }
}

/// A message that could not be accepted. When the start line and enough headers were
/// read, `partial` holds them so that a request can still be answered with 400.
#[derive(Debug, Clone)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    partial: Option<Box<Message>>,
}

impl ParseError {
    fn bare(kind: ParseErrorKind) -> Self {
        ParseError {
            kind,
            partial: None,
        }
    }

    /// What was read before the error, if a response can be built from it.
    pub fn partial(&self) -> Option<&Message> {
        self.partial.as_deref()
    }

    /// The status to answer a request with (RFC 3261 8.2.2, 21.5.6).
    pub fn status(&self) -> u16 {
        match self.kind {
            ParseErrorKind::BadVersion => 505,
            ParseErrorKind::UnsupportedUriScheme => 416,
            _ => 400,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for ParseError {}

/// Parse one whole message (a datagram, or one frame cut from a stream).
pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
    // RFC 3261 7.5: CRLFs before the start line are ignored.
    let skip = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .ok_or(ParseError::bare(ParseErrorKind::Empty))?;
    let (head_end, body_start) =
        find_head_end(&buf[skip..]).ok_or(ParseError::bare(ParseErrorKind::NoHeaderEnd))?;
    let head = &buf[skip..skip + head_end];
    let body_start = skip + body_start;

    let head = match std::str::from_utf8(head) {
        Ok(h) => h,
        Err(_) => {
            // Still try to answer: a lossy copy is good enough to address a 400.
            let lossy = String::from_utf8_lossy(head).into_owned();
            let partial = tokenize(&lossy).ok().map(|(m, _)| Box::new(m));
            return Err(ParseError {
                kind: ParseErrorKind::HeaderNotUtf8,
                partial,
            });
        }
    };

    let (mut msg, line_error) = tokenize(head).map_err(ParseError::bare)?;

    // RFC 3261 7.3.1: Call-ID, From, To, CSeq, Max-Forwards and Content-Length appear
    // once. Checked before the body is cut: two Content-Lengths leave its end unknown.
    if let Err(kind) = strict::check_repeated(&msg) {
        return Err(with_partial(msg, kind));
    }

    // RFC 3261 18.3: Content-Length bounds the body; on a datagram extra bytes are
    // discarded, fewer bytes than declared make the message bad.
    let available = buf.len() - body_start;
    let body_len = match msg.header("Content-Length") {
        // 1*DIGIT (RFC 3261 20.14): no sign, as the stream framer reads it.
        Some(v) => match Some(v.trim())
            .filter(|t| !t.starts_with('+'))
            .and_then(|t| t.parse::<usize>().ok())
        {
            Some(n) if n <= available => n,
            Some(n) => {
                return Err(with_partial(
                    msg,
                    ParseErrorKind::BodyShorterThanContentLength {
                        declared: n,
                        actual: available,
                    },
                ))
            }
            None => {
                return Err(with_partial(
                    msg,
                    ParseErrorKind::BadHeader("Content-Length"),
                ))
            }
        },
        None => available,
    };
    msg.body = buf.slice(body_start..body_start + body_len);

    if let Some(kind) = line_error {
        return Err(with_partial(msg, kind));
    }
    if let Err(kind) = validate(&msg) {
        return Err(with_partial(msg, kind));
    }
    Ok(msg)
}

fn with_partial(msg: Message, kind: ParseErrorKind) -> ParseError {
    ParseError {
        kind,
        partial: Some(Box::new(msg)),
    }
}

/// Offset of the end of the header block and of the body's start. Bare LF line ends
/// are tolerated (RFC 3261 7.5 recommends it of receivers).
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                let end = if i > 0 && buf[i - 1] == b'\r' {
                    i - 1
                } else {
                    i
                };
                return Some((end, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// Start line and header lines. Folded lines are unfolded, whitespace before the colon
/// is dropped, compact names are expanded. A bad header line does not stop the scan:
/// the rest is still read so that a 400 can be addressed, and the error is returned.
fn tokenize(head: &str) -> Result<(Message, Option<ParseErrorKind>), ParseErrorKind> {
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let (start, mut error) = parse_start_line(lines.next().ok_or(ParseErrorKind::Empty)?)?;
    let mut msg = Message {
        start,
        headers: Vec::with_capacity(16),
        body: Bytes::new(),
        via_cache: std::cell::OnceCell::new(),
    };
    let mut last_ok = false;
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            // RFC 3261 7.3.1: a continuation line is folded into the previous value with
            // a single space.
            match msg.headers.last_mut() {
                Some(h) if last_ok => {
                    let cont = line.trim();
                    if !cont.is_empty() {
                        if !h.value.is_empty() {
                            h.value.push(' ');
                        }
                        h.value.push_str(cont);
                    }
                }
                _ => {
                    error.get_or_insert(ParseErrorKind::BadHeaderLine);
                }
            }
            continue;
        }
        last_ok = false;
        let header = line
            .split_once(':')
            .map(|(n, v)| (n.trim_end_matches([' ', '\t']), v))
            .filter(|(n, _)| HeaderName::is_valid_token(n));
        let Some((name, value)) = header else {
            // A line that is no header after a value left inside an open quote: a bare
            // LF cut a quoted string (RFC 3261 25.1 allows LF there only when folded).
            let kind = match msg.headers.last() {
                Some(prev) if strict::has_open_quote(&prev.value) => {
                    strict::open_quote_error(&prev.name)
                }
                _ => ParseErrorKind::BadHeaderLine,
            };
            error.get_or_insert(kind);
            continue;
        };
        if msg.headers.len() >= MAX_HEADERS {
            return Err(ParseErrorKind::TooManyHeaders);
        }
        msg.headers.push(Header {
            name: HeaderName::from_wire(name),
            value: value.trim_matches([' ', '\t']).to_owned(),
        });
        last_ok = true;
    }
    Ok((msg, error))
}

/// The start line, and an error that still lets the headers be read: a request in a
/// SIP version we do not speak is answered 505, a malformed Request-URI or extra spaces
/// 400, and both need the headers.
fn parse_start_line(line: &str) -> Result<(StartLine, Option<ParseErrorKind>), ParseErrorKind> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let (version, rest) = rest.split_once(' ').ok_or(ParseErrorKind::BadStartLine)?;
        if version != "2.0" {
            return Err(ParseErrorKind::BadVersion);
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status = code
            .parse::<u16>()
            .ok()
            .filter(|s| (100..=699).contains(s) && code.len() == 3)
            .ok_or(ParseErrorKind::BadStartLine)?;
        return Ok((
            StartLine::Response {
                status,
                reason: reason.to_owned(),
            },
            None,
        ));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version. The method is the first
    // word and the version the last, so that a Request-URI with spaces in it is still
    // read as one (and refused with 400, RFC 4475 3.1.2.8) rather than dropped.
    let trimmed = line.trim_end_matches([' ', '\t']);
    let (method, rest) = trimmed
        .split_once(' ')
        .ok_or(ParseErrorKind::BadStartLine)?;
    let (uri, version) = rest.rsplit_once(' ').ok_or(ParseErrorKind::BadStartLine)?;
    let method = Method::parse(method).ok_or(ParseErrorKind::BadStartLine)?;
    if !version.starts_with("SIP/") {
        return Err(ParseErrorKind::BadStartLine);
    }
    let uri_trimmed = uri.trim_matches([' ', '\t']);
    let error = if version != "SIP/2.0" {
        Some(ParseErrorKind::BadVersion)
    } else if uri_trimmed.is_empty() || uri_trimmed.contains([' ', '\t']) {
        Some(ParseErrorKind::BadRequestUri)
    } else if uri_trimmed.len() != uri.len() || trimmed.len() != line.len() {
        // RFC 4475 3.1.2.9, 3.1.2.10: exactly one SP between the elements.
        Some(ParseErrorKind::BadRequestLine)
    } else {
        None
    };
    let start = StartLine::Request {
        method,
        uri: uri_trimmed.to_owned(),
    };
    Ok((start, error))
}

/// RFC 3261 8.1.1 / 8.2: the headers every request and response must carry, readable.
fn validate(msg: &Message) -> Result<(), ParseErrorKind> {
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if msg.header(name).is_none() {
            return Err(ParseErrorKind::MissingHeader(name));
        }
    }
    if msg.top_via().is_none() {
        return Err(ParseErrorKind::BadHeader("Via"));
    }
    strict::check_values(msg)?;
    if msg.from_header().is_none() {
        return Err(ParseErrorKind::BadHeader("From"));
    }
    if msg.to_header().is_none() {
        return Err(ParseErrorKind::BadHeader("To"));
    }
    if msg
        .call_id()
        .is_some_and(|c| c.is_empty() || c.contains(' '))
    {
        return Err(ParseErrorKind::BadHeader("Call-ID"));
    }
    let cseq: CSeq = msg.cseq().ok_or(ParseErrorKind::BadHeader("CSeq"))?;
    if let Some(Err(())) = msg.max_forwards() {
        return Err(ParseErrorKind::BadHeader("Max-Forwards"));
    }
    if let StartLine::Request { method, uri } = &msg.start {
        if &cseq.method != method {
            return Err(ParseErrorKind::CSeqMethodMismatch);
        }
        strict::check_request_uri(uri)?;
        if SipUri::parse(uri).is_none() {
            return Err(strict::request_uri_error(uri));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Message, ParseError> {
        parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    const BASIC: &str = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK1\r\nFrom: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n";

    #[test]
    fn leading_crlf_is_skipped() {
        let m = p(&format!("\r\n\r\n{BASIC}")).expect("parses");
        assert_eq!(m.method(), Some(&Method::Options));
    }

    #[test]
    fn bare_lf_line_ends_are_tolerated() {
        let m = p(&BASIC.replace("\r\n", "\n")).expect("parses");
        assert_eq!(m.call_id(), Some("c1"));
    }

    #[test]
    fn content_length_shorter_than_datagram_truncates_body() {
        let m = p(&BASIC.replace("\r\n\r\n", "\r\nContent-Length: 3\r\n\r\nabcdef")).unwrap();
        assert_eq!(&m.body()[..], b"abc");
    }

    #[test]
    fn content_length_longer_than_datagram_is_an_error_with_partial() {
        let e = p(&BASIC.replace("\r\n\r\n", "\r\nContent-Length: 30\r\n\r\nabc")).unwrap_err();
        assert!(matches!(
            e.kind,
            ParseErrorKind::BodyShorterThanContentLength {
                declared: 30,
                actual: 3
            }
        ));
        assert_eq!(e.partial().and_then(|m| m.call_id()), Some("c1"));
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn sip_version_3_gets_505() {
        let e = p(&BASIC.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia")).unwrap_err();
        assert_eq!(e.status(), 505);
    }

    #[test]
    fn bad_version_request_keeps_headers_for_505() {
        let e = p(&BASIC.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia")).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BadVersion);
        assert_eq!(e.partial().and_then(|m| m.call_id()), Some("c1"));
    }

    #[test]
    fn too_many_headers_is_refused() {
        let many = "X-A: 1\r\n".repeat(MAX_HEADERS + 1);
        let e = p(&BASIC.replace("Max-Forwards: 70\r\n", &many)).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::TooManyHeaders);
    }

    #[test]
    fn bad_status_code_is_rejected() {
        assert!(p("SIP/2.0 99 Odd\r\n\r\n").is_err());
        assert!(p("SIP/2.0 1000 Odd\r\n\r\n").is_err());
    }
}
